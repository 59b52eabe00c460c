//! `POST /execute/stream`: the same body as `/execute`, answered with Server-Sent Events: an `output` event per
//! output as the kernel emits it (as the `outputs` list shows it), then one `result` event whose data is exactly
//! the body `/execute` would have returned.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::stream::{self, Stream};
use kernel::Output;
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::bodies::{Detail, ExecuteAnswer, ExecuteRequest, OutputBody};
use super::execute::{answer, user_and_code};
use super::{ApiError, AppState};

/// `POST /execute/stream`.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(execute_stream))
}

/// Runs the code like `POST /execute`, answering with Server-Sent Events as it runs.
///
/// An `output` event per output as the kernel emits it (its data is one entry of `outputs`, after the output
/// limit's cuts), then one `result` event whose data is exactly the body `/execute` would have returned: an
/// `ExecuteAnswer`, or an `ExecutionFailure` (with `reason` and `detail`), or, when no sandbox could be had, a
/// `Detail` such as `/execute`'s 503 (the stream has already started with status 200). A bad body gets the same
/// 4xx as `/execute` before any event.
#[utoipa::path(
    post,
    path = "/execute/stream",
    tag = "execution",
    request_body = ExecuteRequest,
    responses(
        (status = 200, description = "A stream of `output` events, then one `result` event.",
            content_type = "text/event-stream", body = String,
            example = "event: output\ndata: {\"type\":\"stream\",\"name\":\"stdout\",\"text\":\"0\\n\"}\n\n\
                event: result\ndata: {\"result_text\":\"0\\n\",\"result_base64\":null,\"outputs\":[...],\
                \"execution_count\":3,\"duration_ms\":4.2,\"output_truncated\":false}\n\n"),
    )
)]
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
fn final_body(answer: Result<Json<ExecuteAnswer>, ApiError>) -> String {
    match answer {
        Ok(Json(body)) => event_data(&body),
        Err(ApiError::Execution(body) | ApiError::Unresponsive(body)) => event_data(&body),
        Err(other) => event_data(&other.detail()),
    }
}

/// A body as an event's data: one line of JSON.
fn event_data(body: &impl Serialize) -> String {
    serde_json::to_string(body).unwrap_or_else(|err| json!({ "detail": format!("unserializable: {err}") }).to_string())
}

/// Each output as it comes, then the result once the execution has ended (its tap closed).
fn events(
    outputs: mpsc::UnboundedReceiver<Output>,
    run: tokio::task::JoinHandle<String>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(Some((outputs, run)), |state| async move {
        let (mut outputs, run) = state?;
        match outputs.recv().await {
            Some(output) => {
                let event = Event::default().event("output").data(event_data(&OutputBody::from(output)));
                Some((Ok(event), Some((outputs, run))))
            }
            None => {
                let failed = |err| event_data(&Detail { detail: format!("the execution failed: {err}") });
                let body = run.await.unwrap_or_else(failed);
                Some((Ok(Event::default().event("result").data(body)), None))
            }
        }
    })
}
