//! The API's request and answer bodies as types: answers are serialized from them (field order is the
//! contract's), and the OpenAPI document describes them (`ToSchema`). Requests are parsed by `body.rs`, which
//! reproduces FastAPI's 422 answers; their types here only describe them.

use kernel::{ErrorInfo, MimeBundle, Output, StreamName};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::launcher::Exit;
use crate::pool::End;

/// The body of `POST /execute` and `POST /execute/stream`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"user_uuid": "alice", "code": "x = 41\nprint(\"hello\")\nx + 1"}))]
pub struct ExecuteRequest {
    /// The user whose session runs the code; the first request of a user binds a sandbox to it.
    #[schema(min_length = 1, max_length = 256)]
    pub user_uuid: String,
    /// Python source, at most `code_limit_kib` (1 MiB by default) bytes; larger is 413.
    pub code: String,
}

/// The body of `POST /release` and `POST /interrupt`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"user_uuid": "alice"}))]
pub struct UserRequest {
    /// The user whose session is meant.
    #[schema(min_length = 1, max_length = 256)]
    pub user_uuid: String,
}

/// What every answer of an execution carries, success or failure.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunRecord {
    /// Every output in the order the kernel emitted it, after the output limit's cuts.
    pub outputs: Vec<OutputBody>,
    /// The kernel's execution counter (as in a notebook); null when the kernel did not reply.
    #[schema(required = true)]
    pub execution_count: Option<i64>,
    /// Wall time of the execution in milliseconds.
    pub duration_ms: f64,
    /// True when the outputs passed `output_limit_kib` (5 MiB): the output crossing the limit is cut with a
    /// marker, later ones are dropped (errors are kept).
    pub output_truncated: bool,
    /// The files this run wrote (created or changed) in `/sandbox`, sorted by path; empty when none.
    pub files: Vec<WrittenFile>,
}

/// A file a run wrote in `/sandbox`.
#[derive(Debug, Serialize, ToSchema)]
pub struct WrittenFile {
    /// Its path below `/sandbox`, e.g. `out/result.csv`.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
}

/// `200` of `POST /execute`: the code ran to its end.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"result_text": "hello\n42", "result_base64": null, "outputs": [
    {"type": "stream", "name": "stdout", "text": "hello\n"},
    {"type": "execute_result", "data": {"text/plain": "42"}, "execution_count": 1}],
    "execution_count": 1, "duration_ms": 4.1, "output_truncated": false, "files": []}))]
pub struct ExecuteAnswer {
    /// Stdout, then the value of the last expression (`text/plain`), in the order emitted; null if none.
    #[schema(required = true)]
    pub result_text: Option<String>,
    /// The last PNG the code displayed (`plt.show()`), base64; null if none.
    #[schema(required = true)]
    pub result_base64: Option<String>,
    /// Outputs, counter, duration, truncation.
    #[serde(flatten)]
    pub run: RunRecord,
}

/// `400` (or `504`) of `POST /execute`: the code raised, timed out or lost its kernel.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"detail": "Python Execution Error: ZeroDivisionError: division by zero",
    "reason": "error", "state_lost": false,
    "error": {"ename": "ZeroDivisionError", "evalue": "division by zero", "traceback": ["..."]},
    "outputs": [{"type": "error", "ename": "ZeroDivisionError", "evalue": "division by zero",
    "traceback": ["..."]}], "execution_count": 2, "duration_ms": 3.2, "output_truncated": false, "files": []}))]
pub struct ExecutionFailure {
    /// What happened, e.g. `Python Execution Error: <ename>: <evalue>` (the original's text).
    pub detail: String,
    /// Why the execution failed.
    pub reason: Reason,
    /// Whether the session's variables are gone (the next request gets a fresh interpreter).
    pub state_lost: bool,
    /// The exception, when the code raised (reason `error`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// Outputs, counter, duration, truncation.
    #[serde(flatten)]
    pub run: RunRecord,
}

/// Why an execution failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The code raised; `error` has the traceback; state kept.
    Error,
    /// Ran past the execution timeout and was interrupted (`KeyboardInterrupt`); state kept.
    Timeout,
    /// Ran past the timeout and ignored the interrupt: the kernel was replaced; state lost.
    TimeoutRestarted,
    /// The kernel exited or was killed (also while the session was idle: then the code was not run); state lost.
    KernelDied,
    /// The kernel was killed at the sandbox's memory limit; state lost.
    OutOfMemory,
    /// The code hit the sandbox's process/thread limit: the session's processes were killed; state lost.
    PidsLimit,
    /// The sandbox stopped answering (a `504`): it was replaced; state lost.
    Unresponsive,
}

impl Reason {
    /// The reason of a failed execution; `None` for one that ended well.
    pub fn of(end: &End) -> Option<Reason> {
        Some(match end {
            End::Ok => return None,
            End::Error(_) => Reason::Error,
            End::Timeout => Reason::Timeout,
            End::TimeoutRestarted => Reason::TimeoutRestarted,
            End::Died(Exit::OutOfMemory) | End::DiedIdle(Exit::OutOfMemory) => Reason::OutOfMemory,
            End::Died(Exit::PidsLimit) | End::DiedIdle(Exit::PidsLimit) | End::PidsLimit => Reason::PidsLimit,
            End::Died(_) | End::DiedIdle(_) => Reason::KernelDied,
            End::Unresponsive(_) => Reason::Unresponsive,
        })
    }
}

/// An exception raised by the code.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Exception class, e.g. `ZeroDivisionError`.
    pub ename: String,
    /// Exception message.
    pub evalue: String,
    /// Formatted traceback lines (may contain ANSI colour codes).
    pub traceback: Vec<String>,
}

impl From<&ErrorInfo> for ErrorBody {
    fn from(error: &ErrorInfo) -> ErrorBody {
        ErrorBody { ename: error.ename.clone(), evalue: error.evalue.clone(), traceback: error.traceback.clone() }
    }
}

/// One output of an execution, as the kernel emitted it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputBody {
    /// Text written to stdout or stderr (possibly part of a line).
    Stream {
        /// Which stream.
        name: StreamKind,
        /// The text.
        text: String,
    },
    /// A rich display (`display(...)`, `plt.show()`): the whole MIME bundle.
    DisplayData {
        /// MIME type to data: `text/plain`, `image/png` (base64), `text/html`, ...
        #[schema(value_type = Object)]
        data: MimeBundle,
        /// MIME type to metadata (e.g. an image's size); absent when empty.
        #[serde(skip_serializing_if = "MimeBundle::is_empty")]
        #[schema(value_type = Object)]
        metadata: MimeBundle,
    },
    /// The value of the last expression.
    ExecuteResult {
        /// MIME type to data.
        #[schema(value_type = Object)]
        data: MimeBundle,
        /// The `Out[n]` number.
        execution_count: i64,
        /// MIME type to metadata; absent when empty.
        #[serde(skip_serializing_if = "MimeBundle::is_empty")]
        #[schema(value_type = Object)]
        metadata: MimeBundle,
    },
    /// An exception raised by the code.
    Error(ErrorBody),
    /// Clear the previous output (`wait`: only when the next output arrives).
    ClearOutput {
        /// Delay clearing until new output arrives.
        wait: bool,
    },
    /// Replaces an earlier display.
    UpdateDisplayData {
        /// MIME type to data.
        #[schema(value_type = Object)]
        data: MimeBundle,
        /// MIME type to metadata; absent when empty.
        #[serde(skip_serializing_if = "MimeBundle::is_empty")]
        #[schema(value_type = Object)]
        metadata: MimeBundle,
    },
}

/// The stream a `stream` output was written to.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StreamKind {
    /// `sys.stdout`.
    Stdout,
    /// `sys.stderr`.
    Stderr,
}

impl From<Output> for OutputBody {
    fn from(output: Output) -> OutputBody {
        match output {
            Output::Stream { name, text } => OutputBody::Stream {
                name: match name {
                    StreamName::Stdout => StreamKind::Stdout,
                    StreamName::Stderr => StreamKind::Stderr,
                },
                text,
            },
            Output::DisplayData { data, metadata } => OutputBody::DisplayData { data, metadata },
            Output::ExecuteResult { data, metadata, execution_count } => {
                OutputBody::ExecuteResult { data, execution_count, metadata }
            }
            Output::Error(error) => OutputBody::Error(ErrorBody::from(&error)),
            Output::ClearOutput { wait } => OutputBody::ClearOutput { wait },
            Output::UpdateDisplayData { data, metadata, .. } => OutputBody::UpdateDisplayData { data, metadata },
        }
    }
}

/// An answer that only says what happened (`401`, `413`, `503`, ...).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"detail": "Invalid or missing authentication token"}))]
pub struct Detail {
    /// What happened, in words.
    pub detail: String,
}

/// `422`: the body is not JSON, lacks a field or has a wrong type (FastAPI's shape).
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"detail": [{"type": "missing", "loc": ["body", "user_uuid"], "msg": "Field required",
    "input": {"code": "1"}}]}))]
pub struct ValidationErrors {
    /// One entry per problem.
    pub detail: Vec<ValidationError>,
}

/// One problem of a request body, as FastAPI (pydantic) names it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ValidationError {
    /// The kind: `json_invalid`, `missing`, `model_attributes_type`, `string_type`, `string_too_short`,
    /// `string_too_long`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Where: `["body"]`, `["body", "<field>"]`, or `["body", <column>]` for invalid JSON.
    pub loc: Vec<Location>,
    /// The problem in words.
    pub msg: String,
    /// The offending value (or `{}` for invalid JSON).
    #[schema(value_type = Value)]
    pub input: Value,
    /// Details, e.g. `{"min_length": 1}` or the JSON parser's error.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub ctx: Option<Value>,
}

/// One step of a `loc`: a key or a position.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(untagged)]
pub enum Location {
    /// `body` or a field name.
    Key(&'static str),
    /// A column of invalid JSON.
    Index(usize),
}

/// `200` of `POST /release`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "ok", "detail": "Worker for user alice has been released."}))]
pub struct ReleaseAnswer {
    /// Always `ok`.
    pub status: &'static str,
    /// `Worker for user <user_uuid> has been released.`
    pub detail: String,
}

/// `200` of `POST /interrupt`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "ok", "interrupted": true,
    "detail": "The running execution of user alice was interrupted; its state is kept."}))]
pub struct InterruptAnswer {
    /// Always `ok`.
    pub status: &'static str,
    /// Whether anything was running.
    pub interrupted: bool,
    /// What was done, in words.
    pub detail: String,
}

/// `200` of `GET /status`: the pool's counts.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"total_workers": 5, "busy_workers": 0, "idle_workers_in_pool": 5,
    "is_initializing": false}))]
pub struct StatusAnswer {
    /// Sandboxes alive or starting.
    pub total_workers: usize,
    /// Sandboxes bound to a user.
    pub busy_workers: usize,
    /// Warm sandboxes ready for new users.
    pub idle_workers_in_pool: usize,
    /// Whether the initial pool fill is still running (`/execute` answers 503 until no sandbox is ready).
    pub is_initializing: bool,
}

/// `200` of `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"status": "ok"}))]
pub struct HealthAnswer {
    /// Always `ok`.
    pub status: &'static str,
}
