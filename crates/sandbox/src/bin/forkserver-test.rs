//! A fork server for the crate's integration tests: `forkserver-test ROOT_POLICY_JSON`. Its in-process payload is
//! plain Rust, chosen by `argv[1]` of each sandbox's policy: `facts` (writes what it sees to /run/kernel/out),
//! `orphans` (leaves processes to pid 1 and writes what became of them there too), `exit N`, or `sleep`.

use std::cell::Cell;
use std::fmt::Write as _;

use sandbox::forkserver::{self, InProcess};
use sandbox::Policy;

struct TestPayload {
    forks: Cell<u32>,
    in_fork: Cell<bool>,
}

impl InProcess for TestPayload {
    fn before_fork(&self) {
        self.forks.set(self.forks.get() + 1);
        self.in_fork.set(true);
    }

    fn after_fork_parent(&self) {
        self.in_fork.set(false);
    }

    fn run(&self, policy: &Policy) -> i32 {
        match policy.argv.get(1).map(String::as_str) {
            Some("facts") => facts(self.forks.get(), self.in_fork.get()),
            Some("orphans") => orphans(),
            Some("exit") => policy.argv.get(2).and_then(|c| c.parse().ok()).unwrap_or(99),
            Some("sleep") => {
                std::thread::sleep(std::time::Duration::from_secs(600));
                0
            }
            _ => 98,
        }
    }
}

fn facts(forks: u32, in_fork: bool) -> i32 {
    let mut out = String::new();
    let fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .map(|dir| dir.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    // One of them is the directory being listed.
    let _ = writeln!(out, "fds={}", fds.len() - 1);
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    for line in status.lines().filter(|l| l.starts_with("Cap") || l.starts_with("NoNewPrivs") || l.starts_with("Uid")) {
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out, "pid={}", std::process::id());
    let cmdline = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    let _ = writeln!(out, "cmdline={}", String::from_utf8_lossy(&cmdline).replace('\0', " ").trim_end());
    let _ = writeln!(out, "host={}", std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim());
    let _ = writeln!(out, "cwd={}", std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default());
    let mut env: Vec<String> = std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
    env.sort();
    let _ = writeln!(out, "env={}", env.join(","));
    let _ = writeln!(out, "forks={forks} in_fork={in_fork}");
    let _ = writeln!(out, "root_write={}", std::fs::write("/x", "x").is_ok());
    match std::fs::write("/run/kernel/out", out) {
        Ok(()) => 0,
        Err(_) => 97,
    }
}

/// Orphans a process that exits at once and one that sleeps, then reports whether the first was reaped (by pid 1:
/// its parent is gone), whether the second still runs, and whether pid 1 is visible.
fn orphans() -> i32 {
    let short = orphan(|| 0);
    let long = orphan(|| {
        std::thread::sleep(std::time::Duration::from_secs(600));
        0
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let state = |pid: i32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        stat.rsplit(") ").next().and_then(|rest| rest.split_whitespace().next()).unwrap_or("gone").to_owned()
    };
    let out = format!(
        "short={}\nlong={}\npid1_visible={}\n",
        state(short),
        state(long),
        std::path::Path::new("/proc/1").exists()
    );
    match std::fs::write("/run/kernel/out", out) {
        Ok(()) => 0,
        Err(_) => 97,
    }
}

/// Forks a child that forks `body` and exits at once, leaving it to the namespace's pid 1; returns its pid.
#[allow(unsafe_code)]
fn orphan(body: fn() -> i32) -> i32 {
    use nix::unistd::{fork, ForkResult};
    let (read, write) = nix::unistd::pipe().expect("a pipe");
    // SAFETY: this payload is single-threaded, and so are its children.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => match unsafe { fork() } {
            Ok(ForkResult::Child) => std::process::exit(body()),
            Ok(ForkResult::Parent { child }) => {
                let _ = nix::unistd::write(&write, &child.as_raw().to_le_bytes());
                std::process::exit(0)
            }
            Err(_) => std::process::exit(1),
        },
        ForkResult::Parent { child } => {
            drop(write);
            let mut pid = [0u8; 4];
            let _ = nix::unistd::read(&read, &mut pid);
            let _ = nix::sys::wait::waitpid(child, None);
            i32::from_le_bytes(pid)
        }
    }
}

fn main() {
    // A killed test run must not leave its servers behind.
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
    let root: Policy = match std::env::args().nth(1).map(|json| serde_json::from_str(&json)) {
        Some(Ok(policy)) => policy,
        _ => {
            eprintln!("usage: forkserver-test ROOT_POLICY_JSON");
            std::process::exit(2)
        }
    };
    match forkserver::enter_root(&root) {
        Ok(host) => forkserver::serve(host, &TestPayload { forks: Cell::new(0), in_fork: Cell::new(false) }),
        Err(error) => {
            eprintln!("forkserver-test: {error}");
            std::process::exit(1)
        }
    }
}
