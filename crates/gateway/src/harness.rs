//! Runs the `code-interpreter` binary as a child process on a loopback port: for the integration tests and the
//! soak command, which drive the real server from outside.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// A running server; stopped with SIGTERM when dropped.
pub struct ServerProcess {
    child: Mutex<Option<Child>>,
    /// Held open: the server stops when it closes (`--stop-on-stdin-eof`), even if this process dies.
    _stdin: Option<ChildStdin>,
    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub url: String,
    /// The last [`LOG_KEEP`] lines the server wrote to stderr.
    log: Arc<Mutex<VecDeque<String>>>,
}

/// How many of the server's log lines are kept for [`ServerProcess::log_lines`].
const LOG_KEEP: usize = 10_000;

/// Starting the server failed.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The binary could not be started.
    #[error("cannot start {exe}")]
    Spawn {
        /// The binary.
        exe: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The server did not say where it listens in time.
    #[error("the server did not start serving within {0:?}")]
    NotServing(Duration),
}

impl ServerProcess {
    /// Starts `exe` serving on an ephemeral loopback port with `data_dir`, the token `token` and extra `flags`;
    /// returns once it listens. Its log lines are copied to this process's stderr, prefixed `[server]`.
    pub fn start(
        exe: &Path,
        data_dir: &Path,
        token: &str,
        flags: &[&str],
        envs: &[(&str, &str)],
    ) -> Result<ServerProcess, HarnessError> {
        let mut child = Command::new(exe)
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--stop-on-stdin-eof"])
            .args(flags)
            .env("AUTH_TOKEN", token)
            .envs(envs.iter().copied())
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| HarnessError::Spawn { exe: exe.to_path_buf(), source })?;
        let stdin = child.stdin.take();
        let stderr = child.stderr.take().expect("piped above");
        let (address_tx, address_rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                {
                    let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                    if kept.len() == LOG_KEEP {
                        kept.pop_front();
                    }
                    kept.push_back(line.clone());
                }
                if let Some(rest) = line.split("serving on http://").nth(1) {
                    let address: String = rest.chars().take_while(|c| !c.is_whitespace() && *c != ';').collect();
                    let _ = address_tx.send(address);
                }
                eprintln!("[server] {line}");
            }
        });
        let wait = Duration::from_secs(600);
        // Built before waiting, so a server that never serves is stopped by `Drop`.
        let mut server = ServerProcess { child: Mutex::new(Some(child)), _stdin: stdin, url: String::new(), log };
        let address = address_rx.recv_timeout(wait).map_err(|_| HarnessError::NotServing(wait))?;
        server.url = format!("http://{address}");
        Ok(server)
    }

    /// The server's recent log lines (stderr), oldest first.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }

    /// The server's process id, while it runs (e.g. to read its memory from `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL, as a crash would, and reaps it.
    pub fn kill_hard(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGTERM and waits (at most 30 s); returns whether it exited by itself in time.
    pub fn stop(&self) -> bool {
        let Some(mut child) = self.child.lock().unwrap_or_else(|e| e.into_inner()).take() else { return true };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
        }
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
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
