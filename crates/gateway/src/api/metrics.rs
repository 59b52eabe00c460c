//! `GET /metrics`: the Prometheus scrape, in the OpenMetrics text format when the scraper asks for it (`Accept`),
//! else the Prometheus text format 0.0.4.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::AppState;

/// `GET /metrics`.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(metrics))
}

/// The service's Prometheus metrics: sessions by state, executions by `reason`, execution and sandbox-start
/// latency histograms, sandbox terminations by reason, HTTP requests by route and status. Served here with the
/// token unless `metrics_listen` gives it a listener of its own (then without a token, and not here).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    responses((status = 200, description = "The metrics in the Prometheus text format 0.0.4, or OpenMetrics 1.0 \
        when `Accept` asks for `application/openmetrics-text`.", content_type = "text/plain", body = String))
)]
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|accept| accept.to_str().is_ok_and(|accept| accept.contains("application/openmetrics-text")));
    let (content_type, body) = state.metrics.encode(state.pool.census(), openmetrics);
    ([(header::CONTENT_TYPE, content_type)], body)
}
