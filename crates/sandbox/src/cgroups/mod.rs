//! cgroups behind one trait: [`CgroupDriver`] creates a sandbox's [`Cgroup`]; v1 and v2 implement both, and
//! [`detect`] picks the one the host runs.

mod v1;
mod v2;

use std::fmt::Debug;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub use v1::V1;
pub use v2::V2;

use crate::policy::Limits;

/// The limits a sandbox's cgroup gets at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupSetup {
    /// Hard memory limit in bytes, swap excluded.
    pub memory_bytes: u64,
    /// Maximum number of tasks.
    pub pids_max: u64,
    /// CPU quota per period, in microseconds.
    pub cpu_quota_us: u64,
    /// CPU period in microseconds.
    pub cpu_period_us: u64,
}

impl From<&Limits> for CgroupSetup {
    fn from(limits: &Limits) -> Self {
        const PERIOD_US: u64 = 100_000;
        Self {
            memory_bytes: limits.memory_bytes,
            pids_max: limits.pids_max,
            cpu_quota_us: (limits.cpu_millicores.saturating_mul(PERIOD_US) / 1000).max(1000),
            cpu_period_us: PERIOD_US,
        }
    }
}

/// Creates and finds sandbox cgroups under `<parent>/<name>`.
pub trait CgroupDriver: Debug + Send + Sync {
    /// Creates the cgroup `<parent>/<name>` (and `parent` if missing) with `setup`'s limits.
    fn create(&self, parent: &str, name: &str, setup: &CgroupSetup) -> Result<Box<dyn Cgroup>, CgroupError>;
    /// A handle on an existing cgroup (no check that it exists).
    fn open(&self, parent: &str, name: &str) -> Box<dyn Cgroup>;
    /// Names of the cgroups under `parent` (empty if `parent` does not exist).
    fn list(&self, parent: &str) -> Result<Vec<String>, CgroupError>;
    /// Renames the cgroup `<parent>/<from>` to `<parent>/<to>` (in every hierarchy), members and limits kept.
    fn rename(&self, parent: &str, from: &str, to: &str) -> Result<(), CgroupError>;
    /// The directories of `parent` itself (one per hierarchy in v1).
    fn parent_dirs(&self, parent: &str) -> Vec<PathBuf>;
}

/// One sandbox's cgroup (in v1: one directory per controller).
pub trait Cgroup: Debug + Send + Sync {
    /// The `cgroup.procs` files a process writes its pid into to join.
    fn procs_files(&self) -> Vec<PathBuf>;
    /// The `cgroup.procs` of the memory controller's directory (the one cgroup in v2), if it has one.
    fn memory_procs_file(&self) -> Option<PathBuf>;
    /// How many processes the OOM killer killed in this cgroup.
    fn oom_kills(&self) -> Result<u64, CgroupError>;
    /// How many times a fork failed against `pids.max`.
    fn pids_max_events(&self) -> Result<u64, CgroupError>;
    /// SIGKILLs every process in the cgroup and waits until it is empty.
    fn kill_all(&self) -> Result<(), CgroupError>;
    /// Removes the cgroup's directories (the cgroup must be empty).
    fn remove(&self) -> Result<(), CgroupError>;
}

/// A cgroup operation that failed, with the file or directory it was about.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// mkdir of a cgroup directory.
    #[error("creating cgroup directory {path}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Writing a control file.
    #[error("writing {value:?} to {path}")]
    Write {
        /// The control file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Reading a control or directory.
    #[error("reading {path}")]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A control file did not hold what the kernel documents.
    #[error("unexpected content in {path}: {content:?}")]
    Parse {
        /// The control file.
        path: PathBuf,
        /// Its content.
        content: String,
    },
    /// Sending SIGKILL to a member.
    #[error("killing pid {pid} of cgroup {path}")]
    Kill {
        /// The cgroup.
        path: PathBuf,
        /// The member.
        pid: i32,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// Members survived repeated SIGKILLs.
    #[error("cgroup {path} still has processes after {waited:?}")]
    NotEmpty {
        /// The cgroup.
        path: PathBuf,
        /// How long we tried.
        waited: Duration,
    },
    /// rmdir of a cgroup directory.
    #[error("removing cgroup directory {path}")]
    Remove {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// The driver for this host: v2 if `/sys/fs/cgroup` is a cgroup2 filesystem with controllers, else v1.
pub fn detect() -> Box<dyn CgroupDriver> {
    let root = Path::new("/sys/fs/cgroup");
    let is_v2 = nix::sys::statfs::statfs(root)
        .map(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false);
    let has_controllers = std::fs::read_to_string(root.join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
    if is_v2 && has_controllers {
        Box::new(V2::new(root))
    } else {
        Box::new(V1::new(root))
    }
}

/// Kills and removes every cgroup under `parent`; returns how many there were.
pub(crate) fn remove_all(driver: &dyn CgroupDriver, parent: &str) -> Result<usize, CgroupError> {
    let names = driver.list(parent)?;
    for name in &names {
        let cgroup = driver.open(parent, name);
        cgroup.kill_all()?;
        cgroup.remove()?;
    }
    // The parent too, so that services come and gone (each data directory has its own) leave nothing behind; the
    // next sandbox creates it again. Not if a cgroup appeared meanwhile (a fork server's new spare): EBUSY.
    for dir in driver.parent_dirs(parent) {
        match std::fs::remove_dir(&dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound && e.raw_os_error() != Some(libc::EBUSY) => {
                return Err(CgroupError::Remove { path: dir, source: e });
            }
            _ => {}
        }
    }
    Ok(names.len())
}

pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write { path: path.into(), value: value.into(), source })
}

pub(crate) fn read(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|source| CgroupError::Read { path: path.into(), source })
}

/// rename(2) of a cgroup directory.
fn rename_dir(from: &Path, to: &Path) -> Result<(), CgroupError> {
    std::fs::rename(from, to).map_err(|source| CgroupError::Create { path: to.into(), source })
}

fn mkdir_all(path: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(path).map_err(|source| CgroupError::Create { path: path.into(), source })
}

/// The value of `key` in a flat-keyed file such as `memory.events` (`key value` per line); 0 if absent.
pub(crate) fn keyed_value(path: &Path, key: &str) -> Result<u64, CgroupError> {
    parse_keyed(&read(path)?, key, path)
}

/// A flat-keyed counter file (`pids.events`) kept open after its first read: reading it again (before and after
/// every execution) is one `pread`, not a walk through the cgroup filesystem, an open, a stat, reads and a close.
#[derive(Debug)]
pub(crate) struct CounterFile {
    path: PathBuf,
    file: OnceLock<Option<File>>,
}

impl CounterFile {
    pub(crate) fn new(path: PathBuf) -> Self {
        Self { path, file: OnceLock::new() }
    }

    /// The value of `key`: 0 if absent, or if the file cannot be opened. Only a file missing from a directory that
    /// exists (a kernel without this counter) is taken as absent for good; any other failure to open it (its
    /// cgroup not there yet, no descriptor left) is tried again at the next read.
    pub(crate) fn value(&self, key: &str) -> Result<u64, CgroupError> {
        let file = match self.file.get() {
            Some(file) => file,
            None => match File::open(&self.path) {
                Ok(file) => self.file.get_or_init(|| Some(file)),
                Err(error)
                    if error.kind() == io::ErrorKind::NotFound && self.path.parent().is_some_and(Path::is_dir) =>
                {
                    self.file.get_or_init(|| None)
                }
                Err(_) => return Ok(0),
            },
        };
        let Some(file) = file else { return Ok(0) };
        // These files hold a few short lines; a fuller one would fail to parse rather than be misread.
        let mut buf = [0u8; 1024];
        let n = file.read_at(&mut buf, 0).map_err(|source| CgroupError::Read { path: self.path.clone(), source })?;
        parse_keyed(&String::from_utf8_lossy(&buf[..n]), key, &self.path)
    }
}

fn parse_keyed(content: &str, key: &str, path: &Path) -> Result<u64, CgroupError> {
    for line in content.lines() {
        let mut fields = line.split_whitespace();
        if fields.next() == Some(key) {
            return fields
                .next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| CgroupError::Parse { path: path.into(), content: content.into() });
        }
    }
    Ok(0)
}

/// The pids listed in a `cgroup.procs` file (empty if the cgroup is gone).
pub(crate) fn procs(path: &Path) -> Result<Vec<Pid>, CgroupError> {
    match std::fs::read_to_string(path) {
        Ok(content) => Ok(content.lines().filter_map(|l| l.trim().parse().ok()).map(Pid::from_raw).collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(CgroupError::Read { path: path.into(), source }),
    }
}

/// How long to keep killing and waiting for a cgroup to empty.
const KILL_DEADLINE: Duration = Duration::from_secs(5);

/// SIGKILLs the members listed in `procs_file` until it is empty. A pid can exit and be reused between the read
/// and the kill; callers freeze the cgroup first where they can.
pub(crate) fn kill_until_empty(procs_file: &Path, signal_members: bool) -> Result<(), CgroupError> {
    let start = Instant::now();
    loop {
        let members = procs(procs_file)?;
        if members.is_empty() {
            return Ok(());
        }
        if start.elapsed() > KILL_DEADLINE {
            return Err(CgroupError::NotEmpty { path: procs_file.into(), waited: start.elapsed() });
        }
        if signal_members {
            for pid in members {
                match kill(pid, Signal::SIGKILL) {
                    Ok(()) | Err(nix::Error::ESRCH) => {}
                    Err(source) => {
                        return Err(CgroupError::Kill { path: procs_file.into(), pid: pid.as_raw(), source })
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// rmdir with a few retries: a cgroup stays busy for a moment after its last member was reaped.
pub(crate) fn rmdir(path: &Path) -> Result<(), CgroupError> {
    let start = Instant::now();
    loop {
        match std::fs::remove_dir(path) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < KILL_DEADLINE => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(source) => return Err(CgroupError::Remove { path: path.into(), source }),
        }
    }
}

/// Removes `dir` and any child cgroups below it, deepest first.
pub(crate) fn rmdir_tree(dir: &Path) -> Result<(), CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(CgroupError::Read { path: dir.into(), source }),
    };
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            rmdir_tree(&entry.path())?;
        }
    }
    rmdir(dir)
}

/// Names of the subdirectories of `dir` (empty if it does not exist).
pub(crate) fn subdirs(dir: &Path) -> Result<Vec<String>, CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(CgroupError::Read { path: dir.into(), source }),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file is opened once: later reads see its new content through the same descriptor (even once its
    /// name is gone); a file that never existed reads 0.
    #[test]
    fn counter_file_is_read_again_through_one_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pids.events");
        std::fs::write(&path, "max 0\n").unwrap();
        let counter = CounterFile::new(path.clone());
        assert_eq!(counter.value("max").unwrap(), 0);
        std::fs::write(&path, "max 7\n").unwrap();
        assert_eq!(counter.value("max").unwrap(), 7);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(counter.value("max").unwrap(), 7, "read through the descriptor, not the path");
        assert_eq!(counter.value("other").unwrap(), 0);
        assert_eq!(CounterFile::new(dir.path().join("missing")).value("max").unwrap(), 0);
    }

    /// A counter missing from its cgroup's directory is absent for good (one open, not one per read); one whose
    /// directory is not there yet is opened once it is.
    #[test]
    fn counter_file_retries_until_its_directory_exists() {
        let dir = tempfile::tempdir().unwrap();
        let absent = CounterFile::new(dir.path().join("pids.events"));
        assert_eq!(absent.value("max").unwrap(), 0);
        std::fs::write(dir.path().join("pids.events"), "max 5\n").unwrap();
        assert_eq!(absent.value("max").unwrap(), 0, "a counter the kernel lacks is not looked for again");

        let later = CounterFile::new(dir.path().join("cgroup").join("pids.events"));
        assert_eq!(later.value("max").unwrap(), 0);
        std::fs::create_dir(dir.path().join("cgroup")).unwrap();
        std::fs::write(dir.path().join("cgroup").join("pids.events"), "max 3\n").unwrap();
        assert_eq!(later.value("max").unwrap(), 3, "the counter was not opened once its cgroup existed");
    }
}
