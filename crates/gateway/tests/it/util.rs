//! Test harness: starts the real binary with a temporary data directory and talks to it over HTTP.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gateway::harness::ServerProcess;
use serde_json::{json, Value};

/// The token every test server uses.
pub(crate) const TOKEN: &str = "test-token-0123456789";

/// The kernel environment shared by all test servers: the default one, created once if missing.
pub(crate) fn kernel_env() -> PathBuf {
    static ENV: OnceLock<PathBuf> = OnceLock::new();
    ENV.get_or_init(|| kernel_env_named("kernel-env", None)).clone()
}

/// The kernel environment `name` under the default data directory, made from `python` (or the newest CPython
/// found) if missing.
pub(crate) fn kernel_env_named(name: &str, python: Option<&Path>) -> PathBuf {
    let root = gateway::config::default_data_dir().join(name);
    let ensure = gateway::kernel_env::ensure(&root, python);
    block_on_own_thread(ensure).unwrap_or_else(|e| panic!("creating the kernel environment {name}: {e:?}"));
    root
}

/// Runs a future to completion on a runtime of its own thread (tests already run inside a runtime).
fn block_on_own_thread<F: std::future::Future + Send>(future: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(future))
            .join()
            .unwrap()
    })
}

/// A running `code-interpreter serve` with its data directory.
pub(crate) struct TestServer {
    process: ServerProcess,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub(crate) url: String,
    /// The server's data directory.
    pub(crate) data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a server with its own temporary data directory and the given extra flags; waits until it serves.
    pub(crate) fn start(flags: &[&str]) -> TestServer {
        let temp = tempfile::Builder::new().prefix("ci-test-").tempdir().unwrap();
        let mut server = TestServer::start_in(temp.path(), flags);
        server._temp = Some(temp);
        server
    }

    /// Starts a server on an existing data directory (kept after the server stops).
    pub(crate) fn start_in(data_dir: &Path, flags: &[&str]) -> TestServer {
        TestServer::start_with_token(data_dir, flags, TOKEN)
    }

    /// Starts a server whose `AUTH_TOKEN` is `token` (empty: the token comes from the data directory's file).
    pub(crate) fn start_with_token(data_dir: &Path, flags: &[&str], token: &str) -> TestServer {
        TestServer::start_logging(data_dir, flags, token, "gateway=debug,sandbox=info")
    }

    /// Starts a server with `RUST_LOG` set to `filter`.
    pub(crate) fn start_logging(data_dir: &Path, flags: &[&str], token: &str, filter: &str) -> TestServer {
        TestServer::start_on_env(data_dir, &kernel_env(), flags, token, filter)
    }

    /// Starts a server whose kernels run in the kernel environment `env`.
    pub(crate) fn start_on_env(data_dir: &Path, env: &Path, flags: &[&str], token: &str, filter: &str) -> TestServer {
        let mut all_flags = vec!["--kernel-env", env.to_str().unwrap()];
        all_flags.extend_from_slice(flags);
        let exe = Path::new(env!("CARGO_BIN_EXE_code-interpreter"));
        let envs = [("RUST_LOG", filter)];
        let process = ServerProcess::start(exe, data_dir, token, &all_flags, &envs).expect("starting the server");
        TestServer { url: process.url.clone(), process, data_dir: data_dir.to_path_buf(), _temp: None }
    }

    /// The server's recent log lines (its stderr is a pipe: no colour codes).
    pub(crate) fn log_lines(&self) -> Vec<String> {
        self.process.log_lines()
    }

    /// Kills the server with SIGKILL, as a crash would, and reaps it.
    pub(crate) fn kill_hard(&self) {
        self.process.kill_hard();
    }

    /// Stops the server with SIGTERM and waits (bounded); returns whether it exited by itself in time.
    pub(crate) fn stop(&self) -> bool {
        self.process.stop()
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.process.pid().expect("the server runs")
    }

    /// An HTTP client for this server.
    pub(crate) fn client(&self) -> Api {
        Api { http: reqwest::Client::new(), url: self.url.clone() }
    }
}

/// The shared server most tests use: the default (zygote) launcher, 2 warm sandboxes, 6 s timeout, 1 s grace.
pub(crate) fn shared() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| shared_server("zygote"))
}

/// The same as [`shared`] with the exec launcher, for the tests that must hold for both.
pub(crate) fn shared_exec() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| shared_server("exec"))
}

/// Both shared servers, with their launcher's name.
pub(crate) fn both_launchers() -> [(&'static str, &'static TestServer); 2] {
    [("zygote", shared()), ("exec", shared_exec())]
}

fn shared_server(launcher: &str) -> TestServer {
    let server = TestServer::start(&[
        "--launcher",
        launcher,
        "--warm-sandboxes",
        "2",
        "--max-sandboxes",
        "64",
        "--execution-timeout-secs",
        "6",
        "--interrupt-grace-secs",
        "1",
    ]);
    server.client_blocking_wait_ready();
    server
}

impl TestServer {
    /// Waits until `/status` says the initial fill is done.
    pub(crate) fn client_blocking_wait_ready(&self) {
        block_on_own_thread(self.client().wait_ready());
    }
}

/// A client of one server.
#[derive(Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    url: String,
}

impl Api {
    /// `POST /execute` with the token; returns status and JSON body.
    pub(crate) async fn execute(&self, user: &str, code: &str) -> (u16, Value) {
        self.post("/execute", &json!({ "user_uuid": user, "code": code })).await
    }

    /// Runs code that must succeed; returns `result_text`.
    pub(crate) async fn run_ok(&self, user: &str, code: &str) -> String {
        let (status, body) = self.execute(user, code).await;
        assert_eq!(status, 200, "{code:?} gave {body}");
        body["result_text"].as_str().unwrap_or_default().to_owned()
    }

    /// `POST /release`.
    pub(crate) async fn release(&self, user: &str) -> (u16, Value) {
        self.post("/release", &json!({ "user_uuid": user })).await
    }

    /// `GET /status`.
    pub(crate) async fn status(&self) -> Value {
        let response =
            self.http.get(format!("{}/status", self.url)).header("X-Auth-Token", TOKEN).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// POST a JSON body with the token.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.raw(path, Some(TOKEN), body.to_string().into_bytes()).await
    }

    /// POST raw bytes with an optional token; returns status and body (JSON, or a string if not JSON).
    pub(crate) async fn raw(&self, path: &str, token: Option<&str>, body: Vec<u8>) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .timeout(Duration::from_secs(120))
            .body(body);
        if let Some(token) = token {
            request = request.header("X-Auth-Token", token);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Any request with the token and a raw body; returns the status and the body's bytes.
    pub(crate) async fn send(&self, method: reqwest::Method, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let request = self.http.request(method, format!("{}{path}", self.url)).header("X-Auth-Token", TOKEN);
        let response = request.timeout(Duration::from_secs(60)).body(body).send().await.unwrap();
        (response.status().as_u16(), response.bytes().await.unwrap().to_vec())
    }

    /// `POST /execute/stream`: the status, and each Server-Sent Event as (seconds since the request, event name,
    /// data as JSON) in arrival order.
    pub(crate) async fn execute_stream(&self, user: &str, code: &str) -> (u16, Vec<(f64, String, Value)>) {
        let started = Instant::now();
        let mut response = self
            .http
            .post(format!("{}/execute/stream", self.url))
            .header("X-Auth-Token", TOKEN)
            .json(&json!({ "user_uuid": user, "code": code }))
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let (mut events, mut pending) = (Vec::new(), String::new());
        while let Some(chunk) = response.chunk().await.unwrap() {
            let at = started.elapsed().as_secs_f64();
            pending.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = pending.find("\n\n") {
                let block: String = pending.drain(..end + 2).collect();
                let field = |name: &str| block.lines().find_map(|l| l.strip_prefix(name)).map(str::to_owned);
                if let (Some(event), Some(data)) = (field("event: "), field("data: ")) {
                    events.push((at, event, serde_json::from_str(&data).unwrap_or(Value::String(data))));
                }
            }
        }
        (status, events)
    }

    /// GET a path without the token.
    pub(crate) async fn get_anonymous(&self, path: &str) -> (u16, String) {
        let response = self.http.get(format!("{}{path}", self.url)).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// Waits until the initial pool fill is over.
    pub(crate) async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(180);
        while self.status().await["is_initializing"] == true {
            assert!(Instant::now() < deadline, "the pool never finished initializing");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A user id unique to this test run.
pub(crate) fn user(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4())
}
