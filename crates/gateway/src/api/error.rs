//! `ApiError`: every failure of a request, mapped to its status and JSON body in one place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::pool::{error_chain, PoolError};

/// A request that did not produce a 200.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or wrong `X-Auth-Token`.
    #[error("Invalid or missing authentication token")]
    Unauthorized,
    /// The body is not what the endpoint takes; FastAPI-style error list.
    #[error("invalid request body")]
    Validation(Vec<Value>),
    /// The body is larger than allowed.
    #[error("the request body is larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The submitted code is larger than allowed.
    #[error("the code is {size} bytes; the limit is {limit} bytes (setting code_limit_kib)")]
    CodeTooLarge {
        /// The code's size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The code ran and failed (raised, timed out, killed the kernel): a full 400 body.
    #[error("execution failed")]
    Execution(Box<Value>),
    /// The sandbox stopped answering.
    #[error("the sandbox stopped answering")]
    Unresponsive(Box<Value>),
    /// The pool could not serve the request.
    #[error(transparent)]
    Pool(#[from] PoolError),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge { .. } | ApiError::CodeTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Execution(_) => StatusCode::BAD_REQUEST,
            ApiError::Unresponsive(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Pool(PoolError::Released) => StatusCode::CONFLICT,
            ApiError::Pool(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        let body = match self {
            ApiError::Validation(errors) => json!({ "detail": errors }),
            ApiError::Execution(body) | ApiError::Unresponsive(body) => *body,
            ApiError::Pool(err) => json!({ "detail": error_chain(&err) }),
            other => json!({ "detail": other.to_string() }),
        };
        (status, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 401 body is the original's, byte for byte.
    #[tokio::test]
    async fn unauthorized_body_is_the_originals() {
        let response = ApiError::Unauthorized.into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        assert_eq!(&bytes[..], br#"{"detail":"Invalid or missing authentication token"}"#);
    }

    /// Pool failures are 503 with a detail that says why.
    #[test]
    fn pool_errors_are_503() {
        assert_eq!(ApiError::Pool(PoolError::Full { max: 3 }).status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(ApiError::Pool(PoolError::Initializing).status_code(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(PoolError::Initializing.to_string().contains("initializing"));
    }
}
