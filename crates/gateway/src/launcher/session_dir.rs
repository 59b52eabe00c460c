//! A sandbox's session directory on the host: `<sessions>/<name>/root` (the empty mount point of the sandbox's
//! root) and `<sessions>/<name>/run`, a small tmpfs of its own holding the connection file and the kernel's ipc
//! sockets. The tmpfs keeps the one directory the sandbox can write on the host from filling the host's disk.
//! `<sessions>` itself is a tmpfs too (mounted with the first session directory, unmounted by `remove_all`).

use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use kernel::ConnectionInfo;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::LaunchError;

/// Size of a session's `run` tmpfs: the connection file and socket inodes need a few KiB.
const RUN_SIZE: &str = "size=1m,nr_inodes=64";
/// The tmpfs of `<sessions>`: it holds only directories (three per session; what they hold is on mounts of their
/// own), so no data and few inodes.
const SESSIONS_TMPFS: &str = "size=1m,nr_inodes=65536,mode=0755";

/// A session directory; removed by `remove`.
pub(super) struct SessionDir {
    path: PathBuf,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> LaunchError + '_ {
    move |source| LaunchError::SessionDir { path: path.to_path_buf(), source }
}

impl SessionDir {
    /// Creates `<sessions>/<name>` with its `run` tmpfs owned by `uid`, and writes the connection file there as
    /// the kernel sees it when `run` is mounted at `run_in_sandbox`.
    pub(super) fn create(
        sessions: &Path,
        name: &str,
        uid: u32,
        run_in_sandbox: &Path,
    ) -> Result<(SessionDir, ConnectionInfo), LaunchError> {
        let dir = SessionDir { path: sessions.join(name) };
        let info = dir.fill(uid, run_in_sandbox).inspect_err(|_| dir.remove())?;
        Ok((dir, info))
    }

    fn fill(&self, uid: u32, run_in_sandbox: &Path) -> Result<ConnectionInfo, LaunchError> {
        if let Some(sessions) = self.path.parent() {
            mount_sessions_tmpfs(sessions);
        }
        let run = self.run();
        std::fs::create_dir_all(self.root()).map_err(io_error(&self.path))?;
        std::fs::create_dir_all(&run).map_err(io_error(&run))?;
        let options = format!("{RUN_SIZE},mode=0700,uid={uid},gid={uid}");
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        mount(Some("tmpfs"), &run, Some("tmpfs"), flags, Some(options.as_str()))
            .map_err(|errno| io_error(&run)(errno.into()))?;
        let info = ConnectionInfo::ipc(&run);
        let file = run.join("kernel.json");
        std::fs::write(&file, info.connection_file_json(run_in_sandbox)).map_err(io_error(&file))?;
        chown(&file, Some(uid), Some(uid)).map_err(io_error(&file))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).map_err(io_error(&file))?;
        Ok(info)
    }

    /// The empty mount point of the sandbox's root.
    pub(super) fn root(&self) -> PathBuf {
        self.path.join("root")
    }

    /// The tmpfs with the connection file and sockets.
    pub(super) fn run(&self) -> PathBuf {
        self.path.join("run")
    }

    /// Unmounts the `run` tmpfs and deletes the directory; logs what it cannot do.
    pub(super) fn remove(&self) {
        let _ = umount2(&self.run(), MntFlags::MNT_DETACH);
        if let Err(err) = std::fs::remove_dir_all(&self.path) {
            if err.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.path.display(), cause = %err, "cannot remove a session directory");
            }
        }
    }
}

/// Puts `<sessions>` on a tmpfs of its own unless it is on one. Session directories are made and removed at every
/// start and end of a sandbox: on a disk file system each costs inode allocation and journal writes (ext4 also
/// scans past recently freed inodes: a quarter of the gateway's CPU in a burst of starts). Best effort: where the
/// mount fails, session directories stay on the disk (said once in the log).
fn mount_sessions_tmpfs(sessions: &Path) {
    static MOUNTING: Mutex<()> = Mutex::new(());
    static WARNED: AtomicBool = AtomicBool::new(false);
    let _one_at_a_time = MOUNTING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if on_tmpfs(sessions) {
        return;
    }
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    let mounted = std::fs::create_dir_all(sessions)
        .and_then(|()| Ok(mount(Some("tmpfs"), sessions, Some("tmpfs"), flags, Some(SESSIONS_TMPFS))?));
    if let Err(cause) = mounted {
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(dir = %sessions.display(), %cause, "cannot mount a tmpfs for the session directories");
        }
    }
}

/// Whether `path` is on a tmpfs (false if it cannot be told).
fn on_tmpfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
}

/// The mount points in `mountinfo` (`/proc/self/mountinfo`'s text) at `dir` or under it.
fn mounts_at_or_under<'a>(mountinfo: &'a str, dir: &Path) -> Vec<&'a str> {
    let prefix = format!("{}/", dir.display());
    let points = mountinfo.lines().filter_map(|line| line.split(' ').nth(4));
    points.filter(|point| point.starts_with(&prefix) || Path::new(point) == dir).collect()
}

/// Removes every session directory under `sessions` left by an earlier run, unmounting their tmpfs and the
/// sessions tmpfs first, and leaves `sessions` an empty directory of the disk.
pub(super) fn remove_all(sessions: &Path) -> Result<(), LaunchError> {
    let mounts =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(io_error(Path::new("/proc/self/mountinfo")))?;
    let mut stale = mounts_at_or_under(&mounts, sessions);
    stale.sort_by_key(|point| std::cmp::Reverse(point.len()));
    for point in stale {
        if let Err(errno) = umount2(point, MntFlags::MNT_DETACH) {
            tracing::warn!(mount = point, %errno, "cannot unmount a stale session mount");
        }
    }
    match std::fs::remove_dir_all(sessions) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => return Err(LaunchError::SessionDir { path: sessions.to_path_buf(), source }),
    }
    std::fs::create_dir_all(sessions).map_err(io_error(sessions))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mount points at or under `dir` now.
    fn mounted_at_or_under(dir: &Path) -> Vec<String> {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        mounts_at_or_under(&mounts, dir).into_iter().map(str::to_owned).collect()
    }

    /// Session directories go on a tmpfs of `<sessions>`' own, made with the first of them; `remove_all` takes
    /// every mount away again and leaves an empty directory of the file system below.
    #[test]
    fn session_directories_live_on_a_tmpfs_that_remove_all_takes_away() {
        let temp = tempfile::tempdir().unwrap();
        let sessions = temp.path().join("sessions");
        std::fs::create_dir(&sessions).unwrap();
        let below_is_tmpfs = on_tmpfs(&sessions);

        let (first, _) = SessionDir::create(&sessions, "ci-0-a", 64_000, Path::new("/run/kernel")).unwrap();
        let (second, _) = SessionDir::create(&sessions, "ci-1-b", 64_001, Path::new("/run/kernel")).unwrap();
        assert!(on_tmpfs(&sessions));
        let mut expected = vec![first.run().display().to_string(), second.run().display().to_string()];
        if !below_is_tmpfs {
            expected.push(sessions.display().to_string());
        }
        let mut mounted = mounted_at_or_under(&sessions);
        mounted.sort();
        expected.sort();
        assert_eq!(mounted, expected, "one tmpfs for the sessions, one per run directory, nothing more");
        assert!(first.run().join("kernel.json").is_file() && first.root().is_dir());
        first.remove();
        assert!(!sessions.join("ci-0-a").exists());

        remove_all(&sessions).unwrap();
        assert_eq!(mounted_at_or_under(&sessions), Vec::<String>::new());
        assert_eq!(std::fs::read_dir(&sessions).unwrap().count(), 0);
        assert_eq!(on_tmpfs(&sessions), below_is_tmpfs);
    }
}
