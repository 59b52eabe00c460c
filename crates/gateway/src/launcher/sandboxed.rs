//! `SandboxLauncher`: each kernel is an ipykernel in a fresh Linux sandbox, set up by this binary re-executed as
//! `__sandbox-exec` (a single-threaded helper; the gateway's tokio process never forks).
//!
//! Per sandbox, a session directory `<data_dir>/sessions/<name>/` holds `run/` (the connection file and the
//! kernel's ipc sockets, mounted at `/run/kernel`) and `root/` (the empty mount point of the sandbox's root).

use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use kernel::{Client, ConnectionInfo};
use sandbox::{Policy, Sandbox, TmpfsSizes};
use sha2::{Digest, Sha256};

use super::{BoxFuture, Exit, Kernel, KernelProcess, LaunchError, Launcher};
use crate::config::Config;
use crate::kernel_env::KernelEnv;

/// Where the kernel virtualenv is mounted inside a sandbox.
const ENV_IN_SANDBOX: &str = "/opt/kernel-env";
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
        let exe = std::env::current_exe().map_err(|source| LaunchError::SessionDir {
            path: PathBuf::from("/proc/self/exe"),
            source,
        })?;
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
        })
    }

    fn policy(&self, name: &str, uid: u32, session_dir: &Path) -> Result<Policy, LaunchError> {
        let env_dir = Path::new(ENV_IN_SANDBOX);
        let matplotlibrc = env_dir.join(
            self.env
                .matplotlibrc
                .strip_prefix(&self.env.root)
                .unwrap_or(Path::new("")),
        );
        let python = env_dir.join("bin/python");
        let builder = Policy::builder(name)
            .identity(uid, uid)
            .root_dir(session_dir.join("root"))
            .ro_bind(&self.env.base_prefix, &self.env.base_prefix)
            .ro_bind(&self.env.root, env_dir)
            .rw_bind(session_dir.join("run"), RUN_IN_SANDBOX)
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
            (
                "PATH",
                format!("{ENV_IN_SANDBOX}/bin:/usr/local/bin:/usr/bin:/bin"),
            ),
            ("HOME", "/sandbox".into()),
            ("USER", "sandbox".into()),
            ("TMPDIR", "/tmp".into()),
            ("LANG", "C.UTF-8".into()),
            ("MPLCONFIGDIR", "/tmp/mpl".into()),
            ("MATPLOTLIBRC", matplotlibrc.to_string_lossy().into_owned()),
            (
                "MPLBACKEND",
                "module://matplotlib_inline.backend_inline".into(),
            ),
            ("XDG_CACHE_HOME", "/tmp/.cache".into()),
            ("OPENBLAS_NUM_THREADS", "1".into()),
            ("OMP_NUM_THREADS", "1".into()),
            ("MKL_NUM_THREADS", "1".into()),
            ("MALLOC_ARENA_MAX", "2".into()),
            ("PYTHONDONTWRITEBYTECODE", "1".into()),
            ("PYDEVD_DISABLE_FILE_VALIDATION", "1".into()),
        ];
        env.into_iter()
            .fold(builder, |builder, (key, value)| builder.env(key, value))
            .build()
            .map_err(|err| LaunchError::Sandbox(sandbox::Error::from(err)))
    }

    /// Creates the session directory with the connection file, owned by the sandbox's uid.
    fn prepare_session_dir(
        &self,
        session_dir: &Path,
        uid: u32,
    ) -> Result<ConnectionInfo, LaunchError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LaunchError::SessionDir { path, source }
        };
        let run = session_dir.join("run");
        std::fs::create_dir_all(session_dir.join("root")).map_err(io(session_dir))?;
        std::fs::create_dir_all(&run).map_err(io(&run))?;
        chown(&run, Some(uid), Some(uid)).map_err(io(&run))?;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700)).map_err(io(&run))?;
        let info = ConnectionInfo::ipc(&run);
        let file = run.join("kernel.json");
        std::fs::write(&file, info.connection_file_json(Path::new(RUN_IN_SANDBOX)))
            .map_err(io(&file))?;
        chown(&file, Some(uid), Some(uid)).map_err(io(&file))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600))
            .map_err(io(&file))?;
        Ok(info)
    }

    async fn start(&self, slot: usize) -> Result<Kernel, LaunchError> {
        let name = format!("ci-{slot}-{:08x}", rand::random::<u32>());
        let uid = self.uid_base + slot as u32;
        let session_dir = self.sessions_dir.join(&name);
        let started = std::time::Instant::now();
        let result = self.start_in(&name, uid, &session_dir).await;
        match &result {
            Ok(_) => {
                tracing::debug!(sandbox = %name, ms = started.elapsed().as_millis() as u64, "kernel ready")
            }
            Err(_) => {
                let _ = std::fs::remove_dir_all(&session_dir);
            }
        }
        result
    }

    async fn start_in(
        &self,
        name: &str,
        uid: u32,
        session_dir: &Path,
    ) -> Result<Kernel, LaunchError> {
        let info = self.prepare_session_dir(session_dir, uid)?;
        let policy = self.policy(name, uid, session_dir)?;
        let mut helper = tokio::process::Command::new(&self.exe);
        // Its own process group: a Ctrl-C on the gateway's terminal must not reach the sandboxes directly.
        helper.arg("__sandbox-exec").process_group(0);
        let sandbox = Arc::new(
            sandbox::spawn(helper, &policy)
                .await
                .map_err(LaunchError::Sandbox)?,
        );
        let process = SandboxProcess {
            sandbox: sandbox.clone(),
            session_dir: session_dir.to_path_buf(),
        };
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
            Ok(client) => Ok(Kernel {
                name: name.to_owned(),
                client,
                process: Box::new(process),
            }),
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
        match std::fs::remove_dir_all(&self.sessions_dir) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(LaunchError::SessionDir {
                    path: self.sessions_dir.clone(),
                    source,
                })
            }
        }
        std::fs::create_dir_all(&self.sessions_dir).map_err(|source| LaunchError::SessionDir {
            path: self.sessions_dir.clone(),
            source,
        })?;
        Ok(removed)
    }
}

/// A sandbox running a kernel, and its session directory (removed with it).
struct SandboxProcess {
    sandbox: Arc<Sandbox>,
    session_dir: PathBuf,
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

    fn kill(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.sandbox.kill().await;
            if let Err(err) = tokio::fs::remove_dir_all(&self.session_dir).await {
                if err.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %self.session_dir.display(), cause = %err, "cannot remove a session directory");
                }
            }
        })
    }
}
