//! The REST API's routes. Every handler authenticates first, reads its body itself (so a
//! malformed one gets the API's JSON error, never a framework's plain-text one) and answers
//! either a JSON document or an [`ApiError`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post, put};
use axum::{Json, Router};
use futures_util::StreamExt;
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use sluice_frame::ingest::BadLinePolicy;
use sluice_runtime::{Batch, EventMeta, Message, TriggerKind};
use sluice_triggers::Shutdown;
use tower::ServiceExt;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::metrics::only_tenant;
use crate::plane::{ControlPlane, too_large};
use crate::quotas::QuotasUpdate;

/// Lines `GET .../logs` returns when no `limit` is given.
const DEFAULT_LOG_LINES: usize = 100;

struct Api {
    plane: Arc<ControlPlane>,
    metrics: Option<PrometheusHandle>,
    max_component_bytes: usize,
    /// Ends log follow streams, so a draining server is not held open by them.
    shutdown: Shutdown,
}

/// The API's router; `metrics` renders `/metrics` (absent: 404).
pub fn router(
    plane: Arc<ControlPlane>,
    metrics: Option<PrometheusHandle>,
    max_component_bytes: usize,
    shutdown: Shutdown,
) -> Router {
    let api = Arc::new(Api { plane, metrics, max_component_bytes, shutdown });
    // The multipart body holds the manifest and the component: allow a little over the limit,
    // so an oversized component is answered with the API's 413 naming the limit.
    let upload_limit = max_component_bytes.saturating_add(1 << 20);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi))
        .route("/v1/tenants", post(create_tenant).get(list_tenants))
        .route("/v1/tenants/{tenant}", axum::routing::delete(delete_tenant))
        .route("/v1/tenants/{tenant}/quotas", put(set_quotas))
        .route("/v1/functions", get(list_functions))
        .route(
            "/v1/functions/{name}",
            put(deploy).layer(DefaultBodyLimit::max(upload_limit)).get(get_function).delete(delete_function),
        )
        .route("/v1/functions/{name}/rollback", post(rollback))
        .route("/v1/functions/{name}/invoke", post(invoke))
        .route("/v1/functions/{name}/logs", get(logs))
        .route("/t/{tenant}/functions/{name}", any(http_trigger))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(api)
}

type ApiResult = Result<Response, ApiError>;

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found("no-route", format!("no route {}", uri.path()))
}

async fn method_not_allowed(uri: Uri) -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", format!("{} does not take this method", uri.path()))
}

async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn readyz(State(api): State<Arc<Api>>) -> Response {
    if api.plane.is_ready() {
        Json(serde_json::json!({ "status": "ready" })).into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "starting", "still loading the function store").into_response()
    }
}

async fn openapi() -> Response {
    Json(crate::openapi::document()).into_response()
}

async fn metrics_text(State(api): State<Arc<Api>>, headers: HeaderMap) -> ApiResult {
    let caller = api.plane.caller(&headers)?;
    let Some(handle) = &api.metrics else {
        return Err(ApiError::not_found("metrics-disabled", "this server records no metrics"));
    };
    api.plane.report_gpu_memory();
    let text = match caller {
        Caller::Admin => handle.render(),
        Caller::Tenant(tenant) => only_tenant(&handle.render(), &tenant),
    };
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

fn admin(api: &Api, headers: &HeaderMap) -> Result<(), ApiError> {
    match api.plane.caller(headers)? {
        Caller::Admin => Ok(()),
        Caller::Tenant(_) => Err(ApiError::new(StatusCode::FORBIDDEN, "admin-only", "this route needs the admin token")),
    }
}

fn tenant(api: &Api, headers: &HeaderMap) -> Result<String, ApiError> {
    match api.plane.caller(headers)? {
        Caller::Tenant(tenant) => Ok(tenant),
        Caller::Admin => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "tenant-only",
            "functions belong to tenants: use a tenant's token, not the admin token",
        )),
    }
}

fn parse_json<T: for<'de> Deserialize<'de>>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request("invalid-json", format!("request body: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTenant {
    name: String,
    #[serde(default)]
    quotas: QuotasUpdate,
}

async fn create_tenant(State(api): State<Arc<Api>>, headers: HeaderMap, body: Bytes) -> ApiResult {
    admin(&api, &headers)?;
    let request: NewTenant = parse_json(&body)?;
    let created = api.plane.create_tenant(&request.name, &request.quotas).await?;
    Ok((StatusCode::CREATED, Json(created)).into_response())
}

async fn list_tenants(State(api): State<Arc<Api>>, headers: HeaderMap) -> ApiResult {
    admin(&api, &headers)?;
    Ok(Json(api.plane.list_tenants()).into_response())
}

async fn delete_tenant(State(api): State<Arc<Api>>, headers: HeaderMap, Path(name): Path<String>) -> ApiResult {
    admin(&api, &headers)?;
    api.plane.delete_tenant(&name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn set_quotas(State(api): State<Arc<Api>>, headers: HeaderMap, Path(name): Path<String>, body: Bytes) -> ApiResult {
    admin(&api, &headers)?;
    let update: QuotasUpdate = parse_json(&body)?;
    Ok(Json(api.plane.set_quotas(&name, &update).await?).into_response())
}

async fn list_functions(State(api): State<Arc<Api>>, headers: HeaderMap) -> ApiResult {
    let tenant = tenant(&api, &headers)?;
    Ok(Json(api.plane.list_functions(&tenant)).into_response())
}

async fn get_function(State(api): State<Arc<Api>>, headers: HeaderMap, Path(name): Path<String>) -> ApiResult {
    let tenant = tenant(&api, &headers)?;
    Ok(Json(api.plane.get_function(&tenant, &name)?).into_response())
}

async fn delete_function(State(api): State<Arc<Api>>, headers: HeaderMap, Path(name): Path<String>) -> ApiResult {
    let tenant = tenant(&api, &headers)?;
    api.plane.delete_function(&tenant, &name).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `PUT /v1/functions/{name}`: parts `manifest` (text) and `component` (bytes).
async fn deploy(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult {
    let tenant = tenant(&api, &headers)?;
    let mut multipart = multipart.map_err(|e| {
        ApiError::bad_request("invalid-upload", format!("expected multipart/form-data with parts `manifest` and `component`: {e}"))
    })?;
    let (mut manifest, mut component) = (None, None);
    let invalid = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(api.max_component_bytes)
        } else {
            ApiError::bad_request("invalid-upload", format!("reading the upload: {e}"))
        }
    };
    let mut oversized = false;
    while let Some(mut field) = multipart.next_field().await.map_err(invalid)? {
        match field.name().unwrap_or_default() {
            "manifest" => {
                let text = field.text().await.map_err(invalid)?;
                manifest = Some(text);
            }
            "component" => {
                let mut bytes = Vec::new();
                // Past the limit the rest is read and dropped, so the client gets the 413
                // instead of a connection closed under its upload.
                while let Some(chunk) = field.chunk().await.map_err(invalid)? {
                    oversized |= bytes.len() + chunk.len() > api.max_component_bytes;
                    if !oversized {
                        bytes.extend_from_slice(&chunk);
                    }
                }
                component = Some(bytes);
            }
            other => {
                return Err(ApiError::bad_request(
                    "invalid-upload",
                    format!("unexpected part `{other}`; the upload has parts `manifest` and `component`"),
                ));
            }
        }
    }
    if oversized {
        return Err(too_large(api.max_component_bytes));
    }
    let missing = |part: &str| ApiError::bad_request("invalid-upload", format!("the upload has no `{part}` part"));
    let manifest = manifest.ok_or_else(|| missing("manifest"))?;
    let component = component.ok_or_else(|| missing("component"))?;
    let document = api.plane.deploy(&tenant, &name, &manifest, component).await?;
    Ok((StatusCode::CREATED, Json(document)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    version: u64,
}

async fn rollback(State(api): State<Arc<Api>>, headers: HeaderMap, Path(name): Path<String>, body: Bytes) -> ApiResult {
    let tenant = tenant(&api, &headers)?;
    let request: RollbackRequest = parse_json(&body)?;
    Ok(Json(api.plane.rollback(&tenant, &name, request.version).await?).into_response())
}

/// `POST /v1/functions/{name}/invoke`: the body is one event; the answer is the handler's reply.
async fn invoke(State(api): State<Arc<Api>>, headers: HeaderMap, Path(name): Path<String>, body: Bytes) -> ApiResult {
    let tenant = tenant(&api, &headers)?;
    let target = api.plane.target(&tenant, &name)?;
    let meta = EventMeta::Http {
        method: "POST".into(),
        path: format!("/v1/functions/{name}/invoke"),
        headers: headers
            .iter()
            .filter(|(key, _)| *key != header::AUTHORIZATION)
            .map(|(key, value)| (key.to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect(),
    };
    let batch = Arc::new(Batch::from_messages(TriggerKind::Http, vec![Message { body: body.to_vec(), meta }], BadLinePolicy::Fail));
    let function = target.slot.current();
    let key = api.plane.next_batch_key("invoke");
    let invocation = function.invoke(batch, &key).await.map_err(|e| ApiError::from_invoke(&name, &e))?;
    let Some(reply) = invocation.outcome.replies.into_iter().next() else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let status = StatusCode::from_u16(reply.status)
        .map_err(|_| ApiError::unprocessable("bad-reply", format!("function `{name}` replied with status {}", reply.status)))?;
    let mut response = (status, Body::from(reply.body)).into_response();
    if let Ok(content_type) = HeaderValue::from_str(&reply.content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    }
    Ok(response)
}

async fn logs(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> ApiResult {
    let tenant = tenant(&api, &headers)?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid-query", e.to_string()))?;
    let limit = match query.get("limit") {
        Some(text) => text
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request("invalid-query", format!("limit `{text}` is not a non-negative integer")))?,
        None => DEFAULT_LOG_LINES,
    };
    let follow = match query.get("follow").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(ApiError::bad_request("invalid-query", format!("follow `{other}` is not true or false"))),
    };
    let log = api.plane.log(&tenant, &name)?;
    if !follow {
        return Ok(Json(serde_json::json!({ "lines": log.recent(limit), "dropped": log.dropped() })).into_response());
    }
    // Recent lines first, then every new one as it is logged; lines a slow reader misses are skipped.
    let recent = futures_util::stream::iter(log.recent(limit));
    let live = futures_util::stream::unfold(log.subscribe(), |mut follow| async move {
        loop {
            match follow.recv().await {
                Ok(line) => return Some((line, follow)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    let lines = recent.chain(live).take_until(api.shutdown.clone().stopped()).map(|line| {
        let mut text = serde_json::to_vec(&line).expect("log lines serialize");
        text.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(text))
    });
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(lines)).into_response())
}

/// `/t/{tenant}/functions/{name}`: a deployed function's HTTP trigger. Like `sluice serve`'s
/// trigger listener it takes no token: it is the function's public endpoint.
async fn http_trigger(State(api): State<Arc<Api>>, Path((tenant, name)): Path<(String, String)>, request: Request) -> ApiResult {
    let route = api
        .plane
        .http_route(&tenant, &name)
        .ok_or_else(|| ApiError::not_found("function-not-found", format!("no HTTP-triggered function `{name}` of tenant `{tenant}`")))?;
    let (mut parts, body) = request.into_parts();
    // The trigger's router matches its own path; this route's captured parameters must not reach it.
    parts.extensions = axum::http::Extensions::new();
    let query = parts.uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    parts.uri = format!("/functions/{name}{query}")
        .parse()
        .map_err(|e| ApiError::bad_request("invalid-path", format!("request path: {e}")))?;
    let response = route.oneshot(Request::from_parts(parts, body)).await.unwrap_or_else(|never| match never {});
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_runtime::{Runtime, RuntimeConfig};
    use sluice_triggers::ShutdownSignal;

    use crate::plane::ServerConfig;

    #[tokio::test]
    async fn every_documented_operation_is_routed() {
        let dir = tempfile::tempdir().unwrap();
        let config = ServerConfig {
            state_dir: dir.path().join("state"),
            data_dir: dir.path().join("data"),
            admin_token: None,
            max_component_bytes: 1 << 20,
            log_lines_per_second: 10,
        };
        let runtime = Arc::new(Runtime::new(RuntimeConfig { cache_dir: None, pool_instances: 2, max_memory_mb: 64, ..RuntimeConfig::default() }).unwrap());
        let plane = ControlPlane::new(config, runtime).unwrap();
        let (_stop, shutdown) = ShutdownSignal::new();
        let app = router(plane, None, 1 << 20, shutdown);
        let document = crate::openapi::document();
        let mut operations = 0;
        for (path, item) in document["paths"].as_object().unwrap() {
            let concrete = path.replace("{tenant}", "t").replace("{name}", "n");
            for method in item.as_object().unwrap().keys() {
                let request = Request::builder().method(method.to_uppercase().as_str()).uri(&concrete).body(Body::empty()).unwrap();
                let response = app.clone().oneshot(request).await.unwrap();
                let status = response.status();
                let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
                let text = String::from_utf8_lossy(&body);
                assert!(status != StatusCode::METHOD_NOT_ALLOWED && !text.contains("no-route"), "{method} {path}: {status} {text}");
                operations += 1;
            }
        }
        assert_eq!(operations, 16);
    }
}
