//! The gateway side: [`spawn`] creates the cgroup, starts the helper, hands it the policy and waits for the ready
//! line; [`Sandbox`] watches the helper, reports how the payload ended and tears the sandbox down.

use std::os::fd::OwnedFd;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::cgroups::{self, Cgroup, CgroupDriver, CgroupSetup};
use crate::error::Error;
use crate::helper::READY_PREFIX;
use crate::policy::Policy;
use crate::status::{decide, Termination};
use crate::sys;

/// How long the helper may take from start to the payload's exec.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest line of the helper's stderr read at once; longer ones are logged in pieces.
const LINE_MAX: u64 = 8 * 1024;
/// How much of the helper's stderr is kept for an error message.
pub(crate) const STDERR_KEEP: usize = 16 * 1024;
/// How long `kill` lets a SIGKILLed init take down its namespace before killing the whole cgroup.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// A running sandbox. Dropping it SIGKILLs the sandbox; its cgroup is removed in the background.
#[derive(Debug)]
pub struct Sandbox {
    init_pid: u32,
    /// A pidfd on init, so a kill never hits a recycled pid.
    init_fd: Option<OwnedFd>,
    cgroup: Arc<dyn Cgroup>,
    done: watch::Receiver<Option<Termination>>,
}

impl Sandbox {
    /// Host pid of the sandbox's init (pid 1), or under a [`ForkServer`](crate::ForkServer) of its first process,
    /// the payload (pid 2): either way its root is the sandbox's root, and killing it ends the sandbox.
    pub fn init_pid(&self) -> u32 {
        self.init_pid
    }

    /// Resolves once the payload is gone and the sandbox is cleaned up. Cancel-safe; any number of tasks may wait.
    pub async fn wait(&self) -> Termination {
        let mut done = self.done.clone();
        let result = done.wait_for(Option::is_some).await.map(|t| t.expect("checked by wait_for"));
        // The watcher always sends before it ends; a closed channel without a value means it panicked.
        result.unwrap_or(Termination::Signaled(libc::SIGKILL))
    }

    /// SIGKILLs the whole sandbox, waits for it to end and its cgroup to be removed. Idempotent.
    pub async fn kill(&self) {
        if self.done.borrow().is_none() {
            // Killing init (pid 1) tears the pid namespace down and lets the helper reap it (no zombie left behind);
            // under a fork server, the server then kills the namespace's pid 1 and reaps both.
            self.signal_init();
            if tokio::time::timeout(KILL_GRACE, self.wait()).await.is_err() {
                let cgroup = Arc::clone(&self.cgroup);
                match tokio::task::spawn_blocking(move || cgroup.kill_all()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(error)) => tracing::warn!(%error, "killing sandbox cgroup"),
                    Err(error) => tracing::warn!(%error, "cgroup kill task failed"),
                }
            }
        }
        self.wait().await;
    }

    /// How often a fork or clone in this sandbox failed against its process limit so far (0 if unreadable).
    pub fn pids_limit_hits(&self) -> u64 {
        self.cgroup.pids_max_events().unwrap_or(0)
    }

    /// The `cgroup.procs` file of this sandbox's memory cgroup: a process that writes its pid there has what it
    /// allocates from then on (tmpfs pages included) charged to the sandbox.
    pub fn memory_procs_file(&self) -> Option<std::path::PathBuf> {
        self.cgroup.memory_procs_file()
    }

    /// How many processes of this sandbox the memory cgroup has OOM-killed so far (0 if unreadable).
    pub fn oom_kills(&self) -> u64 {
        self.cgroup.oom_kills().unwrap_or(0)
    }

    fn signal_init(&self) {
        if let Some(fd) = &self.init_fd {
            // ESRCH: already gone.
            let _ = sys::pidfd_send_signal(fd, Signal::SIGKILL);
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.done.borrow().is_none() {
            // The watcher task sees the helper exit and removes the cgroup.
            self.signal_init();
        }
    }
}

/// Starts a sandbox: creates its cgroup, runs `helper` (the caller's command for a process that calls
/// [`crate::exec_main`]), sends `policy`, and returns once the payload has been exec'd.
///
/// Call it from an async task, not from `spawn_blocking`: the helper sets `PR_SET_PDEATHSIG`, which fires when
/// the *thread* that spawned it exits, and tokio retires idle blocking threads after a few seconds.
pub async fn spawn(helper: Command, policy: &Policy) -> Result<Sandbox, Error> {
    let cgroup = create_cgroup(policy)?;
    match start(helper, policy, &cgroup).await {
        Ok(sandbox) => Ok(sandbox),
        Err(error) => Err(discard_cgroup(cgroup, error).await),
    }
}

/// Validates `policy` and creates its cgroup with the policy's limits.
pub(crate) fn create_cgroup(policy: &Policy) -> Result<Arc<dyn Cgroup>, Error> {
    policy.validate()?;
    let driver: Arc<dyn CgroupDriver> = Arc::from(cgroups::detect());
    Ok(Arc::from(driver.create(&policy.cgroup_parent, &policy.name, &CgroupSetup::from(&policy.limits))?))
}

/// Validates `policy` and returns a handle on its cgroup, which someone else creates (the fork server).
pub(crate) fn open_cgroup(policy: &Policy) -> Result<Arc<dyn Cgroup>, Error> {
    policy.validate()?;
    Ok(Arc::from(cgroups::detect().open(&policy.cgroup_parent, &policy.name)))
}

/// Kills whatever is left in the cgroup of a sandbox that failed to start, removes it, and returns `error`
/// (with the cleanup's failure attached, if any).
pub(crate) async fn discard_cgroup(cgroup: Arc<dyn Cgroup>, error: Error) -> Error {
    match tokio::task::spawn_blocking(move || cgroup.kill_all().and_then(|()| cgroup.remove())).await {
        Ok(Ok(())) | Err(_) => error,
        Ok(Err(cleanup)) => Error::CleanupFailed { error: Box::new(error), cleanup },
    }
}

async fn start(mut helper: Command, policy: &Policy, cgroup: &Arc<dyn Cgroup>) -> Result<Sandbox, Error> {
    helper.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(false);
    let mut child = helper.spawn().map_err(Error::SpawnHelper)?;
    let stderr = StderrLog::start(child.stderr.take().expect("stderr is piped"), policy.name.clone(), false);
    let mut stdin = child.stdin.take().expect("stdin is piped");
    let json = serde_json::to_vec(policy).expect("a Policy always serializes");
    let sent = async {
        stdin.write_all(&json).await?;
        stdin.shutdown().await
    }
    .await;
    drop(stdin);
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
    let mut line = String::new();
    let read = tokio::time::timeout(READY_TIMEOUT, stdout.read_line(&mut line)).await;
    let init_pid = line.trim_end().strip_prefix(READY_PREFIX).and_then(|pid| pid.parse::<u32>().ok());
    let init_pid = match (sent, read, init_pid) {
        (_, Ok(Ok(_)), Some(pid)) => pid,
        (sent, read, _) => {
            // Whatever went wrong, make sure the helper and anything it started are gone before reporting.
            let _ = child.start_kill();
            let killer = Arc::clone(cgroup);
            let _ = tokio::task::spawn_blocking(move || killer.kill_all()).await;
            let status = child.wait().await;
            let stderr = stderr.finish().await;
            return Err(match (sent, read) {
                (_, Err(_)) => Error::Timeout { timeout: READY_TIMEOUT, stderr },
                (Err(e), _) if stderr.is_empty() => Error::SendPolicy(e),
                _ if line.is_empty() || !stderr.is_empty() => {
                    Error::Setup { status: status.map_or_else(|e| e.to_string(), |s| s.to_string()), stderr }
                }
                _ => Error::Protocol { line },
            });
        }
    };
    let (tx, done) = watch::channel(None);
    let sandbox = Sandbox::new(init_pid, Arc::clone(cgroup), done);
    tokio::spawn(watch_helper(child, stdout, Arc::clone(cgroup), tx, policy.name.clone()));
    stderr.stop_collecting();
    Ok(sandbox)
}

impl Sandbox {
    /// A running sandbox whose pid 1 is `init_pid`; `done` gets its termination once it has been cleaned up.
    pub(crate) fn new(init_pid: u32, cgroup: Arc<dyn Cgroup>, done: watch::Receiver<Option<Termination>>) -> Self {
        let init_fd = sys::pidfd_open(Pid::from_raw(init_pid as i32)).ok();
        Sandbox { init_pid, init_fd, cgroup, done }
    }
}

/// Owns the helper: waits for it, then concludes.
async fn watch_helper(
    mut child: Child,
    stdout: BufReader<impl AsyncRead + Unpin>,
    cgroup: Arc<dyn Cgroup>,
    tx: watch::Sender<Option<Termination>>,
    name: String,
) {
    let status = child.wait().await;
    drop(stdout);
    let (code, signal) = match status {
        Ok(status) => exit_parts(status),
        Err(error) => {
            tracing::warn!(sandbox = %name, %error, "waiting for the sandbox helper");
            (None, None)
        }
    };
    let _ = tx.send(Some(conclude(code, signal, cgroup, &name).await));
}

/// After the helper has gone: decides the termination from its exit code or signal and the cgroup counters, and
/// removes the cgroup.
pub(crate) async fn conclude(
    code: Option<i32>,
    signal: Option<i32>,
    cgroup: Arc<dyn Cgroup>,
    name: &str,
) -> Termination {
    let termination = tokio::task::spawn_blocking(move || {
        let oom = cgroup.oom_kills().unwrap_or_else(|error| {
            tracing::warn!(%error, "reading the OOM counter");
            0
        });
        let pids = cgroup.pids_max_events().unwrap_or(0);
        if let Err(error) = cgroup.kill_all().and_then(|()| cgroup.remove()) {
            tracing::warn!(%error, "removing the sandbox cgroup");
        }
        decide(code, signal, oom, pids)
    })
    .await
    .unwrap_or(Termination::Signaled(libc::SIGKILL));
    tracing::debug!(sandbox = %name, ?termination, "sandbox ended");
    termination
}

fn exit_parts(status: ExitStatus) -> (Option<i32>, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    (status.code(), status.signal())
}

/// Reads the helper's stderr: keeps the start for error messages, then logs the payload's output at debug.
pub(crate) struct StderrLog {
    kept: Arc<Mutex<(bool, String)>>,
    task: tokio::task::JoinHandle<()>,
}

impl StderrLog {
    /// Starts reading; once collecting stops, lines are logged at debug (a payload's output), or at warn if
    /// `warn` (a fork server's, which only speaks of problems).
    pub(crate) fn start(stderr: impl AsyncRead + Unpin + Send + 'static, name: String, warn: bool) -> Self {
        let kept = Arc::new(Mutex::new((true, String::new())));
        let shared = Arc::clone(&kept);
        let task = tokio::spawn(async move {
            // Lines are cut at LINE_MAX: a payload writing without newlines must not grow the gateway's memory.
            let mut reader = BufReader::new(stderr);
            let mut raw = Vec::new();
            loop {
                raw.clear();
                match (&mut reader).take(LINE_MAX).read_until(b'\n', &mut raw).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&raw);
                let line = line.trim_end_matches('\n');
                let mut kept = shared.lock().expect("stderr buffer poisoned");
                if kept.0 && kept.1.len() < STDERR_KEEP {
                    if !kept.1.is_empty() {
                        kept.1.push('\n');
                    }
                    kept.1.push_str(line);
                } else {
                    if warn {
                        tracing::warn!(server = %name, %line, "fork server");
                    } else {
                        tracing::debug!(sandbox = %name, %line, "sandbox output");
                    }
                }
            }
        });
        Self { kept, task }
    }

    /// From now on, lines are only logged.
    pub(crate) fn stop_collecting(self) {
        let mut kept = self.kept.lock().expect("stderr buffer poisoned");
        kept.0 = false;
        kept.1.clear();
    }

    /// Waits (briefly) for the stream to end and returns what was kept.
    pub(crate) async fn finish(self) -> String {
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
        let kept = self.kept.lock().expect("stderr buffer poisoned");
        kept.1.clone()
    }
}

/// Kills every process in every leftover sandbox cgroup under `cgroup_parent` (all controllers) and removes those
/// cgroups; returns how many sandboxes there were. Call it once at start-up, before spawning.
pub fn cleanup_stale(cgroup_parent: &str) -> Result<usize, Error> {
    crate::policy::check_cgroup_parent(cgroup_parent)?;
    Ok(cgroups::remove_all(cgroups::detect().as_ref(), cgroup_parent)?)
}
