//! Bounded recursive walks below `/sandbox`: a directory's listing, and the regular files a run wrote (modified
//! since it started). Links are listed, never followed; every level is opened with the same `openat2` rules.

use std::collections::HashSet;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use nix::dir::Dir;
use nix::fcntl::{openat2, OFlag, OpenHow};
use nix::sys::stat::{fstatat, FileStat};
use nix::sys::time::TimeSpec;
use nix::time::{clock_gettime, ClockId};

use super::transfer::UPLOAD_PREFIX;
use super::{beneath, kind_of, FilesError, Kind, SandboxDir, UserPath};

/// Most entries a listing shows.
const LIST_MAX_ENTRIES: usize = 10_000;
/// Most entries looked at to find what a run wrote: bounds what every `/execute` answer can cost.
const WRITTEN_MAX_ENTRIES: usize = 4_096;
/// Deepest level walked below the starting directory.
const MAX_DEPTH: usize = 16;
/// Most entries of a previous walk for which the next one runs on the async worker: a few microseconds each, less
/// than handing the walk to the blocking pool costs.
const INLINE_WALK_MAX_ENTRIES: usize = 64;

/// One entry of a listing.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Relative to `/sandbox`.
    pub path: String,
    /// What it is.
    pub kind: Kind,
    /// Size in bytes (of the link itself for a symlink).
    pub size: u64,
    /// Last modification, seconds since the Unix epoch.
    pub modified: f64,
}

/// A directory's entries, recursively.
#[derive(Debug, Clone)]
pub struct Listing {
    /// Sorted by path.
    pub entries: Vec<Entry>,
    /// Whether the walk stopped at its bounds (entries or depth) before seeing everything.
    pub truncated: bool,
}

/// A regular file a run created or modified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Relative to `/sandbox`.
    pub path: String,
    /// Size in bytes after the run.
    pub size: u64,
}

/// What `/sandbox` looked like when a run started: the time, on the clock the kernel stamps files with (the
/// coarse real-time clock, so a file written after it is never older than it), and the files already stamped
/// at or after it (written in the same clock tick just before the run), which the run did not write unless it
/// changed them again (stat-ing them here makes the kernel give their next change a finer, distinct time).
#[derive(Debug, Clone)]
pub struct RunStart {
    since: TimeSpec,
    already: HashSet<Stamp>,
}

/// A regular file as a walk saw it: path, modification time (seconds, nanoseconds) and size.
type Stamp = (String, (i64, i64), u64);

impl SandboxDir {
    /// Notes the moment a run starts, see [`RunStart`]. Walks `/sandbox` on the calling task while its last walk
    /// was small (microseconds), on the blocking pool otherwise, so a user with many files does not hold up the
    /// async worker other sessions share.
    pub async fn run_start(self: &Arc<Self>) -> RunStart {
        self.walk_where_cheapest(|dir| dir.run_start_here()).await
    }

    /// The regular files the run that began at `start` created or modified, sorted by path (walked as in
    /// [`SandboxDir::run_start`]).
    pub async fn written_since(self: &Arc<Self>, start: RunStart) -> Vec<Written> {
        self.walk_where_cheapest(move |dir| dir.written_since_here(&start)).await
    }

    async fn walk_where_cheapest<T: Send + 'static>(
        self: &Arc<Self>,
        walk: impl FnOnce(&Self) -> T + Send + 'static,
    ) -> T {
        if self.last_walk_entries.load(Ordering::Relaxed) <= INLINE_WALK_MAX_ENTRIES {
            return walk(self);
        }
        let dir = Arc::clone(self);
        match tokio::task::spawn_blocking(move || walk(&dir)).await {
            Ok(value) => value,
            Err(join) => std::panic::resume_unwind(join.into_panic()),
        }
    }

    fn run_start_here(&self) -> RunStart {
        let since = clock_gettime(ClockId::CLOCK_REALTIME_COARSE).unwrap_or_else(|_| TimeSpec::new(0, 0));
        RunStart { since, already: self.files_since(since).into_iter().collect() }
    }

    fn written_since_here(&self, start: &RunStart) -> Vec<Written> {
        let mut written: Vec<Written> = self
            .files_since(start.since)
            .into_iter()
            .filter(|file| !start.already.contains(file))
            .map(|(path, _, size)| Written { path, size })
            .collect();
        written.sort_by(|a, b| a.path.cmp(&b.path));
        written
    }

    /// Regular files modified at or after `since`: path, modification time and size (bounded walk).
    fn files_since(&self, since: TimeSpec) -> Vec<Stamp> {
        let mut root = self.run_walk_root.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if root.is_none() {
            let opened = self.open_dir(&UserPath::parse("").expect("the root is a valid path"));
            *root = opened.ok().and_then(|fd| Dir::from_fd(fd).ok());
        }
        let Some(dir) = root.as_mut() else { return Vec::new() };
        let mut files = Vec::new();
        let mut walk = Walk { budget: WRITTEN_MAX_ENTRIES, truncated: false };
        walk.entries(dir, "", 0, &mut |path, stat| {
            let modified = TimeSpec::new(stat.st_mtime, stat.st_mtime_nsec);
            if kind_of(stat) == Kind::File && modified >= since {
                files.push((path.to_owned(), (stat.st_mtime, stat.st_mtime_nsec), stat.st_size as u64));
            }
        });
        if walk.truncated {
            tracing::debug!(max = WRITTEN_MAX_ENTRIES, "/sandbox has more entries than are looked at for a run");
        }
        self.last_walk_entries.store(WRITTEN_MAX_ENTRIES - walk.budget, Ordering::Relaxed);
        files
    }

    /// Lists `path` (a directory) and everything below it, within the bounds.
    pub fn list(&self, path: &UserPath) -> Result<Listing, FilesError> {
        let dir = self.open_dir(path)?;
        let mut entries = Vec::new();
        let mut walk = Walk { budget: LIST_MAX_ENTRIES, truncated: false };
        walk.dir(dir, &path.to_string(), 0, &mut |path, stat| {
            let modified = stat.st_mtime as f64 + stat.st_mtime_nsec as f64 * 1e-9;
            entries.push(Entry { path: path.to_owned(), kind: kind_of(stat), size: stat.st_size as u64, modified });
        });
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Listing { entries, truncated: walk.truncated })
    }
}

/// A walk's remaining budget of entries.
struct Walk {
    budget: usize,
    truncated: bool,
}

impl Walk {
    /// Calls `visit` with each entry below `dir` (named `prefix`, relative to `/sandbox`), depth first.
    fn dir(&mut self, dir: OwnedFd, prefix: &str, depth: usize, visit: &mut dyn FnMut(&str, &FileStat)) {
        if let Ok(mut dir) = Dir::from_fd(dir) {
            self.entries(&mut dir, prefix, depth, visit);
        }
    }

    /// [`Walk::dir`] on a directory already open; its stream is rewound afterwards, ready for another walk.
    fn entries(&mut self, dir: &mut Dir, prefix: &str, depth: usize, visit: &mut dyn FnMut(&str, &FileStat)) {
        let mut names = Vec::new();
        for entry in dir.iter() {
            let Ok(entry) = entry else { break };
            let name = entry.file_name().to_owned();
            if matches!(name.to_bytes(), b"." | b"..") || name.to_bytes().starts_with(UPLOAD_PREFIX.as_bytes()) {
                continue;
            }
            if self.budget == 0 {
                self.truncated = true;
                break;
            }
            self.budget -= 1;
            names.push(name);
        }
        for name in names {
            let Ok(stat) = fstatat(dir.as_fd(), name.as_c_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            let text = name.to_string_lossy();
            let path = if prefix.is_empty() { text.into_owned() } else { format!("{prefix}/{text}") };
            visit(&path, &stat);
            if kind_of(&stat) != Kind::Directory {
                continue;
            }
            if depth + 1 >= MAX_DEPTH {
                self.truncated = true;
                continue;
            }
            let how = OpenHow::new()
                .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
                .resolve(beneath());
            if let Ok(child) = openat2(dir.as_fd(), name.as_c_str(), how) {
                self.dir(child, &path, depth + 1, visit);
            }
        }
    }
}
