//! Logging: one tracing subscriber, filtered by `RUST_LOG` (default: this crate and HTTP at info).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; logs go to stderr, in colour only when that is a terminal (and `NO_COLOR` is not
/// set): a file, a pipe or the journal gets plain lines.
///
/// A log line that cannot be written is dropped without a word: by default the subscriber reports the failure
/// with `eprintln!`, which panics when stderr is a closed pipe (whoever read the log is gone), and a panic in
/// the task that was logging, e.g. the one that starts the shutdown, would leave the service running forever.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("gateway=info,sandbox=info,kernel=warn,tower_http=warn"));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .log_internal_errors(false)
        .init();
}
