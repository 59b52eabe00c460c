//! How a sandbox ended: [`Termination`], and the exit-code encoding the helper and init use to pass it up.

use serde::{Deserialize, Serialize};

/// How the payload ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Termination {
    /// The payload exited with this code.
    Exited(i32),
    /// The payload was killed by this signal (and neither cgroup counter explains it).
    Signaled(i32),
    /// The memory cgroup OOM-killed a process of the sandbox.
    OutOfMemory,
    /// A fork failed against the pids limit and the payload then died.
    PidsLimit,
}

/// Exit code of a setup failure of the helper or init: the ready line never came.
pub(crate) const SETUP_FAILED: i32 = 125;

/// Encodes a wait status as one exit code, shell style: the code itself, or 128 + signal.
pub(crate) fn encode(status: nix::sys::wait::WaitStatus) -> i32 {
    use nix::sys::wait::WaitStatus;
    match status {
        WaitStatus::Exited(_, code) => code,
        WaitStatus::Signaled(_, signal, _) => 128 + signal as i32,
        // Only exits and signals are waited for; anything else is reported as a generic failure.
        _ => SETUP_FAILED,
    }
}

/// Decides how the sandbox ended from the helper's exit code (or the signal that killed it) and the cgroup's
/// counters. OOM wins over everything: an OOM kill shows up as SIGKILL or as a crash of the payload.
pub(crate) fn decide(code: Option<i32>, signal: Option<i32>, oom_kills: u64, pids_max_events: u64) -> Termination {
    if oom_kills > 0 {
        return Termination::OutOfMemory;
    }
    let plain = match (code, signal) {
        (Some(code), _) if code > 128 => Termination::Signaled(code - 128),
        (Some(code), _) => Termination::Exited(code),
        (None, Some(signal)) => Termination::Signaled(signal),
        (None, None) => Termination::Signaled(libc::SIGKILL),
    };
    if pids_max_events > 0 && plain != Termination::Exited(0) {
        return Termination::PidsLimit;
    }
    plain
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;
    use nix::sys::wait::WaitStatus;
    use nix::unistd::Pid;

    /// Exit codes pass through; signals become 128 + signal, and decode back.
    #[test]
    fn encode_and_decide_round_trip() {
        let pid = Pid::from_raw(7);
        assert_eq!(encode(WaitStatus::Exited(pid, 3)), 3);
        assert_eq!(encode(WaitStatus::Signaled(pid, Signal::SIGKILL, false)), 137);
        assert_eq!(decide(Some(3), None, 0, 0), Termination::Exited(3));
        assert_eq!(decide(Some(0), None, 0, 0), Termination::Exited(0));
        assert_eq!(decide(Some(137), None, 0, 0), Termination::Signaled(9));
        assert_eq!(decide(None, Some(15), 0, 0), Termination::Signaled(15));
    }

    /// An OOM kill beats the SIGKILL it shows up as; pids events only explain a failure.
    #[test]
    fn counters_take_precedence() {
        assert_eq!(decide(Some(137), None, 1, 0), Termination::OutOfMemory);
        assert_eq!(decide(Some(1), None, 2, 5), Termination::OutOfMemory);
        assert_eq!(decide(Some(1), None, 0, 5), Termination::PidsLimit);
        assert_eq!(decide(Some(0), None, 0, 5), Termination::Exited(0));
    }
}
