//! Real, privileged sandboxes (root with all capabilities, as on the development and CI machines): identity,
//! isolation, limits, teardown and failure reporting, each asserted from inside the sandbox.

mod common;

use std::io::ErrorKind;

use common::{field, Fixture, PYTHON, PYTHON_HOME};
use sandbox::{Error, Termination};

/// The payload runs as the policy's uid with no capability in any set, no_new_privs, as pid 2 under our init,
/// sees only its own processes, and has the policy's hostname and exactly the policy's env.
#[tokio::test]
async fn identity_capabilities_pid_namespace() {
    let fx = Fixture::new("identity");
    let script = "{ echo uid=$(id -u) gid=$(id -g) groups=$(id -G); grep -E '^(Cap|NoNewPrivs)' /proc/self/status; \
                  echo pid=$$; echo host=$(cat /proc/sys/kernel/hostname); echo procs=$(ls /proc | grep -cE '^[0-9]+$'); \
                  echo envcount=$(env | grep -vE '^(PWD|SHLVL|_)=' | wc -l); echo cwd=$(pwd); } > /run/kernel/out";
    let (termination, out) = fx.run(fx.shell(script)).await;
    assert_eq!(termination, Termination::Exited(0), "{out}");
    assert!(out.contains(&format!("uid={0} gid={0} groups={0}", fx.uid)), "{out}");
    for cap in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
        assert_eq!(field(&out, cap), "0000000000000000", "{cap} in {out}");
    }
    assert_eq!(field(&out, "NoNewPrivs:"), "1");
    assert_eq!(field(&out, "pid="), "2", "the payload is the first child of the sandbox's init");
    assert_eq!(field(&out, "host="), fx.name);
    // sh, the subshell running ls and grep: a handful, never the host's hundreds, and not init (root, hidepid=2).
    assert!(field(&out, "procs=").parse::<u32>().unwrap() <= 5, "{out}");
    assert_eq!(field(&out, "envcount="), "3", "only HOME, PATH, LANG: {out}");
    assert_eq!(field(&out, "cwd="), "/sandbox");
}

/// Only the sandbox's own files are visible; / and /usr are read-only; /tmp, /sandbox and /dev/shm are writable;
/// /dev holds only the listed nodes; the generated passwd names the payload user.
#[tokio::test]
async fn filesystem_view() {
    let fx = Fixture::new("fs");
    let script = "{ for p in /work /root /home /var /sys /etc/shadow /dev/sda /dev/mem; do test -e $p && echo visible=$p; done; \
                  touch /usr/x 2>/dev/null && echo wrote=/usr; touch /x 2>/dev/null && echo wrote=/; \
                  touch /etc/passwd 2>/dev/null && echo wrote=/etc; touch /dev/x 2>/dev/null && echo wrote=/dev; \
                  echo a > /tmp/a && echo a > /sandbox/a && echo a > /dev/shm/a && echo writable=ok; \
                  echo dev=$(ls /dev | tr '\\n' ' '); echo null=$(echo hi > /dev/null && echo ok); \
                  echo me=$(grep \"^sandbox:\" /etc/passwd); echo home=$(stat -c %u:%a /sandbox); \
                  echo shm=$(stat -c %a /dev/shm); echo mounts=$(cat /proc/self/mounts | wc -l); } > /run/kernel/out";
    let (termination, out) = fx.run(fx.shell(script)).await;
    assert_eq!(termination, Termination::Exited(0), "{out}");
    assert!(!out.contains("visible="), "{out}");
    assert!(!out.contains("wrote="), "{out}");
    assert!(out.contains("writable=ok"), "{out}");
    assert_eq!(field(&out, "dev="), "fd full null random shm stderr stdin stdout tty urandom zero");
    assert_eq!(field(&out, "null="), "ok");
    assert_eq!(field(&out, "me="), format!("sandbox:x:{0}:{0}:sandbox:/sandbox:/bin/sh", fx.uid));
    assert_eq!(field(&out, "home="), format!("{}:700", fx.uid));
    assert_eq!(field(&out, "shm="), "1777");
}

/// No interface but lo (which is up), and a listener on the host's 127.0.0.1 cannot be reached.
#[tokio::test]
async fn no_network() {
    let fx = Fixture::new("net");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = format!(
        "import socket\n\
         out = open('/run/kernel/out', 'w')\n\
         print('ifaces=' + ','.join(sorted(n for _, n in socket.if_nameindex())), file=out)\n\
         try:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2); print('host=reached', file=out)\n\
         except OSError as e:\n    print('host=' + type(e).__name__, file=out)\n\
         s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n\
         c = socket.create_connection(s.getsockname(), timeout=2); print('lo=up', file=out)\n"
    );
    let policy = fx.policy([PYTHON, "-I", "-c", &script]).ro_bind(PYTHON_HOME, PYTHON_HOME);
    let (termination, out) = fx.run(policy).await;
    assert_eq!(termination, Termination::Exited(0), "{out}");
    assert_eq!(field(&out, "ifaces="), "lo");
    assert_eq!(field(&out, "host="), "ConnectionRefusedError");
    assert_eq!(field(&out, "lo="), "up");
    assert_eq!(listener.accept().unwrap_err().kind(), ErrorKind::WouldBlock, "the host listener got a connection");
}

/// Touching more memory than the limit gets the payload OOM-killed, reported as OutOfMemory, not as a signal;
/// the cgroup is gone once wait() returns.
#[tokio::test]
async fn memory_limit_is_out_of_memory() {
    let fx = Fixture::new("oom");
    let policy = fx
        .policy([PYTHON, "-I", "-c", "x = b'a' * (256 << 20)\nopen('/run/kernel/out', 'w').write('survived')"])
        .ro_bind(PYTHON_HOME, PYTHON_HOME)
        .memory_limit(64 << 20);
    let (termination, out) = fx.run(policy).await;
    assert_eq!(termination, Termination::OutOfMemory, "{out}");
    assert!(out.is_empty());
    for dir in fx.cgroup_dirs() {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

/// A fork loop against pids.max ends as PidsLimit.
#[tokio::test]
async fn pids_limit() {
    let fx = Fixture::new("pids");
    let (termination, _) = fx.run(fx.shell("for i in $(seq 40); do sleep 5 & done; wait").pids_limit(10)).await;
    assert_eq!(termination, Termination::PidsLimit);
}

/// Exit codes and signals of the payload come back as they were.
#[tokio::test]
async fn exit_code_and_signal() {
    let fx = Fixture::new("exit");
    assert_eq!(fx.run(fx.shell("exit 7")).await.0, Termination::Exited(7));
    assert_eq!(fx.run(fx.shell("kill -TERM $$")).await.0, Termination::Signaled(libc::SIGTERM));
}

/// kill() takes down init, the payload and its orphans, removes the cgroup, and is idempotent; several tasks
/// waiting at once all see the same termination.
#[tokio::test]
async fn kill_tears_everything_down() {
    let fx = Fixture::new("kill");
    let sandbox = fx.spawn(fx.shell("sleep 1000 & sleep 1000 & echo started > /run/kernel/out; wait")).await.unwrap();
    let init = nix::unistd::Pid::from_raw(sandbox.init_pid() as i32);
    assert!(nix::sys::signal::kill(init, None).is_ok(), "init is running");
    let members = std::fs::read_to_string(fx.cgroup_dirs()[0].join("cgroup.procs")).unwrap();
    assert!(members.lines().count() >= 3, "helper, init and payload are in the cgroup: {members}");
    let (first, second, ()) = tokio::join!(sandbox.wait(), sandbox.wait(), sandbox.kill());
    assert_eq!((first, second), (Termination::Signaled(libc::SIGKILL), Termination::Signaled(libc::SIGKILL)));
    sandbox.kill().await;
    assert_eq!(sandbox.wait().await, Termination::Signaled(libc::SIGKILL));
    assert_eq!(nix::sys::signal::kill(init, None), Err(nix::errno::Errno::ESRCH));
    for dir in fx.cgroup_dirs() {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

/// A sandbox whose gateway lost track of it (crash: no Sandbox handle, helper still running) is killed and its
/// cgroup removed by cleanup_stale, and the parent cgroup with it.
#[tokio::test]
async fn cleanup_stale_removes_leftovers() {
    let fx = Fixture::new("stale");
    let sandbox = fx.spawn(fx.shell("sleep 1000")).await.unwrap();
    let init = nix::unistd::Pid::from_raw(sandbox.init_pid() as i32);
    std::mem::forget(sandbox);
    assert_eq!(sandbox::cleanup_stale(&fx.parent).unwrap(), 1);
    for dir in fx.cgroup_dirs() {
        assert!(!dir.exists(), "{} left behind", dir.display());
        let parent = dir.parent().unwrap();
        assert!(!parent.exists(), "the emptied parent {} left behind", parent.display());
    }
    // init is the helper's child: gone once the helper is reaped.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while nix::sys::signal::kill(init, None).is_ok() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(nix::sys::signal::kill(init, None), Err(nix::errno::Errno::ESRCH));
    assert_eq!(sandbox::cleanup_stale(&fx.parent).unwrap(), 0);
    // Never the whole hierarchy: an empty or relative parent would name every cgroup on the host.
    for parent in ["", "..", "a/b", "."] {
        assert!(matches!(sandbox::cleanup_stale(parent), Err(Error::Policy(_))), "{parent:?}");
    }
}

/// A payload that cannot be exec'd is a clear error naming the path and errno, and leaves no cgroup behind.
#[tokio::test]
async fn exec_failure_is_reported() {
    let fx = Fixture::new("noexec");
    let err = fx.spawn(fx.policy(["/nonexistent/kernel"])).await.expect_err("spawn fails");
    let message = err.to_string();
    assert!(matches!(err, Error::Setup { .. }), "{message}");
    assert!(message.contains("/nonexistent/kernel") && message.contains("ENOENT"), "{message}");
    for dir in fx.cgroup_dirs() {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

/// True once `pid` has exited (gone or a zombie waiting for its reaper).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(") ").next().is_some_and(|rest| rest.starts_with('Z')),
        Err(_) => true,
    }
}

fn parent_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit(") ").next().unwrap().split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// When the gateway dies (SIGKILL), the parent-death signals take the helper and the sandbox's init with it,
/// without any help from the gateway side.
#[tokio::test(flavor = "current_thread")]
async fn gateway_death_kills_the_sandbox() {
    let fx = Fixture::new("pdeath");
    // A stand-in gateway: a shell that runs the helper as its child (`; :` keeps it from exec'ing it).
    let mut gateway = tokio::process::Command::new("/bin/sh");
    gateway.args(["-c", "\"$0\"; :", env!("CARGO_BIN_EXE_sandbox-exec")]);
    let policy = fx.shell("sleep 1000").build().unwrap();
    let sandbox = sandbox::spawn(gateway, &policy).await.unwrap();
    let init = sandbox.init_pid();
    let helper = parent_of(init);
    let shell = parent_of(helper);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(shell as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    // No .await until checked: on this single-threaded runtime the watcher task (which would kill the cgroup
    // itself) cannot run, so only the parent-death signals can end these processes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while !(is_dead(helper) && is_dead(init)) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(is_dead(helper), "helper survived its parent");
    assert!(is_dead(init), "init survived the helper");
    assert_eq!(sandbox.wait().await, Termination::Signaled(libc::SIGKILL));
    for dir in fx.cgroup_dirs() {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}
