//! A sandbox's first process as the fork server makes it: forked into a new pid namespace (whose pid 1 is a
//! [`reaper`](super::reaper) started just before it) before its request is known, it waits for the request, builds
//! its sandbox as [`crate::spawn`]'s init does, and becomes the payload itself: one fork of the pre-loaded server
//! per sandbox, where an init of its own would fork it a second time. The server moves it into its cgroup first
//! and sends its host pid on `go` together with the request.

use std::convert::Infallible;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::stat::Mode;
use nix::unistd::{ForkResult, Pid};

use super::reaper::Reapers;
use super::server::{HostMountNamespace, InProcess};
use super::{Event, Request};
use crate::helper::{report, SetupError, NAMESPACES};
use crate::mounts::{self, HostFacts};
use crate::payload::{self, Announce};
use crate::pipe;
use crate::status::SETUP_FAILED;
use crate::{init, sys};

/// A forked sandbox that has not been given its request yet.
pub(super) struct Unassigned {
    /// Host pid of its first process (pid 2 of its namespace), which becomes the payload.
    pub(super) pid: Pid,
    /// Host pid of its pid 1, the reaper.
    pub(super) reaper: Pid,
    request: OwnedFd,
    go: OwnedFd,
}

impl Unassigned {
    /// Hands init its request and lets it go; call once init is in the sandbox's cgroup.
    pub(super) fn assign(self, request: &Request) -> Result<(), SetupError> {
        let json = serde_json::to_vec(request).expect("a Request always serializes");
        let mut message = (json.len() as u32).to_le_bytes().to_vec();
        message.extend_from_slice(&json);
        pipe::write_all(&self.request, &message).map_err(SetupError::Ready)?;
        pipe::write_all(&self.go, &(self.pid.as_raw() as u32).to_le_bytes()).map_err(SetupError::Ready)
    }
}

/// Starts a reaper as pid 1 of a new pid namespace and forks the sandbox's first process into it (then puts the
/// caller's own namespace back for its next children). The caller must be single-threaded.
pub(super) fn fork(
    host: &HostMountNamespace,
    own_pids: &OwnedFd,
    reapers: &mut Reapers,
    payload: &dyn InProcess,
) -> Result<Unassigned, SetupError> {
    let (request_r, request_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(SetupError::Pipe)?;
    let (go_r, go_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(SetupError::Pipe)?;
    let flag = CloneFlags::CLONE_NEWPID;
    unshare(flag).map_err(|e| SetupError::Unshare(flag, e))?;
    let started = reapers.start().map_err(|e| SetupError::Fork("the sandbox's reaper", e));
    let forked = match started {
        Ok(reaper) => {
            payload.before_fork();
            let forked = sys::fork();
            if let Ok(ForkResult::Child) = forked {
                drop((request_w, go_w));
                sys::exit_now(run(host, payload, request_r, go_r));
            }
            payload.after_fork_parent();
            Ok((reaper, forked))
        }
        Err(error) => Err(error),
    };
    // Only this sandbox goes into that namespace; the next gets one of its own.
    if let Err(errno) = setns(own_pids.as_fd(), flag) {
        report(&SetupError::Unshare(flag, errno));
        sys::exit_now(1);
    }
    match forked? {
        (reaper, Ok(ForkResult::Parent { child })) => {
            Ok(Unassigned { pid: child, reaper, request: request_w, go: go_w })
        }
        (_, Ok(ForkResult::Child)) => unreachable!("the child exited above"),
        (reaper, Err(errno)) => {
            reapers.end(reaper);
            Err(SetupError::Fork("the sandbox's first process", errno))
        }
    }
}

/// Kills and waits for a process of the server's that never ran a payload (a reaper, or a first process that was
/// never given its request and so has no children): no freezer is needed.
pub(super) fn end(pid: Pid) {
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(pid, None);
}

/// The forked first process: waits for its request (exits quietly if the server drops it unassigned), then, back
/// in the host's mount namespace, builds the sandbox and becomes its payload. Returns only on failure, with its
/// exit code.
fn run(host: &HostMountNamespace, payload: &dyn InProcess, request: OwnedFd, go: OwnedFd) -> i32 {
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() {
        return SETUP_FAILED;
    }
    let Some(request) = read_request(&request) else { return 0 };
    let result = (|| -> Result<Infallible, SetupError> {
        SigSet::empty().thread_set_mask().map_err(SetupError::Signals)?;
        setns(host.0.as_fd(), CloneFlags::CLONE_NEWNS).map_err(|e| SetupError::Unshare(CloneFlags::CLONE_NEWNS, e))?;
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_APPEND | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        let log = open(&request.stderr, flags, Mode::from_bits_truncate(0o600))
            .map_err(|e| SetupError::Stdio("stderr to the sandbox's log file", e))?;
        nix::unistd::dup2_stderr(log).map_err(|e| SetupError::Stdio("stderr to the sandbox's log file", e))?;
        // Building the sandbox turns stdout into stderr; the event stream is kept on a descriptor of its own.
        let events = io::stdout().as_fd().try_clone_to_owned().map_err(|e| {
            SetupError::Stdio("keeping the event stream", Errno::from_raw(e.raw_os_error().unwrap_or(0)))
        })?;
        let later = |f: &&CloneFlags| !matches!(**f, CloneFlags::CLONE_NEWCGROUP | CloneFlags::CLONE_NEWPID);
        for flag in NAMESPACES.iter().filter(later) {
            unshare(*flag).map_err(|e| SetupError::Unshare(*flag, e))?;
        }
        let policy = &request.policy;
        init::build(policy, &mounts::plan(policy, &HostFacts::probe()))?;
        // The server joins this process to the cgroup while the root is built above; the payload must start in it.
        let host_pid = wait_for_cgroup(&go)?;
        let filters = crate::seccomp::programs().map_err(SetupError::Seccomp)?;
        let line = Event::Started { name: policy.name.clone(), init: host_pid }.line();
        payload::run_in_process(policy, &filters, &SigSet::empty(), Announce { events, line }, &|policy| {
            payload.run(policy)
        })
    })();
    let Err(error) = result;
    report(&error);
    SETUP_FAILED
}

/// Waits until the server says this process is in its cgroup (its host pid; 0 if that failed; EOF if the server
/// died), then unshares the cgroup namespace, so its root is the sandbox's cgroup. Returns the host pid.
fn wait_for_cgroup(go: &OwnedFd) -> Result<u32, SetupError> {
    let mut pid = [0u8; 4];
    pipe::read_exact(go, &mut pid).map_err(|_| SetupError::ParentGone)?;
    let pid = u32::from_le_bytes(pid);
    if pid == 0 {
        return Err(SetupError::NotInCgroup);
    }
    let flag = CloneFlags::CLONE_NEWCGROUP;
    unshare(flag).map_err(|e| SetupError::Unshare(flag, e))?;
    Ok(pid)
}

/// Reads the length-prefixed request; `None` if the pipe closed first or it does not parse.
fn read_request(pipe: &OwnedFd) -> Option<Request> {
    let mut length = [0u8; 4];
    pipe::read_exact(pipe, &mut length).ok()?;
    let mut json = vec![0u8; u32::from_le_bytes(length) as usize];
    pipe::read_exact(pipe, &mut json).ok()?;
    serde_json::from_slice(&json).ok()
}
