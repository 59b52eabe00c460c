//! The fixture shared by the privileged sandbox test files: one sandbox's host directories, identity and policy.
#![allow(dead_code, unreachable_pub)]

use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use sandbox::{Error, Policy, PolicyBuilder, Sandbox, Termination};

pub const PYTHON_HOME: &str = "/root/.pyenv/versions/3.11.7";
pub const PYTHON: &str = "/root/.pyenv/versions/3.11.7/bin/python3.11";

/// One test's sandbox: its host directories and identity.
pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub name: String,
    pub parent: String,
    pub uid: u32,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Fixture {
    pub fn new(test: &str) -> Self {
        assert!(nix::unistd::geteuid().is_root(), "sandbox tests need root with all capabilities (as in CI)");
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let uid = 61_000 + (std::process::id() % 1000) * 10 + n;
        let dir = tempfile::Builder::new().prefix("sandbox-it-").tempdir().unwrap();
        std::fs::create_dir(dir.path().join("root")).unwrap();
        std::fs::create_dir(dir.path().join("session")).unwrap();
        chown(dir.path().join("session"), Some(uid), Some(uid)).unwrap();
        let parent = format!("sandbox-it-{}-{test}", std::process::id());
        Self { dir, name: format!("sbx-{test}"), parent, uid }
    }

    pub fn session(&self) -> PathBuf {
        self.dir.path().join("session")
    }

    /// A policy running `argv`, with the session dir at /run/kernel.
    pub fn policy<S: Into<String>>(&self, argv: impl IntoIterator<Item = S>) -> PolicyBuilder {
        Policy::builder(&self.name)
            .identity(self.uid, self.uid)
            .root_dir(self.dir.path().join("root"))
            .rw_bind(self.session(), "/run/kernel")
            .env("HOME", "/sandbox")
            .env("PATH", "/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .cgroup_parent(&self.parent)
            .argv(argv)
    }

    pub fn shell(&self, script: &str) -> PolicyBuilder {
        self.policy(["/bin/sh", "-c", script])
    }

    pub async fn spawn(&self, policy: PolicyBuilder) -> Result<Sandbox, Error> {
        let helper = tokio::process::Command::new(env!("CARGO_BIN_EXE_sandbox-exec"));
        sandbox::spawn(helper, &policy.build().unwrap()).await
    }

    /// Runs `policy` to the end; returns how it ended and what it wrote to /run/kernel/out.
    pub async fn run(&self, policy: PolicyBuilder) -> (Termination, String) {
        let sandbox = self.spawn(policy).await.expect("sandbox starts");
        let termination = tokio::time::timeout(std::time::Duration::from_secs(60), sandbox.wait()).await.unwrap();
        let out = std::fs::read_to_string(self.session().join("out")).unwrap_or_default();
        (termination, out)
    }

    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        ["memory", "pids"]
            .iter()
            .map(|c| Path::new("/sys/fs/cgroup").join(c).join(&self.parent).join(&self.name))
            .collect()
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        for controller in ["memory", "pids", "cpu", "freezer"] {
            let parent = Path::new("/sys/fs/cgroup").join(controller).join(&self.parent);
            // A fork server's spare init outlives a killed server for a moment, in a cgroup of its own: kill what
            // is left, then remove each cgroup once its processes are gone.
            for child in std::fs::read_dir(&parent).into_iter().flatten().flatten() {
                if child.path().is_dir() {
                    remove_cgroup(&child.path());
                }
            }
            remove_cgroup(&parent);
        }
    }
}

/// Kills the processes of `cgroup` (v1 directory) and removes it, waiting up to 5 s for them to exit.
fn remove_cgroup(cgroup: &Path) {
    let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|line| line.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
    for _ in 0..500 {
        match std::fs::remove_dir(cgroup) {
            Err(err) if err.raw_os_error() == Some(nix::libc::EBUSY) => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            _ => return,
        }
    }
}

pub fn field(out: &str, key: &str) -> String {
    out.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("{key} missing in {out}")).trim().to_string()
}
