//! The HTTP API: one router per resource, token check, CORS. Knows HTTP, nothing of kernels.

mod access_log;
mod body;
mod console;
mod error;
mod execute;
mod health;
mod sessions;
mod stream;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tower_http::cors::CorsLayer;

pub use error::ApiError;

use crate::pool::Pool;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The sessions.
    pub pool: Pool,
    /// The token every protected endpoint requires in `X-Auth-Token`.
    pub token: Arc<str>,
    /// The memory limit per sandbox, for messages.
    pub memory_limit_mib: u64,
    /// Largest code accepted; larger is 413.
    pub code_limit_bytes: usize,
}

impl AppState {
    /// Largest request body read: room for the code with every character JSON-escaped, plus the other fields.
    fn body_limit(&self) -> usize {
        self.code_limit_bytes.saturating_mul(6).saturating_add(64 * 1024)
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .merge(execute::router())
        .merge(stream::router())
        .merge(sessions::router())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(protected)
        .merge(health::router())
        .merge(console::router())
        .layer(middleware::from_fn(access_log::log_request))
        .layer(CorsLayer::permissive())
        .with_state(state)
}

/// Answers 401 unless the request carries the right `X-Auth-Token`.
async fn require_token(State(state): State<AppState>, request: Request, next: Next) -> Result<Response, ApiError> {
    let given = request.headers().get("x-auth-token").map(|v| v.as_bytes()).unwrap_or_default();
    if constant_time_eq(given, state.token.as_bytes()) {
        Ok(next.run(request).await)
    } else {
        Err(ApiError::Unauthorized)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
