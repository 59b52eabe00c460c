//! The sandbox's pid 1 under the exec launcher: builds the root, starts the payload, then only reaps, forwards
//! SIGTERM/SIGINT/SIGHUP/SIGQUIT, and exits with the payload's status once it is gone (taking every other process
//! with it). [`build`] is also what a fork server's sandbox does for itself (see `forkserver::init_process`).

use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use crate::helper::{report, SetupError};
use crate::mounts::{self, Step};
use crate::payload;
use crate::policy::Policy;
use crate::status::{encode, SETUP_FAILED};
use crate::sys;

/// What init writes to the helper once the payload has exec'd.
pub(crate) const READY_BYTE: u8 = b'R';

/// Signals init passes on to the payload.
const FORWARDED: &[Signal] = &[Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT];

/// Runs init to the end and returns its exit code. `alive` reads EOF once the helper (init's parent) has died;
/// [`READY_BYTE`] goes on `ready` once the payload has exec'd.
pub(crate) fn run(policy: &Policy, steps: &[Step], ready: OwnedFd, alive: OwnedFd) -> i32 {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGCHLD);
    for signal in FORWARDED {
        signals.add(*signal);
    }
    match start(policy, steps, &signals, ready, alive) {
        Ok(payload) => reap(payload, &signals),
        Err(error) => {
            report(&error);
            SETUP_FAILED
        }
    }
}

fn start(policy: &Policy, steps: &[Step], signals: &SigSet, ready: OwnedFd, alive: OwnedFd) -> Result<Pid, SetupError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(SetupError::Pdeathsig)?;
    // The helper may have died before init set its parent-death signal.
    let mut fds = [PollFd::new(alive.as_fd(), PollFlags::POLLIN)];
    if poll(&mut fds, PollTimeout::ZERO).map_err(SetupError::Pipe)? > 0 {
        return Err(SetupError::ParentGone);
    }
    build(policy, steps)?;
    let mut old_mask = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(signals), Some(&mut old_mask)).map_err(SetupError::Signals)?;
    let filters = crate::seccomp::programs().map_err(SetupError::Seccomp)?;
    let (exec_r, exec_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(SetupError::Pipe)?;
    match sys::fork().map_err(|e| SetupError::Fork("the payload", e))? {
        ForkResult::Child => {
            drop((exec_r, ready, alive));
            payload::exec(policy, &filters, &old_mask, exec_w)
        }
        ForkResult::Parent { child } => {
            drop(exec_w);
            if let Some((stage, errno)) = payload::read_failure(&exec_r) {
                let _ = waitpid(child, None);
                return Err(SetupError::Payload { argv0: policy.argv[0].clone(), stage, source: errno });
            }
            crate::pipe::write_all(&ready, &[READY_BYTE]).map_err(SetupError::Ready)?;
            Ok(child)
        }
    }
}

/// What a sandbox's first process does in its new namespaces before the payload starts (init, which then forks
/// the payload; or, under a fork server, the payload itself): stdout to stderr (everything the sandbox prints goes
/// to its log), the private root, stdin from /dev/null, the hostname, `lo` up.
pub(crate) fn build(policy: &Policy, steps: &[Step]) -> Result<(), SetupError> {
    nix::unistd::dup2_stdout(std::io::stderr()).map_err(|e| SetupError::Stdio("stdout to stderr", e))?;
    mounts::apply(steps).map_err(SetupError::Root)?;
    let null = nix::fcntl::open("/dev/null", OFlag::O_RDONLY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .map_err(|e| SetupError::Stdio("stdin from /dev/null", e))?;
    nix::unistd::dup2_stdin(&null).map_err(|e| SetupError::Stdio("stdin from /dev/null", e))?;
    nix::unistd::sethostname(&policy.name).map_err(|e| SetupError::Hostname(policy.name.clone(), e))?;
    sys::interface_up("lo").map_err(SetupError::Loopback)
}

/// Waits for signals until the payload exits; returns its encoded status.
fn reap(payload: Pid, signals: &SigSet) -> i32 {
    loop {
        let signal = match signals.wait() {
            Ok(signal) => signal,
            Err(_) => continue,
        };
        if signal != Signal::SIGCHLD {
            let _ = kill(payload, signal);
            continue;
        }
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(status) if status.pid() == Some(payload) => return finish(encode(status)),
                Ok(_) | Err(_) => continue,
            }
        }
    }
}

/// Kills whatever the payload left behind in the namespace, reaps it, and returns `code`.
fn finish(code: i32) -> i32 {
    // kill(-1) from a namespace's pid 1 reaches every other process of the namespace.
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    while !matches!(waitpid(None::<Pid>, None), Err(Errno::ECHILD)) {}
    code
}
