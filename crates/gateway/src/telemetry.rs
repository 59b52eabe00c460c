//! Logging: one tracing subscriber, filtered by `RUST_LOG` (default: this crate and HTTP at info).

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; logs go to stderr.
pub fn init() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("gateway=info,sandbox=info,kernel=warn,tower_http=warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
