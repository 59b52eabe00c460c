//! `ApiError`: every failure of a request, mapped to its status and JSON body in one place.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::bodies::{Detail, ExecutionFailure, ValidationError, ValidationErrors};
use crate::files::FilesError;
use crate::pool::{error_chain, PoolError};

/// A request that did not produce a 200.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No or wrong `X-Auth-Token`.
    #[error("Invalid or missing authentication token")]
    Unauthorized,
    /// The body is not what the endpoint takes; FastAPI-style error list.
    #[error("invalid request body")]
    Validation(Vec<ValidationError>),
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
    Execution(Box<ExecutionFailure>),
    /// The sandbox stopped answering during an execution: a full 504 body.
    #[error("the sandbox stopped answering")]
    Unresponsive(Box<ExecutionFailure>),
    /// The sandbox did not take an interrupt.
    #[error("The interrupt could not be delivered: the sandbox did not answer ({0}).")]
    InterruptUndelivered(String),
    /// The pool could not serve the request.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The URL's path or query cannot be used.
    #[error("invalid URL: {0}")]
    InvalidUrl(String),
    /// A files request for a user without a session (so without files).
    #[error("user {user} has no session, so no files: upload a file or run code first")]
    NoSession {
        /// The user asked for.
        user: String,
    },
    /// A file operation was refused or failed.
    #[error(transparent)]
    Files(#[from] FilesError),
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooLarge { .. } | ApiError::CodeTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Execution(_) => StatusCode::BAD_REQUEST,
            ApiError::Unresponsive(_) | ApiError::InterruptUndelivered(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Pool(PoolError::Released | PoolError::KernelLost) => StatusCode::CONFLICT,
            ApiError::Pool(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InvalidUrl(_) => StatusCode::BAD_REQUEST,
            ApiError::NoSession { .. } => StatusCode::NOT_FOUND,
            ApiError::Files(err) => files_status(err),
        }
    }

    /// The answer of an error that is only a `detail` (every one but a validation or execution failure).
    pub fn detail(&self) -> Detail {
        let detail = match self {
            ApiError::Pool(err) => error_chain(err),
            other => other.to_string(),
        };
        Detail { detail }
    }
}

/// Refusals are 4xx (bad paths 400, missing 404, not empty 409, too big or full 413); only an unexpected system
/// failure is a 500.
fn files_status(err: &FilesError) -> StatusCode {
    match err {
        FilesError::NotFound { .. } => StatusCode::NOT_FOUND,
        FilesError::NotEmpty { .. } => StatusCode::CONFLICT,
        FilesError::TooLarge { .. } | FilesError::NoSpace { .. } | FilesError::MemoryFull => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        FilesError::System { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        FilesError::Path(_)
        | FilesError::Symlink { .. }
        | FilesError::Outside { .. }
        | FilesError::NotRegular { .. }
        | FilesError::IsDirectory { .. }
        | FilesError::NotADirectory { .. }
        | FilesError::BodyCut(_) => StatusCode::BAD_REQUEST,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status_code();
        match self {
            ApiError::Validation(detail) => (status, Json(ValidationErrors { detail })).into_response(),
            ApiError::Execution(body) | ApiError::Unresponsive(body) => (status, Json(body)).into_response(),
            other => (status, Json(other.detail())).into_response(),
        }
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
