//! Files in a sandbox's `/sandbox`, reached from the host: [`SandboxDir`] and the errors of file operations.
//!
//! `/sandbox` is a tmpfs in the sandbox's own mount namespace. The gateway (root) opens it once per kernel
//! through `/proc/<init>/root/sandbox` as an `O_PATH` directory and resolves every client path below it with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`: no `..`, absolute
//! path, symlink (whatever its target), magic link or other mount is ever crossed, whatever the user's code
//! plants. Files are opened `O_NOFOLLOW | O_NONBLOCK` and checked with `fstat`, so a fifo or socket cannot make
//! the gateway hang or read something else. Nothing goes through the kernel: file operations run while code runs.
//!
//! - `path`: [`UserPath`], client paths checked before any lookup.
//! - `transfer`: upload (temporary file, then rename; owned by the sandbox's uid), download, delete.
//! - `charged`: the writer of uploads, which joins the sandbox's memory cgroup so the upload counts there.
//! - `walk`: bounded recursive listings, and the files a run wrote.

mod charged;
mod path;
mod transfer;
mod walk;

use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, FileStat, Mode, SFlag};
use nix::unistd::{Gid, Uid};

pub use charged::{writer_main, WRITER_ARG};
pub use path::{PathError, UserPath};
pub use transfer::Upload;
pub use walk::{Entry, Listing, RunStart, Written};

/// How every client path is resolved below `/sandbox`.
fn beneath() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
        | ResolveFlag::RESOLVE_NO_XDEV
}

/// A sandbox's `/sandbox`, held open from the host, and the uid its files belong to.
#[derive(Debug)]
pub struct SandboxDir {
    /// `O_PATH` directory fd on the sandbox's `/sandbox` tmpfs.
    root: OwnedFd,
    /// Owner of `/sandbox` (the sandbox's uid): uploads and the directories they create are given to it.
    uid: Uid,
    gid: Gid,
    /// `cgroup.procs` of the sandbox's memory cgroup, which upload writers join (`None`: not found; they don't).
    memory_procs: Option<std::path::PathBuf>,
    /// Entries the last walk for a run looked at: decides where the next one runs (see [`SandboxDir::run_start`]).
    last_walk_entries: std::sync::atomic::AtomicUsize,
    /// `/sandbox` opened for reading by the first walk for a run and rewound by each: two walks per execution
    /// then cost no open, stat, fcntl or close of the root.
    run_walk_root: std::sync::Mutex<Option<nix::dir::Dir>>,
}

impl SandboxDir {
    /// Opens `/sandbox` of the sandbox whose init has host pid `init_pid`; `memory_procs` is the `cgroup.procs` of
    /// its memory cgroup, which upload writers join. The caller must check afterwards that the sandbox still runs,
    /// so the pid was not a recycled one.
    pub fn open(init_pid: u32, memory_procs: Option<std::path::PathBuf>) -> std::io::Result<SandboxDir> {
        let proc_root = format!("/proc/{init_pid}/root");
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let root = nix::fcntl::open(proc_root.as_str(), flags, Mode::empty())?;
        // Only `/sandbox` itself: no symlink, no `..`; it is a mount point, so crossing into it is allowed here.
        let how = OpenHow::new()
            .flags(flags | OFlag::O_NOFOLLOW)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
        let sandbox = openat2(&root, "sandbox", how)?;
        let stat = fstat(&sandbox)?;
        if kind_of(&stat) != Kind::Directory || stat.st_uid == 0 {
            return Err(std::io::Error::other(format!("{proc_root}/sandbox is not the sandbox's own directory")));
        }
        let (uid, gid) = (Uid::from_raw(stat.st_uid), Gid::from_raw(stat.st_gid));
        Ok(SandboxDir {
            root: sandbox,
            uid,
            gid,
            memory_procs,
            last_walk_entries: Default::default(),
            run_walk_root: Default::default(),
        })
    }

    /// Opens `relative` below `/sandbox` with `flags` (plus `O_NOFOLLOW | O_CLOEXEC`), never leaving it.
    fn open_beneath(&self, relative: &str, flags: OFlag) -> Result<OwnedFd, Errno> {
        let how = OpenHow::new().flags(flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC).resolve(beneath());
        loop {
            match openat2(&self.root, relative, how) {
                // The kernel asks for a retry when a rename raced with the lookup.
                Err(Errno::EAGAIN) => continue,
                other => return other,
            }
        }
    }

    /// Opens the directory `path` for reading its entries.
    fn open_dir(&self, path: &UserPath) -> Result<OwnedFd, FilesError> {
        self.open_beneath(&path.relative(), OFlag::O_RDONLY | OFlag::O_DIRECTORY)
            .map_err(|errno| FilesError::from_errno(errno, path, "open the directory"))
    }

    /// The size of the `/sandbox` tmpfs in MiB, for messages.
    fn size_mib(&self) -> Option<u64> {
        let stat = nix::sys::statvfs::fstatvfs(self.root.as_fd()).ok()?;
        Some((stat.blocks() as u64 * stat.fragment_size() as u64) >> 20)
    }
}

/// What kind of thing a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link (never followed).
    Symlink,
    /// A named pipe.
    Fifo,
    /// A unix socket.
    Socket,
    /// A device node.
    Device,
}

impl Kind {
    /// The name clients see.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Directory => "directory",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
            Kind::Device => "device",
        }
    }
}

fn kind_of(stat: &FileStat) -> Kind {
    match SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => Kind::File,
        SFlag::S_IFDIR => Kind::Directory,
        SFlag::S_IFLNK => Kind::Symlink,
        SFlag::S_IFIFO => Kind::Fifo,
        SFlag::S_IFSOCK => Kind::Socket,
        _ => Kind::Device,
    }
}

/// Why a file operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The path was refused before any lookup.
    #[error("invalid path: {0}")]
    Path(#[from] PathError),
    /// Nothing is there.
    #[error("`{path}` does not exist in /sandbox")]
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// The path is, or goes through, a symbolic link.
    #[error("`{path}` is or goes through a symbolic link: links are never followed")]
    Symlink {
        /// The path asked for.
        path: String,
    },
    /// The path would leave `/sandbox` (a mount or a link crossed).
    #[error("`{path}` leads out of /sandbox")]
    Outside {
        /// The path asked for.
        path: String,
    },
    /// The path is something other than a regular file where one is needed.
    #[error("`{path}` is a {kind}: only regular files can be read or replaced")]
    NotRegular {
        /// The path asked for.
        path: String,
        /// What it is.
        kind: &'static str,
    },
    /// The path is a directory where a file is needed.
    #[error("`{path}` is a directory: list it with GET /files/<user_uuid>?path=<dir>")]
    IsDirectory {
        /// The path asked for.
        path: String,
    },
    /// A parent of the path is not a directory.
    #[error("`{path}`: a component of the path is not a directory")]
    NotADirectory {
        /// The path asked for.
        path: String,
    },
    /// A directory to delete still has entries.
    #[error("the directory `{path}` is not empty: delete what is in it first")]
    NotEmpty {
        /// The path asked for.
        path: String,
    },
    /// The upload is larger than `file_limit_mib`.
    #[error("the upload is larger than the limit of {limit_mib} MiB (setting file_limit_mib)")]
    TooLarge {
        /// The limit.
        limit_mib: u64,
    },
    /// `/sandbox` has no room left.
    #[error("no space left in the session's /sandbox ({size_mib} MiB, setting sandbox_size_mib): delete files first")]
    NoSpace {
        /// The size of `/sandbox`.
        size_mib: u64,
    },
    /// The sandbox's memory limit stopped the upload (`/sandbox` is a tmpfs: its files count against it).
    #[error(
        "the upload does not fit in the session's memory: files in /sandbox count against its memory limit, as \
             does what the code holds; delete files or free memory first"
    )]
    MemoryFull,
    /// The client stopped sending the upload's body.
    #[error("the upload's body could not be read to its end: {0}")]
    BodyCut(String),
    /// Anything else the system refused.
    #[error("cannot {action} `{path}`: {errno}")]
    System {
        /// What was being done.
        action: &'static str,
        /// The path asked for.
        path: String,
        /// The system's answer.
        errno: Errno,
    },
}

impl FilesError {
    /// The error a failed system call on `path` means for the client.
    fn from_errno(errno: Errno, path: &UserPath, action: &'static str) -> FilesError {
        let path = path.to_string();
        match errno {
            Errno::ENOENT => FilesError::NotFound { path },
            // RESOLVE_NO_SYMLINKS and O_NOFOLLOW answer ELOOP on a symlink.
            Errno::ELOOP => FilesError::Symlink { path },
            // RESOLVE_BENEATH and RESOLVE_NO_XDEV answer EXDEV on a way out.
            Errno::EXDEV => FilesError::Outside { path },
            Errno::EISDIR => FilesError::IsDirectory { path },
            Errno::ENOTDIR => FilesError::NotADirectory { path },
            Errno::ENOTEMPTY | Errno::EEXIST => FilesError::NotEmpty { path },
            Errno::ENXIO => FilesError::NotRegular { path, kind: "socket" },
            Errno::ENAMETOOLONG => FilesError::Path(PathError::TooLong),
            errno => FilesError::System { action, path, errno },
        }
    }

    /// The error for a write that found `/sandbox` (of `size_mib`) full, or any other failure.
    fn from_write(errno: Errno, size_mib: Option<u64>, path: &UserPath) -> FilesError {
        match errno {
            Errno::ENOSPC | Errno::EDQUOT | Errno::EFBIG => FilesError::NoSpace { size_mib: size_mib.unwrap_or(0) },
            errno => FilesError::from_errno(errno, path, "write"),
        }
    }
}
