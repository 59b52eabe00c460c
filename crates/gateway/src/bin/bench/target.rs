//! What the benchmark drives: a session through the real server over HTTP, or the floor, the project's own
//! Jupyter client talking directly to a bare ipykernel (no HTTP, no sandbox).

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use gateway::harness::ServerProcess;
use gateway::kernel_env::KernelEnv;
use kernel::{ConnectionInfo, ExecuteStatus, Output, StreamName};
use serde_json::{json, Value};
use tokio::sync::Mutex;

/// One stateful Python session, either side.
#[derive(Clone)]
pub(crate) enum Session {
    /// `POST /execute` with this `user_uuid`.
    Http { http: Http, user: String },
    /// Direct client; the mutex queues concurrent requests as a gateway session does.
    Direct(Arc<Mutex<kernel::Client>>),
}

impl Session {
    /// Runs `code`; `Ok(text)` is stdout then the last value's text, `Err` says what failed.
    pub(crate) async fn run(&self, code: &str) -> Result<String, String> {
        match self {
            Session::Http { http, user } => {
                let (status, body) = http.post("/execute", json!({ "user_uuid": user, "code": code })).await;
                if status == 200 {
                    Ok(body["result_text"].as_str().unwrap_or("").to_owned())
                } else {
                    Err(format!("HTTP {status}: {}", body.get("detail").unwrap_or(&body)))
                }
            }
            Session::Direct(client) => {
                let mut text = String::new();
                let mut client = client.lock().await;
                let reply = client
                    .execute(code, &mut |output| match output {
                        Output::Stream { name: StreamName::Stdout, text: t } => text.push_str(&t),
                        Output::ExecuteResult { data, .. } => {
                            text.push_str(data.get("text/plain").and_then(Value::as_str).unwrap_or(""));
                        }
                        _ => {}
                    })
                    .await
                    .map_err(|err| format!("kernel: {err}"))?;
                match reply.status {
                    ExecuteStatus::Ok => Ok(text),
                    _ => Err(format!("python error: {:?}", reply.error.map(|e| e.ename))),
                }
            }
        }
    }

    /// Times one `run`: (milliseconds, outcome).
    pub(crate) async fn timed(&self, code: &str) -> (f64, Result<String, String>) {
        let started = Instant::now();
        let outcome = self.run(code).await;
        (started.elapsed().as_secs_f64() * 1e3, outcome)
    }

    /// Frees the session (HTTP: `/release`; direct: nothing, the kernel goes with its owner).
    pub(crate) async fn release(&self) {
        if let Session::Http { http, user } = self {
            http.post("/release", json!({ "user_uuid": user })).await;
        }
    }
}

/// An HTTP client of one server.
#[derive(Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    url: String,
    token: String,
}

impl Http {
    pub(crate) fn session(&self, user: impl Into<String>) -> Session {
        Session::Http { http: self.clone(), user: user.into() }
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let sent = self.client.post(format!("{}{path}", self.url)).header("X-Auth-Token", &self.token).json(&body);
        match sent.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.json().await.unwrap_or(Value::Null))
            }
            Err(err) => (599, json!({ "detail": format!("transport: {err}") })),
        }
    }

    pub(crate) async fn status(&self) -> anyhow::Result<Value> {
        let response = self.client.get(format!("{}/status", self.url)).header("X-Auth-Token", &self.token).send();
        Ok(response.await?.json().await?)
    }

    /// Polls `/status` until `done(status)` or `timeout`; returns whether it got there.
    pub(crate) async fn wait_status(&self, timeout: Duration, done: impl Fn(&Value) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.status().await.is_ok_and(|s| done(&s)) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }
}

/// The real server, started for part of the run with a temporary data directory.
pub(crate) struct Server {
    pub(crate) process: ServerProcess,
    pub(crate) http: Http,
    /// cgroup parent of its sandboxes.
    pub(crate) cgroup_parent: String,
    _data: tempfile::TempDir,
}

impl Server {
    /// Starts `code-interpreter` (next to this binary) with `warm` warm sandboxes, at most `max`, and the
    /// default launcher (the zygote).
    pub(crate) fn start(env: &KernelEnv, warm: usize, max: usize) -> anyhow::Result<Server> {
        Server::start_with(env, warm, max, "zygote")
    }

    /// [`Server::start`] with `launcher` (`zygote` or `exec`).
    pub(crate) fn start_with(env: &KernelEnv, warm: usize, max: usize, launcher: &str) -> anyhow::Result<Server> {
        let exe = std::env::current_exe()?.with_file_name("code-interpreter");
        if !exe.is_file() {
            bail!("{} not found: build it with `cargo build --release -p gateway`", exe.display());
        }
        let data = tempfile::Builder::new().prefix("bench-").tempdir()?;
        let token = uuid::Uuid::new_v4().to_string();
        let (warm, max) = (warm.to_string(), max.to_string());
        let flags = [
            "--kernel-env",
            env.root.to_str().context("kernel env path")?,
            "--warm-sandboxes",
            &warm,
            "--max-sandboxes",
            &max,
            "--launcher",
            launcher,
        ];
        let process = ServerProcess::start(&exe, data.path(), &token, &flags, &[("RUST_LOG", "gateway=warn")])?;
        let client =
            reqwest::Client::builder().timeout(Duration::from_secs(120)).pool_max_idle_per_host(512).build()?;
        let http = Http { client, url: process.url.clone(), token };
        let cgroup_parent = gateway::launcher::sandboxed::cgroup_parent_for(data.path());
        Ok(Server { process, http, cgroup_parent, _data: data })
    }

    /// Waits until the server answers `/status` (its launcher is up: the zygote has preloaded), so that start-up
    /// is not counted in the first measurement.
    pub(crate) async fn ready(&self) {
        self.http.wait_status(Duration::from_secs(120), |_| true).await;
    }

    /// Resident memory of the gateway process, MiB.
    pub(crate) fn rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.process.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
    }

    /// PSS of the server's zygote (a child whose command line says `__zygote`), MiB; `None` without one.
    pub(crate) fn zygote_pss_mib(&self) -> Option<f64> {
        pss_mib(self.zygote_pid()?)
    }

    /// Host pid of the server's zygote, if it runs one.
    pub(crate) fn zygote_pid(&self) -> Option<u32> {
        let server = self.process.pid()?;
        std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid: u32 = stat.rsplit(") ").next()?.split_whitespace().nth(1)?.parse().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            (ppid == server && cmdline.split(|b| *b == 0).nth(1) == Some(b"__zygote".as_slice())).then_some(pid)
        })
    }

    /// PSS of each sandbox (sum over the processes of its cgroup), MiB.
    pub(crate) fn sandbox_pss_mib(&self) -> Vec<f64> {
        self.sandbox_pids().iter().map(|pids| pids.iter().filter_map(|&pid| pss_mib(pid)).sum()).collect()
    }

    /// The processes of each sandbox (those of its cgroup).
    pub(crate) fn sandbox_pids(&self) -> Vec<Vec<u32>> {
        let roots = [
            Path::new("/sys/fs/cgroup/memory").join(&self.cgroup_parent),
            Path::new("/sys/fs/cgroup").join(&self.cgroup_parent),
            Path::new("/sys/fs/cgroup/unified").join(&self.cgroup_parent),
        ];
        let Some(root) = roots.iter().find(|r| r.is_dir()) else { return Vec::new() };
        let Ok(entries) = std::fs::read_dir(root) else { return Vec::new() };
        let mut out = Vec::new();
        for entry in entries.flatten().filter(|e| e.path().is_dir()) {
            let mut pids = Vec::new();
            collect_pids(&entry.path(), &mut pids);
            if !pids.is_empty() {
                out.push(pids);
            }
        }
        out
    }
}

/// Pids in `dir/cgroup.procs` and in its sub-cgroups.
fn collect_pids(dir: &Path, pids: &mut Vec<u32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten().filter(|e| e.path().is_dir()) {
            collect_pids(&entry.path(), pids);
        }
    }
}

/// The host's `MemAvailable`, MiB.
pub(crate) fn mem_available_mib() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

/// `Pss:` of `/proc/<pid>/smaps_rollup`, MiB.
pub(crate) fn pss_mib(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Pss:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

/// A bare ipykernel (no sandbox) with a direct client; killed when dropped.
pub(crate) struct BareKernel {
    child: tokio::process::Child,
    pub(crate) session: Session,
    _dir: tempfile::TempDir,
}

impl BareKernel {
    /// Starts `<env>/bin/python -m code_interpreter_kernel` (the kernel the sandboxes run) on ipc sockets in a temp
    /// dir, with the environment the sandboxed kernels get that matters for speed (inline backend, one BLAS thread,
    /// in-memory history), and waits until it is ready (shell answers, iopub connected).
    pub(crate) async fn start(env: &KernelEnv) -> anyhow::Result<BareKernel> {
        let dir = tempfile::Builder::new().prefix("bk").tempdir()?;
        let info = ConnectionInfo::ipc(dir.path());
        let file = dir.path().join("kernel.json");
        std::fs::write(&file, info.connection_file_json(dir.path()))?;
        let child = tokio::process::Command::new(&env.python)
            .args(["-m", gateway::kernel_env::KERNEL_MODULE, "-f"])
            .arg(&file)
            .arg("--HistoryManager.hist_file=:memory:")
            .env("IPYTHONDIR", dir.path().join("ipython"))
            .env("MPLCONFIGDIR", dir.path().join("mpl"))
            .env("MATPLOTLIBRC", &env.matplotlibrc)
            .env("MPLBACKEND", "module://matplotlib_inline.backend_inline")
            .env("OPENBLAS_NUM_THREADS", "1")
            .env("OMP_NUM_THREADS", "1")
            .env("MKL_NUM_THREADS", "1")
            .env("MALLOC_ARENA_MAX", "2")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYDEVD_DISABLE_FILE_VALIDATION", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", env.python.display()))?;
        let mut client = kernel::Client::connect_with_timeout(&info, Duration::from_secs(120)).await?;
        client.wait_ready(Duration::from_secs(120)).await?;
        Ok(BareKernel { child, session: Session::Direct(Arc::new(Mutex::new(client))), _dir: dir })
    }

    pub(crate) fn pss_mib(&self) -> Option<f64> {
        pss_mib(self.child.id()?)
    }

    /// Kills the kernel and waits until it is gone, so that its teardown is over before what is measured next.
    pub(crate) async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Starts `n` bare kernels, `parallel` at a time; stops early (returning fewer) past `deadline`.
pub(crate) async fn start_bare_many(
    env: &KernelEnv,
    n: usize,
    parallel: usize,
    deadline: Duration,
) -> anyhow::Result<Vec<BareKernel>> {
    let until = Instant::now() + deadline;
    let mut kernels = Vec::with_capacity(n);
    while kernels.len() < n && Instant::now() < until {
        let batch = parallel.min(n - kernels.len());
        let started = futures_util::future::join_all((0..batch).map(|_| BareKernel::start(env))).await;
        for kernel in started {
            kernels.push(kernel?);
        }
    }
    Ok(kernels)
}
