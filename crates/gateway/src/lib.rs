//! Code Interpreter: stateful, sandboxed Python sessions over HTTP.
//!
//! # Layout
//! - `config`: the one `Config` and its layered loader (defaults, TOML, env, flags).
//! - `token`: the API token (env, file, or generated).
//! - `kernel_env`: the Python virtualenv the kernels run from, created on first start.
//! - `api`: the HTTP routes (axum); knows HTTP, nothing of kernels.
//! - `files`: files in a sandbox's `/sandbox`, reached from the host without leaving it (no HTTP).
//! - `pool`: sessions, warm kernels, limits, refill and reaping; knows kernels, nothing of HTTP.
//! - `launcher`: how a kernel is started: the `Launcher` trait and the sandboxed implementation.
//! - `metrics`: the Prometheus metrics the pool and the API update and `/metrics` shows.
//! - `telemetry`: logging.
//! - `harness`: the server binary as a child process, for the tests and the soak command.

pub mod api;
pub mod config;
pub mod files;
pub mod harness;
pub mod kernel_env;
pub mod launcher;
pub mod metrics;
pub mod pool;
pub mod telemetry;
pub mod token;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::config::LauncherKind;
use crate::kernel_env::KernelEnv;
use crate::launcher::sandboxed::SandboxLauncher;
use crate::launcher::zygote::ZygoteLauncher;
use crate::launcher::{LaunchError, Launcher};
use crate::metrics::Metrics;
use crate::pool::{ExecLimits, Pool, PoolConfig};

/// The service could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The launcher could not be prepared or could not clean up an earlier run.
    #[error("cannot prepare the sandboxes")]
    Launcher(#[from] LaunchError),
    /// Serving HTTP failed.
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
    /// The metrics address (`metrics_listen`) could not be bound.
    #[error("cannot listen on {0} for the metrics")]
    MetricsListen(SocketAddr, #[source] std::io::Error),
}

/// Serves the API on `listener` until `shutdown` resolves, then destroys every sandbox.
pub async fn run(
    config: Config,
    env: KernelEnv,
    token: String,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let metrics_listener = match config.metrics_listen {
        Some(address) => Some(TcpListener::bind(address).await.map_err(|err| RunError::MetricsListen(address, err))?),
        None => None,
    };
    let launcher = launcher(&config, env).await?;
    let pool_config = pool_config(&config);
    let metrics = Metrics::new(pool_config.limits.timeout, pool_config.limits.grace);
    let pool = Pool::start(pool_config, Arc::clone(&launcher), metrics.clone())?;
    let state = api::AppState {
        pool: pool.clone(),
        token: token.into(),
        memory_limit_mib: config.memory_limit_mib,
        code_limit_bytes: (config.code_limit_kib as usize) * 1024,
        metrics,
        metrics_on_api: metrics_listener.is_none(),
        file_limit_bytes: config.file_limit_mib << 20,
    };
    let stop = CancellationToken::new();
    if let Some(listener) = metrics_listener {
        serve_metrics(listener, api::metrics_router(state.clone()), stop.clone());
    }
    let app = api::router(state);
    // Answers are small and latency is the point: no Nagle delay on any connection.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "TCP_NODELAY");
        }
    });
    let stopping = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopping.cancel();
    });
    let served = axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned()).await;
    stop.cancel();
    tracing::info!("stopped accepting requests; destroying sandboxes");
    pool.shutdown().await;
    // Whatever is left under this service's cgroups (the zygote's spare sandbox) goes too.
    if let Err(err) = launcher.cleanup_stale() {
        tracing::warn!(error = %err, "cleaning up after the sandboxes");
    }
    served.map_err(RunError::Serve)
}

/// Serves `/metrics` on a listener of its own, without a token, until `stop`.
fn serve_metrics(listener: TcpListener, app: axum::Router, stop: CancellationToken) {
    if let Ok(address) = listener.local_addr() {
        // Printed whatever the log filter, as the API's address is: people and the test harness read it.
        eprintln!("code-interpreter: metrics on http://{address}/metrics (no token)");
    }
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await {
            tracing::error!(%err, "the metrics server failed");
        }
    });
}

/// The configured launcher; the exec launcher when the zygote cannot run here.
async fn launcher(config: &Config, env: KernelEnv) -> Result<Arc<dyn Launcher>, LaunchError> {
    if config.launcher == LauncherKind::Zygote {
        match ZygoteLauncher::start(config, env.clone()).await {
            Ok(zygote) => return Ok(Arc::new(zygote)),
            Err(err) => tracing::warn!(
                error = %format!("{:#}", anyhow::Error::from(err)),
                "the zygote is unavailable; starting kernels with the exec launcher (slower, more memory)"
            ),
        }
    }
    Ok(Arc::new(SandboxLauncher::new(config, env)?))
}

fn pool_config(config: &Config) -> PoolConfig {
    PoolConfig {
        warm: config.warm_sandboxes,
        max: config.max_sandboxes,
        limits: ExecLimits {
            timeout: config.execution_timeout(),
            grace: Duration::from_secs_f64(config.interrupt_grace_secs),
            output_bytes: (config.output_limit_kib as usize).saturating_mul(1024),
            pids: config.pids_limit,
        },
        idle_timeout: Duration::from_secs(config.idle_timeout_secs),
        reap_interval: Duration::from_secs(config.reap_interval_secs),
    }
}
