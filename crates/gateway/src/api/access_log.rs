//! The access log: one line per request at info, in a `request` span carrying the method, the route and (once a
//! handler has read the body) the user, with the status and the duration. Never the code or its outputs.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// Logs `request` once it is answered.
pub(super) async fn log_request(matched: Option<MatchedPath>, request: Request, next: Next) -> Response {
    let route = matched.map_or_else(|| request.uri().path().to_owned(), |m| m.as_str().to_owned());
    let span = tracing::info_span!("request", method = %request.method(), %route, user = tracing::field::Empty);
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    span.in_scope(|| tracing::info!(status = response.status().as_u16(), ms, "answered"));
    response
}

/// Names the request's user in its access-log line (call from a handler, once the body is read).
pub(super) fn record_user(user: &str) {
    tracing::Span::current().record("user", user);
}
