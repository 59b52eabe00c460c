//! Message contents: the requests we send, and the replies and iopub outputs we decode ([`Output`], [`ExecuteReply`]).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::Error;

/// A MIME bundle or metadata map, e.g. `{"text/plain": "2", "image/png": "aGk="}`.
pub type MimeBundle = Map<String, Value>;

/// Content of an `execute_request`.
#[derive(Debug, Serialize)]
pub(crate) struct ExecuteRequest<'a> {
    pub(crate) code: &'a str,
    pub(crate) silent: bool,
    pub(crate) store_history: bool,
    pub(crate) user_expressions: Map<String, Value>,
    pub(crate) allow_stdin: bool,
    pub(crate) stop_on_error: bool,
}

impl<'a> ExecuteRequest<'a> {
    /// A visible, history-storing request that never asks for input.
    pub(crate) fn new(code: &'a str) -> Self {
        ExecuteRequest {
            code,
            silent: false,
            store_history: true,
            user_expressions: Map::new(),
            allow_stdin: false,
            stop_on_error: true,
        }
    }
}

/// Which stream a [`Output::Stream`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamName {
    /// `sys.stdout`.
    Stdout,
    /// `sys.stderr`.
    Stderr,
}

/// An exception raised by user code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Exception class name, e.g. `ZeroDivisionError`.
    pub ename: String,
    /// Exception message.
    pub evalue: String,
    /// Formatted traceback lines (may contain ANSI colour codes).
    #[serde(default)]
    pub traceback: Vec<String>,
}

/// One output of an execution, in the order the kernel emitted it on iopub.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Text written to stdout or stderr (possibly a fragment of a line).
    Stream {
        /// Which stream.
        name: StreamName,
        /// The text.
        text: String,
    },
    /// A rich display (`display(...)`, plots).
    DisplayData {
        /// MIME type to data.
        data: MimeBundle,
        /// MIME type to metadata (e.g. image size).
        metadata: MimeBundle,
    },
    /// The value of the cell's last expression.
    ExecuteResult {
        /// The `Out[n]` number.
        execution_count: i64,
        /// MIME type to data.
        data: MimeBundle,
        /// MIME type to metadata.
        metadata: MimeBundle,
    },
    /// An exception raised by the code.
    Error(ErrorInfo),
    /// Clear previous output (`wait`: only when the next output arrives).
    ClearOutput {
        /// Delay clearing until new output arrives.
        wait: bool,
    },
    /// Replace an earlier display that had a `display_id`.
    UpdateDisplayData {
        /// MIME type to data.
        data: MimeBundle,
        /// MIME type to metadata.
        metadata: MimeBundle,
        /// The display being updated (`transient.display_id`).
        display_id: Option<String>,
    },
}

#[derive(Deserialize)]
struct StreamContent {
    name: StreamName,
    text: String,
}

#[derive(Deserialize)]
struct Transient {
    #[serde(default)]
    display_id: Option<String>,
}

#[derive(Deserialize)]
struct DisplayContent {
    #[serde(default)]
    data: MimeBundle,
    #[serde(default)]
    metadata: MimeBundle,
    #[serde(default)]
    execution_count: Option<i64>,
    #[serde(default)]
    transient: Option<Transient>,
}

#[derive(Deserialize)]
struct ClearContent {
    #[serde(default)]
    wait: bool,
}

impl Output {
    /// Decodes an iopub message into an output; `Ok(None)` for types that are not outputs (status,
    /// execute_input, comm messages, ...).
    pub fn from_iopub(msg_type: &str, content: &[u8]) -> Result<Option<Output>, Error> {
        fn de<'a, T: Deserialize<'a>>(what: &'static str, content: &'a [u8]) -> Result<T, Error> {
            serde_json::from_slice(content).map_err(|source| Error::Decode { what, source })
        }
        let output = match msg_type {
            "stream" => {
                let c: StreamContent = de("stream content", content)?;
                Output::Stream { name: c.name, text: c.text }
            }
            "display_data" => {
                let c: DisplayContent = de("display_data content", content)?;
                Output::DisplayData { data: c.data, metadata: c.metadata }
            }
            "execute_result" => {
                let c: DisplayContent = de("execute_result content", content)?;
                Output::ExecuteResult {
                    execution_count: c.execution_count.unwrap_or_default(),
                    data: c.data,
                    metadata: c.metadata,
                }
            }
            "error" => Output::Error(de("error content", content)?),
            "clear_output" => {
                let c: ClearContent = de("clear_output content", content)?;
                Output::ClearOutput { wait: c.wait }
            }
            "update_display_data" => {
                let c: DisplayContent = de("update_display_data content", content)?;
                Output::UpdateDisplayData {
                    data: c.data,
                    metadata: c.metadata,
                    display_id: c.transient.and_then(|t| t.display_id),
                }
            }
            _ => return Ok(None),
        };
        Ok(Some(output))
    }
}

/// How an execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecuteStatus {
    /// Ran to completion.
    Ok,
    /// Raised an exception (including `KeyboardInterrupt` after an interrupt).
    Error,
    /// Not run, because an earlier request failed (`stop_on_error`) or the kernel is shutting down.
    Aborted,
}

/// The `execute_reply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecuteReply {
    /// How it ended.
    pub status: ExecuteStatus,
    /// The `In[n]` number (absent for aborted requests).
    pub execution_count: Option<i64>,
    /// The exception, when `status` is `Error`.
    pub error: Option<ErrorInfo>,
}

#[derive(Deserialize)]
struct ExecuteReplyContent {
    status: ExecuteStatus,
    #[serde(default)]
    execution_count: Option<i64>,
    #[serde(default)]
    ename: Option<String>,
    #[serde(default)]
    evalue: Option<String>,
    #[serde(default)]
    traceback: Vec<String>,
}

impl ExecuteReply {
    /// Decodes `execute_reply` content.
    pub fn from_content(content: &[u8]) -> Result<Self, Error> {
        let c: ExecuteReplyContent = serde_json::from_slice(content)
            .map_err(|source| Error::Decode { what: "execute_reply content", source })?;
        let error = match (c.status, c.ename) {
            (ExecuteStatus::Error, ename) => Some(ErrorInfo {
                ename: ename.unwrap_or_default(),
                evalue: c.evalue.unwrap_or_default(),
                traceback: c.traceback,
            }),
            _ => None,
        };
        Ok(ExecuteReply { status: c.status, execution_count: c.execution_count, error })
    }
}

/// What `kernel_info_reply` says about the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// Messaging protocol version, e.g. `5.4`.
    #[serde(default)]
    pub protocol_version: String,
    /// Kernel implementation, e.g. `ipython`.
    #[serde(default)]
    pub implementation: String,
    /// Its version, e.g. `9.1.0`.
    #[serde(default)]
    pub implementation_version: String,
    /// The language.
    pub language_info: LanguageInfo,
    /// Startup banner.
    #[serde(default)]
    pub banner: String,
}

/// The language a kernel runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LanguageInfo {
    /// e.g. `python`.
    pub name: String,
    /// e.g. `3.11.2`.
    #[serde(default)]
    pub version: String,
    /// e.g. `.py`.
    #[serde(default)]
    pub file_extension: Option<String>,
}

/// Content of a control reply (`interrupt_reply`, `shutdown_reply`).
#[derive(Deserialize)]
pub(crate) struct ControlReply {
    #[serde(default)]
    pub(crate) status: Option<String>,
    #[serde(default)]
    pub(crate) ename: String,
    #[serde(default)]
    pub(crate) evalue: String,
}

/// Content of an iopub `status` message.
#[derive(Deserialize)]
pub(crate) struct Status<'a> {
    pub(crate) execution_state: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn out(msg_type: &str, content: Value) -> Option<Output> {
        Output::from_iopub(msg_type, &serde_json::to_vec(&content).unwrap()).unwrap()
    }

    /// Pins decoding of every output type as ipykernel sends it.
    #[test]
    fn outputs_decode() {
        assert_eq!(
            out("stream", json!({"name": "stderr", "text": "oops\n"})),
            Some(Output::Stream { name: StreamName::Stderr, text: "oops\n".into() })
        );
        let Some(Output::DisplayData { data, metadata }) = out(
            "display_data",
            json!({"data": {"image/png": "aGk="}, "metadata": {"image/png": {"width": 1}}, "transient": {}}),
        ) else {
            panic!("not display_data")
        };
        assert_eq!(data["image/png"], "aGk=");
        assert_eq!(metadata["image/png"]["width"], 1);
        let Some(Output::ExecuteResult { execution_count, data, .. }) =
            out("execute_result", json!({"execution_count": 3, "data": {"text/plain": "2"}, "metadata": {}}))
        else {
            panic!("not execute_result")
        };
        assert_eq!((execution_count, data["text/plain"].as_str()), (3, Some("2")));
        assert_eq!(
            out("error", json!({"ename": "E", "evalue": "v", "traceback": ["t"]})),
            Some(Output::Error(ErrorInfo { ename: "E".into(), evalue: "v".into(), traceback: vec!["t".into()] }))
        );
        assert_eq!(out("clear_output", json!({"wait": true})), Some(Output::ClearOutput { wait: true }));
        let Some(Output::UpdateDisplayData { display_id, .. }) =
            out("update_display_data", json!({"data": {}, "metadata": {}, "transient": {"display_id": "d1"}}))
        else {
            panic!("not update_display_data")
        };
        assert_eq!(display_id.as_deref(), Some("d1"));
    }

    /// Pins that non-output iopub messages are skipped, and broken content is an error, not a panic.
    #[test]
    fn non_outputs_and_garbage() {
        assert_eq!(out("status", json!({"execution_state": "idle"})), None);
        assert_eq!(out("execute_input", json!({"code": "1"})), None);
        assert!(matches!(Output::from_iopub("stream", b"{\"name\": 1}"), Err(Error::Decode { .. })));
    }

    /// Pins execute_reply decoding for ok, error and aborted.
    #[test]
    fn execute_replies_decode() {
        let ok = ExecuteReply::from_content(br#"{"status":"ok","execution_count":2,"payload":[]}"#).unwrap();
        assert_eq!(ok, ExecuteReply { status: ExecuteStatus::Ok, execution_count: Some(2), error: None });
        let err = ExecuteReply::from_content(
            br#"{"status":"error","execution_count":3,"ename":"NameError","evalue":"x","traceback":[]}"#,
        )
        .unwrap();
        assert_eq!(err.error.unwrap().ename, "NameError");
        let aborted = ExecuteReply::from_content(br#"{"status":"aborted"}"#).unwrap();
        assert_eq!((aborted.status, aborted.execution_count), (ExecuteStatus::Aborted, None));
    }

    /// Pins the execute_request we send: visible, stored, no stdin.
    #[test]
    fn execute_request_encodes() {
        let v = serde_json::to_value(ExecuteRequest::new("x=1")).unwrap();
        assert_eq!(
            v,
            json!({"code": "x=1", "silent": false, "store_history": true, "user_expressions": {},
                   "allow_stdin": false, "stop_on_error": true})
        );
    }
}
