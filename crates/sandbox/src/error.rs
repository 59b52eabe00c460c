//! `sandbox::Error`: why a sandbox could not be started or cleaned up.

use std::io;
use std::time::Duration;

use crate::cgroups::CgroupError;
use crate::policy::PolicyError;

/// Why [`crate::spawn`] or [`crate::cleanup_stale`] failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The policy was rejected before anything was created.
    #[error("invalid sandbox policy")]
    Policy(#[from] PolicyError),
    /// Creating, killing or removing a cgroup failed.
    #[error("sandbox cgroup operation failed")]
    Cgroup(#[from] CgroupError),
    /// The helper binary could not be started.
    #[error("starting the sandbox helper")]
    SpawnHelper(#[source] io::Error),
    /// The policy could not be written to the helper's stdin.
    #[error("sending the policy to the sandbox helper")]
    SendPolicy(#[source] io::Error),
    /// The helper exited before the payload was running; `stderr` says which step failed and why.
    #[error("sandbox setup failed ({status}): {stderr}")]
    Setup {
        /// How the helper ended.
        status: String,
        /// What the helper printed on stderr.
        stderr: String,
    },
    /// The helper did not report readiness in time (it has been killed).
    #[error("sandbox helper not ready after {timeout:?}: {stderr}")]
    Timeout {
        /// How long we waited.
        timeout: Duration,
        /// What the helper printed on stderr so far.
        stderr: String,
    },
    /// The helper's stdout did not carry the `ready <pid>` line.
    #[error("unexpected line from the sandbox helper: {line:?}")]
    Protocol {
        /// The line read.
        line: String,
    },
    /// The fork server has exited; start a new one.
    #[error("the fork server has exited")]
    ServerGone,
    /// A sandbox of this name is already running on the fork server.
    #[error("a sandbox named {0:?} is already running")]
    NameInUse(String),
    /// Starting failed, and removing the half-made sandbox's cgroup failed as well.
    #[error("{error} (and removing its cgroup failed: {cleanup})")]
    CleanupFailed {
        /// The failure that stopped the start.
        #[source]
        error: Box<Error>,
        /// The failure of the cleanup after it.
        cleanup: CgroupError,
    },
}
