//! The pool's lifecycle: the maximum, and recovery after a crash of the gateway.

use std::path::Path;
use std::time::Duration;

use crate::util::{kernel_env, user, TestServer, TOKEN};

/// With every sandbox bound, a new user gets 503 with a detail saying why; a release makes room again.
#[tokio::test]
async fn maximum_gives_503() {
    let server = TestServer::start(&["--warm-sandboxes", "0", "--max-sandboxes", "2"]);
    let api = server.client();
    let (a, b, c) = (user("max-a"), user("max-b"), user("max-c"));
    api.run_ok(&a, "1").await;
    api.run_ok(&b, "1").await;
    let (status, body) = api.execute(&c, "1").await;
    assert_eq!(status, 503, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("all 2 sandboxes are in use"), "{body}");
    let status = api.status().await;
    assert_eq!((status["total_workers"].as_u64(), status["busy_workers"].as_u64()), (Some(2), Some(2)), "{status}");
    api.release(&a).await;
    assert_eq!(api.run_ok(&c, "'in'").await, "'in'");
}

/// Names of the sandboxes whose session directories exist under `data_dir`.
fn session_dirs(data_dir: &Path) -> Vec<String> {
    match std::fs::read_dir(data_dir.join("sessions")) {
        Ok(entries) => entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Pids of host processes whose cgroup path mentions `needle`.
fn processes_in_cgroups_named(needle: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cgroups) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) {
            if cgroups.contains(needle) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// After a SIGKILL of the gateway, the next start leaves nothing of the old run: processes, cgroups, session
/// directories; and the token file is unchanged.
#[tokio::test]
async fn restart_after_sigkill_leaves_nothing_behind() {
    let temp = tempfile::Builder::new().prefix("ci-crash-").tempdir().unwrap();
    let data_dir = temp.path();
    // The token comes from the file (AUTH_TOKEN empty): the requests below only pass if it is the one written here.
    std::fs::write(data_dir.join("auth_token.txt"), TOKEN).unwrap();
    let first = TestServer::start_with_token(data_dir, &["--warm-sandboxes", "1"], "");
    first.client().wait_ready().await;
    first.client().run_ok(&user("crash"), "x = 1").await;
    let old = session_dirs(data_dir);
    assert_eq!(old.len(), 2, "one warm and one bound sandbox: {old:?}");
    first.kill_hard();

    let second = TestServer::start_with_token(data_dir, &["--warm-sandboxes", "1"], "");
    second.client().wait_ready().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let now = session_dirs(data_dir);
    for name in &old {
        assert!(!now.contains(name), "session directory {name} of the old run is left: {now:?}");
        assert_eq!(processes_in_cgroups_named(name), Vec::<u32>::new(), "processes of {name} are left");
        for controller in ["memory", "pids", "cpu"] {
            let leftover = std::fs::read_dir(format!("/sys/fs/cgroup/{controller}"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|parent| parent.path().join(name).exists());
            assert!(!leftover, "cgroup {controller}/.../{name} is left");
        }
    }
    assert_eq!(std::fs::read_to_string(data_dir.join("auth_token.txt")).unwrap(), TOKEN);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for name in &old {
        assert!(!mounts.contains(name.as_str()), "a mount of {name} of the old run is left on the host");
    }
    assert_eq!(second.client().run_ok(&user("after"), "'ok'").await, "'ok'");
}

/// On SIGTERM the gateway stops and destroys every sandbox, and removes its own cgroup parent (each data
/// directory has one: services come and gone leave no empty cgroups behind).
#[tokio::test]
async fn shutdown_destroys_every_sandbox() {
    let server = TestServer::start(&["--warm-sandboxes", "2"]);
    server.client().wait_ready().await;
    server.client().run_ok(&user("bye"), "1").await;
    let names = session_dirs(&server.data_dir);
    assert_eq!(names.len(), 3);
    let parent = gateway::launcher::cgroup_parent_for(&server.data_dir);
    let parent_dirs = || {
        let roots = ["/sys/fs/cgroup", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/cpu"];
        roots.map(|root| Path::new(root).join(&parent)).into_iter().filter(|dir| dir.exists()).collect::<Vec<_>>()
    };
    assert!(!parent_dirs().is_empty(), "the service's cgroup parent {parent} was not found");
    assert!(server.stop(), "the server exited by itself on SIGTERM");
    assert_eq!(parent_dirs(), Vec::<std::path::PathBuf>::new(), "the service's cgroup parent is left");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for name in &names {
        assert_eq!(processes_in_cgroups_named(name), Vec::<u32>::new(), "processes of {name} are left");
        assert!(!mounts.contains(name.as_str()), "the session mount of {name} is left");
    }
    assert_eq!(session_dirs(&server.data_dir), Vec::<String>::new());
}

/// `code-interpreter token` prints the token the server uses: AUTH_TOKEN's, else the data directory's (created once).
#[test]
fn token_command_prints_the_servers_token() {
    let temp = tempfile::tempdir().unwrap();
    let token = |auth: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_code-interpreter"));
        command.arg("--data-dir").arg(temp.path()).arg("token").env_remove("AUTH_TOKEN");
        if let Some(auth) = auth {
            command.env("AUTH_TOKEN", auth);
        }
        let output = command.output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8(output.stdout).unwrap().trim().to_owned()
    };
    let first = token(None);
    assert!(uuid::Uuid::parse_str(&first).is_ok(), "{first}");
    assert_eq!(std::fs::read_to_string(temp.path().join("auth_token.txt")).unwrap(), first);
    assert_eq!(token(None), first, "the same token on every call");
    assert_eq!(token(Some("from-env")), "from-env");
}

/// A session idle past the idle timeout is recycled by the reaper: its sandbox is freed and its state is gone.
#[tokio::test]
async fn idle_sessions_are_recycled() {
    let server = TestServer::start(&["--warm-sandboxes", "0", "--idle-timeout-secs", "1", "--reap-interval-secs", "1"]);
    let api = server.client();
    let who = user("idle");
    api.run_ok(&who, "x = 1").await;
    assert_eq!(api.status().await["busy_workers"], 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while api.status().await["busy_workers"] != 0 {
        assert!(std::time::Instant::now() < deadline, "the idle session was never recycled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(session_dirs(&server.data_dir), Vec::<String>::new(), "its sandbox is gone");
    let (status, body) = api.execute(&who, "x").await;
    assert_eq!((status, body["error"]["ename"].as_str()), (400, Some("NameError")), "{body}");
}

/// A burst of new users as large as the maximum all get a sandbox: users arriving while the slots are held by
/// warm kernels still starting wait for those instead of getting 503.
#[tokio::test]
async fn a_burst_up_to_the_maximum_is_served() {
    let server = TestServer::start(&["--warm-sandboxes", "2", "--max-sandboxes", "4"]);
    let api = server.client();
    api.wait_ready().await;
    let burst: Vec<_> = (0..4)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move { api.execute(&user(&format!("burst-{i}")), "'in'").await })
        })
        .collect();
    for request in burst {
        let (status, body) = request.await.unwrap();
        assert_eq!((status, body["result_text"].as_str()), (200, Some("'in'")), "{body}");
    }
}

/// A server started with `--stop-on-stdin-eof` stops, sandboxes and all, when the process that started it dies,
/// even though the log reader died with it (stderr is then a closed pipe: a log line written there must not stop
/// the shutdown).
#[test]
fn stops_when_its_starter_is_gone_even_without_a_log_reader() {
    use std::io::BufRead;
    let temp = tempfile::Builder::new().prefix("ci-orphan-").tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_code-interpreter"))
        .arg("--data-dir")
        .arg(temp.path())
        .arg("--kernel-env")
        .arg(kernel_env())
        .args(["--listen", "127.0.0.1:0", "--stop-on-stdin-eof", "--warm-sandboxes", "1", "serve"])
        .env("AUTH_TOKEN", TOKEN)
        .env("RUST_LOG", "gateway=info")
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("warm kernel ready") {
        line.clear();
        assert!(log.read_line(&mut line).unwrap() > 0, "the server stopped before its warm kernel was ready");
    }
    assert_eq!(session_dirs(temp.path()).len(), 1);
    // As when the starter dies: the log reader goes first, then standard input closes.
    drop(log);
    drop(child.stdin.take());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the server kept running after its standard input closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(session_dirs(temp.path()), Vec::<String>::new(), "its sandboxes are left");
}
