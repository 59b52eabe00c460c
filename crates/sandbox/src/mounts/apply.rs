//! Performs a mount plan: each [`Step`] as the syscalls it stands for, failures naming the step.

use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::Step;

/// A step that failed, and why.
#[derive(Debug, thiserror::Error)]
#[error("{step}")]
pub(crate) struct StepFailed {
    step: String,
    #[source]
    source: io::Error,
}

/// Performs `steps` in order; stops at the first failure and says which step it was.
pub(crate) fn apply(steps: &[Step]) -> Result<(), StepFailed> {
    for step in steps {
        apply_one(step).map_err(|source| StepFailed { step: step.to_string(), source })?;
    }
    Ok(())
}

fn apply_one(step: &Step) -> io::Result<()> {
    let none = None::<&str>;
    match step {
        Step::MakePrivate => mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)?,
        Step::Tmpfs { target, options, flags } => {
            std::fs::create_dir_all(target)?;
            mount(Some("tmpfs"), target, Some("tmpfs"), *flags, Some(options.as_str()))?;
        }
        Step::Mkdir { path } => std::fs::create_dir_all(path)?,
        Step::OwnedDir { path, mode, uid, gid } => {
            // The parent is on a tmpfs made for this sandbox moments ago: nothing of its user's ran here yet.
            std::fs::create_dir(path)?;
            std::os::unix::fs::chown(path, Some(*uid), Some(*gid))?;
            // After the chown (which may clear set-id bits) and whatever the umask took from create_dir's mode.
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(*mode))?;
        }
        Step::Bind { source, target, flags } => {
            make_mount_point(source, target)?;
            mount(Some(source), target, none, MsFlags::MS_BIND | MsFlags::MS_REC, none)?;
            // A bind inherits the source's flags; nosuid/nodev/ro only take effect through a remount of the bind.
            mount(none, target, none, MsFlags::MS_BIND | MsFlags::MS_REMOUNT | *flags, none)?;
        }
        Step::Symlink { to, link } => symlink(to, link)?,
        Step::WriteFile { path, contents } => {
            std::fs::write(path, contents)?;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
        }
        Step::Copy { source, target } => {
            std::fs::copy(source, target)?;
            std::fs::set_permissions(target, std::fs::Permissions::from_mode(0o644))?;
        }
        Step::Proc { target } => {
            std::fs::create_dir_all(target)?;
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            mount(Some("proc"), target, Some("proc"), flags, Some("hidepid=2"))?;
        }
        Step::PivotRoot { new_root } => {
            nix::unistd::chdir(new_root)?;
            // pivot_root(".", "."): the old root ends up stacked on the new one, then is detached from under it.
            nix::unistd::pivot_root(".", ".")?;
            umount2(".", MntFlags::MNT_DETACH)?;
            nix::unistd::chdir("/")?;
        }
        Step::RemountReadOnly { target, flags } => {
            mount(none, target, none, MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | *flags, none)?;
        }
    }
    Ok(())
}

/// Creates an empty directory or file at `target`, matching what `source` is.
fn make_mount_point(source: &Path, target: &Path) -> io::Result<()> {
    if std::fs::metadata(source)?.is_dir() {
        std::fs::create_dir_all(target)
    } else {
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(target).map(drop)
    }
}
