//! The sandbox's root filesystem: [`plan`] turns a policy into an ordered list of [`Step`]s (pure, unit-tested),
//! [`apply`] performs them inside the sandbox's mount namespace, ending with `pivot_root` and a read-only `/`.

mod apply;
mod plan;

pub(crate) use apply::{apply, StepFailed};
pub(crate) use plan::{plan, HostFacts};

use std::fmt;
use std::path::PathBuf;

use nix::mount::MsFlags;

/// One action on the way to the sandbox root; paths before `PivotRoot` are host paths below `root_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// Stop mount events propagating between the host and the sandbox, both ways.
    MakePrivate,
    /// Mount a tmpfs with `options` (size, mode, owner).
    Tmpfs { target: PathBuf, options: String, flags: MsFlags },
    /// Create a directory.
    Mkdir { path: PathBuf },
    /// Create a directory (its parent exists) with permission bits `mode`, owned by `uid` and `gid`.
    OwnedDir { path: PathBuf, mode: u32, uid: u32, gid: u32 },
    /// Bind `source` at `target` (creating the mount point), then remount with `flags` (e.g. read-only).
    Bind { source: PathBuf, target: PathBuf, flags: MsFlags },
    /// Create a symlink `link` pointing at `to`.
    Symlink { to: PathBuf, link: PathBuf },
    /// Write a generated file (mode 0644).
    WriteFile { path: PathBuf, contents: String },
    /// Copy a host file's content (following symlinks).
    Copy { source: PathBuf, target: PathBuf },
    /// Mount a fresh procfs that hides other users' processes.
    Proc { target: PathBuf },
    /// Make `new_root` the root and detach the old one.
    PivotRoot { new_root: PathBuf },
    /// Remount an existing mount (inside the new root) read-only, keeping `flags`.
    RemountReadOnly { target: PathBuf, flags: MsFlags },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::MakePrivate => write!(f, "making / private (recursively)"),
            Step::Tmpfs { target, options, .. } => write!(f, "mounting tmpfs ({options}) at {}", target.display()),
            Step::Mkdir { path } => write!(f, "creating directory {}", path.display()),
            Step::OwnedDir { path, mode, uid, gid } => {
                write!(f, "creating directory {} (mode {mode:o}, owner {uid}:{gid})", path.display())
            }
            Step::Bind { source, target, flags } => {
                write!(f, "bind-mounting {} at {} ({flags:?})", source.display(), target.display())
            }
            Step::Symlink { to, link } => {
                write!(f, "linking {} -> {}", link.display(), to.display())
            }
            Step::WriteFile { path, .. } => write!(f, "writing {}", path.display()),
            Step::Copy { source, target } => {
                write!(f, "copying {} to {}", source.display(), target.display())
            }
            Step::Proc { target } => write!(f, "mounting proc (hidepid=2) at {}", target.display()),
            Step::PivotRoot { new_root } => write!(f, "pivoting root to {}", new_root.display()),
            Step::RemountReadOnly { target, .. } => {
                write!(f, "remounting {} read-only", target.display())
            }
        }
    }
}
