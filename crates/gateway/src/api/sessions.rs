//! `POST /release`, `POST /interrupt` and `GET /status`: the session lifecycle and the pool's counts.

use axum::body::Body;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::body::{string_fields, USER_FIELD};
use super::{ApiError, AppState};

/// `POST /release`, `POST /interrupt`, `GET /status`.
pub(super) fn router() -> Router<AppState> {
    Router::new().route("/release", post(release)).route("/interrupt", post(interrupt)).route("/status", get(status))
}

/// Interrupts the user's running execution: it ends with `KeyboardInterrupt` (reason `error`), state kept.
async fn interrupt(State(state): State<AppState>, body: Body) -> Result<Json<Value>, ApiError> {
    let [user] = string_fields(body, state.body_limit(), [USER_FIELD]).await?;
    super::access_log::record_user(&user);
    let interrupted = match state.pool.interrupt(&user).await {
        Ok(interrupted) => interrupted,
        Err(err) => {
            let detail = format!("The interrupt could not be delivered: the sandbox did not answer ({err}).");
            return Err(ApiError::Unresponsive(Box::new(json!({ "detail": detail }))));
        }
    };
    tracing::info!(%user, interrupted, "interrupt");
    let detail = if interrupted {
        format!("The running execution of user {user} was interrupted; its state is kept.")
    } else {
        format!("Nothing was running for user {user}.")
    };
    Ok(Json(json!({ "status": "ok", "interrupted": interrupted, "detail": detail })))
}

async fn release(State(state): State<AppState>, body: Body) -> Result<Json<Value>, ApiError> {
    let [user] = string_fields(body, state.body_limit(), [USER_FIELD]).await?;
    super::access_log::record_user(&user);
    let existed = state.pool.release(&user).await;
    tracing::info!(%user, existed, "release");
    Ok(Json(json!({
        "status": "ok",
        "detail": format!("Worker for user {user} has been released."),
    })))
}

async fn status(State(state): State<AppState>) -> Json<Value> {
    let status = state.pool.status();
    Json(json!({
        "total_workers": status.total,
        "busy_workers": status.busy,
        "idle_workers_in_pool": status.idle,
        "is_initializing": status.initializing,
    }))
}
