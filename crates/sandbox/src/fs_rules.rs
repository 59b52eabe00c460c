//! The payload's landlock ruleset, a second wall behind the read-only mounts: read and execute anywhere in the
//! sandbox, write only below its tmpfs mounts, its read-write binds and a few device nodes. Best effort: a kernel
//! without landlock (or with an older ABI) enforces what it can, and the payload's stderr says so.

use std::path::{Path, PathBuf};

use landlock::{
    path_beneath_rules, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetError, RulesetStatus, ABI,
};

use crate::policy::Policy;

/// The ABI whose filesystem rights are handled: V5 (Linux 6.10) has every right up to `IoctlDev`; V6-V8 add none,
/// and V9's `ResolveUnix` (connecting to pathname sockets) is left alone until it has been tried with zeromq.
pub(crate) const TARGET_ABI: ABI = ABI::V5;

/// Writable directories every sandbox has (its tmpfs mounts); the policy's rw binds are added to these.
pub(crate) const WRITABLE_DIRS: &[&str] = &["/sandbox", "/tmp", "/dev/shm"];

/// Device nodes the payload may open for writing (and ioctl); `/dev/pts` only where it exists.
pub(crate) const WRITABLE_DEVICES: &[&str] = &["/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/dev/pts"];

/// Every path (inside the sandbox) that gets full access, in order; absent ones are skipped.
pub(crate) fn writable_paths(policy: &Policy) -> Vec<PathBuf> {
    WRITABLE_DIRS
        .iter()
        .chain(WRITABLE_DEVICES)
        .map(PathBuf::from)
        .chain(policy.rw_binds.iter().map(|b| b.target.clone()))
        .collect()
}

/// Restricts the calling thread (and everything it execs) to the rules above. Call inside the sandbox root, after
/// `no_new_privs`. Returns how much the kernel enforced.
pub(crate) fn restrict(policy: &Policy) -> Result<RulesetStatus, RulesetError> {
    let writable: Vec<PathBuf> = writable_paths(policy).into_iter().filter(|p| p.exists()).collect();
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(TARGET_ABI))?
        .create()?
        .add_rules(path_beneath_rules([Path::new("/")], AccessFs::from_read(TARGET_ABI)))?
        .add_rules(path_beneath_rules(&writable, AccessFs::from_all(TARGET_ABI)))?
        .restrict_self()?;
    Ok(status.ruleset)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The session dir (an rw bind) is writable next to the fixed paths; reading is never one of the write rights.
    #[test]
    fn writable_paths_include_rw_binds() {
        let policy = Policy::builder("sbx-1")
            .identity(10_001, 10_001)
            .root_dir("/r")
            .argv(["/bin/true"])
            .rw_bind("/host/session", "/run/kernel")
            .build()
            .unwrap();
        let paths = writable_paths(&policy);
        assert!(paths.contains(&PathBuf::from("/run/kernel")));
        assert!(paths.contains(&PathBuf::from("/dev/null")));
        assert!(!paths.contains(&PathBuf::from("/host/session")), "inside paths only");
        assert!(!paths.iter().any(|p| p == Path::new("/") || p.starts_with("/usr") || p.starts_with("/etc")));
        assert!(AccessFs::from_read(TARGET_ABI).contains(AccessFs::Execute));
        assert!(!AccessFs::from_read(TARGET_ABI).contains(AccessFs::WriteFile));
    }
}
