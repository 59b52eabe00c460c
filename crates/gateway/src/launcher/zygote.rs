//! `ZygoteLauncher`: kernels forked from the zygote, one pre-loaded interpreter (`__zygote`, see the `zygote`
//! crate) that has imported ipykernel, numpy, pandas and matplotlib once. Each fork enters the same sandbox as
//! the exec launcher's kernels and becomes an ipykernel in milliseconds, sharing the interpreter's memory
//! copy-on-write. A zygote that dies is restarted on the next launch; its kernels die with it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sandbox::ForkServer;
use serde::Deserialize;

use super::kernel_sandbox::{remove_leftovers, Prepared};
use super::policy::{KernelPolicy, ENV_IN_SANDBOX};
use super::{BoxFuture, Kernel, LaunchError, Launcher};
use crate::config::Config;
use crate::kernel_env::KernelEnv;

/// How long the zygote may take to import everything (seconds on a loaded machine).
const ZYGOTE_START_TIMEOUT: Duration = Duration::from_secs(120);

/// Starts ipykernels by forking the zygote.
pub struct ZygoteLauncher {
    exe: PathBuf,
    /// `<data_dir>/sessions`.
    sessions_dir: PathBuf,
    policy: KernelPolicy,
    start_timeout: Duration,
    /// The zygote's configuration, the first line of its stdin.
    zygote_config: String,
    server: tokio::sync::Mutex<Arc<ForkServer>>,
}

impl ZygoteLauncher {
    /// Starts the zygote for `config`'s limits, with the interpreter of `env`; returns once it serves.
    pub async fn start(config: &Config, env: KernelEnv) -> Result<ZygoteLauncher, LaunchError> {
        let exe = std::env::current_exe()
            .map_err(|source| LaunchError::SessionDir { path: PathBuf::from("/proc/self/exe"), source })?;
        let libpython = find_libpython(&env).await?;
        let root = config.data_dir.join("zygote").join("root");
        std::fs::create_dir_all(&root).map_err(|source| LaunchError::SessionDir { path: root.clone(), source })?;
        let policy = KernelPolicy::new(config, env);
        let env = &policy.env;
        let zygote_config = zygote::Config {
            root: policy.zygote_root(&root)?,
            libpython,
            program: policy.python(),
            preload: serde_json::json!({
                "prefix": ENV_IN_SANDBOX,
                "font_cache": env.path_at(&env.font_cache_dir, Path::new(ENV_IN_SANDBOX)),
                // After `python -m code_interpreter_kernel`: the same for every kernel, so parsed once, before forking.
                "kernel_args": &policy.kernel_argv()[3..],
            }),
        };
        let zygote_config = serde_json::to_string(&zygote_config).expect("the zygote config serializes");
        let server = spawn_zygote(&exe, &zygote_config, &policy).await?;
        Ok(ZygoteLauncher {
            exe,
            sessions_dir: config.data_dir.join("sessions"),
            policy,
            start_timeout: Duration::from_secs_f64(config.kernel_start_timeout_secs),
            zygote_config,
            server: tokio::sync::Mutex::new(Arc::new(server)),
        })
    }

    /// The serving zygote, restarted first if it has died.
    async fn server(&self) -> Result<Arc<ForkServer>, LaunchError> {
        let mut server = self.server.lock().await;
        if !server.is_serving() {
            tracing::warn!("the zygote has exited; starting a new one");
            *server = Arc::new(spawn_zygote(&self.exe, &self.zygote_config, &self.policy).await?);
        }
        Ok(Arc::clone(&server))
    }

    async fn start_kernel(&self, slot: usize) -> Result<Kernel, LaunchError> {
        let prepared = Prepared::new(&self.sessions_dir, &self.policy, slot)?;
        let server = match self.server().await {
            Ok(server) => server,
            Err(err) => {
                prepared.session_dir.remove();
                return Err(err);
            }
        };
        let (policy, stderr) = (prepared.policy.clone(), prepared.stderr_file());
        prepared.start(async move { server.spawn(&policy, &stderr).await }, self.start_timeout).await
    }
}

impl Launcher for ZygoteLauncher {
    fn launch(&self, slot: usize) -> BoxFuture<'_, Result<Kernel, LaunchError>> {
        Box::pin(self.start_kernel(slot))
    }

    fn cleanup_stale(&self) -> Result<usize, LaunchError> {
        remove_leftovers(&self.policy.cgroup_parent, &self.sessions_dir)
    }
}

async fn spawn_zygote(exe: &Path, config: &str, policy: &KernelPolicy) -> Result<ForkServer, LaunchError> {
    let mut command = tokio::process::Command::new(exe);
    // The kernels' environment from the start: what modules read at import time must match what they will see.
    command.arg("__zygote").env_clear().envs(policy.kernel_vars()).process_group(0);
    let started = std::time::Instant::now();
    let preamble = format!("{config}\n");
    let server =
        ForkServer::start(command, preamble.as_bytes(), ZYGOTE_START_TIMEOUT).await.map_err(LaunchError::Sandbox)?;
    tracing::info!(pid = server.pid(), ms = started.elapsed().as_millis() as u64, "zygote ready");
    Ok(server)
}

/// Where the env's interpreter keeps its shared libpython, which the zygote embeds.
async fn find_libpython(env: &KernelEnv) -> Result<PathBuf, LaunchError> {
    const SCRIPT: &str = "import json, os, sysconfig as s; v = s.get_config_var; \
        print(json.dumps({'shared': bool(v('Py_ENABLE_SHARED')), \
        'paths': [os.path.join(v('LIBDIR') or '', n) for n in (v('INSTSONAME'), v('LDLIBRARY')) if n]}))";
    #[derive(Deserialize)]
    struct Answer {
        shared: bool,
        paths: Vec<PathBuf>,
    }
    let unavailable = |detail: String| LaunchError::ZygoteUnavailable(detail);
    let out = tokio::process::Command::new(&env.python)
        .arg("-c")
        .arg(SCRIPT)
        .env_clear()
        .output()
        .await
        .map_err(|e| unavailable(format!("running {}: {e}", env.python.display())))?;
    let answer: Answer = serde_json::from_slice(&out.stdout).map_err(|e| {
        unavailable(format!(
            "asking {} for its libpython: {e}: {}",
            env.python.display(),
            String::from_utf8_lossy(&out.stderr)
        ))
    })?;
    let mounted = |path: &Path| path.starts_with(&env.base_prefix) || path.starts_with("/usr");
    match answer.paths.into_iter().find(|path| path.is_file()) {
        Some(path) if answer.shared && mounted(&path) => Ok(path),
        Some(path) if answer.shared => Err(unavailable(format!(
            "its libpython {} is outside the directories a sandbox mounts ({} and /usr)",
            path.display(),
            env.base_prefix.display()
        ))),
        _ => Err(unavailable(format!(
            "{} was built without a shared libpython (build Python with --enable-shared, or on Debian install \
             libpython3.X for your version)",
            env.python.display()
        ))),
    }
}
