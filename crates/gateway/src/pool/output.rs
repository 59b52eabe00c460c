//! The output budget of one execution: outputs are kept in order until their bytes reach the limit; then the
//! output that crosses it is cut with a marker, later ones are dropped (errors are kept, shortened), and the
//! execution is flagged `output_truncated`.

use kernel::{ErrorInfo, Output};
use serde_json::Value;

/// Most bytes of a traceback kept once the budget is spent.
const ERROR_KEEP: usize = 16 * 1024;

/// Collects outputs under a byte budget.
pub(super) struct OutputBudget {
    outputs: Vec<Output>,
    left: usize,
    limit: usize,
    truncated: bool,
    tap: Option<OutputTap>,
}

/// Where a streaming client gets each output as it is kept.
pub type OutputTap = tokio::sync::mpsc::UnboundedSender<Output>;

impl OutputBudget {
    /// A budget of `limit` bytes.
    pub(super) fn new(limit: usize, tap: Option<OutputTap>) -> OutputBudget {
        OutputBudget { outputs: Vec::new(), left: limit, limit, truncated: false, tap }
    }

    /// Keeps `output`, and passes a copy to the tap (a streaming client) if there is one.
    fn keep(&mut self, output: Output) {
        if let Some(tap) = &self.tap {
            // The client may have gone: the execution goes on regardless.
            let _ = tap.send(output.clone());
        }
        self.outputs.push(output);
    }

    /// The outputs kept, and whether any was cut or dropped.
    pub(super) fn finish(self) -> (Vec<Output>, bool) {
        (self.outputs, self.truncated)
    }

    fn marker(&self) -> String {
        format!("\n[output truncated: this execution produced more than {} bytes of output]\n", self.limit)
    }

    /// Keeps `output` if it fits, cuts it if it crosses the limit, drops it once the budget is spent.
    pub(super) fn push(&mut self, output: Output) {
        let size = size_of(&output);
        if size <= self.left {
            self.left -= size;
            self.keep(output);
            return;
        }
        let was_truncated = std::mem::replace(&mut self.truncated, true);
        let left = std::mem::take(&mut self.left);
        match output {
            Output::Error(error) => self.keep(Output::Error(shorten(error))),
            _ if was_truncated => {}
            Output::Stream { name, mut text } => {
                text.truncate(floor_char_boundary(&text, left));
                text.push_str(&self.marker());
                self.keep(Output::Stream { name, text });
            }
            Output::ExecuteResult { execution_count, data, metadata } => {
                if let Some(Value::String(plain)) = data.get("text/plain") {
                    let mut plain = plain[..floor_char_boundary(plain, left)].to_owned();
                    plain.push_str(&self.marker());
                    let data = [("text/plain".to_owned(), Value::String(plain))].into_iter().collect();
                    self.keep(Output::ExecuteResult { execution_count, data, metadata });
                }
            }
            _ => {}
        }
    }
}

fn shorten(mut error: ErrorInfo) -> ErrorInfo {
    error.evalue.truncate(floor_char_boundary(&error.evalue, ERROR_KEEP));
    let mut kept = 0;
    error.traceback.retain(|line| {
        kept += line.len();
        kept <= ERROR_KEEP
    });
    error
}

/// The largest index `<= at` that is a char boundary of `text`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    if at >= text.len() {
        return text.len();
    }
    (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0)
}

/// Bytes an output adds to the answer (its texts; MIME values as their JSON text).
fn size_of(output: &Output) -> usize {
    let bundle = |data: &serde_json::Map<String, Value>| -> usize {
        data.values()
            .map(|value| match value {
                Value::String(text) => text.len(),
                other => other.to_string().len(),
            })
            .sum()
    };
    match output {
        Output::Stream { text, .. } => text.len(),
        Output::DisplayData { data, .. }
        | Output::ExecuteResult { data, .. }
        | Output::UpdateDisplayData { data, .. } => bundle(data),
        Output::Error(error) => {
            error.ename.len() + error.evalue.len() + error.traceback.iter().map(String::len).sum::<usize>()
        }
        Output::ClearOutput { .. } => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel::StreamName;

    fn stream(text: &str) -> Output {
        Output::Stream { name: StreamName::Stdout, text: text.into() }
    }

    /// Under the limit nothing changes.
    #[test]
    fn small_outputs_pass() {
        let mut budget = OutputBudget::new(100, None);
        budget.push(stream("hello"));
        budget.push(stream("world"));
        let (outputs, truncated) = budget.finish();
        assert_eq!(outputs.len(), 2);
        assert!(!truncated);
    }

    /// The stream that crosses the limit is cut with a marker; later ones are dropped, errors kept.
    #[test]
    fn crossing_output_is_cut_and_later_ones_dropped() {
        let mut budget = OutputBudget::new(10, None);
        budget.push(stream("12345"));
        budget.push(stream("é1234567890"));
        budget.push(stream("dropped"));
        budget.push(Output::Error(ErrorInfo { ename: "E".into(), evalue: "v".repeat(100_000), traceback: vec![] }));
        let (outputs, truncated) = budget.finish();
        assert!(truncated);
        assert_eq!(outputs.len(), 3);
        let Output::Stream { text, .. } = &outputs[1] else { panic!() };
        assert!(text.starts_with("é123\n[output truncated"), "{text}");
        let Output::Error(error) = &outputs[2] else { panic!() };
        assert_eq!(error.evalue.len(), ERROR_KEEP);
    }

    /// A huge last expression keeps the start of its text/plain only.
    #[test]
    fn huge_result_keeps_text_start() {
        let mut budget = OutputBudget::new(8, None);
        let data = [("text/plain".to_owned(), Value::String("x".repeat(1000)))].into_iter().collect();
        budget.push(Output::ExecuteResult { execution_count: 1, data, metadata: Default::default() });
        let (outputs, truncated) = budget.finish();
        assert!(truncated);
        let Output::ExecuteResult { data, .. } = &outputs[0] else { panic!() };
        assert!(data["text/plain"].as_str().unwrap().starts_with("xxxxxxxx\n[output truncated"));
    }
}
