//! `GET /metrics`: the Prometheus scrape, in the OpenMetrics text format when the scraper asks for it (`Accept`),
//! else the Prometheus text format 0.0.4.

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use super::AppState;

/// `GET /metrics`.
pub(super) fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|accept| accept.to_str().is_ok_and(|accept| accept.contains("application/openmetrics-text")));
    let (content_type, body) = state.metrics.encode(state.pool.census(), openmetrics);
    ([(header::CONTENT_TYPE, content_type)], body)
}
