//! The API's error answer: a status and `{"error": "<message naming the bad input>", "cause": "<kebab-code>"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use sluice_runtime::{InvokeError, LoadError};

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub cause: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, cause: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, cause, message: message.into() }
    }

    pub fn bad_request(cause: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, cause, message)
    }

    pub fn unprocessable(cause: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, cause, message)
    }

    pub fn not_found(cause: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, cause, message)
    }

    pub fn quota(message: impl Into<String>) -> ApiError {
        ApiError::unprocessable("quota-exceeded", message)
    }

    /// A fault of the host itself (a disk write failed), never of the request.
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// Why an uploaded component was refused; only an engine failure is the host's fault.
    pub fn from_load(error: &LoadError) -> ApiError {
        let cause = match error {
            LoadError::NotWasm | LoadError::CoreModule => "not-a-component",
            LoadError::Compile(_) => "does-not-compile",
            LoadError::WrongWorld(_) => "wrong-world",
            LoadError::Sink { .. } => "sink-refused",
            LoadError::DeviceUnavailable { .. } => "device-unavailable",
            LoadError::Read { .. } | LoadError::Engine(_) => {
                return ApiError::internal(error.to_string());
            }
        };
        ApiError::unprocessable(cause, error.to_string())
    }

    /// A failed invocation: the function's own failure is 422, a host fault 500.
    pub fn from_invoke(function: &str, error: &InvokeError) -> ApiError {
        let message = format!("function `{function}`: {error}");
        match error {
            InvokeError::Commit(_) => ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, cause: error.cause(), message },
            _ => ApiError { status: StatusCode::UNPROCESSABLE_ENTITY, cause: error.cause(), message },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(cause = self.cause, "{}", self.message);
        }
        (self.status, Json(serde_json::json!({ "error": self.message, "cause": self.cause }))).into_response()
    }
}
