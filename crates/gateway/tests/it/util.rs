//! Test harness: starts the real binary with a temporary data directory and talks to it over HTTP.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The token every test server uses.
pub(crate) const TOKEN: &str = "test-token-0123456789";

/// The kernel environment shared by all test servers: the default one, created once if missing.
pub(crate) fn kernel_env() -> PathBuf {
    static ENV: OnceLock<PathBuf> = OnceLock::new();
    ENV.get_or_init(|| {
        let root = gateway::config::default_data_dir().join("kernel-env");
        let ensure = gateway::kernel_env::ensure(&root, Path::new("python3"));
        block_on_own_thread(ensure).expect("creating the kernel environment");
        root
    })
    .clone()
}

/// Runs a future to completion on a runtime of its own thread (tests already run inside a runtime).
fn block_on_own_thread<F: std::future::Future + Send>(future: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(future)
            })
            .join()
            .unwrap()
    })
}

/// A running `code-interpreter serve`; stopped with SIGTERM on drop.
pub(crate) struct TestServer {
    child: Mutex<Option<Child>>,
    /// Held open: the server stops when it closes (`--stop-on-stdin-eof`), even if this process dies.
    _stdin: Mutex<Option<ChildStdin>>,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub(crate) url: String,
    /// The server's data directory.
    pub(crate) data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a server with its own temporary data directory and the given extra flags; waits until it serves.
    pub(crate) fn start(flags: &[&str]) -> TestServer {
        let temp = tempfile::Builder::new()
            .prefix("ci-test-")
            .tempdir()
            .unwrap();
        let data_dir = temp.path().to_path_buf();
        let mut server = TestServer::start_in(&data_dir, flags);
        server._temp = Some(temp);
        server
    }

    /// Starts a server on an existing data directory (kept after the server stops).
    pub(crate) fn start_in(data_dir: &Path, flags: &[&str]) -> TestServer {
        let env = kernel_env();
        let mut child = Command::new(env!("CARGO_BIN_EXE_code-interpreter"))
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--kernel-env")
            .arg(&env)
            .args(["--listen", "127.0.0.1:0", "--stop-on-stdin-eof"])
            .args(flags)
            .env("AUTH_TOKEN", TOKEN)
            .env("RUST_LOG", "gateway=debug,sandbox=info")
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting code-interpreter");
        let stdin = child.stdin.take();
        let (address_tx, address_rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(rest) = line.split("serving on http://").nth(1) {
                    let address: String = rest
                        .chars()
                        .take_while(|c| !c.is_whitespace() && *c != ';')
                        .collect();
                    let _ = address_tx.send(address);
                }
                eprintln!("[server] {line}");
            }
        });
        let address = address_rx
            .recv_timeout(Duration::from_secs(300))
            .expect("the server did not start serving");
        TestServer {
            child: Mutex::new(Some(child)),
            _stdin: Mutex::new(stdin),
            url: format!("http://{address}"),
            data_dir: data_dir.to_path_buf(),
            _temp: None,
        }
    }

    /// Kills the server with SIGKILL, as a crash would, and reaps it.
    pub(crate) fn kill_hard(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Stops the server with SIGTERM and waits for it (bounded); returns whether it exited by itself in time.
    pub(crate) fn stop(&self) -> bool {
        let Some(mut child) = self.child.lock().unwrap().take() else {
            return true;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// An HTTP client for this server.
    pub(crate) fn client(&self) -> Api {
        Api {
            http: reqwest::Client::new(),
            url: self.url.clone(),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The shared server most tests use: 2 warm sandboxes, 3 s timeout, 1 s interrupt grace.
pub(crate) fn shared() -> &'static TestServer {
    static SERVER: OnceLock<TestServer> = OnceLock::new();
    SERVER.get_or_init(|| {
        let server = TestServer::start(&[
            "--warm-sandboxes",
            "2",
            "--max-sandboxes",
            "24",
            "--execution-timeout-secs",
            "3",
            "--interrupt-grace-secs",
            "1",
        ]);
        server.client_blocking_wait_ready();
        server
    })
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
        self.post("/execute", &json!({ "user_uuid": user, "code": code }))
            .await
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
        let response = self
            .http
            .get(format!("{}/status", self.url))
            .header("X-Auth-Token", TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    /// POST a JSON body with the token.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.raw(path, Some(TOKEN), body.to_string().into_bytes())
            .await
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
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// GET a path without the token.
    pub(crate) async fn get_anonymous(&self, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    /// Waits until the initial pool fill is over.
    pub(crate) async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(180);
        while self.status().await["is_initializing"] == true {
            assert!(
                Instant::now() < deadline,
                "the pool never finished initializing"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A user id unique to this test run.
pub(crate) fn user(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4())
}
