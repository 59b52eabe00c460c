//! The resource attempts: fork and thread bombs, memory, disk fills of every writable place, fd exhaustion, CPU
//! spins, output and result floods.

use super::checks::{any_of, blocked_with, raised, reason_in, valid_answer};
use super::{attempt, Attempt, PIDS_LIMIT, TMPFS_MIB};

pub(super) fn attempts() -> Vec<Attempt> {
    let fill_limit = TMPFS_MIB + 1;
    let disk = |path: &str, limit: u32| format!("fill({path:?}, {limit})");
    let enospc = &["ENOSPC", "EFBIG", "EDQUOT"];
    vec![
        // Fork bomb: every child forks again; must stop at the pids limit.
        attempt(
            "resources",
            "fork bomb",
            format!(
                r#"
pids, err = [], None
for i in range(1000):
    try:
        pid = os.fork()
    except OSError as e:
        err = e
        break
    if pid == 0:
        try:
            os.fork()
        except OSError:
            pass
        time.sleep(30)
        os._exit(0)
    pids.append(pid)
try:
    os.kill(-1, signal.SIGKILL)
except OSError:
    pass
for pid in pids:
    try:
        os.waitpid(pid, 0)
    except OSError:
        pass
print('BLOCKED' if err is not None and len(pids) < {PIDS_LIMIT} else 'ESCAPED', 'forks=%d' % len(pids), type(err).__name__)
"#
            ),
            any_of(vec![
                blocked_with(&["BlockingIOError"]),
                reason_in(&["pids_limit"]),
                raised("BlockingIOError"),
            ]),
        ),
        // Thread bomb: bounded by the pids limit too.
        attempt(
            "resources",
            "thread bomb",
            format!(
                r#"
import threading
stop, threads, err = threading.Event(), [], None
for i in range(1000):
    t = threading.Thread(target=stop.wait, daemon=True)
    try:
        t.start()
    except RuntimeError as e:
        err = e
        break
    threads.append(t)
stop.set()
for t in threads:
    t.join()
print('BLOCKED' if err is not None and len(threads) < {PIDS_LIMIT} else 'ESCAPED', 'threads=%d' % len(threads), type(err).__name__)
"#
            ),
            any_of(vec![blocked_with(&["RuntimeError"]), reason_in(&["pids_limit"])]),
        ),
        // One 4 GiB allocation.
        attempt(
            "resources",
            "memory bomb",
            "try:\n    hog = bytearray(4 << 30)\nexcept MemoryError:\n    print('BLOCKED MemoryError')\nelse:\n    print('ESCAPED', len(hog))",
            any_of(vec![blocked_with(&["MemoryError"]), reason_in(&["out_of_memory"])]),
        ),
        // Memory grown 64 MiB at a time.
        attempt(
            "resources",
            "memory growth",
            "chunks = []\ntry:\n    while len(chunks) < 256:\n        chunks.append(b'\\1' * (64 << 20))\n    print('ESCAPED 16 GiB')\nexcept MemoryError:\n    print('BLOCKED MemoryError', len(chunks))",
            any_of(vec![blocked_with(&["MemoryError"]), reason_in(&["out_of_memory"])]),
        ),
        // Disk fill of /sandbox: stops at the tmpfs size.
        attempt("resources", "disk fill /sandbox", disk("/sandbox/fill", fill_limit), blocked_with(enospc)),
        // Disk fill of /tmp.
        attempt("resources", "disk fill /tmp", disk("/tmp/fill", fill_limit), blocked_with(enospc)),
        // Disk fill of /dev/shm.
        attempt("resources", "disk fill /dev/shm", disk("/dev/shm/fill", fill_limit), blocked_with(enospc)),
        // Disk fill of the session directory, which is a directory of the host's disk.
        attempt(
            "resources",
            "disk fill session dir",
            disk("/run/kernel/fill", fill_limit),
            blocked_with(&["ENOSPC", "EFBIG", "EDQUOT", "EACCES", "EPERM", "EROFS"]),
        ),
        // File descriptors until EMFILE.
        attempt(
            "resources",
            "fd exhaustion",
            r#"
fds = []
try:
    while len(fds) < 2_000_000:
        fds.append(os.open('/dev/null', os.O_RDONLY))
    print('ESCAPED opened', len(fds))
except OSError as e:
    print('BLOCKED', ename(e), 'fds=%d' % len(fds))
finally:
    for fd in fds:
        os.close(fd)
"#,
            blocked_with(&["EMFILE"]),
        ),
        // A Python-level CPU spin: interrupted at the timeout, state kept.
        attempt(
            "resources",
            "cpu spin",
            "while True: pass",
            Box::new(|status, body| {
                reason_in(&["timeout"])(status, body)?;
                match body["state_lost"].as_bool() {
                    Some(false) => Ok(()),
                    _ => Err("the interrupted session lost its state".into()),
                }
            }),
        ),
        // A C-level loop that ignores the interrupt: the kernel is replaced.
        attempt("resources", "c-level loop", "sum(range(10**13))", reason_in(&["timeout_restarted"])),
        // 50 MB printed at once: a valid answer (truncated or whole).
        attempt("resources", "huge print", "print('x' * 50_000_000)", valid_answer()),
        // 10 MB printed in 10 000 lines.
        attempt(
            "resources",
            "output flood",
            "for i in range(10_000):\n    print('y' * 1000)",
            valid_answer(),
        ),
        // A 100 MB string as the last expression.
        attempt("resources", "huge result", "'x' * 100_000_000", valid_answer()),
    ]
}
