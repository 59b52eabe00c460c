//! The helper process ([`exec_main`]): reads the policy, joins the cgroup, unshares the namespaces in a fixed
//! order, forks the sandbox's init, reports `ready <pid>` on stdout and exits with init's status.

use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::Signal;
use nix::sys::wait::waitpid;
use nix::unistd::{ForkResult, Pid};

use crate::init;
use crate::mounts::{self, HostFacts, StepFailed};
use crate::payload::Stage;
use crate::policy::{Policy, PolicyError};
use crate::status::{encode, SETUP_FAILED};
use crate::sys;

/// The namespaces a sandbox gets, in the order they are applied (no user namespace: the helper is real root and
/// the payload gets a real unprivileged uid). The cgroup is joined before this, so the cgroup namespace's root is
/// the sandbox's own cgroup.
pub(crate) const NAMESPACES: &[CloneFlags] = &[
    CloneFlags::CLONE_NEWCGROUP,
    CloneFlags::CLONE_NEWNS,
    CloneFlags::CLONE_NEWUTS,
    CloneFlags::CLONE_NEWIPC,
    CloneFlags::CLONE_NEWNET,
    CloneFlags::CLONE_NEWPID,
];

/// The first line the helper prints on stdout once the payload has been exec'd.
pub(crate) const READY_PREFIX: &str = "ready ";

/// A setup step of the helper or of init that failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SetupError {
    #[error("setting the parent-death signal")]
    Pdeathsig(#[source] Errno),
    #[error("the parent exited before the sandbox started")]
    ParentGone,
    #[error("marking inherited file descriptors close-on-exec")]
    CloseFds(#[source] Errno),
    #[error("reading the policy from stdin")]
    ReadPolicy(#[source] io::Error),
    #[error("parsing the policy JSON")]
    ParsePolicy(#[source] serde_json::Error),
    #[error("checking the policy")]
    InvalidPolicy(#[source] PolicyError),
    #[error("joining cgroup via {path}")]
    JoinCgroup { path: PathBuf, source: io::Error },
    #[error("unsharing namespace {0:?}")]
    Unshare(CloneFlags, #[source] Errno),
    #[error("creating a pipe")]
    Pipe(#[source] Errno),
    #[error("forking {0}")]
    Fork(&'static str, #[source] Errno),
    #[error("waiting for {0}")]
    Wait(&'static str, #[source] Errno),
    #[error("building the sandbox root")]
    Root(#[source] StepFailed),
    #[error("redirecting {0}")]
    Stdio(&'static str, #[source] Errno),
    #[error("setting hostname {0:?}")]
    Hostname(String, #[source] Errno),
    #[error("bringing up the loopback interface")]
    Loopback(#[source] Errno),
    #[error("building the payload's seccomp filter")]
    Seccomp(#[source] crate::seccomp::BuildError),
    #[error("blocking signals in init")]
    Signals(#[source] Errno),
    #[error("starting the payload {argv0:?}: {stage}")]
    Payload { argv0: String, stage: Stage, source: Errno },
    #[error("reporting readiness")]
    Ready(#[source] io::Error),
    #[error("the fork server could not put the sandbox in its cgroup (its log says why)")]
    NotInCgroup,
    #[error("preparing the sandbox's cgroup")]
    Cgroup(#[source] crate::cgroups::CgroupError),
}

/// Entry point of the helper process: never returns. Exit code: the payload's (code, or 128 + signal), or 125 if
/// setup failed, with the reason on stderr.
pub fn exec_main() -> ! {
    let code = match run() {
        Ok(code) => code,
        Err(error) => {
            report(&error);
            SETUP_FAILED
        }
    };
    sys::exit_now(code)
}

/// Writes `sandbox-exec: <error>: <cause>: ...` on stderr.
pub(crate) fn report(error: &dyn std::error::Error) {
    let mut line = format!("sandbox-exec: {error}");
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    let _ = writeln!(io::stderr(), "{line}");
}

fn run() -> Result<i32, SetupError> {
    // The gateway is our parent: if it dies, so do we, and init follows us the same way.
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(SetupError::Pdeathsig)?;
    if nix::unistd::getppid() == Pid::from_raw(1) {
        return Err(SetupError::ParentGone);
    }
    sys::cloexec_inherited_fds().map_err(SetupError::CloseFds)?;
    let mut json = String::new();
    io::stdin().read_to_string(&mut json).map_err(SetupError::ReadPolicy)?;
    let policy: Policy = serde_json::from_str(&json).map_err(SetupError::ParsePolicy)?;
    policy.validate().map_err(SetupError::InvalidPolicy)?;
    launch(&policy, |init| {
        let mut out = io::stdout().lock();
        writeln!(out, "{READY_PREFIX}{init}").and_then(|()| out.flush())
    })
}

/// Joins the policy's cgroup, unshares the namespaces, forks init and waits for it; calls `ready` with init's pid
/// once the payload runs. Returns the payload's encoded status, or [`SETUP_FAILED`] if it never ran.
pub(crate) fn launch(policy: &Policy, ready: impl FnOnce(Pid) -> io::Result<()>) -> Result<i32, SetupError> {
    let cgroup = crate::cgroups::detect().open(&policy.cgroup_parent, &policy.name);
    join_cgroup(cgroup.as_ref(), nix::unistd::getpid())?;
    for flag in NAMESPACES {
        unshare(*flag).map_err(|e| SetupError::Unshare(*flag, e))?;
    }
    let steps = mounts::plan(policy, &HostFacts::probe());
    let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(SetupError::Pipe)?;
    let (alive_r, alive_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(SetupError::Pipe)?;
    match sys::fork().map_err(|e| SetupError::Fork("init", e))? {
        ForkResult::Child => {
            drop((ready_r, alive_w));
            sys::exit_now(init::run(policy, &steps, ready_w, alive_r))
        }
        ForkResult::Parent { child } => {
            drop((ready_w, alive_r));
            let started = wait_ready(ready_r);
            if started {
                ready(child).map_err(SetupError::Ready)?;
            }
            let status = waitpid(child, None).map_err(|e| SetupError::Wait("init", e))?;
            drop(alive_w);
            Ok(if started { encode(status) } else { SETUP_FAILED })
        }
    }
}

/// Moves process `pid` into `cgroup` (every hierarchy).
pub(crate) fn join_cgroup(cgroup: &dyn crate::cgroups::Cgroup, pid: Pid) -> Result<(), SetupError> {
    let pid = pid.as_raw().to_string();
    for path in cgroup.procs_files() {
        std::fs::write(&path, &pid).map_err(|source| SetupError::JoinCgroup { path, source })?;
    }
    Ok(())
}

/// True once init wrote its ready byte; false if it closed the pipe without (it reported why on stderr).
fn wait_ready(ready_r: OwnedFd) -> bool {
    let mut byte = [0u8; 1];
    crate::pipe::read_exact(&ready_r, &mut byte).is_ok() && byte[0] == init::READY_BYTE
}
