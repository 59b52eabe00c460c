//! `POST /execute/stream`: the same body as `/execute`, answered with Server-Sent Events: an `output` event per
//! output as the kernel emits it (as the `outputs` list shows it), then one `result` event whose data is exactly
//! the body `/execute` would have returned.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::post;
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use kernel::Output;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::execute::{answer, output_json, user_and_code};
use super::{ApiError, AppState};

/// `POST /execute/stream`.
pub(super) fn router() -> Router<AppState> {
    Router::new().route("/execute/stream", post(execute_stream))
}

async fn execute_stream(
    State(state): State<AppState>,
    body: Body,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    // A bad body is refused before the stream starts, with the same status as `/execute`.
    let (user, code) = user_and_code(&state, body).await?;
    let (tap, outputs) = mpsc::unbounded_channel();
    let memory_limit_mib = state.memory_limit_mib;
    let run = tokio::spawn(async move {
        let result = state.pool.execute_streamed(&user, code, Some(tap)).await;
        final_body(result.map_err(ApiError::from).and_then(|execution| answer(execution, memory_limit_mib)))
    });
    Ok(Sse::new(events(outputs, run)).keep_alive(KeepAlive::default()))
}

/// What `/execute` would have answered, as the final event's data.
fn final_body(answer: Result<Json<Value>, ApiError>) -> Value {
    match answer {
        Ok(Json(body)) => body,
        Err(ApiError::Execution(body) | ApiError::Unresponsive(body)) => *body,
        Err(ApiError::Pool(err)) => json!({ "detail": crate::pool::error_chain(&err) }),
        Err(other) => json!({ "detail": other.to_string() }),
    }
}

/// Each output as it comes, then the result once the execution has ended (its tap closed).
fn events(
    outputs: mpsc::UnboundedReceiver<Output>,
    run: tokio::task::JoinHandle<Value>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(Some((outputs, run)), |state| async move {
        let (mut outputs, run) = state?;
        match outputs.recv().await {
            Some(output) => {
                let event = Event::default().event("output").data(output_json(&output).to_string());
                Some((Ok(event), Some((outputs, run))))
            }
            None => {
                let body = run.await.unwrap_or_else(|err| json!({ "detail": format!("the execution failed: {err}") }));
                Some((Ok(Event::default().event("result").data(body.to_string())), None))
            }
        }
    })
}
