//! `POST /execute`: run code in the user's session and answer in the original's shape plus the additive fields.

use axum::body::Body;
use axum::extract::State;
use axum::Json;
use kernel::{Output, StreamName};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::bodies::{
    Detail, ErrorBody, ExecuteAnswer, ExecuteRequest, ExecutionFailure, Reason, RunRecord, WrittenFile,
};
use super::body::{string_fields, Field, USER_FIELD};
use super::{ApiError, AppState};
use crate::launcher::Exit;
use crate::pool::{End, Execution};

/// `POST /execute`.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(execute))
}

/// Runs the code in the user's session and answers once it has ended.
///
/// The first request of a `user_uuid` binds a sandbox to it; later requests run in the same interpreter, so
/// variables, imports and functions persist. Requests of one user run one at a time in arrival order; different
/// users run in parallel. After a lost state (`state_lost: true`) the next request of that user gets a fresh
/// interpreter.
#[utoipa::path(
    post,
    path = "/execute",
    tag = "execution",
    request_body = ExecuteRequest,
    responses(
        (status = 200, description = "The code ran to its end.", body = ExecuteAnswer),
        (status = 400, description = "The code raised, timed out, or its kernel died; `reason` says which and \
            `state_lost` whether the session's variables are gone.", body = ExecutionFailure),
        (status = 409, description = "The session was released while this request waited for it.", body = Detail),
        (status = 503, description = "No sandbox can be had now: the pool is full, or still initializing (the \
            detail says which).", body = Detail),
        (status = 504, description = "The sandbox stopped answering: it was replaced and the state was lost \
            (reason `unresponsive`).", body = ExecutionFailure),
    )
)]
async fn execute(State(state): State<AppState>, body: Body) -> Result<Json<ExecuteAnswer>, ApiError> {
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
pub(super) fn answer(execution: Execution, memory_limit_mib: u64) -> Result<Json<ExecuteAnswer>, ApiError> {
    let detail = match &execution.end {
        End::Ok => None,
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
    let Some((detail, reason)) = detail.zip(Reason::of(&execution.end)) else {
        let result_text = result_text(&execution.outputs);
        let result_base64 = last_png(&execution.outputs);
        return Ok(Json(ExecuteAnswer { result_text, result_base64, run: run_record(execution) }));
    };
    let failure = Box::new(ExecutionFailure {
        detail,
        reason,
        state_lost: execution.end.state_lost(),
        error: match &execution.end {
            End::Error(error) => Some(ErrorBody::from(error)),
            _ => None,
        },
        run: run_record(execution),
    });
    match failure.reason {
        Reason::Unresponsive => Err(ApiError::Unresponsive(failure)),
        _ => Err(ApiError::Execution(failure)),
    }
}

/// The outputs, counter, duration and truncation flag every answer of an execution carries.
fn run_record(execution: Execution) -> RunRecord {
    RunRecord {
        outputs: execution.outputs.into_iter().map(Into::into).collect(),
        execution_count: execution.execution_count,
        duration_ms: execution.duration.as_secs_f64() * 1e3,
        output_truncated: execution.output_truncated,
        files: execution.files.into_iter().map(|file| WrittenFile { path: file.path, size: file.size }).collect(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use kernel::ErrorInfo;
    use serde_json::Map;
    use std::time::Duration;

    /// The answer's status and body as the client reads them.
    fn sent(execution: Execution, memory_limit_mib: u64) -> (u16, Value) {
        match answer(execution, memory_limit_mib) {
            Ok(Json(body)) => (200, serde_json::to_value(body).unwrap()),
            Err(ApiError::Execution(body)) => (400, serde_json::to_value(body).unwrap()),
            Err(ApiError::Unresponsive(body)) => (504, serde_json::to_value(body).unwrap()),
            Err(other) => panic!("not an execution's answer: {other:?}"),
        }
    }

    fn keys(body: &Value) -> Vec<&str> {
        body.as_object().unwrap().keys().map(String::as_str).collect()
    }

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
        let (status, body) = sent(finished(outputs, End::Ok), 1024);
        assert_eq!(status, 200);
        assert_eq!(body["result_text"], "a\n42");
        assert_eq!(body["result_base64"], "second");
        assert_eq!(body["outputs"].as_array().unwrap().len(), 5);
        assert_eq!(body["outputs"][1]["name"], "stderr");
        assert_eq!(body["execution_count"], 3);
        let expected =
            ["result_text", "result_base64", "outputs", "execution_count", "duration_ms", "output_truncated", "files"];
        assert_eq!(keys(&body), expected);
        assert_eq!(keys(&body["outputs"][2]), ["type", "data"], "empty metadata is left out");
        assert_eq!(keys(&body["outputs"][4]), ["type", "data", "execution_count"]);
    }

    /// No text and no image give nulls, as in the original.
    #[test]
    fn empty_answer_is_null() {
        let (_, body) = sent(finished(vec![], End::Ok), 1024);
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
        let (status, body) = sent(finished(vec![Output::Error(error.clone())], End::Error(error)), 1024);
        assert_eq!(status, 400);
        let expected = [
            "detail",
            "reason",
            "state_lost",
            "error",
            "outputs",
            "execution_count",
            "duration_ms",
            "output_truncated",
            "files",
        ];
        assert_eq!(keys(&body), expected);
        assert_eq!(keys(&body["outputs"][0]), ["type", "ename", "evalue", "traceback"]);
        assert_eq!(body["detail"], "Python Execution Error: ZeroDivisionError: division by zero");
        assert_eq!(body["reason"], "error");
        assert_eq!(body["state_lost"], false);
        assert_eq!(body["error"]["traceback"][0], "tb");
    }

    /// Kernel deaths are named by cause and say the state is lost.
    #[test]
    fn deaths_are_named() {
        let (_, body) = sent(finished(vec![], End::Died(Exit::OutOfMemory)), 512);
        assert_eq!(body["reason"], "out_of_memory");
        assert_eq!(body["state_lost"], true);
        assert!(body["detail"].as_str().unwrap().contains("512 MiB"));
        let (_, body) = sent(finished(vec![], End::Died(Exit::Code(1))), 512);
        assert_eq!(body["reason"], "kernel_died");
        let (_, body) = sent(finished(vec![], End::DiedIdle(Exit::Signal(9))), 512);
        assert_eq!((body["reason"].as_str(), body["state_lost"].as_bool()), (Some("kernel_died"), Some(true)));
        assert!(body["detail"].as_str().unwrap().contains("was not run"), "{body}");
        let (_, body) = sent(finished(vec![], End::Timeout), 512);
        assert_eq!((body["reason"].as_str(), body["state_lost"].as_bool()), (Some("timeout"), Some(false)));
    }

    /// Every end's `reason` in the answer is the name the pool logs, and a failure has no `error` unless it raised.
    #[test]
    fn reasons_are_the_pools_names() {
        let unresponsive = End::Unresponsive(kernel::Error::Closed);
        let ends = [
            End::Timeout,
            End::TimeoutRestarted,
            End::PidsLimit,
            End::Died(Exit::OutOfMemory),
            End::Died(Exit::PidsLimit),
            End::Died(Exit::Signal(11)),
            End::DiedIdle(Exit::Code(1)),
            unresponsive,
        ];
        for end in ends {
            let name = end.reason();
            let (status, body) = sent(finished(vec![], end), 512);
            assert_eq!(body["reason"], name);
            assert_eq!(status, if name == "unresponsive" { 504 } else { 400 });
            assert!(body.get("error").is_none(), "{body}");
        }
    }
}
