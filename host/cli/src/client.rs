//! A blocking client of the control-plane REST API that `sluice serve` exposes: bearer
//! authentication, and errors that say which server, which token or which input was at fault.

use std::io::Read;
use std::time::Duration;

use reqwest::Method;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::Value;

/// Why a call to the API failed, in words a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no API token: pass --token or set SLUICE_TOKEN (the admin token for `tenant` commands, a tenant's token for functions)")]
    MissingToken,
    #[error("server address `{0}` must start with http:// (e.g. http://127.0.0.1:8090)")]
    BadServer(String),
    #[error("cannot reach the sluice server at {server}: {reason} (is `sluice serve` running there? set --server or SLUICE_SERVER)")]
    Unreachable { server: String, reason: String },
    #[error("the server at {server} refused the token (HTTP {status}): {message}")]
    Unauthorized { server: String, status: u16, message: String },
    #[error("{message} (HTTP {status}{cause})")]
    Api { status: u16, message: String, cause: String },
    #[error("cannot read the server's answer to {what}: {reason}")]
    BadAnswer { what: String, reason: String },
}

/// One server and one token; every request carries `Authorization: Bearer <token>`.
pub struct ApiClient {
    http: Client,
    server: String,
    token: String,
}

impl ApiClient {
    pub fn new(server: &str, token: Option<&str>) -> Result<ApiClient, ClientError> {
        let server = server.trim_end_matches('/');
        if !server.starts_with("http://") || server.len() == "http://".len() {
            return Err(ClientError::BadServer(server.to_string()));
        }
        let token = token.map(str::trim).filter(|token| !token.is_empty()).ok_or(ClientError::MissingToken)?;
        // No overall timeout: invocations may run as long as the function's limit and a log
        // follow stays open; only connecting is bounded.
        let http = Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(None)
            .build()
            .map_err(|error| ClientError::Unreachable { server: server.to_string(), reason: error.to_string() })?;
        Ok(ApiClient { http, server: server.to_string(), token: token.to_string() })
    }

    /// A request to `path` (starting with `/`), authenticated.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.server)).bearer_auth(&self.token)
    }

    /// Sends a request; a non-2xx answer becomes the server's error text.
    pub fn send(&self, request: RequestBuilder) -> Result<Response, ClientError> {
        let response = request.send().map_err(|error| ClientError::Unreachable {
            server: self.server.clone(),
            reason: innermost_reason(&error),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().unwrap_or_default();
        let (message, cause) = error_text(status.as_u16(), &body);
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(ClientError::Unauthorized { server: self.server.clone(), status: status.as_u16(), message });
        }
        Err(ClientError::Api { status: status.as_u16(), message, cause: cause.map(|c| format!(", {c}")).unwrap_or_default() })
    }

    /// Sends a request and parses the answer as JSON.
    pub fn send_json(&self, request: RequestBuilder, what: &str) -> Result<Value, ClientError> {
        let mut body = Vec::new();
        self.send(request)?
            .read_to_end(&mut body)
            .map_err(|error| ClientError::BadAnswer { what: what.to_string(), reason: error.to_string() })?;
        serde_json::from_slice(&body).map_err(|error| ClientError::BadAnswer {
            what: what.to_string(),
            reason: format!("not JSON ({error}): {}", String::from_utf8_lossy(&body[..body.len().min(200)])),
        })
    }
}

/// The message and cause of an error answer: the contract's `{"error", "cause"}` body, or the
/// body's text, or the status's reason when the body is empty.
fn error_text(status: u16, body: &[u8]) -> (String, Option<String>) {
    if let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(body)
        && let Some(Value::String(message)) = fields.get("error")
    {
        let cause = fields.get("cause").and_then(Value::as_str).map(str::to_string);
        return (message.clone(), cause);
    }
    let text = String::from_utf8_lossy(body).trim().to_string();
    if text.is_empty() {
        let reason = reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("error");
        return (format!("the server answered {reason}"), None);
    }
    (text, None)
}

/// The deepest cause of a transport error ("Connection refused (os error 111)"), which says
/// more than reqwest's "error sending request".
fn innermost_reason(error: &reqwest::Error) -> String {
    let mut reason = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        reason = cause.to_string();
        source = cause.source();
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_show_the_servers_message_and_cause() {
        let (message, cause) = error_text(404, br#"{"error":"no function `nope`","cause":"not-found"}"#);
        assert_eq!(message, "no function `nope`");
        assert_eq!(cause.as_deref(), Some("not-found"));
        assert_eq!(error_text(502, b"bad gateway from the proxy\n"), ("bad gateway from the proxy".to_string(), None));
        assert_eq!(error_text(503, b"").0, "the server answered Service Unavailable");
    }

    #[test]
    fn a_missing_token_or_a_bad_address_is_refused_before_any_request() {
        assert!(matches!(ApiClient::new("http://127.0.0.1:1", None), Err(ClientError::MissingToken)));
        assert!(matches!(ApiClient::new("http://127.0.0.1:1", Some("  ")), Err(ClientError::MissingToken)));
        assert!(matches!(ApiClient::new("127.0.0.1:8090", Some("t")), Err(ClientError::BadServer(_))));
        let client = ApiClient::new("http://127.0.0.1:8090/", Some("t")).unwrap();
        assert_eq!(client.server, "http://127.0.0.1:8090");
    }
}
