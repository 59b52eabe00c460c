//! `POST /release` and `GET /status`: the session lifecycle and the pool's counts.

use axum::body::Body;
use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::body::{string_fields, USER_FIELD};
use super::{ApiError, AppState};

/// `POST /release`, `GET /status`.
pub(super) fn router() -> Router<AppState> {
    Router::new().route("/release", post(release)).route("/status", get(status))
}

async fn release(State(state): State<AppState>, body: Body) -> Result<Json<Value>, ApiError> {
    let [user] = string_fields(body, state.body_limit(), [USER_FIELD]).await?;
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
