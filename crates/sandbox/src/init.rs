//! The sandbox's pid 1: builds the root, starts the payload, then only reaps, forwards SIGTERM/SIGINT/SIGHUP/
//! SIGQUIT, and exits with the payload's status once it is gone (taking every other process with it).

use std::os::fd::OwnedFd;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use crate::helper::{report, Payload, SetupError};
use crate::mounts::{self, Step};
use crate::payload;
use crate::policy::Policy;
use crate::status::{encode, SETUP_FAILED};
use crate::sys;

/// What init writes to the helper once the payload has exec'd.
pub(crate) const READY_BYTE: u8 = b'R';

/// Signals init passes on to the payload.
const FORWARDED: &[Signal] = &[Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP, Signal::SIGQUIT];

/// Who started init, and how init tells them that the payload runs.
pub(crate) enum Starter {
    /// The exec helper: `alive` reads EOF once it has died; [`READY_BYTE`] goes on `ready`.
    Helper { ready: OwnedFd, alive: OwnedFd },
    /// The fork server (init's parent): once it has put init in the sandbox's cgroup it sends init's host pid on
    /// `go` (0 if that failed; EOF if it died); the `started` event goes on `events`, its stdout.
    ForkServer { go: OwnedFd, events: OwnedFd, name: String },
}

impl Starter {
    /// Fails if the starter is gone (helper) or once it says init is in its cgroup (fork server): then
    /// unshares the cgroup namespace, so its root is the sandbox's cgroup. Returns init's host pid, if known.
    fn wait_for_cgroup(&self) -> Result<Option<u32>, SetupError> {
        match self {
            Starter::Helper { alive, .. } => {
                // The helper may have died before init set its parent-death signal.
                let mut fds = [PollFd::new(std::os::fd::AsFd::as_fd(alive), PollFlags::POLLIN)];
                if poll(&mut fds, PollTimeout::ZERO).map_err(SetupError::Pipe)? > 0 {
                    return Err(SetupError::ParentGone);
                }
                Ok(None)
            }
            Starter::ForkServer { go, .. } => {
                let mut pid = [0u8; 4];
                crate::pipe::read_exact(go, &mut pid).map_err(|_| SetupError::ParentGone)?;
                let pid = u32::from_le_bytes(pid);
                if pid == 0 {
                    return Err(SetupError::NotInCgroup);
                }
                let flag = CloneFlags::CLONE_NEWCGROUP;
                nix::sched::unshare(flag).map_err(|e| SetupError::Unshare(flag, e))?;
                Ok(Some(pid))
            }
        }
    }

    /// Tells the starter that the payload runs.
    fn report_ready(&self, host_pid: Option<u32>) -> Result<(), SetupError> {
        let (fd, message) = match self {
            Starter::Helper { ready, .. } => (ready, vec![READY_BYTE]),
            Starter::ForkServer { events, name, .. } => {
                let line = crate::forkserver::Event::Started { name: name.clone(), init: host_pid.unwrap_or(0) };
                (events, line.line().into_bytes())
            }
        };
        crate::pipe::write_all(fd, &message).map_err(SetupError::Ready)
    }
}

/// Runs init to the end and returns its exit code.
pub(crate) fn run(policy: &Policy, steps: &[Step], payload: Payload<'_>, starter: Starter) -> i32 {
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGCHLD);
    for signal in FORWARDED {
        signals.add(*signal);
    }
    match start(policy, steps, payload, &signals, starter) {
        Ok(payload) => reap(payload, &signals),
        Err(error) => {
            report(&error);
            SETUP_FAILED
        }
    }
}

fn start(
    policy: &Policy,
    steps: &[Step],
    payload: Payload<'_>,
    signals: &SigSet,
    starter: Starter,
) -> Result<Pid, SetupError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(SetupError::Pdeathsig)?;
    if let Starter::Helper { .. } = starter {
        starter.wait_for_cgroup()?;
    }
    // stdout belongs to the starter's events; everything init and the payload print goes to stderr.
    nix::unistd::dup2_stdout(std::io::stderr()).map_err(|e| SetupError::Stdio("stdout to stderr", e))?;
    mounts::apply(steps).map_err(SetupError::Root)?;
    let null = nix::fcntl::open("/dev/null", OFlag::O_RDONLY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .map_err(|e| SetupError::Stdio("stdin from /dev/null", e))?;
    nix::unistd::dup2_stdin(&null).map_err(|e| SetupError::Stdio("stdin from /dev/null", e))?;
    nix::unistd::sethostname(&policy.name).map_err(|e| SetupError::Hostname(policy.name.clone(), e))?;
    sys::interface_up("lo").map_err(SetupError::Loopback)?;
    // The fork server joins init to the cgroup while the root is built above; the payload must start in it.
    let host_pid = match starter {
        Starter::ForkServer { .. } => starter.wait_for_cgroup()?,
        Starter::Helper { .. } => None,
    };

    let mut old_mask = SigSet::empty();
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(signals), Some(&mut old_mask)).map_err(SetupError::Signals)?;
    let filters = crate::seccomp::programs().map_err(SetupError::Seccomp)?;
    let (exec_r, exec_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(SetupError::Pipe)?;
    match sys::fork().map_err(|e| SetupError::Fork("the payload", e))? {
        ForkResult::Child => {
            drop((exec_r, starter));
            match payload {
                Payload::Exec => payload::exec(policy, &filters, &old_mask, exec_w),
                Payload::InProcess(run) => payload::run_in_process(policy, &filters, &old_mask, exec_w, run),
            }
        }
        ForkResult::Parent { child } => {
            drop(exec_w);
            if let Some((stage, errno)) = payload::read_failure(&exec_r) {
                let _ = waitpid(child, None);
                return Err(SetupError::Payload { argv0: policy.argv[0].clone(), stage, source: errno });
            }
            starter.report_ready(host_pid)?;
            Ok(child)
        }
    }
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
