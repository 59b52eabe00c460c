//! `GET /health`: the liveness probe, the one endpoint without a token.

use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::bodies::HealthAnswer;
use super::AppState;

/// `GET /health`.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health))
}

/// A liveness probe: answers as long as the server serves. Needs no token.
#[utoipa::path(
    get,
    path = "/health",
    tag = "service",
    responses((status = 200, description = "The server is up.", body = HealthAnswer))
)]
async fn health() -> Json<HealthAnswer> {
    Json(HealthAnswer { status: "ok" })
}
