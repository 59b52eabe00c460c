//! The HTTP API: one router per resource, token check, CORS. Knows HTTP, nothing of kernels.

mod access_log;
pub mod bodies;
mod body;
mod console;
mod error;
mod execute;
mod files;
mod health;
mod metrics;
mod openapi;
mod sessions;
mod stream;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use tower_http::cors::CorsLayer;
use utoipa_axum::router::OpenApiRouter;

pub use error::ApiError;

use crate::metrics::Metrics;
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
    /// The service's metrics: requests are counted here, `/metrics` shows them.
    pub metrics: Metrics,
    /// Whether `/metrics` is served here (with the token); false when `metrics_listen` gives it a listener of its
    /// own ([`metrics_router`]).
    pub metrics_on_api: bool,
    /// Largest upload to `/files` accepted; larger is 413.
    pub file_limit_bytes: u64,
}

impl AppState {
    /// Largest request body read: room for the code with every character JSON-escaped, plus the other fields.
    fn body_limit(&self) -> usize {
        self.code_limit_bytes.saturating_mul(6).saturating_add(64 * 1024)
    }
}

/// The whole API. Every route is added through an `OpenApiRouter` with `utoipa_axum::routes!`, which registers it
/// together with its `#[utoipa::path]` documentation: `/openapi.json` lists exactly the routes served (a unit
/// test in `openapi/tests.rs` holds the router to that).
pub fn router(state: AppState) -> Router {
    let mut protected = OpenApiRouter::new()
        .merge(execute::router())
        .merge(stream::router())
        .merge(sessions::router())
        .merge(files::router());
    if state.metrics_on_api {
        protected = protected.merge(metrics::router());
    }
    let protected =
        openapi::requiring_token(protected).route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    let (routes, document) = OpenApiRouter::with_openapi(openapi::base_document())
        .merge(protected)
        .merge(health::router())
        .merge(openapi::router())
        .merge(console::router())
        .split_for_parts();
    let document = openapi::with_body_refusals(openapi::with_openapi_templates(document));
    routes
        .layer(openapi::serving(&document))
        .layer(middleware::from_fn_with_state(state.metrics.clone(), access_log::log_request))
        .layer(CorsLayer::permissive())
        .with_state(state)
}

/// `GET /metrics` alone, without a token: for the listener of its own that `metrics_listen` configures.
pub fn metrics_router(state: AppState) -> Router {
    Router::from(metrics::router())
        .layer(middleware::from_fn_with_state(state.metrics.clone(), access_log::log_request))
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
