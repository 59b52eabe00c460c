//! `SandboxLauncher`, the exec launcher: each kernel is a fresh `python -m code_interpreter_kernel` in a fresh Linux
//! sandbox, set up by this binary re-executed as `__sandbox-exec` (a single-threaded helper; the gateway's tokio
//! process never forks). Slower to start than the zygote, but needs nothing from the interpreter.
//!
//! Per sandbox, a session directory `<data_dir>/sessions/<name>/` holds `run/` (the connection file and the
//! kernel's ipc sockets, mounted at `/run/kernel`) and `root/` (the empty mount point of the sandbox's root).

use std::path::PathBuf;
use std::time::Duration;

use super::kernel_sandbox::{remove_leftovers, Prepared};
use super::policy::KernelPolicy;
use super::{BoxFuture, Kernel, LaunchError, Launcher};
use crate::config::Config;
use crate::kernel_env::KernelEnv;

pub use super::policy::cgroup_parent_for;

/// Starts ipykernels in sandboxes through the exec helper.
pub struct SandboxLauncher {
    /// This binary, re-executed as the sandbox helper.
    exe: PathBuf,
    /// `<data_dir>/sessions`.
    sessions_dir: PathBuf,
    policy: KernelPolicy,
    start_timeout: Duration,
}

impl SandboxLauncher {
    /// A launcher for `config`'s limits, running kernels from `env`.
    pub fn new(config: &Config, env: KernelEnv) -> Result<SandboxLauncher, LaunchError> {
        let exe = std::env::current_exe()
            .map_err(|source| LaunchError::SessionDir { path: PathBuf::from("/proc/self/exe"), source })?;
        Ok(SandboxLauncher {
            exe,
            sessions_dir: config.data_dir.join("sessions"),
            policy: KernelPolicy::new(config, env),
            start_timeout: Duration::from_secs_f64(config.kernel_start_timeout_secs),
        })
    }

    async fn start(&self, slot: usize) -> Result<Kernel, LaunchError> {
        let prepared = Prepared::new(&self.sessions_dir, &self.policy, slot)?;
        let mut helper = tokio::process::Command::new(&self.exe);
        // Its own process group: a Ctrl-C on the gateway's terminal must not reach the sandboxes directly.
        helper.arg("__sandbox-exec").process_group(0);
        let policy = prepared.policy.clone();
        prepared.start(sandbox::spawn(helper, &policy), self.start_timeout).await
    }
}

impl Launcher for SandboxLauncher {
    fn launch(&self, slot: usize) -> BoxFuture<'_, Result<Kernel, LaunchError>> {
        Box::pin(self.start(slot))
    }

    fn cleanup_stale(&self) -> Result<usize, LaunchError> {
        remove_leftovers(&self.policy.cgroup_parent, &self.sessions_dir)
    }
}
