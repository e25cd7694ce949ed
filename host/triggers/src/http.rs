//! The HTTP trigger: each function is served under `/functions/<name>` on the host's listener.
//!
//! `per-request` runs one invocation per request; `batched` gathers requests by `[batching]`
//! into one invocation and answers each from its own reply in the outcome. A body over
//! `max-body-bytes` gets 413, a full queue 429 with Retry-After, a handler timeout 504, any
//! other failure a JSON error body. The accept loop never waits on a handler: requests wait
//! in a bounded queue or are turned away.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use sluice_frame::ingest::BadLinePolicy;
use sluice_manifest::{HttpMode, HttpTrigger};
use sluice_runtime::{Batch, EventMeta, Function, FunctionSlot, InvokeError, Message, Reply, TriggerKind};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::batcher::{Accumulator, BatchLimits};
use crate::delivery::process_unique_suffix;

/// Seconds a client is told to wait after a 429.
const RETRY_AFTER_SECONDS: &str = "1";

/// One function served over HTTP.
pub struct HttpFunction {
    pub function: Arc<FunctionSlot>,
    pub spec: HttpTrigger,
    pub limits: BatchLimits,
    /// Invocations at once (the manifest's `instances`).
    pub instances: usize,
}

/// Requests per outcome, for the log and for tests.
#[derive(Debug, Default)]
pub struct HttpStats {
    pub answered: AtomicU64,
    pub too_large: AtomicU64,
    pub busy: AtomicU64,
    pub timed_out: AtomicU64,
    pub failed: AtomicU64,
}

struct Pending {
    message: Message,
    reply: oneshot::Sender<Response>,
}

enum Dispatch {
    /// Permits for requests admitted (running or waiting for an instance), of `limit`.
    PerRequest { admitted: Arc<Semaphore>, limit: usize },
    Batched { queue: mpsc::Sender<Pending> },
}

struct Route {
    function: Arc<FunctionSlot>,
    max_body_bytes: usize,
    dispatch: Dispatch,
    stats: Arc<HttpStats>,
}

struct Routes {
    by_name: BTreeMap<String, Route>,
    batch_number: AtomicU64,
    run: String,
}

/// The router serving `functions`, and the stats it counts into. Batched functions get a
/// batching task each, which ends when the router is dropped.
pub fn http_router(functions: Vec<HttpFunction>) -> (Router, Arc<HttpStats>) {
    let stats = Arc::new(HttpStats::default());
    let mut by_name = BTreeMap::new();
    for served in functions {
        let dispatch = match served.spec.mode {
            HttpMode::PerRequest => {
                let limit = served.spec.queue_depth + served.instances;
                Dispatch::PerRequest { admitted: Arc::new(Semaphore::new(limit)), limit }
            }
            HttpMode::Batched => {
                let (queue, pending) = mpsc::channel(served.spec.queue_depth);
                tokio::spawn(batch_requests(served.function.clone(), served.limits, served.instances, pending));
                Dispatch::Batched { queue }
            }
        };
        let route = Route {
            function: served.function.clone(),
            max_body_bytes: served.spec.max_body_bytes,
            dispatch,
            stats: stats.clone(),
        };
        by_name.insert(served.function.name().to_string(), route);
    }
    let routes = Arc::new(Routes { by_name, batch_number: AtomicU64::new(0), run: process_unique_suffix() });
    let router = Router::new().route("/functions/{name}", any(handle)).with_state(routes);
    (router, stats)
}

async fn handle(State(routes): State<Arc<Routes>>, Path(name): Path<String>, request: Request) -> Response {
    let Some(route) = routes.by_name.get(&name) else {
        return json_error(StatusCode::NOT_FOUND, &format!("no function `{name}` is served here"), "not-found");
    };
    let response = match &route.dispatch {
        Dispatch::PerRequest { admitted, .. } => match admitted.clone().try_acquire_owned() {
            Err(_) => busy(&name),
            Ok(_admitted) => match read_message(route, request).await {
                Err(response) => response,
                Ok(message) => {
                    let key = format!("http-{}-{}", routes.run, routes.batch_number.fetch_add(1, Ordering::Relaxed));
                    let mut responses = invoke(&route.function.current(), vec![message], &key).await;
                    responses.pop().expect("one response per request")
                }
            },
        },
        Dispatch::Batched { queue } => match read_message(route, request).await {
            Err(response) => response,
            Ok(message) => {
                let (reply, answer) = oneshot::channel();
                match queue.try_send(Pending { message, reply }) {
                    Ok(()) => answer.await.unwrap_or_else(|_| {
                        json_error(StatusCode::SERVICE_UNAVAILABLE, "the host is shutting down", "shutdown")
                    }),
                    Err(mpsc::error::TrySendError::Full(_)) => busy(&name),
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        json_error(StatusCode::SERVICE_UNAVAILABLE, "the host is shutting down", "shutdown")
                    }
                }
            }
        },
    };
    record_queue_depth(route);
    let counter = match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => &route.stats.too_large,
        StatusCode::TOO_MANY_REQUESTS => &route.stats.busy,
        StatusCode::GATEWAY_TIMEOUT => &route.stats.timed_out,
        status if status.is_server_error() => &route.stats.failed,
        _ => &route.stats.answered,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    response
}

/// `sluice_http_queue_depth`: requests admitted and not yet answered (per-request mode) or
/// waiting to be batched (batched mode), sampled as each request is answered.
fn record_queue_depth(route: &Route) {
    let depth = match &route.dispatch {
        Dispatch::PerRequest { admitted, limit } => limit.saturating_sub(admitted.available_permits()),
        Dispatch::Batched { queue } => queue.max_capacity() - queue.capacity(),
    };
    let tenant = route.function.current().deployment().tenant.clone();
    metrics::gauge!("sluice_http_queue_depth", "tenant" => tenant, "function" => route.function.name().to_string())
        .set(depth as f64);
}

/// The request as an event, or the 413 that refuses it.
async fn read_message(route: &Route, request: Request) -> Result<Message, Response> {
    let limit = route.max_body_bytes;
    let too_large = || {
        json_error(StatusCode::PAYLOAD_TOO_LARGE, &format!("request body exceeds the limit of {limit} bytes"), "body-too-large")
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, limit).await.map_err(|_| too_large())?;
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| (name.to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    let meta = EventMeta::Http { method: parts.method.to_string(), path: parts.uri.path().to_string(), headers };
    Ok(Message { body: body.to_vec(), meta })
}

/// Gathers queued requests into batches; at most `instances` batches run at once, so a
/// slow handler fills the queue and later requests get 429.
async fn batch_requests(function: Arc<FunctionSlot>, limits: BatchLimits, instances: usize, mut queue: mpsc::Receiver<Pending>) {
    let running = Arc::new(Semaphore::new(instances));
    let run = process_unique_suffix();
    let mut batch_number = 0u64;
    while let Some(first) = queue.recv().await {
        let mut gathered = Accumulator::new(limits);
        let bytes = first.message.body.len() as u64;
        gathered.push(first, bytes);
        while !gathered.is_full() {
            let wait = gathered.remaining_wait(std::time::Instant::now());
            match tokio::time::timeout(wait, queue.recv()).await {
                Ok(Some(next)) => {
                    let bytes = next.message.body.len() as u64;
                    gathered.push(next, bytes);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let permit = running.clone().acquire_owned().await.expect("the batch semaphore is never closed");
        let key = format!("http-{run}-b{batch_number}");
        batch_number += 1;
        let function = function.current();
        tokio::spawn(async move {
            let (messages, replies): (Vec<Message>, Vec<oneshot::Sender<Response>>) =
                gathered.take().into_iter().map(|p| (p.message, p.reply)).unzip();
            let responses = invoke(&function, messages, &key).await;
            for (reply, response) in replies.into_iter().zip(responses) {
                let _ = reply.send(response);
            }
            drop(permit);
        });
    }
}

/// Runs one batch of requests; returns one response per request, in order.
async fn invoke(function: &Function, messages: Vec<Message>, key: &str) -> Vec<Response> {
    let requests = messages.len();
    let batch = Arc::new(Batch::from_messages(TriggerKind::Http, messages, BadLinePolicy::Fail));
    match function.invoke(batch, key).await {
        Ok(invocation) => {
            let replies = invocation.outcome.replies;
            if replies.len() != requests && !(requests == 1 && replies.is_empty()) {
                let message = format!("handler returned {} replies for {requests} requests", replies.len());
                return (0..requests).map(|_| json_error(StatusCode::INTERNAL_SERVER_ERROR, &message, "reply-count")).collect();
            }
            if replies.is_empty() {
                return vec![StatusCode::NO_CONTENT.into_response()];
            }
            replies.into_iter().map(reply_response).collect()
        }
        Err(error) => (0..requests).map(|_| invoke_error(function.name(), &error)).collect(),
    }
}

fn reply_response(reply: Reply) -> Response {
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Body::from(reply.body)).into_response();
    if let Ok(content_type) = HeaderValue::from_str(&reply.content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    }
    response
}

fn invoke_error(function: &str, error: &InvokeError) -> Response {
    let status = match error {
        InvokeError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json_error(status, &format!("function `{function}`: {error}"), error.cause())
}

fn busy(function: &str) -> Response {
    let mut response = json_error(
        StatusCode::TOO_MANY_REQUESTS,
        &format!("function `{function}` has a full queue; retry later"),
        "queue-full",
    );
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
    response
}

fn json_error(status: StatusCode, message: &str, cause: &str) -> Response {
    let body = serde_json::json!({ "error": message, "cause": cause }).to_string();
    let mut response = (status, body).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
