//! cgroup v2: one unified hierarchy (`<root>/<parent>/<name>`), `memory.oom.group` and `cgroup.kill`.

use std::path::{Path, PathBuf};

use super::{keyed_value, kill_until_empty, mkdir_all, read, rename_dir, rmdir_tree, subdirs, write};
use super::{Cgroup, CgroupDriver, CgroupError, CgroupSetup, CounterFile};

/// Controllers delegated down to the sandbox cgroups.
const CONTROLLERS: &[&str] = &["memory", "pids", "cpu"];

/// The v2 driver, rooted at the cgroup2 mount (normally `/sys/fs/cgroup`; a plain directory in tests).
#[derive(Debug, Clone)]
pub struct V2 {
    root: PathBuf,
}

impl V2 {
    /// A driver for the unified hierarchy mounted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// Enables our controllers for the children of `dir`, skipping those `dir` itself does not have.
    fn delegate(&self, dir: &Path) -> Result<(), CgroupError> {
        let available = read(&dir.join("cgroup.controllers"))?;
        let wanted: Vec<String> = CONTROLLERS
            .iter()
            .filter(|c| available.split_whitespace().any(|a| a == **c))
            .map(|c| format!("+{c}"))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        write(&dir.join("cgroup.subtree_control"), &wanted.join(" "))
    }
}

impl CgroupDriver for V2 {
    fn create(&self, parent: &str, name: &str, setup: &CgroupSetup) -> Result<Box<dyn Cgroup>, CgroupError> {
        let parent_dir = self.root.join(parent);
        self.delegate(&self.root)?;
        mkdir_all(&parent_dir)?;
        self.delegate(&parent_dir)?;
        let dir = parent_dir.join(name);
        mkdir_all(&dir)?;
        let cgroup = V2Cgroup::new(dir);
        if let Err(error) = cgroup.apply(setup) {
            // Best effort: the error that matters is the one being returned.
            let _ = cgroup.remove();
            return Err(error);
        }
        Ok(Box::new(cgroup))
    }

    fn open(&self, parent: &str, name: &str) -> Box<dyn Cgroup> {
        Box::new(V2Cgroup::new(self.root.join(parent).join(name)))
    }

    fn list(&self, parent: &str) -> Result<Vec<String>, CgroupError> {
        subdirs(&self.root.join(parent))
    }

    fn parent_dirs(&self, parent: &str) -> Vec<PathBuf> {
        vec![self.root.join(parent)]
    }

    fn rename(&self, parent: &str, from: &str, to: &str) -> Result<(), CgroupError> {
        let dir = self.root.join(parent);
        rename_dir(&dir.join(from), &dir.join(to))
    }
}

/// A sandbox's cgroup directory.
#[derive(Debug)]
struct V2Cgroup {
    dir: PathBuf,
    pids_events: CounterFile,
}

impl V2Cgroup {
    fn new(dir: PathBuf) -> Self {
        let pids_events = CounterFile::new(dir.join("pids.events"));
        Self { dir, pids_events }
    }

    fn apply(&self, setup: &CgroupSetup) -> Result<(), CgroupError> {
        write(&self.dir.join("memory.max"), &setup.memory_bytes.to_string())?;
        // Hosts without swap have no swap file; with swap, the memory limit must also be the swap-inclusive one.
        let swap = self.dir.join("memory.swap.max");
        if swap.exists() {
            write(&swap, "0")?;
        }
        // An OOM kills the whole sandbox, not a random process in it: the kernel state is gone either way.
        write(&self.dir.join("memory.oom.group"), "1")?;
        write(&self.dir.join("pids.max"), &setup.pids_max.to_string())?;
        write(&self.dir.join("cpu.max"), &format!("{} {}", setup.cpu_quota_us, setup.cpu_period_us))?;
        Ok(())
    }
}

impl Cgroup for V2Cgroup {
    fn procs_files(&self) -> Vec<PathBuf> {
        vec![self.dir.join("cgroup.procs")]
    }

    fn memory_procs_file(&self) -> Option<PathBuf> {
        Some(self.dir.join("cgroup.procs"))
    }

    fn oom_kills(&self) -> Result<u64, CgroupError> {
        keyed_value(&self.dir.join("memory.events"), "oom_kill")
    }

    fn pids_max_events(&self) -> Result<u64, CgroupError> {
        self.pids_events.value("max")
    }

    fn kill_all(&self) -> Result<(), CgroupError> {
        if !self.dir.exists() {
            return Ok(());
        }
        let kill_file = self.dir.join("cgroup.kill");
        let signal_members = !kill_file.exists();
        if !signal_members {
            write(&kill_file, "1")?;
        }
        kill_until_empty(&self.dir.join("cgroup.procs"), signal_members)
    }

    fn remove(&self) -> Result<(), CgroupError> {
        rmdir_tree(&self.dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake cgroup2 root: the files a real one shows, as plain files in a tempdir.
    fn fake_root() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpuset cpu io memory pids\n").unwrap();
        std::fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
        root
    }

    /// The kernel creates a child's control files at mkdir; the fake creates the ones we read or probe.
    fn fake_kernel_files(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("cgroup.controllers"), "cpu memory pids\n").unwrap();
    }

    fn setup() -> CgroupSetup {
        CgroupSetup { memory_bytes: 512 << 20, pids_max: 128, cpu_quota_us: 100_000, cpu_period_us: 100_000 }
    }

    /// create delegates the controllers down and writes memory.max, swap 0, oom.group, pids.max and cpu.max.
    #[test]
    fn create_writes_limits_and_delegates() {
        let root = fake_root();
        fake_kernel_files(&root.path().join("ci-1"));
        let leaf = root.path().join("ci-1/sbx-a");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(leaf.join("memory.swap.max"), "max\n").unwrap();

        let cgroup = V2::new(root.path()).create("ci-1", "sbx-a", &setup()).unwrap();
        let file = |p: &str| std::fs::read_to_string(root.path().join(p)).unwrap();
        assert_eq!(file("cgroup.subtree_control"), "+memory +pids +cpu");
        assert_eq!(file("ci-1/cgroup.subtree_control"), "+memory +pids +cpu");
        assert_eq!(file("ci-1/sbx-a/memory.max"), "536870912");
        assert_eq!(file("ci-1/sbx-a/memory.swap.max"), "0");
        assert_eq!(file("ci-1/sbx-a/memory.oom.group"), "1");
        assert_eq!(file("ci-1/sbx-a/pids.max"), "128");
        assert_eq!(file("ci-1/sbx-a/cpu.max"), "100000 100000");
        assert_eq!(cgroup.procs_files(), vec![leaf.join("cgroup.procs")]);
    }

    /// The OOM and pids counters are read from memory.events and pids.events; absent keys count as 0.
    #[test]
    fn reads_event_counters() {
        let root = fake_root();
        let leaf = root.path().join("p/s");
        fake_kernel_files(&leaf);
        std::fs::write(leaf.join("memory.events"), "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 1\n")
            .unwrap();
        std::fs::write(leaf.join("pids.events"), "max 3\n").unwrap();
        let cgroup = V2::new(root.path()).open("p", "s");
        assert_eq!(cgroup.oom_kills().unwrap(), 1);
        assert_eq!(cgroup.pids_max_events().unwrap(), 3);
        std::fs::write(leaf.join("memory.events"), "low 0\n").unwrap();
        assert_eq!(cgroup.oom_kills().unwrap(), 0);
        std::fs::write(leaf.join("pids.events"), "max lots\n").unwrap();
        assert!(matches!(cgroup.pids_max_events(), Err(CgroupError::Parse { .. })));
    }

    /// kill_all uses cgroup.kill when the kernel has it and returns once cgroup.procs is empty; remove deletes the
    /// leaf; list and remove_all find leftovers under the parent, and remove_all the parent once empty.
    #[test]
    fn kill_remove_and_cleanup() {
        let root = fake_root();
        let driver = V2::new(root.path());
        for name in ["a", "b"] {
            let leaf = root.path().join("p").join(name);
            fake_kernel_files(&leaf);
            std::fs::write(leaf.join("cgroup.kill"), "").unwrap();
            std::fs::write(leaf.join("cgroup.procs"), "").unwrap();
        }
        driver.open("p", "a").kill_all().unwrap();
        assert_eq!(std::fs::read_to_string(root.path().join("p/a/cgroup.kill")).unwrap(), "1");
        assert_eq!(driver.list("p").unwrap(), vec!["a".to_string(), "b".to_string()]);

        // cgroupfs lets rmdir ignore control files; a plain directory does not, so empty the fakes first.
        for name in ["a", "b"] {
            for f in ["cgroup.kill", "cgroup.procs", "cgroup.controllers"] {
                std::fs::remove_file(root.path().join("p").join(name).join(f)).unwrap();
            }
        }
        assert_eq!(super::super::remove_all(&driver, "p").unwrap(), 2);
        assert!(driver.list("p").unwrap().is_empty());
        assert!(!root.path().join("p").exists(), "the emptied parent goes too");
        assert_eq!(driver.list("missing").unwrap(), Vec::<String>::new());
    }

    /// A failed limit write removes the half-made cgroup and names the file.
    #[test]
    fn create_failure_names_the_file() {
        let root = fake_root();
        let leaf = root.path().join("p/s");
        fake_kernel_files(&root.path().join("p"));
        std::fs::create_dir_all(leaf.join("memory.max")).unwrap(); // a directory: the write fails
        let err = V2::new(root.path()).create("p", "s", &setup()).unwrap_err();
        assert!(matches!(&err, CgroupError::Write { path, .. } if path.ends_with("memory.max")), "{err}");
    }
}
