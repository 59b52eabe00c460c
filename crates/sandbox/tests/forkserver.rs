//! The fork server with a plain-Rust in-process payload (`forkserver-test`): its sandboxes get the same walls as
//! exec'd ones, report their ends, and die with the server.

mod common;

use std::time::Duration;

use common::{field, Fixture};
use sandbox::{Error, ForkServer, Policy, Termination};

/// A fork server whose own root lives in a directory of its own.
async fn server() -> (ForkServer, tempfile::TempDir) {
    let dir = tempfile::Builder::new().prefix("forkserver-it-").tempdir().unwrap();
    let root = Policy::builder("forkserver")
        .identity(65_534, 65_534)
        .root_dir(dir.path())
        .argv(["/bin/true"])
        .build()
        .unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_forkserver-test"));
    command.arg(serde_json::to_string(&root).unwrap());
    let server = ForkServer::start(command, b"", Duration::from_secs(30)).await.expect("the fork server starts");
    (server, dir)
}

async fn run(server: &ForkServer, fx: &Fixture, argv: &[&str]) -> (Termination, String) {
    let policy = fx.policy(argv.iter().copied()).build().unwrap();
    let sandbox = server.spawn(&policy, &fx.dir.path().join("stderr")).await.expect("the sandbox starts");
    let termination = tokio::time::timeout(Duration::from_secs(30), sandbox.wait()).await.unwrap();
    (termination, std::fs::read_to_string(fx.session().join("out")).unwrap_or_default())
}

/// The in-process payload is walled exactly like an exec'd one: the policy's uid, no capabilities, no_new_privs,
/// pid 2 under init, its hostname and cwd, exactly the policy's environment, a read-only root, and nothing open
/// but stdio (the server's descriptors are gone). The fork hooks ran around the fork.
#[tokio::test]
async fn in_process_payload_gets_the_same_walls() {
    let (server, _dir) = server().await;
    let fx = Fixture::new("fs-facts");
    let (termination, out) = run(&server, &fx, &["/payload", "facts"]).await;
    assert_eq!(termination, Termination::Exited(0), "{out}");
    assert_eq!(field(&out, "fds="), "3", "only stdin, stdout and stderr: {out}");
    let uid = fx.uid.to_string();
    assert_eq!(field(&out, "Uid:").split_whitespace().collect::<Vec<_>>(), [&uid, &uid, &uid, &uid]);
    for cap in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(field(&out, cap), "0000000000000000", "{cap} in {out}");
    }
    assert_eq!(field(&out, "NoNewPrivs:"), "1");
    assert_eq!(field(&out, "pid="), "2");
    assert_eq!(field(&out, "cmdline="), "/payload facts", "the policy's argv, not the server's");
    assert_eq!(field(&out, "host="), fx.name);
    assert_eq!(field(&out, "cwd="), "/sandbox");
    assert_eq!(field(&out, "env="), "HOME=/sandbox,LANG=C.UTF-8,PATH=/usr/bin:/bin");
    assert_eq!(field(&out, "forks="), "1 in_fork=true", "before_fork ran, after_fork_parent did not (in the child)");
    assert_eq!(field(&out, "root_write="), "false");
}

/// Exit codes come back as with exec; a kill ends the sandbox and removes its cgroup; a setup failure names the
/// failing step; names are unique while running.
#[tokio::test]
async fn ends_kills_and_failures() {
    let (server, _dir) = server().await;
    let fx = Fixture::new("fs-exit");
    assert_eq!(run(&server, &fx, &["/payload", "exit", "7"]).await.0, Termination::Exited(7));

    let fx = Fixture::new("fs-kill");
    let policy = fx.policy(["/payload", "sleep"]).build().unwrap();
    let stderr = fx.dir.path().join("stderr");
    let sandbox = server.spawn(&policy, &stderr).await.unwrap();
    assert!(matches!(server.spawn(&policy, &stderr).await, Err(Error::NameInUse(_))));
    assert!(
        std::path::Path::new(&format!("/proc/{}", sandbox.init_pid())).exists(),
        "init {} runs",
        sandbox.init_pid()
    );
    tokio::time::timeout(Duration::from_secs(10), sandbox.kill()).await.expect("kill returns");
    assert_eq!(sandbox.wait().await, Termination::Signaled(libc::SIGKILL));
    assert!(fx.cgroup_dirs().iter().all(|d| !d.exists()), "the cgroup is removed");

    let fx = Fixture::new("fs-fail");
    let policy = fx.policy(["/payload", "facts"]).ro_bind("/nonexistent/forkserver-test", "/opt/x").build().unwrap();
    match server.spawn(&policy, &fx.dir.path().join("stderr")).await {
        Err(Error::Setup { stderr, .. }) => assert!(stderr.contains("/nonexistent/forkserver-test"), "{stderr}"),
        other => panic!("wanted a setup error, got {other:?}"),
    }
    assert!(fx.cgroup_dirs().iter().all(|d| !d.exists()), "the failed sandbox's cgroup is removed");
    assert!(server.is_serving(), "a failed sandbox does not harm the server");
}

/// Many requests at once each get their sandbox.
#[tokio::test]
async fn concurrent_requests() {
    let (server, _dir) = server().await;
    let fixtures: Vec<Fixture> = (0..8).map(|i| Fixture::new(&format!("fs-many{i}"))).collect();
    let runs = fixtures.iter().map(|fx| run(&server, fx, &["/payload", "facts"]));
    for (fx, (termination, out)) in fixtures.iter().zip(futures_util::future::join_all(runs).await) {
        assert_eq!(termination, Termination::Exited(0), "{out}");
        assert_eq!(field(&out, "host="), fx.name);
    }
}

/// When the server dies, its sandboxes die with it, their ends are reported, and it refuses new requests.
#[tokio::test]
async fn sandboxes_die_with_the_server() {
    let (server, _dir) = server().await;
    let fixtures: Vec<Fixture> = (0..3).map(|i| Fixture::new(&format!("fs-orphan{i}"))).collect();
    let mut sandboxes = Vec::new();
    for fx in &fixtures {
        let policy = fx.policy(["/payload", "sleep"]).build().unwrap();
        sandboxes.push(server.spawn(&policy, &fx.dir.path().join("stderr")).await.unwrap());
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(server.pid() as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    for sandbox in &sandboxes {
        let termination = tokio::time::timeout(Duration::from_secs(10), sandbox.wait()).await.expect("reported");
        assert_eq!(termination, Termination::Signaled(libc::SIGKILL));
        assert!(dead_soon(sandbox.init_pid()).await, "init {} is still running", sandbox.init_pid());
    }
    assert!(!server.is_serving());
    let fx = Fixture::new("fs-after");
    let policy = fx.policy(["/payload", "facts"]).build().unwrap();
    assert!(matches!(server.spawn(&policy, &fx.dir.path().join("stderr")).await, Err(Error::ServerGone)));
}

/// The sandbox's pid 1 (the server's reaper) adopts what the payload leaves behind: it reaps what ends, and once
/// the payload has ended, whatever still runs ends too (the cgroup can be removed). The payload cannot see it.
#[tokio::test]
async fn pid_1_reaps_and_ends_orphans() {
    let (server, _dir) = server().await;
    let fx = Fixture::new("fs-reaper");
    let (termination, out) = run(&server, &fx, &["/payload", "orphans"]).await;
    assert_eq!(termination, Termination::Exited(0), "{out}");
    assert_eq!(field(&out, "short="), "gone", "an orphan that ended was reaped: {out}");
    assert_eq!(field(&out, "long="), "S", "the sleeping orphan ran while the payload did: {out}");
    assert_eq!(field(&out, "pid1_visible="), "false", "/proc has hidepid=2: {out}");
    for _ in 0..50 {
        if fx.cgroup_dirs().iter().all(|d| !d.exists()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the sandbox's cgroup is still there: the sleeping orphan outlived its payload");
}

/// Whether `pid` is gone or a zombie (whoever adopted it may not have reaped it yet) within 5 s.
async fn dead_soon(pid: u32) -> bool {
    for _ in 0..50 {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => return true,
            Ok(stat) if stat.rsplit(") ").next().is_some_and(|rest| rest.starts_with('Z')) => return true,
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    false
}

/// After a request, the server keeps one init forked ahead in a cgroup of its own; the next request is given
/// that init, whose cgroup then takes the sandbox's name (the slow first move into a cgroup happened earlier).
#[tokio::test]
async fn the_next_sandbox_gets_the_spare_init() {
    let (server, _dir) = server().await;
    let first = Fixture::new("fs-spare1");
    assert_eq!(run(&server, &first, &["/payload", "exit", "0"]).await.0, Termination::Exited(0));
    let parent = std::path::Path::new("/sys/fs/cgroup/pids").join(&first.parent);
    let spares: Vec<_> = std::fs::read_dir(&parent)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("spare-"))
        .collect();
    assert_eq!(spares.len(), 1, "one spare under {}", parent.display());
    let spare_pid: u32 =
        std::fs::read_to_string(spares[0].path().join("cgroup.procs")).unwrap().trim().parse().unwrap();

    // Same cgroup parent (the spare is only used for it): the second fixture shares the first's.
    let mut second = Fixture::new("fs-spare2");
    second.parent = first.parent.clone();
    let policy = second.policy(["/payload", "sleep"]).build().unwrap();
    let sandbox = server.spawn(&policy, &second.dir.path().join("stderr")).await.unwrap();
    assert_eq!(sandbox.init_pid(), spare_pid, "the spare init became the sandbox's init");
    let procs = std::fs::read_to_string(parent.join(&second.name).join("cgroup.procs")).unwrap();
    assert!(procs.lines().any(|p| p.trim() == spare_pid.to_string()), "{procs}");
    assert!(!spares[0].path().exists(), "the spare's cgroup was renamed");
    sandbox.kill().await;
}
