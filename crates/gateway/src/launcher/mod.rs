//! How kernels come to be: the `Launcher` trait (start a ready kernel, clean up after a crash) and `Kernel`.
//!
//! The pool only sees this trait. Two implementations put each kernel in the same sandbox (`policy`):
//! `zygote::ZygoteLauncher` forks it from a pre-loaded interpreter (the default), `sandboxed::SandboxLauncher`
//! execs a fresh one through the `__sandbox-exec` helper. `kernel_sandbox` is what they share.

mod kernel_sandbox;
mod policy;
pub mod sandboxed;
mod session_dir;
pub mod zygote;

pub use policy::cgroup_parent_for;

use std::future::Future;
use std::pin::Pin;

/// A boxed future, for the object-safe async methods below.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a kernel process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited by itself with this code.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
    /// It was killed at the memory limit.
    OutOfMemory,
    /// It ran into the process limit.
    PidsLimit,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exited with code {code}"),
            Exit::Signal(signal) => write!(f, "was killed by signal {signal}"),
            Exit::OutOfMemory => write!(f, "was killed at its memory limit"),
            Exit::PidsLimit => write!(f, "hit its process limit"),
        }
    }
}

/// The process side of a running kernel: watch it, kill it.
pub trait KernelProcess: Send + Sync {
    /// Resolves when the kernel has gone; cancel-safe.
    fn exited(&self) -> BoxFuture<'_, Exit>;
    /// Whether it has already gone, without waiting.
    fn has_exited(&self) -> bool;
    /// Kills the kernel and everything it started, and frees what it held; idempotent.
    fn kill(&self) -> BoxFuture<'_, ()>;
    /// How often a process or thread creation failed against the sandbox's process limit so far.
    fn pids_limit_hits(&self) -> u64;
}

/// A ready kernel: a connected client and the process behind it.
pub struct Kernel {
    /// Name of the sandbox, for logs.
    pub name: String,
    /// The Jupyter client, ready for `execute`.
    pub client: kernel::Client,
    /// The process (sandbox) running it.
    pub process: Box<dyn KernelProcess>,
    /// Its sandbox's `/sandbox`, for the files API and the files a run wrote.
    pub files: std::sync::Arc<crate::files::SandboxDir>,
}

impl Kernel {
    /// Kills the kernel's sandbox and waits for it to be gone.
    pub async fn destroy(self) {
        self.process.kill().await;
        tracing::debug!(sandbox = %self.name, "kernel destroyed");
    }
}

/// Starting a kernel failed.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Preparing the session directory failed.
    #[error("cannot prepare the session directory {path}")]
    SessionDir {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The sandbox could not be set up.
    #[error("cannot start the sandbox")]
    Sandbox(#[source] sandbox::Error),
    /// The kernel started but did not become ready.
    #[error("the kernel did not become ready")]
    NotReady(#[source] kernel::Error),
    /// The kernel exited while starting.
    #[error("the kernel {0} while starting")]
    DiedStarting(Exit),
    /// The sandbox's `/sandbox` could not be opened from the host.
    #[error("cannot open the sandbox's /sandbox through {path}")]
    SandboxDir {
        /// The path it was opened through.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The zygote cannot run with this interpreter.
    #[error("the zygote cannot run: {0}")]
    ZygoteUnavailable(String),
}

/// Starts kernels. One implementation per way of isolating them.
pub trait Launcher: Send + Sync + 'static {
    /// Starts a kernel in sandbox slot `slot` (each live kernel has its own slot, `0..max_sandboxes`) and returns
    /// it once it answers.
    fn launch(&self, slot: usize) -> BoxFuture<'_, Result<Kernel, LaunchError>>;
    /// Removes whatever an earlier run of the service left behind; returns how many sandboxes were removed.
    fn cleanup_stale(&self) -> Result<usize, LaunchError>;
}
