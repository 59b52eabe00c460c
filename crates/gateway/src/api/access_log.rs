//! The access log: one line per request at info, in a `request` span carrying the method, the route and (once a
//! handler has read the body) the user, with the status and the duration. Never the code or its outputs. Each
//! request is also counted in the metrics by route template and status.

use std::borrow::Cow;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::metrics::{Metrics, UNMATCHED_ROUTE};

/// Logs `request` once it is answered, and counts it.
pub(super) async fn log_request(
    State(metrics): State<Metrics>,
    matched: Option<MatchedPath>,
    request: Request,
    next: Next,
) -> Response {
    // The log shows an unmatched request's path; the metrics a fixed label, so their label sets stay bounded.
    let logged_route = matched.as_ref().map_or(request.uri().path(), MatchedPath::as_str);
    let span =
        tracing::info_span!("request", method = %request.method(), route = %logged_route, user = tracing::field::Empty);
    let route: Cow<'static, str> = matched.map_or(Cow::Borrowed(UNMATCHED_ROUTE), |m| m.as_str().to_owned().into());
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let status = response.status().as_u16();
    span.in_scope(|| tracing::info!(status, ms, "answered"));
    metrics.http_request(route, status);
    response
}

/// Names the request's user in its access-log line (call from a handler, once the body is read).
pub(super) fn record_user(user: &str) {
    tracing::Span::current().record("user", user);
}
