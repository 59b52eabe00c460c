//! A sandbox's init as the fork server makes it: forked into a new pid namespace before its request is known, it
//! waits for the request, then builds its sandbox as [`crate::spawn`]'s init does. The server moves it into its
//! cgroup first and sends its host pid on `go` together with the request.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::stat::Mode;
use nix::unistd::{ForkResult, Pid};

use super::server::{HostMountNamespace, InProcess};
use super::Request;
use crate::helper::{report, Payload, SetupError, NAMESPACES};
use crate::init;
use crate::mounts::{self, HostFacts};
use crate::pipe;
use crate::policy::Policy;
use crate::status::SETUP_FAILED;
use crate::sys;

/// A forked init that has not been given its request yet.
pub(super) struct Unassigned {
    /// Host pid (pid 1 of its own namespace).
    pub(super) pid: Pid,
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

/// Forks an init as pid 1 of a new pid namespace (then puts the caller's own namespace back for its next child).
/// The caller must be single-threaded.
pub(super) fn fork(
    host: &HostMountNamespace,
    own_pids: &OwnedFd,
    payload: &dyn InProcess,
) -> Result<Unassigned, SetupError> {
    let (request_r, request_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(SetupError::Pipe)?;
    let (go_r, go_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(SetupError::Pipe)?;
    let flag = CloneFlags::CLONE_NEWPID;
    unshare(flag).map_err(|e| SetupError::Unshare(flag, e))?;
    payload.before_fork();
    let forked = sys::fork();
    if let Ok(ForkResult::Child) = forked {
        drop((request_w, go_w));
        sys::exit_now(run(host, payload, request_r, go_r));
    }
    payload.after_fork_parent();
    // Only the one child goes into that namespace; the next gets one of its own.
    if let Err(errno) = setns(own_pids.as_fd(), flag) {
        report(&SetupError::Unshare(flag, errno));
        sys::exit_now(1);
    }
    match forked {
        Ok(ForkResult::Parent { child }) => Ok(Unassigned { pid: child, request: request_w, go: go_w }),
        Ok(ForkResult::Child) => unreachable!("the child exited above"),
        Err(errno) => Err(SetupError::Fork("the sandbox's init", errno)),
    }
}

/// The forked init: waits for its request (exits quietly if the server drops it unassigned), then, back in the
/// host's mount namespace, builds the sandbox. Returns its exit code.
fn run(host: &HostMountNamespace, payload: &dyn InProcess, request: OwnedFd, go: OwnedFd) -> i32 {
    if nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).is_err() {
        return SETUP_FAILED;
    }
    let Some(request) = read_request(&request) else { return 0 };
    let result = (|| {
        SigSet::empty().thread_set_mask().map_err(SetupError::Signals)?;
        setns(host.0.as_fd(), CloneFlags::CLONE_NEWNS).map_err(|e| SetupError::Unshare(CloneFlags::CLONE_NEWNS, e))?;
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_APPEND | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW;
        let log = open(&request.stderr, flags, Mode::from_bits_truncate(0o600))
            .map_err(|e| SetupError::Stdio("stderr to the sandbox's log file", e))?;
        nix::unistd::dup2_stderr(log).map_err(|e| SetupError::Stdio("stderr to the sandbox's log file", e))?;
        // init turns stdout into stderr; the event stream is kept on a descriptor of its own.
        let events = io::stdout().as_fd().try_clone_to_owned().map_err(|e| {
            SetupError::Stdio("keeping the event stream", Errno::from_raw(e.raw_os_error().unwrap_or(0)))
        })?;
        let later = |f: &&CloneFlags| !matches!(**f, CloneFlags::CLONE_NEWCGROUP | CloneFlags::CLONE_NEWPID);
        for flag in NAMESPACES.iter().filter(later) {
            unshare(*flag).map_err(|e| SetupError::Unshare(*flag, e))?;
        }
        let policy = &request.policy;
        let steps = mounts::plan(policy, &HostFacts::probe());
        let run = |policy: &Policy| payload.run(policy);
        let starter = init::Starter::ForkServer { go, events, name: policy.name.clone() };
        Ok::<_, SetupError>(init::run(policy, &steps, Payload::InProcess(&run), starter))
    })();
    match result {
        Ok(code) => code,
        Err(error) => {
            report(&error);
            SETUP_FAILED
        }
    }
}

/// Reads the length-prefixed request; `None` if the pipe closed first or it does not parse.
fn read_request(pipe: &OwnedFd) -> Option<Request> {
    let mut length = [0u8; 4];
    pipe::read_exact(pipe, &mut length).ok()?;
    let mut json = vec![0u8; u32::from_le_bytes(length) as usize];
    pipe::read_exact(pipe, &mut json).ok()?;
    serde_json::from_slice(&json).ok()
}
