//! The payload child: sets its rlimits, drops to the policy's uid/gid with no capabilities and `no_new_privs`,
//! restricts itself with landlock and seccomp, then execs argv with exactly the policy's env (or, under a fork
//! server, calls the in-process payload instead). A failure travels back to init as (stage, errno) over a
//! close-on-exec pipe, or (under a fork server, where there is no init above the payload) to the sandbox's log.

use std::convert::Infallible;
use std::ffi::CString;
use std::fmt;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::resource::{setrlimit, Resource, RLIM_INFINITY};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
use nix::unistd::{Gid, Uid};
use seccompiler::BpfProgram;

use crate::policy::{Policy, Rlimits};
use crate::status::SETUP_FAILED;
use crate::{fs_rules, seccomp, sys};

/// Which step of becoming the payload failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Stage {
    /// Preparing argv/env as C strings.
    Args = 1,
    /// Closing the descriptors a fork server's child inherited.
    CloseFds,
    /// Restoring the signal mask.
    SignalMask,
    /// setsid.
    Session,
    /// setrlimit.
    Rlimits,
    /// Dropping the capability bounding set.
    BoundingSet,
    /// setgroups([]).
    Groups,
    /// setresgid.
    Gid,
    /// setresuid.
    Uid,
    /// Clearing ambient and remaining capabilities.
    Capabilities,
    /// Making the process dumpable again after the uid change.
    Dumpable,
    /// PR_SET_NO_NEW_PRIVS.
    NoNewPrivs,
    /// chdir to the policy's cwd.
    Chdir,
    /// The landlock ruleset.
    Landlock,
    /// The seccomp filters.
    Seccomp,
    /// execve.
    Exec,
    /// Telling the fork server that the in-process payload runs.
    Announce,
}

impl Stage {
    const ALL: [Stage; 17] = [
        Stage::Args,
        Stage::CloseFds,
        Stage::SignalMask,
        Stage::Session,
        Stage::Rlimits,
        Stage::BoundingSet,
        Stage::Groups,
        Stage::Gid,
        Stage::Uid,
        Stage::Capabilities,
        Stage::Dumpable,
        Stage::NoNewPrivs,
        Stage::Chdir,
        Stage::Landlock,
        Stage::Seccomp,
        Stage::Exec,
        Stage::Announce,
    ];

    fn from_u8(byte: u8) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| *s as u8 == byte)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Args => "preparing argv and env",
            Stage::CloseFds => "closing inherited file descriptors",
            Stage::SignalMask => "restoring the signal mask",
            Stage::Session => "starting a new session",
            Stage::Rlimits => "setting resource limits",
            Stage::BoundingSet => "dropping the capability bounding set",
            Stage::Groups => "clearing supplementary groups",
            Stage::Gid => "setting the gid",
            Stage::Uid => "setting the uid",
            Stage::Capabilities => "clearing capabilities",
            Stage::Dumpable => "making the process dumpable",
            Stage::NoNewPrivs => "setting no_new_privs",
            Stage::Chdir => "changing to the working directory",
            Stage::Landlock => "applying the landlock ruleset",
            Stage::Seccomp => "installing the seccomp filters",
            Stage::Exec => "exec",
            Stage::Announce => "announcing the start to the fork server",
        })
    }
}

/// Becomes the payload; on failure reports (stage, errno) on `report` and exits 127.
pub(crate) fn exec(policy: &Policy, filters: &[BpfProgram], mask: &SigSet, report: OwnedFd) -> ! {
    let Err(failure) = raise_walls(policy, filters, mask).and_then(|()| exec_argv(policy));
    fail(failure, &report)
}

/// How an in-process payload tells its starter that it runs.
pub(crate) struct Announce {
    /// The fork server's event stream.
    pub(crate) events: OwnedFd,
    /// The line to write on it once the walls are up.
    pub(crate) line: String,
}

/// Becomes the payload without exec, in the sandbox's first process under a fork server: closes every inherited
/// descriptor but stdio, sets exactly the policy's environment, raises the same walls in this process, writes
/// `announce`'s line, then calls `run` and exits with its code. A failure is explained on stderr (the sandbox's
/// log) and ends the process with [`SETUP_FAILED`].
pub(crate) fn run_in_process(
    policy: &Policy,
    filters: &[BpfProgram],
    mask: &SigSet,
    announce: Announce,
    run: &dyn Fn(&Policy) -> i32,
) -> ! {
    let give_up = |(stage, errno): (Stage, Errno)| -> ! {
        warn(&format!("starting the payload {:?}: {stage}: {errno}", policy.argv.first()));
        sys::exit_now(SETUP_FAILED)
    };
    // This process is a fork of a long-lived server: nothing it had open may reach the payload.
    if let Err(errno) = sys::close_fds_except(&[announce.events.as_raw_fd()]) {
        give_up((Stage::CloseFds, errno));
    }
    // Exactly the policy's environment, as execve would have set it (the process is single-threaded).
    for (key, _) in std::env::vars_os() {
        std::env::remove_var(key);
    }
    for (key, value) in &policy.env {
        std::env::set_var(key, value);
    }
    // And the command line: the server's would tell the payload where the host keeps this binary.
    if let Err(errno) = sys::set_cmdline(&policy.argv) {
        warn(&format!("cannot set the payload's command line: {errno}"));
    }
    if let Err(errno) = policy.argv.first().map_or(Ok(()), |program| sys::set_comm(program)) {
        warn(&format!("cannot set the payload's name: {errno}"));
    }
    if let Err(failure) = raise_walls(policy, filters, mask) {
        give_up(failure);
    }
    // One write, so the line never mixes with the server's (see the fork server's protocol); then the payload
    // no longer has the stream.
    match nix::unistd::write(&announce.events, announce.line.as_bytes()) {
        Ok(n) if n == announce.line.len() => {}
        Ok(_) => give_up((Stage::Announce, Errno::EIO)),
        Err(errno) => give_up((Stage::Announce, errno)),
    }
    drop(announce);
    sys::exit_now(run(policy))
}

fn fail((stage, errno): (Stage, Errno), report: &OwnedFd) -> ! {
    let mut message = [0u8; 5];
    message[0] = stage as u8;
    message[1..].copy_from_slice(&(errno as i32).to_le_bytes());
    let _ = nix::unistd::write(report, &message);
    sys::exit_now(127)
}

/// Reads the child's report: `None` if the pipe closed empty (the exec succeeded).
pub(crate) fn read_failure(pipe: &OwnedFd) -> Option<(Stage, Errno)> {
    let mut message = [0u8; 5];
    let mut filled = 0;
    while filled < message.len() {
        match nix::unistd::read(pipe, &mut message[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(Errno::EINTR) => continue,
            Err(errno) => return Some((Stage::Exec, errno)),
        }
    }
    if filled == 0 {
        return None;
    }
    let stage = Stage::from_u8(message[0]).unwrap_or(Stage::Exec);
    let errno = i32::from_le_bytes([message[1], message[2], message[3], message[4]]);
    Some((stage, Errno::from_raw(errno)))
}

/// Everything that makes a process the payload, in order, up to and including seccomp.
fn raise_walls(policy: &Policy, filters: &[BpfProgram], mask: &SigSet) -> Result<(), (Stage, Errno)> {
    let fail = |stage| move |errno| (stage, errno);
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(mask), None).map_err(fail(Stage::SignalMask))?;
    nix::unistd::setsid().map_err(fail(Stage::Session))?;
    // As root, so a limit above the inherited hard limit can still be set.
    set_rlimits(&policy.rlimits).map_err(fail(Stage::Rlimits))?;
    // Needs CAP_SETPCAP, so before the uid change; afterwards nothing exec'd can gain a capability back.
    sys::drop_bounding_set().map_err(fail(Stage::BoundingSet))?;
    nix::unistd::setgroups(&[]).map_err(fail(Stage::Groups))?;
    let (gid, uid) = (Gid::from_raw(policy.gid), Uid::from_raw(policy.uid));
    nix::unistd::setresgid(gid, gid, gid).map_err(fail(Stage::Gid))?;
    // Without SECBIT_KEEP_CAPS, leaving uid 0 empties the permitted, effective and ambient sets.
    nix::unistd::setresuid(uid, uid, uid).map_err(fail(Stage::Uid))?;
    sys::clear_ambient_caps().map_err(fail(Stage::Capabilities))?;
    sys::clear_capabilities().map_err(fail(Stage::Capabilities))?;
    // Leaving root made the process undumpable, until an exec (of a binary that is not setuid) would make it
    // dumpable again. An in-process payload never execs: as an exec'd one, it must be visible to its own
    // processes under `hidepid=2`, and its forks to it.
    nix::sys::prctl::set_dumpable(true).map_err(fail(Stage::Dumpable))?;
    nix::sys::prctl::set_no_new_privs().map_err(fail(Stage::NoNewPrivs))?;
    nix::unistd::chdir(&policy.cwd).map_err(fail(Stage::Chdir))?;
    match fs_rules::restrict(policy) {
        Ok(landlock::RulesetStatus::FullyEnforced) => {}
        Ok(status) => warn(&format!("landlock is {status:?} on this kernel: the read-only mounts are the only wall")),
        Err(error) => return Err((Stage::Landlock, explain(&error))),
    }
    // Last: from here on, only execve (or the in-process payload).
    seccomp::apply(filters).map_err(|error| (Stage::Seccomp, explain(&error)))
}

/// execve of the policy's argv with exactly its env; only returns on failure.
fn exec_argv(policy: &Policy) -> Result<Infallible, (Stage, Errno)> {
    let cstr = |s: &str| CString::new(s).map_err(|_| (Stage::Args, Errno::EINVAL));
    let argv = policy.argv.iter().map(|a| cstr(a)).collect::<Result<Vec<_>, _>>()?;
    let env = policy.env.iter().map(|(k, v)| cstr(&format!("{k}={v}"))).collect::<Result<Vec<_>, _>>()?;
    nix::unistd::execve(&argv[0], &argv, &env).map_err(|errno| (Stage::Exec, errno))
}

/// Sets every limit with soft = hard, so the payload cannot raise them again; no core dumps ever.
fn set_rlimits(limits: &Rlimits) -> nix::Result<()> {
    let or_infinity = |value: u64| if value == 0 { RLIM_INFINITY } else { value };
    let address_space = or_infinity(limits.address_space_bytes);
    setrlimit(Resource::RLIMIT_AS, address_space, address_space)?;
    setrlimit(Resource::RLIMIT_NOFILE, limits.open_files, limits.open_files)?;
    let file_size = or_infinity(limits.file_size_bytes);
    setrlimit(Resource::RLIMIT_FSIZE, file_size, file_size)?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0)
}

/// Writes the error's whole chain to stderr (the only place the details go) and returns its errno, if any.
fn explain(error: &(dyn std::error::Error + 'static)) -> Errno {
    warn(&error.to_string());
    let mut source = Some(error);
    while let Some(cause) = source {
        if let Some(raw) = cause.downcast_ref::<std::io::Error>().and_then(std::io::Error::raw_os_error) {
            return Errno::from_raw(raw);
        }
        source = cause.source();
    }
    Errno::EINVAL
}

fn warn(message: &str) {
    let _ = writeln!(std::io::stderr(), "sandbox-exec: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure report survives the pipe: stage byte and errno.
    #[test]
    fn failure_report_round_trip() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let mut message = [0u8; 5];
        message[0] = Stage::Chdir as u8;
        message[1..].copy_from_slice(&(Errno::ENOENT as i32).to_le_bytes());
        nix::unistd::write(&w, &message).unwrap();
        drop(w);
        assert_eq!(read_failure(&r), Some((Stage::Chdir, Errno::ENOENT)));
        let (r, w) = nix::unistd::pipe().unwrap();
        drop(w);
        assert_eq!(read_failure(&r), None);
    }
}
