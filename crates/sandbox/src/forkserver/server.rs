//! The fork server's own side: [`enter_root`] gives it the sandboxes' view of the filesystem, [`serve`] answers
//! requests by handing each to a sandbox's first process (the spare forked ahead, or a fresh one) and reports
//! their ends: a sandbox has ended once its first process (the payload) has, and then its reaper (pid 1, killed
//! by the server at that point, which kills whatever else was left in the namespace).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::stat::Mode;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::init_process::{self, end};
use super::reaper::Reapers;
use super::{Event, Request};
use crate::cgroups::{CgroupDriver, CgroupSetup};
use crate::helper::{join_cgroup, report, SetupError};
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
pub struct HostMountNamespace(pub(super) OwnedFd);

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
    // The server moves each sandbox's first process into its cgroup itself.
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
    /// The reapers' stacks.
    reapers: Reapers,
    /// The started sandboxes, by host pid of their first process.
    sandboxes: HashMap<Pid, Running>,
    /// Host pid of each started sandbox's reaper -> that of its first process.
    reaper_of: HashMap<Pid, Pid>,
    /// A sandbox forked ahead, in a cgroup of its own, waiting to be handed the next request.
    spare: Option<Spare>,
    spares_made: u64,
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
        Ok(Self {
            host,
            own_pids,
            cgroups,
            payload,
            children,
            reapers: Reapers::new(),
            sandboxes: HashMap::new(),
            reaper_of: HashMap::new(),
            spare: None,
            spares_made: 0,
            pending: Vec::new(),
            pid,
        })
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
                self.drop_spare();
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
        if self.sandboxes.values().any(|running| running.name == request.policy.name) {
            return emit(&Event::Refused { reason: format!("{}: already running", request.policy.name) });
        }
        let name = request.policy.name.clone();
        let setup = CgroupSetup::from(&request.policy.limits);
        let spare = self.spare.take().filter(|spare| spare.parent == request.policy.cgroup_parent);
        let started = match spare {
            Some(spare) => self.assign(spare, &request, &setup),
            None => self.start_fresh(&request, &setup),
        };
        match started {
            Ok((first, reaper)) => {
                self.sandboxes.insert(first, Running { name, reaper, code: None });
                self.reaper_of.insert(reaper, first);
            }
            Err(error) => {
                report(&error);
                emit(&Event::Exited { name, code: SETUP_FAILED })?;
            }
        }
        // The next request gets a sandbox that is already forked and in a cgroup (moving a process into a cgroup
        // can wait a whole RCU grace period on cgroup v1): that wait happens now, between requests.
        if self.spare.is_none() {
            match self.make_spare(&request.policy.cgroup_parent, &setup) {
                Ok(spare) => self.spare = Some(spare),
                Err(error) => report(&error),
            }
        }
        Ok(())
    }

    /// Forks a sandbox, creates its cgroup, moves its first process into it and hands that the request. Returns
    /// the host pids of the first process and of the reaper.
    fn start_fresh(&mut self, request: &Request, setup: &CgroupSetup) -> Result<(Pid, Pid), SetupError> {
        let policy = &request.policy;
        let cgroup = self.cgroups.create(&policy.cgroup_parent, &policy.name, setup).map_err(SetupError::Cgroup)?;
        let first = init_process::fork(&self.host, &self.own_pids, &mut self.reapers, self.payload)?;
        let pids = (first.pid, first.reaper);
        let outcome = join_cgroup(cgroup.as_ref(), first.pid).and_then(|()| first.assign(request));
        if outcome.is_err() {
            // The cgroup is the client's to remove.
            self.end_unassigned(pids);
        }
        outcome.map(|()| pids)
    }

    /// Hands the request to the spare sandbox: its cgroup takes the sandbox's name and limits.
    fn assign(&mut self, spare: Spare, request: &Request, setup: &CgroupSetup) -> Result<(Pid, Pid), SetupError> {
        let policy = &request.policy;
        let pids = (spare.first.pid, spare.first.reaper);
        let renamed = self.cgroups.rename(&spare.parent, &spare.cgroup, &policy.name).map_err(SetupError::Cgroup);
        let outcome = renamed
            .and_then(|()| {
                // Limits of this request (they may differ from those the spare's cgroup was made with).
                self.cgroups.create(&policy.cgroup_parent, &policy.name, setup).map_err(SetupError::Cgroup).map(drop)
            })
            .and_then(|()| spare.first.assign(request));
        if outcome.is_err() {
            // Under its new name if the rename went through: remove whichever exists.
            self.end_unassigned(pids);
            let _ = self.cgroups.open(&spare.parent, &spare.cgroup).remove();
            let _ = self.cgroups.open(&policy.cgroup_parent, &policy.name).remove();
        }
        outcome.map(|()| pids)
    }

    /// Forks a sandbox that waits for a request, in a cgroup of its own under `parent` with `setup`'s limits.
    fn make_spare(&mut self, parent: &str, setup: &CgroupSetup) -> Result<Spare, SetupError> {
        self.spares_made += 1;
        let name = format!("spare-{}-{}", self.pid, self.spares_made);
        let cgroup = self.cgroups.create(parent, &name, setup).map_err(SetupError::Cgroup)?;
        let first = match init_process::fork(&self.host, &self.own_pids, &mut self.reapers, self.payload) {
            Ok(first) => first,
            Err(error) => {
                let _ = cgroup.remove();
                return Err(error);
            }
        };
        if let Err(error) = join_cgroup(cgroup.as_ref(), first.pid) {
            self.end_unassigned((first.pid, first.reaper));
            let _ = cgroup.remove();
            return Err(error);
        }
        Ok(Spare { first, parent: parent.to_owned(), cgroup: name })
    }

    /// Kills the spare sandbox and removes its cgroup (when the server stops).
    fn drop_spare(&mut self) {
        if let Some(spare) = self.spare.take() {
            self.end_unassigned((spare.first.pid, spare.first.reaper));
            let _ = self.cgroups.open(&spare.parent, &spare.cgroup).remove();
        }
    }

    /// Ends a sandbox that was never given its request: its first process has no children, so no freezer is
    /// needed (a server killed between freezing and thawing would leave it frozen for good).
    fn end_unassigned(&mut self, (first, reaper): (Pid, Pid)) {
        end(first);
        self.reapers.end(reaper);
    }

    /// Reaps every process of the server's that has ended; reports each sandbox whose first process and reaper
    /// have both ended, with the first process's status.
    fn reap(&mut self) -> Result<(), ServerError> {
        loop {
            let status = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(ServerError::Sys("reaping sandboxes", e)),
                Ok(status) => status,
            };
            let Some(pid) = status.pid() else { continue };
            let first = if let Some(running) = self.sandboxes.get_mut(&pid) {
                // The payload is gone: so goes everything else in its namespace.
                running.code = Some(encode(status));
                if self.reaper_of.contains_key(&running.reaper) {
                    let _ = nix::sys::signal::kill(running.reaper, Signal::SIGKILL);
                }
                pid
            } else if let Some(first) = self.reaper_of.remove(&pid) {
                self.reapers.reaped(pid);
                first
            } else {
                continue;
            };
            let ended =
                self.sandboxes.get(&first).is_some_and(|r| r.code.is_some() && !self.reaper_of.contains_key(&r.reaper));
            if ended {
                if let Some(Running { name, code: Some(code), .. }) = self.sandboxes.remove(&first) {
                    emit(&Event::Exited { name, code })?;
                }
            }
        }
    }
}

/// A started sandbox.
struct Running {
    name: String,
    /// Host pid of its pid 1.
    reaper: Pid,
    /// How its first process ended, once it has.
    code: Option<i32>,
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

/// A spare sandbox, and the cgroup it waits in.
struct Spare {
    first: init_process::Unassigned,
    parent: String,
    cgroup: String,
}
