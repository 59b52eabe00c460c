//! What both launchers share around their sandbox: the session directory and policy before it starts, the
//! kernel handshake after, and [`SandboxProcess`], the `KernelProcess` of a sandboxed kernel.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use kernel::{Client, ConnectionInfo};
use sandbox::{Policy, Sandbox};

use crate::files::SandboxDir;

use super::policy::{KernelPolicy, RUN_IN_SANDBOX};
use super::session_dir::{self, SessionDir};
use super::{BoxFuture, Exit, Kernel, KernelProcess, LaunchError};

/// A kernel sandbox about to be started: its name, directory, policy and connection info.
pub(super) struct Prepared {
    pub(super) name: String,
    pub(super) session_dir: SessionDir,
    pub(super) policy: Policy,
    info: ConnectionInfo,
}

impl Prepared {
    /// Creates the session directory of a new sandbox in slot `slot` and its policy.
    pub(super) fn new(sessions_dir: &Path, policy: &KernelPolicy, slot: usize) -> Result<Prepared, LaunchError> {
        let name = format!("ci-{slot}-{:08x}", rand::random::<u32>());
        let (session_dir, info) = SessionDir::create(sessions_dir, &name, policy.uid(slot), Path::new(RUN_IN_SANDBOX))?;
        match policy.session(&name, slot, &session_dir) {
            Ok(policy) => Ok(Prepared { name, session_dir, policy, info }),
            Err(err) => {
                session_dir.remove();
                Err(err)
            }
        }
    }

    /// Where the fork server sends the sandbox's stderr: in its `run` tmpfs, so it cannot grow past it.
    pub(super) fn stderr_file(&self) -> PathBuf {
        self.session_dir.run().join("sandbox.log")
    }

    /// Waits for `started` (the sandbox being started by a launcher), then for the kernel in it to answer.
    pub(super) async fn start(
        self,
        started: impl Future<Output = Result<Sandbox, sandbox::Error>>,
        start_timeout: Duration,
    ) -> Result<Kernel, LaunchError> {
        let begun = std::time::Instant::now();
        let Prepared { name, session_dir, info, .. } = self;
        let sandbox = match started.await {
            Ok(sandbox) => sandbox,
            Err(err) => {
                session_dir.remove();
                return Err(LaunchError::Sandbox(err));
            }
        };
        let (init_pid, memory_procs) = (sandbox.init_pid(), sandbox.memory_procs_file());
        let process = SandboxProcess { sandbox, session_dir };
        let ready = async {
            let mut client = Client::connect(&info).await?;
            client.wait_connected(start_timeout).await?;
            Ok::<_, kernel::Error>(client)
        };
        let outcome = tokio::select! {
            ready = ready => ready.map_err(LaunchError::NotReady),
            exit = process.exited() => Err(LaunchError::DiedStarting(exit)),
        };
        let outcome = outcome.and_then(|client| Ok((client, open_files(init_pid, memory_procs, &process)?)));
        match outcome {
            Ok((client, files)) => {
                tracing::debug!(sandbox = %name, ms = begun.elapsed().as_millis() as u64, "kernel ready");
                Ok(Kernel { name, client, process: Box::new(process), files: Arc::new(files) })
            }
            Err(err) => {
                process.kill().await;
                Err(err)
            }
        }
    }
}

/// Opens the `/sandbox` of the sandbox whose init is `init_pid`, once its kernel answered; checking afterwards
/// that the sandbox still runs proves the pid was its init's (an exited init's pid stays taken until reaped).
fn open_files(
    init_pid: u32,
    memory_procs: Option<PathBuf>,
    process: &SandboxProcess,
) -> Result<SandboxDir, LaunchError> {
    let opened = SandboxDir::open(init_pid, memory_procs);
    if process.has_exited() {
        return Err(LaunchError::DiedStarting(Exit::Signal(libc::SIGKILL)));
    }
    opened.map_err(|source| LaunchError::SandboxDir { path: format!("/proc/{init_pid}/root/sandbox").into(), source })
}

/// What both launchers' `cleanup_stale` does: kill and remove every sandbox cgroup under `cgroup_parent`, empty
/// `sessions_dir`; returns how many sandboxes there were.
pub(super) fn remove_leftovers(cgroup_parent: &str, sessions_dir: &Path) -> Result<usize, LaunchError> {
    let removed = sandbox::cleanup_stale(cgroup_parent).map_err(LaunchError::Sandbox)?;
    session_dir::remove_all(sessions_dir)?;
    Ok(removed)
}

/// A sandbox running a kernel, and its session directory (removed with it).
pub(super) struct SandboxProcess {
    sandbox: Sandbox,
    session_dir: SessionDir,
}

impl KernelProcess for SandboxProcess {
    fn exited(&self) -> BoxFuture<'_, Exit> {
        Box::pin(async move {
            match self.sandbox.wait().await {
                sandbox::Termination::Exited(code) => Exit::Code(code),
                sandbox::Termination::Signaled(signal) => Exit::Signal(signal),
                sandbox::Termination::OutOfMemory => Exit::OutOfMemory,
                sandbox::Termination::PidsLimit => Exit::PidsLimit,
            }
        })
    }

    fn has_exited(&self) -> bool {
        self.sandbox.wait().now_or_never().is_some()
    }

    fn pids_limit_hits(&self) -> u64 {
        self.sandbox.pids_limit_hits()
    }

    fn kill(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.sandbox.kill().await;
            self.session_dir.remove();
        })
    }
}
