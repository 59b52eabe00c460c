//! `SandboxLauncher`: each kernel is an ipykernel in a fresh Linux sandbox, set up by this binary re-executed as
//! `__sandbox-exec` (a single-threaded helper; the gateway's tokio process never forks).
//!
//! Per sandbox, a session directory `<data_dir>/sessions/<name>/` holds `run/` (the connection file and the
//! kernel's ipc sockets, mounted at `/run/kernel`) and `root/` (the empty mount point of the sandbox's root).

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::FutureExt;
use kernel::Client;
use sandbox::{Policy, Sandbox, TmpfsSizes};
use sha2::{Digest, Sha256};

use super::session_dir::{self, SessionDir};
use super::{BoxFuture, Exit, Kernel, KernelProcess, LaunchError, Launcher};
use crate::config::Config;
use crate::kernel_env::KernelEnv;

/// Where the kernel virtualenv is mounted inside a sandbox.
const ENV_IN_SANDBOX: &str = "/opt/kernel-env";
/// How far under the memory limit the address-space limit sits.
const ADDRESS_SPACE_HEADROOM: u64 = 32 << 20;
/// Where the session's `run/` directory is mounted inside a sandbox.
const RUN_IN_SANDBOX: &str = "/run/kernel";

/// Starts ipykernels in sandboxes.
pub struct SandboxLauncher {
    /// This binary, re-executed as the sandbox helper.
    exe: PathBuf,
    /// `<data_dir>/sessions`.
    sessions_dir: PathBuf,
    env: KernelEnv,
    /// cgroup directory of this data directory's sandboxes, so a restart finds an earlier run's leftovers.
    cgroup_parent: String,
    uid_base: u32,
    memory_bytes: u64,
    pids_max: u64,
    cpu_millicores: u64,
    tmpfs: TmpfsSizes,
    start_timeout: Duration,
    /// `RLIMIT_AS`: just under the memory limit, so a big allocation raises `MemoryError` before an OOM kill.
    address_space: u64,
    open_files: u64,
}

/// The cgroup parent name of the sandboxes of the service whose data directory is `data_dir`.
pub fn cgroup_parent_for(data_dir: &Path) -> String {
    let canonical = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
    format!("code-interpreter-{}", &hex_prefix(&digest))
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

impl SandboxLauncher {
    /// A launcher for `config`'s limits, running kernels from `env`.
    pub fn new(config: &Config, env: KernelEnv) -> Result<SandboxLauncher, LaunchError> {
        let sessions_dir = config.data_dir.join("sessions");
        let exe = std::env::current_exe()
            .map_err(|source| LaunchError::SessionDir { path: PathBuf::from("/proc/self/exe"), source })?;
        Ok(SandboxLauncher {
            exe,
            cgroup_parent: cgroup_parent_for(&config.data_dir),
            sessions_dir,
            env,
            uid_base: config.uid_base,
            memory_bytes: config.memory_limit_mib << 20,
            pids_max: config.pids_limit,
            cpu_millicores: (config.cpu_limit_cores * 1000.0).round() as u64,
            tmpfs: TmpfsSizes {
                tmp: config.tmp_size_mib << 20,
                sandbox: config.sandbox_size_mib << 20,
                dev_shm: 64 << 20,
            },
            start_timeout: Duration::from_secs_f64(config.kernel_start_timeout_secs),
            address_space: (config.memory_limit_mib << 20).saturating_sub(ADDRESS_SPACE_HEADROOM),
            open_files: config.open_files_limit,
        })
    }

    fn policy(&self, name: &str, uid: u32, session_dir: &SessionDir) -> Result<Policy, LaunchError> {
        let env_dir = Path::new(ENV_IN_SANDBOX);
        let python = env_dir.join("bin/python");
        let builder = Policy::builder(name)
            .identity(uid, uid)
            .root_dir(session_dir.root())
            .ro_bind(&self.env.base_prefix, &self.env.base_prefix)
            .ro_bind(&self.env.root, env_dir)
            .rw_bind(session_dir.run(), RUN_IN_SANDBOX)
            .address_space_limit(self.address_space)
            .open_files_limit(self.open_files)
            .tmpfs(self.tmpfs)
            .memory_limit(self.memory_bytes)
            .pids_limit(self.pids_max)
            .cpu_millicores(self.cpu_millicores)
            .cgroup_parent(&self.cgroup_parent)
            .cwd("/sandbox")
            .argv([
                python.to_string_lossy().into_owned(),
                "-m".into(),
                "ipykernel_launcher".into(),
                "-f".into(),
                format!("{RUN_IN_SANDBOX}/kernel.json"),
                "--HistoryManager.hist_file=:memory:".into(),
            ]);
        let env = [
            ("PATH", format!("{ENV_IN_SANDBOX}/bin:/usr/local/bin:/usr/bin:/bin")),
            ("HOME", "/sandbox".into()),
            ("USER", "sandbox".into()),
            ("TMPDIR", "/tmp".into()),
            ("LANG", "C.UTF-8".into()),
            ("MPLCONFIGDIR", "/tmp/mpl".into()),
            ("MPLBACKEND", "module://matplotlib_inline.backend_inline".into()),
            ("XDG_CACHE_HOME", "/tmp/.cache".into()),
            ("OPENBLAS_NUM_THREADS", "1".into()),
            ("OMP_NUM_THREADS", "1".into()),
            ("MKL_NUM_THREADS", "1".into()),
            ("MALLOC_ARENA_MAX", "2".into()),
            ("PYTHONDONTWRITEBYTECODE", "1".into()),
            ("PYDEVD_DISABLE_FILE_VALIDATION", "1".into()),
        ];
        let env_vars = self.env.kernel_vars(env_dir).into_iter().map(|(k, v)| (k, v.to_string_lossy().into_owned()));
        env.into_iter()
            .chain(env_vars)
            .fold(builder, |builder, (key, value)| builder.env(key, value))
            .build()
            .map_err(|err| LaunchError::Sandbox(sandbox::Error::from(err)))
    }

    async fn start(&self, slot: usize) -> Result<Kernel, LaunchError> {
        let name = format!("ci-{slot}-{:08x}", rand::random::<u32>());
        let uid = self.uid_base + slot as u32;
        let started = std::time::Instant::now();
        let (session_dir, info) = SessionDir::create(&self.sessions_dir, &name, uid, Path::new(RUN_IN_SANDBOX))?;
        let policy = match self.policy(&name, uid, &session_dir) {
            Ok(policy) => policy,
            Err(err) => {
                session_dir.remove();
                return Err(err);
            }
        };
        let mut helper = tokio::process::Command::new(&self.exe);
        // Its own process group: a Ctrl-C on the gateway's terminal must not reach the sandboxes directly.
        helper.arg("__sandbox-exec").process_group(0);
        let sandbox = match sandbox::spawn(helper, &policy).await {
            Ok(sandbox) => sandbox,
            Err(err) => {
                session_dir.remove();
                return Err(LaunchError::Sandbox(err));
            }
        };
        let process = SandboxProcess { sandbox, session_dir };
        let ready = async {
            let mut client = Client::connect(&info).await?;
            client.wait_ready(self.start_timeout).await?;
            Ok::<_, kernel::Error>(client)
        };
        let outcome = tokio::select! {
            ready = ready => ready.map_err(LaunchError::NotReady),
            exit = process.exited() => Err(LaunchError::DiedStarting(exit)),
        };
        match outcome {
            Ok(client) => {
                tracing::debug!(sandbox = %name, ms = started.elapsed().as_millis() as u64, "kernel ready");
                Ok(Kernel { name, client, process: Box::new(process) })
            }
            Err(err) => {
                process.kill().await;
                Err(err)
            }
        }
    }
}

impl Launcher for SandboxLauncher {
    fn launch(&self, slot: usize) -> BoxFuture<'_, Result<Kernel, LaunchError>> {
        Box::pin(self.start(slot))
    }

    fn cleanup_stale(&self) -> Result<usize, LaunchError> {
        let removed = sandbox::cleanup_stale(&self.cgroup_parent).map_err(LaunchError::Sandbox)?;
        session_dir::remove_all(&self.sessions_dir)?;
        Ok(removed)
    }
}

/// A sandbox running a kernel, and its session directory (removed with it).
struct SandboxProcess {
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
