//! `POST /execute`: run code in the user's session and answer in the original's shape plus the additive fields.

use axum::body::Body;
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use kernel::{ErrorInfo, Output, StreamName};
use serde_json::{json, Map, Value};

use super::body::{string_fields, Field, USER_FIELD};
use super::{ApiError, AppState};
use crate::launcher::Exit;
use crate::pool::{End, Execution};

/// `POST /execute`.
pub(super) fn router() -> Router<AppState> {
    Router::new().route("/execute", post(execute))
}

async fn execute(State(state): State<AppState>, body: Body) -> Result<Json<Value>, ApiError> {
    let (user, code) = user_and_code(&state, body).await?;
    let execution = state.pool.execute(&user, code).await?;
    answer(execution, state.memory_limit_mib)
}

/// The body of `/execute` and `/execute/stream`: the user and the code, within the code limit.
pub(super) async fn user_and_code(state: &AppState, body: Body) -> Result<(String, String), ApiError> {
    let code_field = Field { name: "code", min: 0, max: usize::MAX };
    let [user, code] = string_fields(body, state.body_limit(), [USER_FIELD, code_field]).await?;
    if code.len() > state.code_limit_bytes {
        return Err(ApiError::CodeTooLarge { size: code.len(), limit: state.code_limit_bytes });
    }
    super::access_log::record_user(&user);
    tracing::debug!(%user, %code, "execute");
    Ok((user, code))
}

/// The 200 body, or the 400/504 body, of a finished execution.
pub(super) fn answer(execution: Execution, memory_limit_mib: u64) -> Result<Json<Value>, ApiError> {
    let outputs: Vec<Value> = execution.outputs.iter().map(output_json).collect();
    let mut body = Map::new();
    let detail = match &execution.end {
        End::Ok => {
            body.insert("result_text".into(), result_text(&execution.outputs).map_or(Value::Null, Value::String));
            body.insert("result_base64".into(), last_png(&execution.outputs).map_or(Value::Null, Value::String));
            None
        }
        End::Error(error) => Some(format!("Python Execution Error: {}: {}", error.ename, error.evalue)),
        End::Timeout => Some(format!(
            "Execution timed out after {} s: the code was interrupted and the session's state was kept.",
            execution.limits.timeout.as_secs_f64()
        )),
        End::TimeoutRestarted => Some(format!(
            "Execution timed out after {} s and did not stop when interrupted: the interpreter was restarted and \
             the session's state was lost.",
            execution.limits.timeout.as_secs_f64()
        )),
        End::PidsLimit | End::Died(Exit::PidsLimit) => Some(format!(
            "The code hit the sandbox's limit of {} processes and threads (a fork or thread bomb): every process \
             of the session was killed and the interpreter replaced; the session's state was lost.",
            execution.limits.pids
        )),
        End::Died(Exit::OutOfMemory) => Some(format!(
            "The Python kernel was killed at its memory limit of {memory_limit_mib} MiB: the session's state was \
             lost; the next request starts a fresh interpreter."
        )),
        End::DiedIdle(exit) => Some(format!(
            "The Python kernel died since the last request ({exit}): the session's state was lost and this code \
             was not run; the next request starts a fresh interpreter."
        )),
        End::Died(exit) => Some(format!(
            "The Python kernel died ({exit}): the session's state was lost; the next request starts a fresh \
             interpreter."
        )),
        End::Unresponsive(err) => {
            Some(format!("The sandbox stopped answering ({err}): it was replaced and the session's state was lost."))
        }
    };
    if let Some(detail) = &detail {
        body.insert("detail".into(), Value::String(detail.clone()));
        body.insert("reason".into(), execution.end.reason().into());
        body.insert("state_lost".into(), execution.end.state_lost().into());
        if let End::Error(error) = &execution.end {
            body.insert("error".into(), error_json(error));
        }
    }
    body.insert("outputs".into(), Value::Array(outputs));
    body.insert("execution_count".into(), execution.execution_count.map_or(Value::Null, Value::from));
    body.insert("duration_ms".into(), json!(execution.duration.as_secs_f64() * 1e3));
    body.insert("output_truncated".into(), execution.output_truncated.into());
    let files = execution.files.iter().map(|file| json!({ "path": file.path, "size": file.size })).collect();
    body.insert("files".into(), Value::Array(files));
    match execution.end {
        End::Ok => Ok(Json(Value::Object(body))),
        End::Unresponsive(_) => Err(ApiError::Unresponsive(Box::new(Value::Object(body)))),
        _ => Err(ApiError::Execution(Box::new(Value::Object(body)))),
    }
}

/// Stdout and the last expression's `text/plain`, in the order the kernel emitted them; `None` if neither.
fn result_text(outputs: &[Output]) -> Option<String> {
    let mut text: Option<String> = None;
    for output in outputs {
        let piece = match output {
            Output::Stream { name: StreamName::Stdout, text } => text.as_str(),
            Output::ExecuteResult { data, .. } => match data.get("text/plain") {
                Some(Value::String(plain)) => plain.as_str(),
                _ => continue,
            },
            _ => continue,
        };
        text.get_or_insert_with(String::new).push_str(piece);
    }
    text
}

/// The last PNG any output carried, as the original's `result_base64`.
fn last_png(outputs: &[Output]) -> Option<String> {
    outputs.iter().rev().find_map(|output| match output {
        Output::DisplayData { data, .. } | Output::ExecuteResult { data, .. } => match data.get("image/png") {
            Some(Value::String(png)) => Some(png.trim_end().to_owned()),
            _ => None,
        },
        _ => None,
    })
}

fn error_json(error: &ErrorInfo) -> Value {
    json!({ "ename": error.ename, "evalue": error.evalue, "traceback": error.traceback })
}

/// One output as the `outputs` list shows it.
pub(super) fn output_json(output: &Output) -> Value {
    match output {
        Output::Stream { name, text } => json!({
            "type": "stream",
            "name": match name { StreamName::Stdout => "stdout", StreamName::Stderr => "stderr" },
            "text": text,
        }),
        Output::DisplayData { data, metadata } => {
            with_metadata(json!({ "type": "display_data", "data": data }), metadata)
        }
        Output::ExecuteResult { data, metadata, execution_count } => with_metadata(
            json!({ "type": "execute_result", "data": data, "execution_count": execution_count }),
            metadata,
        ),
        Output::Error(error) => {
            json!({ "type": "error", "ename": error.ename, "evalue": error.evalue, "traceback": error.traceback })
        }
        Output::ClearOutput { wait } => json!({ "type": "clear_output", "wait": wait }),
        Output::UpdateDisplayData { data, metadata, .. } => {
            with_metadata(json!({ "type": "update_display_data", "data": data }), metadata)
        }
    }
}

fn with_metadata(mut value: Value, metadata: &Map<String, Value>) -> Value {
    if !metadata.is_empty() {
        value["metadata"] = Value::Object(metadata.clone());
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn stream(name: StreamName, text: &str) -> Output {
        Output::Stream { name, text: text.into() }
    }

    fn bundle(pairs: &[(&str, &str)]) -> Map<String, Value> {
        pairs.iter().map(|(k, v)| (k.to_string(), Value::String(v.to_string()))).collect()
    }

    fn finished(outputs: Vec<Output>, end: End) -> Execution {
        Execution {
            outputs,
            execution_count: Some(3),
            duration: Duration::from_millis(5),
            end,
            output_truncated: false,
            limits: crate::pool::ExecLimits {
                timeout: Duration::from_secs(10),
                grace: Duration::from_secs(1),
                output_bytes: 1 << 20,
                pids: 64,
            },
            files: Vec::new(),
        }
    }

    /// result_text is stdout then the last expression, stderr left out; result_base64 is the last PNG.
    #[test]
    fn ok_answer_has_text_and_last_image() {
        let outputs = vec![
            stream(StreamName::Stdout, "a\n"),
            stream(StreamName::Stderr, "warn\n"),
            Output::DisplayData {
                data: bundle(&[("image/png", "first"), ("text/plain", "<Figure>")]),
                metadata: Map::new(),
            },
            Output::DisplayData { data: bundle(&[("image/png", "second\n")]), metadata: Map::new() },
            Output::ExecuteResult { execution_count: 3, data: bundle(&[("text/plain", "42")]), metadata: Map::new() },
        ];
        let Json(body) = answer(finished(outputs, End::Ok), 1024).unwrap();
        assert_eq!(body["result_text"], "a\n42");
        assert_eq!(body["result_base64"], "second");
        assert_eq!(body["outputs"].as_array().unwrap().len(), 5);
        assert_eq!(body["outputs"][1]["name"], "stderr");
        assert_eq!(body["execution_count"], 3);
        let keys: Vec<_> = body.as_object().unwrap().keys().take(2).cloned().collect();
        assert_eq!(keys, ["result_text", "result_base64"]);
    }

    /// No text and no image give nulls, as in the original.
    #[test]
    fn empty_answer_is_null() {
        let Json(body) = answer(finished(vec![], End::Ok), 1024).unwrap();
        assert_eq!(body["result_text"], Value::Null);
        assert_eq!(body["result_base64"], Value::Null);
    }

    /// An exception is a 400 with the original's detail, the reason and the traceback.
    #[test]
    fn error_answer_has_detail_and_traceback() {
        let error = ErrorInfo {
            ename: "ZeroDivisionError".into(),
            evalue: "division by zero".into(),
            traceback: vec!["tb".into()],
        };
        let Err(ApiError::Execution(body)) =
            answer(finished(vec![Output::Error(error.clone())], End::Error(error)), 1024)
        else {
            panic!("not a 400");
        };
        assert_eq!(body["detail"], "Python Execution Error: ZeroDivisionError: division by zero");
        assert_eq!(body["reason"], "error");
        assert_eq!(body["state_lost"], false);
        assert_eq!(body["error"]["traceback"][0], "tb");
    }

    /// Kernel deaths are named by cause and say the state is lost.
    #[test]
    fn deaths_are_named() {
        let Err(ApiError::Execution(body)) = answer(finished(vec![], End::Died(Exit::OutOfMemory)), 512) else {
            panic!()
        };
        assert_eq!(body["reason"], "out_of_memory");
        assert_eq!(body["state_lost"], true);
        assert!(body["detail"].as_str().unwrap().contains("512 MiB"));
        let Err(ApiError::Execution(body)) = answer(finished(vec![], End::Died(Exit::Code(1))), 512) else { panic!() };
        assert_eq!(body["reason"], "kernel_died");
        let Err(ApiError::Execution(body)) = answer(finished(vec![], End::DiedIdle(Exit::Signal(9))), 512) else {
            panic!()
        };
        assert_eq!((body["reason"].as_str(), body["state_lost"].as_bool()), (Some("kernel_died"), Some(true)));
        assert!(body["detail"].as_str().unwrap().contains("was not run"), "{body}");
        let Err(ApiError::Execution(body)) = answer(finished(vec![], End::Timeout), 512) else { panic!() };
        assert_eq!((body["reason"].as_str(), body["state_lost"].as_bool()), (Some("timeout"), Some(false)));
    }
}
