//! `POST /release`, `POST /interrupt` and `GET /status`: the session lifecycle and the pool's counts.

use axum::body::Body;
use axum::extract::State;
use axum::Json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::bodies::{Detail, InterruptAnswer, ReleaseAnswer, StatusAnswer, UserRequest};
use super::body::{string_fields, USER_FIELD};
use super::{ApiError, AppState};

/// `POST /release`, `POST /interrupt`, `GET /status`.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(release)).routes(routes!(interrupt)).routes(routes!(status))
}

/// Interrupts the user's running execution, as a timeout would.
///
/// Its `/execute` answers `400` with reason `error` and a `KeyboardInterrupt` traceback, and the session keeps its
/// variables; requests queued behind it run as usual. Code that ignores the interrupt (a C-level loop) still runs
/// into the execution timeout.
#[utoipa::path(
    post,
    path = "/interrupt",
    tag = "sessions",
    request_body = UserRequest,
    responses(
        (status = 200, description = "Delivered; `interrupted` says whether anything was running.",
            body = InterruptAnswer),
        (status = 504, description = "The sandbox did not take the interrupt.", body = Detail),
    )
)]
async fn interrupt(State(state): State<AppState>, body: Body) -> Result<Json<InterruptAnswer>, ApiError> {
    let [user] = string_fields(body, state.body_limit(), [USER_FIELD]).await?;
    super::access_log::record_user(&user);
    let interrupted =
        state.pool.interrupt(&user).await.map_err(|err| ApiError::InterruptUndelivered(err.to_string()))?;
    tracing::info!(%user, interrupted, "interrupt");
    let detail = if interrupted {
        format!("The running execution of user {user} was interrupted; its state is kept.")
    } else {
        format!("Nothing was running for user {user}.")
    };
    Ok(Json(InterruptAnswer { status: "ok", interrupted, detail }))
}

/// Destroys the user's sandbox at once; the warm pool is refilled in the background. Unknown users also get 200.
#[utoipa::path(
    post,
    path = "/release",
    tag = "sessions",
    request_body = UserRequest,
    responses((status = 200, description = "Released (or there was nothing to release).", body = ReleaseAnswer))
)]
async fn release(State(state): State<AppState>, body: Body) -> Result<Json<ReleaseAnswer>, ApiError> {
    let [user] = string_fields(body, state.body_limit(), [USER_FIELD]).await?;
    super::access_log::record_user(&user);
    let existed = state.pool.release(&user).await;
    tracing::info!(%user, existed, "release");
    Ok(Json(ReleaseAnswer { status: "ok", detail: format!("Worker for user {user} has been released.") }))
}

/// The pool's counts: all sandboxes, those bound to a user, the warm ones, and whether the initial fill is running.
#[utoipa::path(
    get,
    path = "/status",
    tag = "sessions",
    responses((status = 200, description = "The pool's counts.", body = StatusAnswer))
)]
async fn status(State(state): State<AppState>) -> Json<StatusAnswer> {
    let status = state.pool.status();
    Json(StatusAnswer {
        total_workers: status.total,
        busy_workers: status.busy,
        idle_workers_in_pool: status.idle,
        is_initializing: status.initializing,
    })
}
