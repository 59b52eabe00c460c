//! A sandbox's session directory on the host: `<sessions>/<name>/root` (the empty mount point of the sandbox's
//! root) and `<sessions>/<name>/run`, a small tmpfs of its own holding the connection file and the kernel's ipc
//! sockets. The tmpfs keeps the one directory the sandbox can write on the host from filling the host's disk.

use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};

use kernel::ConnectionInfo;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::LaunchError;

/// Size of a session's `run` tmpfs: the connection file and socket inodes need a few KiB.
const RUN_SIZE: &str = "size=1m,nr_inodes=64";

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

/// Removes every session directory under `sessions` left by an earlier run, unmounting their tmpfs first, and
/// leaves `sessions` empty.
pub(super) fn remove_all(sessions: &Path) -> Result<(), LaunchError> {
    let prefix = format!("{}/", sessions.display());
    let mounts =
        std::fs::read_to_string("/proc/self/mountinfo").map_err(io_error(Path::new("/proc/self/mountinfo")))?;
    let mut stale: Vec<&str> =
        mounts.lines().filter_map(|line| line.split(' ').nth(4)).filter(|point| point.starts_with(&prefix)).collect();
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
