//! cgroup v1: one hierarchy per controller (`<root>/<controller>/<parent>/<name>`), freezer to kill atomically.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{keyed_value, kill_until_empty, mkdir_all, procs, read, rename_dir, rmdir_tree, subdirs, write};
use super::{Cgroup, CgroupDriver, CgroupError, CgroupSetup, CounterFile};

/// Controllers a sandbox is placed in; `memory` and `pids` are required, the others used when mounted.
const REQUIRED: &[&str] = &["memory", "pids"];
const OPTIONAL: &[&str] = &["cpu", "freezer"];

/// The v1 driver, rooted at the directory holding one mount per controller (normally `/sys/fs/cgroup`).
#[derive(Debug, Clone)]
pub struct V1 {
    root: PathBuf,
}

impl V1 {
    /// A driver for the controllers mounted under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The cgroup `name` under `parent`, in every hierarchy this host has (nothing is created).
    fn cgroup(&self, parent: &str, name: &str) -> V1Cgroup {
        let dirs: Vec<_> =
            self.controllers().into_iter().map(|c| (c, self.root.join(c).join(parent).join(name))).collect();
        // Without a pids hierarchy the path does not exist, and the counter reads 0.
        let pids_events = CounterFile::new(self.root.join("pids").join(parent).join(name).join("pids.events"));
        V1Cgroup { dirs, pids_events }
    }

    fn controllers(&self) -> Vec<&'static str> {
        let mounted = |c: &&str| self.root.join(c).join("cgroup.procs").exists();
        REQUIRED.iter().copied().chain(OPTIONAL.iter().copied().filter(mounted)).collect()
    }
}

impl CgroupDriver for V1 {
    fn create(&self, parent: &str, name: &str, setup: &CgroupSetup) -> Result<Box<dyn Cgroup>, CgroupError> {
        let cgroup = self.cgroup(parent, name);
        for (_, dir) in &cgroup.dirs {
            mkdir_all(dir)?;
        }
        let result = cgroup.apply(setup);
        if let Err(error) = result {
            // Best effort: the error that matters is the one being returned.
            let _ = cgroup.remove();
            return Err(error);
        }
        Ok(Box::new(cgroup))
    }

    fn open(&self, parent: &str, name: &str) -> Box<dyn Cgroup> {
        Box::new(self.cgroup(parent, name))
    }

    fn rename(&self, parent: &str, from: &str, to: &str) -> Result<(), CgroupError> {
        for controller in self.controllers() {
            let dir = self.root.join(controller).join(parent);
            rename_dir(&dir.join(from), &dir.join(to))?;
        }
        Ok(())
    }

    fn parent_dirs(&self, parent: &str) -> Vec<PathBuf> {
        self.controllers().into_iter().map(|c| self.root.join(c).join(parent)).collect()
    }

    fn list(&self, parent: &str) -> Result<Vec<String>, CgroupError> {
        let mut names = Vec::new();
        for controller in self.controllers() {
            names.extend(subdirs(&self.root.join(controller).join(parent))?);
        }
        names.sort();
        names.dedup();
        Ok(names)
    }
}

/// A sandbox's directories, one per controller.
#[derive(Debug)]
struct V1Cgroup {
    dirs: Vec<(&'static str, PathBuf)>,
    pids_events: CounterFile,
}

impl V1Cgroup {
    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs.iter().find(|(c, _)| *c == controller).map(|(_, d)| d.as_path())
    }

    fn apply(&self, setup: &CgroupSetup) -> Result<(), CgroupError> {
        if let Some(memory) = self.dir("memory") {
            write(&memory.join("memory.limit_in_bytes"), &setup.memory_bytes.to_string())?;
            // Without swap accounting the limit is memory only; with it, forbid swapping past the limit.
            let memsw = memory.join("memory.memsw.limit_in_bytes");
            if memsw.exists() {
                write(&memsw, &setup.memory_bytes.to_string())?;
            }
        }
        if let Some(pids) = self.dir("pids") {
            write(&pids.join("pids.max"), &setup.pids_max.to_string())?;
        }
        if let Some(cpu) = self.dir("cpu") {
            write(&cpu.join("cpu.cfs_period_us"), &setup.cpu_period_us.to_string())?;
            write(&cpu.join("cpu.cfs_quota_us"), &setup.cpu_quota_us.to_string())?;
        }
        Ok(())
    }

    /// Freezes the cgroup so no member can fork or exit while the pids are being killed.
    fn set_frozen(&self, freezer: &Path, frozen: bool) -> Result<(), CgroupError> {
        let state = freezer.join("freezer.state");
        let want = if frozen { "FROZEN" } else { "THAWED" };
        write(&state, want)?;
        let start = Instant::now();
        while frozen && read(&state)?.trim() != want && start.elapsed() < Duration::from_secs(1) {
            std::thread::sleep(Duration::from_millis(5));
            write(&state, want)?;
        }
        Ok(())
    }
}

impl Cgroup for V1Cgroup {
    fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|(_, d)| d.join("cgroup.procs")).collect()
    }

    fn memory_procs_file(&self) -> Option<PathBuf> {
        self.dir("memory").map(|memory| memory.join("cgroup.procs"))
    }

    fn oom_kills(&self) -> Result<u64, CgroupError> {
        match self.dir("memory") {
            Some(memory) => keyed_value(&memory.join("memory.oom_control"), "oom_kill"),
            None => Ok(0),
        }
    }

    fn pids_max_events(&self) -> Result<u64, CgroupError> {
        self.pids_events.value("max")
    }

    fn kill_all(&self) -> Result<(), CgroupError> {
        if let Some(freezer) = self.dir("freezer").filter(|d| d.exists()) {
            let frozen = self.set_frozen(freezer, true);
            let procs_file = freezer.join("cgroup.procs");
            let killed = frozen.and_then(|()| {
                for pid in procs(&procs_file)? {
                    match nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL) {
                        Ok(()) | Err(nix::Error::ESRCH) => {}
                        Err(source) => {
                            return Err(CgroupError::Kill { path: procs_file.clone(), pid: pid.as_raw(), source })
                        }
                    }
                }
                Ok(())
            });
            // Thawed whatever happened above: a frozen process never dies, not even of SIGKILL.
            let thawed = self.set_frozen(freezer, false);
            killed.and(thawed)?;
        }
        for file in self.procs_files() {
            kill_until_empty(&file, true)?;
        }
        Ok(())
    }

    fn remove(&self) -> Result<(), CgroupError> {
        for (_, dir) in &self.dirs {
            rmdir_tree(dir)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_root() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for c in ["memory", "pids", "cpu", "freezer"] {
            std::fs::create_dir_all(root.path().join(c)).unwrap();
            std::fs::write(root.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        root
    }

    /// Limits land in the v1 files of each controller, memsw only where swap accounting exists.
    #[test]
    fn create_writes_v1_limits() {
        let root = fake_root();
        let setup = CgroupSetup { memory_bytes: 1 << 28, pids_max: 64, cpu_quota_us: 50_000, cpu_period_us: 100_000 };
        let cgroup = V1::new(root.path()).create("parent", "sbx", &setup).unwrap();
        let memory = root.path().join("memory/parent/sbx");
        assert_eq!(std::fs::read_to_string(memory.join("memory.limit_in_bytes")).unwrap(), "268435456");
        assert!(!memory.join("memory.memsw.limit_in_bytes").exists());
        assert_eq!(std::fs::read_to_string(root.path().join("pids/parent/sbx/pids.max")).unwrap(), "64");
        assert_eq!(std::fs::read_to_string(root.path().join("cpu/parent/sbx/cpu.cfs_quota_us")).unwrap(), "50000");
        assert_eq!(cgroup.procs_files().len(), 4);
        std::fs::write(memory.join("memory.oom_control"), "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n").unwrap();
        assert_eq!(cgroup.oom_kills().unwrap(), 2);
        assert_eq!(V1::new(root.path()).list("parent").unwrap(), vec!["sbx".to_string()]);
    }
}
