//! The process attempts: host processes and pids, signals (pid 1, host pids, `kill -1`), ptrace, `/proc/sys`
//! writes, cgroup escape.

use super::checks::{and_then, blocked, blocked_with, syscalls_refused, verdict_lines};
use super::targets::{fill_in, Targets};
use super::{attempt, Attempt};

pub(super) fn attempts(t: &Targets) -> Vec<Attempt> {
    let host_pid = std::process::id();
    vec![
        // Seeing host processes: only a handful of the namespace's own pids, never the test's.
        attempt(
            "processes",
            "host processes",
            fill_in(
                r#"
pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
host = @HOSTPID@
visible = host > 100 and (host in pids or os.path.exists('/proc/%d' % host))
print('BLOCKED' if len(pids) <= 6 and max(pids) < 100 and not visible else 'ESCAPED', pids)
"#,
                &[("HOSTPID", host_pid.to_string())],
            ),
            blocked(),
        ),
        // Signalling pid 1 and the test's own pid.
        attempt(
            "processes",
            "signal pid 1 and host pid",
            format!(
                "refuse(os.kill, 1, signal.SIGKILL, what='pid 1')\nrefuse(os.kill, {host_pid}, 0, what='host pid')"
            ),
            blocked_with(&["EPERM", "ESRCH"]),
        ),
        // kill(-1, SIGKILL): must reach only the sandbox's own processes (its own `sleep` dies, host processes of
        // the sandbox uids, the witness and the canary live).
        attempt(
            "processes",
            "kill -1",
            r#"
p = subprocess.Popen(['sleep', '30'])
time.sleep(0.2)
try:
    os.kill(-1, signal.SIGKILL)
    how = 'sent'
except OSError as e:
    how = ename(e)
time.sleep(0.3)
print('BLOCKED kill(-1)', how, 'own-sleep-killed' if p.poll() is not None else 'own-sleep-alive')
"#,
            and_then(blocked(), t.sleepers_alive()),
        ),
        // ptrace(PTRACE_ATTACH, 1).
        attempt(
            "processes",
            "ptrace attach pid 1",
            "print(syscall(101, 16, 1, 0, 0))",
            Box::new(|status, body| {
                let lines = verdict_lines(status, body)?;
                match lines[0].split_whitespace().collect::<Vec<_>>().as_slice() {
                    ["SYSCALL", "-1", "EPERM" | "ESRCH" | "EACCES" | "ENOSYS"] => Ok(()),
                    _ => Err(format!("ptrace not refused: {}", lines[0])),
                }
            }),
        ),
        // ptrace(PTRACE_TRACEME) in a child (to be refused by the seccomp filter).
        attempt("processes", "ptrace traceme", "print(in_child(lambda: syscall(101, 0, 0, 0, 0)))", syscalls_refused()),
        // Writes to /proc/sys and /proc/sysrq-trigger.
        attempt(
            "processes",
            "/proc/sys writes",
            r#"
for path in ['/proc/sys/kernel/hostname', '/proc/sys/kernel/core_pattern', '/proc/sys/vm/drop_caches', '/proc/sys/kernel/modprobe', '/proc/sysrq-trigger']:
    refuse(lambda p=path: os.write(os.open(p, os.O_WRONLY), b'1'), what=path)
"#,
            blocked_with(&["EACCES", "EROFS", "EPERM", "ENOENT"]),
        ),
        // Leaving the cgroup: no cgroupfs, a cgroup namespace, and mounting one is refused.
        attempt(
            "processes",
            "cgroup escape",
            r#"
absent('/sys/fs/cgroup/cgroup.procs')
paths = [l.split(':', 2)[2].strip() for l in open('/proc/self/cgroup')]
print('BLOCKED' if set(paths) == {'/'} else 'ESCAPED', 'cgroup paths', paths)
os.makedirs('/tmp/cg', exist_ok=True)
print(syscall(165, b'none', b'/tmp/cg', b'cgroup2', 0, None).replace('SYSCALL -1', 'BLOCKED mount'))
"#,
            blocked_with(&["ENOENT", "EACCES", "paths", "EPERM"]),
        ),
    ]
}
