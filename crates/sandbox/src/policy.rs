//! `Policy`: what a sandbox may see and use, as plain serde data built with [`PolicyBuilder`] and validated once.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything the helper needs to build one sandbox. Plain data: no libc or nix types, so it crosses the process
/// boundary as JSON on the helper's stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Sandbox id: the hostname inside and the leaf name of its cgroups.
    pub name: String,
    /// Unprivileged uid the payload runs as (one per sandbox, so per-uid limits are per sandbox). Never 0.
    pub uid: u32,
    /// Group of the payload. Never 0.
    pub gid: u32,
    /// Empty host directory where the new root tmpfs is mounted, inside the sandbox's own mount namespace.
    pub root_dir: PathBuf,
    /// Extra read-only binds (e.g. the Python install and the kernel virtualenv).
    pub ro_binds: Vec<Bind>,
    /// Read-write binds (e.g. the session directory holding the kernel's ipc sockets, owned by `uid`).
    pub rw_binds: Vec<Bind>,
    /// Sizes of the writable tmpfs mounts: the payload's disk quota.
    pub tmpfs: TmpfsSizes,
    /// The payload's whole environment: nothing else is inherited.
    pub env: BTreeMap<String, String>,
    /// Payload command line; `argv[0]` is an absolute path inside the sandbox.
    pub argv: Vec<String>,
    /// Working directory of the payload, inside the sandbox.
    pub cwd: PathBuf,
    /// Directories made on the sandbox's fresh `/tmp` or `/sandbox` for its user before the payload starts, parents
    /// first (e.g. a program's config directories, which it would otherwise make at every start).
    #[serde(default)]
    pub owned_dirs: Vec<OwnedDir>,
    /// cgroup limits.
    pub limits: Limits,
    /// Per-process resource limits set on the payload before exec (absent in older policies: the defaults).
    #[serde(default)]
    pub rlimits: Rlimits,
    /// Name of the cgroup directory holding all sandboxes of one gateway (e.g. `code-interpreter-1a2b3c4d`), so
    /// leftovers of a crashed run can be found and removed by [`crate::cleanup_stale`].
    pub cgroup_parent: String,
}

/// A bind mount of a host path at a path inside the sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    /// Host path (a directory or a file).
    pub source: PathBuf,
    /// Absolute path inside the sandbox.
    pub target: PathBuf,
}

/// A directory made inside the sandbox, owned by its uid and gid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedDir {
    /// Absolute path inside the sandbox, under `/tmp` or `/sandbox`; its parent exists or comes earlier in the list.
    pub path: PathBuf,
    /// Permission bits (at most `0o777`).
    pub mode: u32,
}

/// Sizes in bytes of the sandbox's tmpfs mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TmpfsSizes {
    /// `/tmp`.
    pub tmp: u64,
    /// `/sandbox`, the payload's home and default working directory.
    pub sandbox: u64,
    /// `/dev/shm`, needed by `multiprocessing`.
    pub dev_shm: u64,
}

impl Default for TmpfsSizes {
    fn default() -> Self {
        Self { tmp: 256 << 20, sandbox: 256 << 20, dev_shm: 64 << 20 }
    }
}

/// cgroup limits of one sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Hard memory limit (no swap on top): past it the kernel OOM-kills inside the sandbox.
    pub memory_bytes: u64,
    /// Maximum number of tasks, against fork bombs.
    pub pids_max: u64,
    /// CPU quota in thousandths of a core (1000 = one core).
    pub cpu_millicores: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self { memory_bytes: 1 << 30, pids_max: 256, cpu_millicores: 1000 }
    }
}

/// `setrlimit` limits of the payload (soft = hard, so it cannot raise them); `RLIMIT_CORE` is always 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Rlimits {
    /// `RLIMIT_AS` in bytes, 0 = unlimited. Set just under the memory limit, a big allocation raises
    /// `MemoryError` in Python instead of an OOM kill of the whole kernel.
    pub address_space_bytes: u64,
    /// `RLIMIT_NOFILE`: open file descriptors per process.
    pub open_files: u64,
    /// `RLIMIT_FSIZE` in bytes, 0 = unlimited (the tmpfs sizes are the disk quota anyway).
    pub file_size_bytes: u64,
}

impl Default for Rlimits {
    fn default() -> Self {
        Self { address_space_bytes: 0, open_files: 1024, file_size_bytes: 0 }
    }
}

/// Why a policy was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// The name is used as hostname and cgroup directory name.
    #[error("invalid sandbox name {0:?}: want 1-63 chars of [A-Za-z0-9_-]")]
    Name(String),
    /// The cgroup parent is a single directory name.
    #[error("invalid cgroup parent {0:?}: want 1-128 chars of [A-Za-z0-9_.-]")]
    CgroupParent(String),
    /// uid or gid 0 would make the payload root.
    #[error("uid and gid must not be 0 (got uid {uid}, gid {gid})")]
    Root {
        /// Requested uid.
        uid: u32,
        /// Requested gid.
        gid: u32,
    },
    /// argv is empty or `argv[0]` is not absolute.
    #[error("argv must start with an absolute path (got {0:?})")]
    Argv(Vec<String>),
    /// A path that must be absolute and normal (no `..`) is not.
    #[error("{what} must be an absolute path without `..` (got {path:?})")]
    Path {
        /// Which field.
        what: &'static str,
        /// The offending value.
        path: PathBuf,
    },
    /// A bind would cover the sandbox's own mounts.
    #[error("bind target {0:?} would cover a mount the sandbox needs")]
    ReservedTarget(PathBuf),
    /// An owned directory is not strictly under `/tmp` or `/sandbox`, or its mode has more than permission bits.
    #[error("owned directory {0:?} (mode {1:o}) must be under /tmp or /sandbox, with a mode of at most 777")]
    OwnedDir(PathBuf, u32),
    /// Environment keys must be usable by execve.
    #[error("invalid environment variable {0:?}")]
    Env(String),
    /// A zero limit can never run anything.
    #[error("limit {0} must be greater than zero")]
    ZeroLimit(&'static str),
}

/// Paths the sandbox mounts itself: a bind there or above would hide them.
const RESERVED: &[&str] =
    &["/", "/usr", "/etc", "/proc", "/dev", "/tmp", "/sandbox", "/bin", "/lib", "/lib64", "/sbin"];

impl Policy {
    /// Starts a builder for a sandbox called `name` running `argv`.
    pub fn builder(name: impl Into<String>) -> PolicyBuilder {
        PolicyBuilder {
            policy: Policy {
                name: name.into(),
                uid: 0,
                gid: 0,
                root_dir: PathBuf::new(),
                ro_binds: Vec::new(),
                rw_binds: Vec::new(),
                tmpfs: TmpfsSizes::default(),
                env: BTreeMap::new(),
                argv: Vec::new(),
                cwd: PathBuf::from("/sandbox"),
                owned_dirs: Vec::new(),
                limits: Limits::default(),
                rlimits: Rlimits::default(),
                cgroup_parent: "sandbox".into(),
            },
        }
    }

    /// Checks every field; the helper calls it again on what it reads, so a bad policy fails before any mount.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let name_ok = |s: &str, max: usize, dot: bool| {
            !s.is_empty()
                && s.len() <= max
                && s != "."
                && s != ".."
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (dot && b == b'.'))
        };
        if !name_ok(&self.name, 63, false) {
            return Err(PolicyError::Name(self.name.clone()));
        }
        check_cgroup_parent(&self.cgroup_parent)?;
        if self.uid == 0 || self.gid == 0 {
            return Err(PolicyError::Root { uid: self.uid, gid: self.gid });
        }
        if self.argv.first().is_none_or(|a| !a.starts_with('/')) || self.argv.iter().any(|a| a.contains('\0')) {
            return Err(PolicyError::Argv(self.argv.clone()));
        }
        check_path("root_dir", &self.root_dir)?;
        check_path("cwd", &self.cwd)?;
        for bind in self.ro_binds.iter().chain(&self.rw_binds) {
            check_path("bind source", &bind.source)?;
            check_path("bind target", &bind.target)?;
            if RESERVED.iter().any(|r| Path::new(r) == bind.target || Path::new(r).starts_with(&bind.target))
                || bind.target.starts_with("/usr")
                || bind.target.starts_with("/proc")
            {
                return Err(PolicyError::ReservedTarget(bind.target.clone()));
            }
        }
        for dir in &self.owned_dirs {
            check_path("owned dir", &dir.path)?;
            let on_fresh_tmpfs =
                ["/tmp", "/sandbox"].iter().any(|t| dir.path.starts_with(t) && dir.path != Path::new(t));
            if !on_fresh_tmpfs || dir.mode > 0o777 {
                return Err(PolicyError::OwnedDir(dir.path.clone(), dir.mode));
            }
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(PolicyError::Env(k.clone()));
            }
        }
        for (what, value) in [
            ("memory_bytes", self.limits.memory_bytes),
            ("pids_max", self.limits.pids_max),
            ("cpu_millicores", self.limits.cpu_millicores),
            ("tmpfs.tmp", self.tmpfs.tmp),
            ("tmpfs.sandbox", self.tmpfs.sandbox),
            ("tmpfs.dev_shm", self.tmpfs.dev_shm),
            ("rlimits.open_files", self.rlimits.open_files),
        ] {
            if value == 0 {
                return Err(PolicyError::ZeroLimit(what));
            }
        }
        Ok(())
    }
}

/// A cgroup parent is one plain directory name: never empty, `.`/`..` or a path, since everything below it may be
/// killed by [`crate::cleanup_stale`].
pub(crate) fn check_cgroup_parent(parent: &str) -> Result<(), PolicyError> {
    let ok = !parent.is_empty()
        && parent.len() <= 128
        && parent != "."
        && parent != ".."
        && parent.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(PolicyError::CgroupParent(parent.to_owned()))
    }
}

fn check_path(what: &'static str, path: &Path) -> Result<(), PolicyError> {
    let normal = path.is_absolute()
        && path.components().all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
        && !path.as_os_str().as_encoded_bytes().contains(&0);
    if normal {
        Ok(())
    } else {
        Err(PolicyError::Path { what, path: path.to_owned() })
    }
}

/// Builds a [`Policy`]; `build` validates it.
#[derive(Debug, Clone)]
pub struct PolicyBuilder {
    policy: Policy,
}

impl PolicyBuilder {
    /// The payload's uid and gid (both non-zero).
    pub fn identity(mut self, uid: u32, gid: u32) -> Self {
        self.policy.uid = uid;
        self.policy.gid = gid;
        self
    }

    /// The empty host directory the new root is mounted on.
    pub fn root_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.policy.root_dir = dir.into();
        self
    }

    /// Adds a read-only bind of host `source` at `target` inside.
    pub fn ro_bind(mut self, source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Self {
        self.policy.ro_binds.push(Bind { source: source.into(), target: target.into() });
        self
    }

    /// Adds a read-write bind of host `source` at `target` inside.
    pub fn rw_bind(mut self, source: impl Into<PathBuf>, target: impl Into<PathBuf>) -> Self {
        self.policy.rw_binds.push(Bind { source: source.into(), target: target.into() });
        self
    }

    /// Sizes of `/tmp`, `/sandbox` and `/dev/shm`.
    pub fn tmpfs(mut self, sizes: TmpfsSizes) -> Self {
        self.policy.tmpfs = sizes;
        self
    }

    /// Sets one environment variable of the payload.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.policy.env.insert(key.into(), value.into());
        self
    }

    /// The payload's command line; `argv[0]` must be absolute.
    pub fn argv<I, S>(mut self, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.policy.argv = argv.into_iter().map(Into::into).collect();
        self
    }

    /// The payload's working directory (default `/sandbox`).
    pub fn cwd(mut self, cwd: impl Into<PathBuf>) -> Self {
        self.policy.cwd = cwd.into();
        self
    }

    /// A directory made for the payload's user, with permission bits `mode` (see [`Policy::owned_dirs`]).
    pub fn owned_dir(mut self, path: impl Into<PathBuf>, mode: u32) -> Self {
        self.policy.owned_dirs.push(OwnedDir { path: path.into(), mode });
        self
    }

    /// Memory limit in bytes.
    pub fn memory_limit(mut self, bytes: u64) -> Self {
        self.policy.limits.memory_bytes = bytes;
        self
    }

    /// Maximum number of tasks.
    pub fn pids_limit(mut self, max: u64) -> Self {
        self.policy.limits.pids_max = max;
        self
    }

    /// CPU quota in thousandths of a core.
    pub fn cpu_millicores(mut self, millicores: u64) -> Self {
        self.policy.limits.cpu_millicores = millicores;
        self
    }

    /// `RLIMIT_AS` of the payload in bytes (default 0: unlimited); pass just under the memory limit.
    pub fn address_space_limit(mut self, bytes: u64) -> Self {
        self.policy.rlimits.address_space_bytes = bytes;
        self
    }

    /// `RLIMIT_NOFILE` of the payload (default 1024; must not be 0).
    pub fn open_files_limit(mut self, max: u64) -> Self {
        self.policy.rlimits.open_files = max;
        self
    }

    /// `RLIMIT_FSIZE` of the payload in bytes (default 0: unlimited).
    pub fn file_size_limit(mut self, bytes: u64) -> Self {
        self.policy.rlimits.file_size_bytes = bytes;
        self
    }

    /// Name of the cgroup directory holding this gateway's sandboxes.
    pub fn cgroup_parent(mut self, parent: impl Into<String>) -> Self {
        self.policy.cgroup_parent = parent.into();
        self
    }

    /// Validates and returns the policy.
    pub fn build(self) -> Result<Policy, PolicyError> {
        self.policy.validate()?;
        Ok(self.policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> PolicyBuilder {
        Policy::builder("sbx-1")
            .identity(10_001, 10_001)
            .root_dir("/var/lib/ci/roots/sbx-1")
            .argv(["/usr/bin/python3", "-c", "pass"])
            .env("HOME", "/sandbox")
            .rw_bind("/var/lib/ci/sessions/sbx-1", "/run/kernel")
            .cgroup_parent("code-interpreter-1a2b3c4d")
    }

    /// A policy survives the JSON trip to the helper unchanged.
    #[test]
    fn serde_round_trip() {
        let policy = valid().ro_bind("/opt/py", "/opt/py").owned_dir("/tmp/.cfg", 0o700).build().unwrap();
        let json = serde_json::to_string(&policy).unwrap();
        assert_eq!(serde_json::from_str::<Policy>(&json).unwrap(), policy);
        // A policy written before rlimits existed still parses, with the defaults.
        let mut old = serde_json::to_value(&policy).unwrap();
        old.as_object_mut().unwrap().remove("rlimits");
        old.as_object_mut().unwrap().remove("owned_dirs");
        let old = serde_json::from_value::<Policy>(old).unwrap();
        assert_eq!((old.rlimits, old.owned_dirs), (Rlimits::default(), vec![]));
    }

    /// Root identities, relative argv and bad names are refused before anything runs.
    #[test]
    fn rejects_unsafe_policies() {
        assert_eq!(valid().identity(0, 5).build(), Err(PolicyError::Root { uid: 0, gid: 5 }));
        assert!(matches!(valid().argv(["python3"]).build(), Err(PolicyError::Argv(_))));
        assert!(matches!(valid().argv(Vec::<String>::new()).build(), Err(PolicyError::Argv(_))));
        assert!(matches!(Policy::builder("a/b").identity(1, 1).build(), Err(PolicyError::Name(_))));
        assert!(matches!(valid().cgroup_parent("..").build(), Err(PolicyError::CgroupParent(_))));
        assert!(matches!(valid().cwd("/sandbox/../etc").build(), Err(PolicyError::Path { what: "cwd", .. })));
        assert!(matches!(valid().ro_bind("/x", "/usr/lib/x").build(), Err(PolicyError::ReservedTarget(_))));
        assert!(matches!(valid().rw_bind("/x", "/").build(), Err(PolicyError::ReservedTarget(_))));
        assert!(matches!(valid().env("A=B", "c").build(), Err(PolicyError::Env(_))));
        assert_eq!(valid().memory_limit(0).build(), Err(PolicyError::ZeroLimit("memory_bytes")));
        assert_eq!(valid().open_files_limit(0).build(), Err(PolicyError::ZeroLimit("rlimits.open_files")));
        // Owned directories only on the sandbox's own fresh tmpfs mounts, below them, with permission bits only.
        for (path, mode) in [("/tmp", 0o755), ("/sandbox", 0o755), ("/etc/x", 0o755), ("/run/kernel/x", 0o700)] {
            assert_eq!(valid().owned_dir(path, mode).build(), Err(PolicyError::OwnedDir(path.into(), mode)));
        }
        assert_eq!(valid().owned_dir("/tmp/x", 0o4755).build(), Err(PolicyError::OwnedDir("/tmp/x".into(), 0o4755)));
        assert!(matches!(valid().owned_dir("/tmp/../etc", 0o755).build(), Err(PolicyError::Path { .. })));
        assert!(valid().owned_dir("/tmp/.cfg", 0o700).owned_dir("/sandbox/a", 0o755).build().is_ok());
    }

    /// Binds below /tmp-like names but outside reserved paths are fine (e.g. /run/kernel, /opt/venv).
    #[test]
    fn accepts_ordinary_binds() {
        let policy = valid().ro_bind("/opt/venv", "/opt/venv").ro_bind("/etc/mime.types", "/etc/mime.types").build();
        assert!(policy.is_ok(), "{policy:?}");
    }
}
