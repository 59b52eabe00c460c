//! The fork server's own side: [`enter_root`] gives it the sandboxes' view of the filesystem, [`serve`] answers
//! requests by forking one sandbox helper each and reports their ends.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};

use super::{Event, Request};
use crate::cgroups::CgroupDriver;
use crate::helper::{report, Payload, SetupError, NAMESPACES};
use crate::init;
use crate::mounts::{self, HostFacts};
use crate::policy::{Bind, Policy, PolicyError};
use crate::status::{encode, SETUP_FAILED};
use crate::sys;

/// The payload a fork server runs in each sandbox, and the hooks its fork needs.
pub trait InProcess {
    /// Called in the server right before each fork (e.g. `PyOS_BeforeFork`).
    fn before_fork(&self);
    /// Called in the server right after each fork (e.g. `PyOS_AfterFork_Parent`).
    fn after_fork_parent(&self);
    /// Runs as the sandbox's payload once every wall is up; what it returns is the payload's exit code.
    fn run(&self, policy: &Policy) -> i32;
}

/// A handle on the host's mount namespace, kept by a server that lives in a root of its own.
#[derive(Debug)]
pub struct HostMountNamespace(OwnedFd);

/// Why the fork server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The root's policy is invalid.
    #[error("invalid policy for the fork server's root")]
    Policy(#[from] PolicyError),
    /// A system call on the way failed.
    #[error("{0}")]
    Sys(&'static str, #[source] Errno),
    /// Building the root failed.
    #[error("building the fork server's root")]
    Root(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Writing to stdout (the event stream) failed.
    #[error("writing the event stream")]
    Events(#[source] io::Error),
}

/// Where the cgroup hierarchies are mounted, on the host and in the server's root.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Moves the calling process (single-threaded, real root) into a mount namespace of its own whose root is built
/// from `policy` exactly as a sandbox's would be (only the mounts are used; the host's cgroup hierarchies are
/// added), so that the paths it loads code from are the paths its sandboxes see. Returns the host's mount namespace, which [`serve`] needs.
pub fn enter_root(policy: &Policy) -> Result<HostMountNamespace, ServerError> {
    policy.validate()?;
    let host = open("/proc/self/ns/mnt", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| ServerError::Sys("opening the host's mount namespace", e))?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| ServerError::Sys("unsharing the mount namespace", e))?;
    // The server moves each sandbox's init into its cgroup itself.
    let mut root = policy.clone();
    root.rw_binds.push(Bind { source: CGROUP_ROOT.into(), target: CGROUP_ROOT.into() });
    mounts::apply(&mounts::plan(&root, &HostFacts::probe())).map_err(|e| ServerError::Root(Box::new(e)))?;
    Ok(HostMountNamespace(host))
}

/// Serves requests on stdin until it closes, then exits. Writes `serving` first. The caller must be
/// single-threaded and stay so: every request is a `fork`.
pub fn serve(host: HostMountNamespace, payload: &dyn InProcess) -> ! {
    let code = match Server::new(host, payload).and_then(|mut server| server.run()) {
        Ok(()) => 0,
        Err(error) => {
            report(&error);
            1
        }
    };
    sys::exit_now(code)
}

struct Server<'a> {
    host: HostMountNamespace,
    /// The server's own pid namespace: `pid_for_children` is reset to it after each fork into a new one.
    own_pids: OwnedFd,
    cgroups: Box<dyn CgroupDriver>,
    payload: &'a dyn InProcess,
    children: SignalFd,
    /// Host pid of each sandbox's init -> sandbox name.
    sandboxes: HashMap<Pid, String>,
    pending: Vec<u8>,
    pid: Pid,
}

impl<'a> Server<'a> {
    fn new(host: HostMountNamespace, payload: &'a dyn InProcess) -> Result<Self, ServerError> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.thread_block().map_err(|e| ServerError::Sys("blocking SIGCHLD", e))?;
        let children = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|e| ServerError::Sys("creating the SIGCHLD signalfd", e))?;
        let own_pids = open("/proc/self/ns/pid", OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| ServerError::Sys("opening the server's pid namespace", e))?;
        let pid = nix::unistd::getpid();
        let cgroups = crate::cgroups::detect();
        // Built here once, so that no sandbox builds them again (an error shows up in each sandbox's start).
        let _ = crate::seccomp::programs();
        Ok(Self { host, own_pids, cgroups, payload, children, sandboxes: HashMap::new(), pending: Vec::new(), pid })
    }

    fn run(&mut self) -> Result<(), ServerError> {
        emit(&Event::Serving { pid: self.pid.as_raw() as u32 })?;
        let stdin = io::stdin();
        loop {
            let (requests, exits) = {
                let mut fds = [
                    PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.children.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, PollTimeout::NONE) {
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(ServerError::Sys("polling", e)),
                    Ok(_) => {}
                }
                let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]))
            };
            if exits {
                while let Ok(Some(_)) = self.children.read_signal() {}
                self.reap()?;
            }
            if requests && !self.read_requests()? {
                return Ok(());
            }
        }
    }

    /// Reads what stdin has and starts a sandbox per complete line; false once stdin is closed.
    fn read_requests(&mut self) -> Result<bool, ServerError> {
        let mut buf = [0u8; 16 * 1024];
        let n = match nix::unistd::read(io::stdin().as_fd(), &mut buf) {
            Ok(0) => return Ok(false),
            Ok(n) => n,
            Err(Errno::EINTR | Errno::EAGAIN) => return Ok(true),
            Err(e) => return Err(ServerError::Sys("reading requests", e)),
        };
        self.pending.extend_from_slice(&buf[..n]);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.start(&line[..end])?;
        }
        Ok(true)
    }

    fn start(&mut self, line: &[u8]) -> Result<(), ServerError> {
        let request = match serde_json::from_slice::<Request>(line) {
            Ok(request) => request,
            Err(error) => return emit(&Event::Refused { reason: format!("bad request: {error}") }),
        };
        if let Err(error) = request.policy.validate() {
            return emit(&Event::Refused { reason: format!("{}: {error}", request.policy.name) });
        }
        if self.sandboxes.values().any(|name| *name == request.policy.name) {
            return emit(&Event::Refused { reason: format!("{}: already running", request.policy.name) });
        }
        let name = request.policy.name.clone();
        match self.fork_init(&request) {
            Ok((init, go)) => {
                self.sandboxes.insert(init, name);
                self.join_cgroup(init, &request.policy, go);
                Ok(())
            }
            Err(error) => {
                report(&error);
                emit(&Event::Exited { name, code: SETUP_FAILED })
            }
        }
    }

    /// Forks the sandbox's init as pid 1 of a new pid namespace; it waits for [`Server::join_cgroup`].
    fn fork_init(&mut self, request: &Request) -> Result<(Pid, OwnedFd), SetupError> {
        let (go_r, go_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(SetupError::Pipe)?;
        let flag = CloneFlags::CLONE_NEWPID;
        unshare(flag).map_err(|e| SetupError::Unshare(flag, e))?;
        self.payload.before_fork();
        let forked = sys::fork();
        if let Ok(ForkResult::Child) = forked {
            drop(go_w);
            sys::exit_now(sandbox_init(&self.host, request, self.payload, go_r));
        }
        self.payload.after_fork_parent();
        // Only the one child goes into that namespace; the next gets one of its own.
        if let Err(errno) = setns(self.own_pids.as_fd(), flag) {
            report(&SetupError::Unshare(flag, errno));
            sys::exit_now(1);
        }
        drop(go_r);
        match forked {
            Ok(ForkResult::Parent { child }) => Ok((child, go_w)),
            Ok(ForkResult::Child) => unreachable!("the child exited above"),
            Err(errno) => Err(SetupError::Fork("the sandbox's init", errno)),
        }
    }

    /// Puts `init` in its sandbox's cgroup (done here, while init builds its root: the first move into a cgroup
    /// can wait a whole RCU grace period), then lets it start the payload; on failure tells it to give up.
    fn join_cgroup(&self, init: Pid, policy: &Policy, go_w: OwnedFd) {
        let cgroup = self.cgroups.open(&policy.cgroup_parent, &policy.name);
        let pid = init.as_raw().to_string();
        let mut go = (init.as_raw() as u32).to_le_bytes();
        for path in cgroup.procs_files() {
            if let Err(source) = std::fs::write(&path, &pid) {
                report(&SetupError::JoinCgroup { path, source });
                go = [0; 4];
                break;
            }
        }
        // EPIPE: init already died; its exit is reported when it is reaped.
        let _ = nix::unistd::write(&go_w, &go);
    }

    /// Reaps every sandbox init that has ended and reports it.
    fn reap(&mut self) -> Result<(), ServerError> {
        loop {
            match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(ServerError::Sys("reaping sandboxes", e)),
                Ok(status) => {
                    let Some(name) = status.pid().and_then(|pid| self.sandboxes.remove(&pid)) else { continue };
                    emit(&Event::Exited { name, code: encode(status) })?;
                }
            }
        }
    }
}

fn emit(event: &Event) -> Result<(), ServerError> {
    write_line(&event.line()).map_err(ServerError::Events)
}

/// Writes `line` to stdout with a single `write`, so lines of concurrent writers never interleave.
fn write_line(line: &str) -> io::Result<()> {
    match nix::unistd::write(io::stdout(), line.as_bytes()) {
        Ok(n) if n == line.len() => Ok(()),
        Ok(_) => Err(io::Error::new(io::ErrorKind::WriteZero, "short write of an event line")),
        Err(errno) => Err(errno.into()),
    }
}

/// The forked child, pid 1 of its new pid namespace: back in the host's mount namespace, it does what the exec
/// helper and init do for [`crate::spawn`], except that the server puts it in its cgroup. Returns its exit code.
fn sandbox_init(host: &HostMountNamespace, request: &Request, payload: &dyn InProcess, go: OwnedFd) -> i32 {
    let result = (|| {
        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(SetupError::Pdeathsig)?;
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
        for flag in NAMESPACES.iter().filter(|f| !matches!(**f, CloneFlags::CLONE_NEWCGROUP | CloneFlags::CLONE_NEWPID))
        {
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
