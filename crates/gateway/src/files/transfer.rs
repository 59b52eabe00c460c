//! Moving files in and out of `/sandbox`: [`Upload`] (a temporary file beside the target, written by a writer in
//! the sandbox's memory cgroup (see `charged`), renamed over the target when complete, owned by the sandbox's
//! uid), downloads (a regular file opened for reading) and deletion.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;

use nix::errno::Errno;
use nix::fcntl::{renameat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, fstatat, mkdirat, Mode};
use nix::unistd::{fchown, unlinkat, UnlinkatFlags};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin};

use super::charged::WRITER_ARG;
use super::{kind_of, FilesError, Kind, SandboxDir, UserPath};

/// Names of uploads in progress start with this; walks skip them.
pub(super) const UPLOAD_PREFIX: &str = ".upload-";
/// Mode of uploaded files.
const FILE_MODE: u32 = 0o644;
/// Mode of the directories an upload creates.
const DIR_MODE: u32 = 0o755;

/// An upload in progress: a temporary file in the target's directory. Dropped before [`Upload::finish`], the
/// temporary file is removed and the target is left as it was.
pub struct Upload {
    parent: OwnedFd,
    temp: String,
    /// The writer process (killed if the upload is dropped) and the pipe to it.
    writer: Child,
    to_writer: Option<ChildStdin>,
    path: UserPath,
    limit: u64,
    written: u64,
    size_mib: Option<u64>,
    done: bool,
}

impl SandboxDir {
    /// Starts an upload to `path` of at most `limit` bytes: creates missing parent directories (owned by the
    /// sandbox's uid), refuses a target that is a directory, a symlink or a special file.
    pub fn upload(&self, path: &UserPath, limit: u64) -> Result<Upload, FilesError> {
        let (parents, name) = path.split_last().ok_or(FilesError::Path(super::PathError::Empty))?;
        let parent = self.parent_dir(parents, path)?;
        match fstatat(parent.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(stat) => match kind_of(&stat) {
                Kind::File => {}
                Kind::Directory => return Err(FilesError::IsDirectory { path: path.to_string() }),
                Kind::Symlink => return Err(FilesError::Symlink { path: path.to_string() }),
                other => return Err(FilesError::NotRegular { path: path.to_string(), kind: other.as_str() }),
            },
            Err(Errno::ENOENT) => {}
            Err(errno) => return Err(FilesError::from_errno(errno, path, "look up")),
        }
        let temp = format!("{UPLOAD_PREFIX}{:016x}.part", rand::random::<u64>());
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::openat(parent.as_fd(), temp.as_str(), flags, Mode::from_bits_truncate(FILE_MODE))
            .map_err(|errno| FilesError::from_write(errno, self.size_mib(), path))?;
        let owned = fchown(fd.as_fd(), Some(self.uid), Some(self.gid))
            .and_then(|()| fchmod(fd.as_fd(), Mode::from_bits_truncate(FILE_MODE)));
        let writer = self.spawn_writer(fd);
        let mut writer = match writer {
            Ok(writer) => writer,
            Err(err) => {
                let _ = unlinkat(parent.as_fd(), temp.as_str(), UnlinkatFlags::NoRemoveDir);
                return Err(FilesError::from_errno(errno_of(&err), path, "start the writer of"));
            }
        };
        let upload = Upload {
            to_writer: writer.stdin.take(),
            writer,
            parent,
            temp,
            path: path.clone(),
            limit,
            written: 0,
            size_mib: self.size_mib(),
            done: false,
        };
        owned.map_err(|errno| FilesError::from_errno(errno, path, "give the file to the sandbox's user"))?;
        Ok(upload)
    }

    /// The writer of an upload: this binary as `__write-charged`, its output the temporary file.
    fn spawn_writer(&self, file: OwnedFd) -> std::io::Result<Child> {
        let mut command = tokio::process::Command::new(std::env::current_exe()?);
        command.arg(WRITER_ARG).args(self.memory_procs.iter());
        command.stdin(std::process::Stdio::piped()).stdout(file).stderr(std::process::Stdio::null());
        command.kill_on_drop(true).spawn()
    }

    /// Opens the regular file `path` for reading; returns it and its size.
    pub fn download(&self, path: &UserPath) -> Result<(std::fs::File, u64), FilesError> {
        // O_NONBLOCK: opening a fifo must not wait for a writer; it is refused below.
        let fd = self
            .open_beneath(&path.relative(), OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY)
            .map_err(|errno| FilesError::from_errno(errno, path, "open"))?;
        let stat = fstat(&fd).map_err(|errno| FilesError::from_errno(errno, path, "inspect"))?;
        match kind_of(&stat) {
            Kind::File => Ok((std::fs::File::from(fd), stat.st_size as u64)),
            Kind::Directory => Err(FilesError::IsDirectory { path: path.to_string() }),
            other => Err(FilesError::NotRegular { path: path.to_string(), kind: other.as_str() }),
        }
    }

    /// Deletes the file, link, special file or empty directory `path` (a link itself, never its target).
    pub fn delete(&self, path: &UserPath) -> Result<Kind, FilesError> {
        let (parents, name) = path.split_last().ok_or(FilesError::Path(super::PathError::Empty))?;
        let parent = if parents.is_empty() {
            self.root.try_clone().map_err(|err| errno_of(&err))
        } else {
            self.open_beneath(&parents.join("/"), OFlag::O_PATH | OFlag::O_DIRECTORY)
        }
        .map_err(|errno| FilesError::from_errno(errno, path, "open the directory of"))?;
        let stat = fstatat(parent.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|errno| FilesError::from_errno(errno, path, "look up"))?;
        let kind = kind_of(&stat);
        let flag = if kind == Kind::Directory { UnlinkatFlags::RemoveDir } else { UnlinkatFlags::NoRemoveDir };
        unlinkat(parent.as_fd(), name, flag).map_err(|errno| FilesError::from_errno(errno, path, "delete"))?;
        Ok(kind)
    }

    /// Opens the directory `components` of `path`, creating what is missing (owned by the sandbox's uid).
    fn parent_dir(&self, components: &[String], path: &UserPath) -> Result<OwnedFd, FilesError> {
        let mut dir = self.root.try_clone().map_err(|err| FilesError::from_errno(errno_of(&err), path, "open"))?;
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let how = nix::fcntl::OpenHow::new().flags(flags).resolve(super::beneath());
        for name in components {
            let next = match nix::fcntl::openat2(dir.as_fd(), name.as_str(), how) {
                Err(Errno::ENOENT) => {
                    match mkdirat(dir.as_fd(), name.as_str(), Mode::from_bits_truncate(DIR_MODE)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(errno) => return Err(FilesError::from_write(errno, self.size_mib(), path)),
                    }
                    let created = nix::fcntl::openat2(dir.as_fd(), name.as_str(), how)
                        .map_err(|errno| FilesError::from_errno(errno, path, "open a directory of"))?;
                    fchown(created.as_fd(), Some(self.uid), Some(self.gid))
                        .and_then(|()| fchmod(created.as_fd(), Mode::from_bits_truncate(DIR_MODE)))
                        .map_err(|errno| {
                            FilesError::from_errno(errno, path, "give a directory to the sandbox's user")
                        })?;
                    created
                }
                other => other.map_err(|errno| FilesError::from_errno(errno, path, "open a directory of"))?,
            };
            dir = next;
        }
        Ok(dir)
    }
}

impl Upload {
    /// Appends `chunk`; fails past the limit or when `/sandbox` is full.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), FilesError> {
        self.written = self.written.saturating_add(chunk.len() as u64);
        if self.written > self.limit {
            return Err(FilesError::TooLarge { limit_mib: self.limit >> 20 });
        }
        let Some(to_writer) = self.to_writer.as_mut() else { return Err(self.writer_failed().await) };
        if to_writer.write_all(chunk).await.is_err() {
            // The writer stopped (its exit code says why, e.g. ENOSPC).
            return Err(self.writer_failed().await);
        }
        Ok(())
    }

    /// Why the writer stopped: the errno it exited with, or the sandbox's memory limit (the OOM killer's SIGKILL:
    /// the writer is in the sandbox's memory cgroup).
    async fn writer_failed(&mut self) -> FilesError {
        drop(self.to_writer.take());
        let errno = match self.writer.wait().await {
            Ok(status) if status.signal() == Some(libc::SIGKILL) => return FilesError::MemoryFull,
            Ok(status) => status.code().filter(|code| *code > 0).map_or(Errno::EIO, Errno::from_raw),
            Err(err) => errno_of(&err),
        };
        FilesError::from_write(errno, self.size_mib, &self.path)
    }

    /// Puts the complete file in place (replacing a regular file there) and returns its size.
    pub async fn finish(mut self) -> Result<u64, FilesError> {
        if let Some(mut to_writer) = self.to_writer.take() {
            let _ = to_writer.shutdown().await;
        }
        match self.writer.wait().await {
            Ok(status) if status.success() => {}
            _ => return Err(self.writer_failed().await),
        }
        let (_, name) = self.path.split_last().expect("an upload's path names a file");
        renameat(self.parent.as_fd(), self.temp.as_str(), self.parent.as_fd(), name)
            .map_err(|errno| FilesError::from_errno(errno, &self.path, "put in place"))?;
        self.done = true;
        Ok(self.written)
    }
}

/// The errno of an I/O error (EIO if it has none).
fn errno_of(err: &std::io::Error) -> Errno {
    Errno::from_raw(err.raw_os_error().unwrap_or(libc::EIO))
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.done {
            let _ = unlinkat(self.parent.as_fd(), self.temp.as_str(), UnlinkatFlags::NoRemoveDir);
        }
    }
}
