//! The gateway side of a fork server: [`ForkServer`] starts the server process, sends it one request per sandbox
//! and routes its events to the [`Sandbox`]es it returns.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{oneshot, watch};

use super::{Event, Request};
use crate::cgroups::Cgroup;
use crate::error::Error;
use crate::policy::Policy;
use crate::spawn::{conclude, discard_cgroup, open_cgroup, StderrLog, READY_TIMEOUT, STDERR_KEEP};
use crate::Sandbox;

/// A running fork server. Dropping it kills the server, and with it every sandbox it started.
#[derive(Debug)]
pub struct ForkServer {
    stdin: tokio::sync::Mutex<ChildStdin>,
    state: Arc<State>,
    pid: u32,
    /// Held for `kill_on_drop`.
    _child: Child,
}

#[derive(Debug, Default)]
struct State {
    /// Sandboxes between request and end, by name.
    waiters: Mutex<HashMap<String, Waiter>>,
    /// The event stream has ended: the server and all its sandboxes are gone.
    gone: AtomicBool,
}

#[derive(Debug)]
struct Waiter {
    started: Option<oneshot::Sender<u32>>,
    /// Init's exit code; `None` if the server vanished first.
    exited: oneshot::Sender<Option<i32>>,
}

impl ForkServer {
    /// Starts `command` (a process that calls [`super::enter_root`] and [`super::serve`]), writes `preamble`
    /// (its own configuration, if it reads one from stdin first; kept off its command line, which every sandbox
    /// would see in `/proc/self/cmdline` otherwise) and waits up to `timeout` for it to be serving. Call it from
    /// an async task (see [`crate::spawn`] on `PR_SET_PDEATHSIG`).
    pub async fn start(mut command: Command, preamble: &[u8], timeout: Duration) -> Result<ForkServer, Error> {
        command.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
        command.stderr(std::process::Stdio::piped()).kill_on_drop(true);
        let mut child = command.spawn().map_err(Error::SpawnHelper)?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        stdin.write_all(preamble).await.map_err(Error::SendPolicy)?;
        let stderr = StderrLog::start(child.stderr.take().expect("stderr is piped"), "fork-server".into(), true);
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut line = String::new();
        let serving = match tokio::time::timeout(timeout, stdout.read_line(&mut line)).await {
            Ok(Ok(_)) => Event::parse(line.trim_end()),
            Ok(Err(_)) | Err(_) => None,
        };
        let Some(Event::Serving { pid }) = serving else {
            let _ = child.start_kill();
            let status = child.wait().await.map_or_else(|e| e.to_string(), |s| s.to_string());
            let stderr = stderr.finish().await;
            return Err(if line.is_empty() && stderr.is_empty() {
                Error::Timeout { timeout, stderr }
            } else if stderr.is_empty() {
                Error::Protocol { line }
            } else {
                Error::Setup { status, stderr }
            });
        };
        stderr.stop_collecting();
        let state = Arc::new(State::default());
        tokio::spawn(route_events(stdout, Arc::clone(&state)));
        let stdin = tokio::sync::Mutex::new(stdin);
        Ok(ForkServer { stdin, state, pid, _child: child })
    }

    /// Host pid of the server process.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// False once the server has gone (it cannot start sandboxes any more; start a new one).
    pub fn is_serving(&self) -> bool {
        !self.state.gone.load(Ordering::SeqCst)
    }

    /// Starts a sandbox for `policy` whose processes write their stderr to `stderr` (a host file,
    /// appended to; keep it on a size-limited filesystem). Returns once the payload runs.
    pub async fn spawn(&self, policy: &Policy, stderr: &Path) -> Result<Sandbox, Error> {
        if !self.is_serving() {
            return Err(Error::ServerGone);
        }
        // Before the cgroup is touched: a failed start discards it, and it is the running sandbox's.
        if self.state.waiters.lock().expect("waiters poisoned").contains_key(&policy.name) {
            return Err(Error::NameInUse(policy.name.clone()));
        }
        // The server creates it (or renames its spare's into it).
        let cgroup = open_cgroup(policy)?;
        match self.start_sandbox(policy, stderr, &cgroup).await {
            Ok(sandbox) => Ok(sandbox),
            Err(Error::NameInUse(name)) => Err(Error::NameInUse(name)),
            Err(error) => {
                self.state.waiters.lock().expect("waiters poisoned").remove(&policy.name);
                Err(discard_cgroup(cgroup, error).await)
            }
        }
    }

    async fn start_sandbox(&self, policy: &Policy, stderr: &Path, cgroup: &Arc<dyn Cgroup>) -> Result<Sandbox, Error> {
        let name = policy.name.clone();
        let (started_tx, started) = oneshot::channel();
        let (exited_tx, mut exited) = oneshot::channel();
        {
            let mut waiters = self.state.waiters.lock().expect("waiters poisoned");
            if !self.is_serving() {
                return Err(Error::ServerGone);
            }
            if waiters.contains_key(&name) {
                return Err(Error::NameInUse(name));
            }
            waiters.insert(name.clone(), Waiter { started: Some(started_tx), exited: exited_tx });
        }
        let request = Request { policy: policy.clone(), stderr: stderr.to_path_buf() };
        let mut line = serde_json::to_string(&request).expect("a Request always serializes");
        line.push('\n');
        self.stdin.lock().await.write_all(line.as_bytes()).await.map_err(Error::SendPolicy)?;
        let init = match tokio::time::timeout(READY_TIMEOUT, started).await {
            Ok(Ok(init)) => init,
            Ok(Err(_)) => {
                let status = match (&mut exited).await {
                    Ok(Some(code)) => format!("sandbox exit code {code}"),
                    Ok(None) | Err(_) => "the fork server has gone".to_string(),
                };
                return Err(Error::Setup { status, stderr: read_tail(stderr) });
            }
            Err(_) => return Err(Error::Timeout { timeout: READY_TIMEOUT, stderr: read_tail(stderr) }),
        };
        let (tx, done) = watch::channel(None);
        let watched = Arc::clone(cgroup);
        tokio::spawn(async move {
            let code = exited.await.ok().flatten();
            let _ = tx.send(Some(conclude(code, None, watched, &name).await));
        });
        Ok(Sandbox::new(init, Arc::clone(cgroup), done))
    }
}

/// Reads the server's events until its stdout closes, then completes every waiter as gone.
async fn route_events(stdout: BufReader<ChildStdout>, state: Arc<State>) {
    let mut lines = stdout.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut waiters = state.waiters.lock().expect("waiters poisoned");
        match Event::parse(&line) {
            Some(Event::Started { name, init }) => {
                if let Some(started) = waiters.get_mut(&name).and_then(|w| w.started.take()) {
                    let _ = started.send(init);
                }
            }
            Some(Event::Exited { name, code }) => {
                if let Some(waiter) = waiters.remove(&name) {
                    let _ = waiter.exited.send(Some(code));
                }
            }
            Some(Event::Refused { reason }) => tracing::warn!(%reason, "the fork server refused a request"),
            Some(Event::Serving { .. }) | None => tracing::warn!(%line, "unexpected line from the fork server"),
        }
    }
    let mut waiters = state.waiters.lock().expect("waiters poisoned");
    // Under the lock, so no request can register after the drain below.
    state.gone.store(true, Ordering::SeqCst);
    for (_, waiter) in waiters.drain() {
        let _ = waiter.exited.send(None);
    }
    tracing::warn!("the fork server has exited");
}

/// The last [`STDERR_KEEP`] bytes of a sandbox's stderr file, for an error message.
fn read_tail(path: &Path) -> String {
    let mut text = Vec::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(STDERR_KEEP as u64)));
        let _ = file.take(STDERR_KEEP as u64).read_to_end(&mut text);
    }
    String::from_utf8_lossy(&text).trim().to_string()
}
