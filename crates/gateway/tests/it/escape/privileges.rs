//! The privilege attempts: setuid binaries and mounts (su, passwd), capabilities, user namespaces, chroot, mount,
//! setuid 0.

use super::checks::{blocked, blocked_with, syscalls_refused};
use super::{attempt, Attempt};

pub(super) fn attempts() -> Vec<Attempt> {
    let setuid_binary = |argv: &str| {
        format!(
            r#"
uid = os.getuid()
try:
    r = subprocess.run({argv}, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=4)
except FileNotFoundError:
    print('BLOCKED absent')
else:
    root = r.returncode == 0 or '0' in r.stdout.split()
    said = ' '.join((r.stderr or r.stdout).split())[:80]
    print('ESCAPED' if root or os.getuid() != uid else 'BLOCKED', 'rc=%d' % r.returncode, said)
"#
        )
    };
    vec![
        // setuid bits are inert: /usr is nosuid and the kernel has no_new_privs.
        attempt(
            "privileges",
            "setuid bits inert",
            r#"
nosuid = bool(os.statvfs('/usr/bin').f_flag & os.ST_NOSUID)
nnp = [l.split()[1] for l in open('/proc/self/status') if l.startswith('NoNewPrivs')]
print('BLOCKED' if nosuid and nnp == ['1'] else 'ESCAPED', 'nosuid', nosuid, 'no_new_privs', nnp)
"#,
            blocked(),
        ),
        // su to root.
        attempt("privileges", "su", setuid_binary("['su', 'root', '-c', 'id -u']"), blocked()),
        // The setuid mount binary.
        attempt(
            "privileges",
            "setuid mount",
            setuid_binary("['mount', '-t', 'tmpfs', 'none', '/tmp']"),
            blocked(),
        ),
        // passwd deleting root's password.
        attempt("privileges", "passwd", setuid_binary("['passwd', '-d', 'root']"), blocked()),
        // Capabilities: none in any set, no_new_privs set.
        attempt(
            "privileges",
            "capabilities",
            r#"
caps = {l.split(':')[0]: l.split()[1] for l in open('/proc/self/status') if l.startswith('Cap')}
print('BLOCKED' if set(caps.values()) == {'0000000000000000'} and len(caps) == 5 else 'ESCAPED', caps)
"#,
            blocked(),
        ),
        // unshare(CLONE_NEWUSER) via ctypes, in a child (to be refused by the seccomp filter).
        attempt(
            "privileges",
            "unshare user namespace",
            "print(in_child(lambda: syscall(272, 0x10000000)))\nprint(in_child(lambda: syscall(272, 0x10000000 | 0x20000)))",
            syscalls_refused(),
        ),
        // `unshare -r` (root in a new user namespace).
        attempt(
            "privileges",
            "unshare -r",
            setuid_binary("['unshare', '-r', 'id', '-u']"),
            blocked(),
        ),
        // chroot.
        attempt("privileges", "chroot", "refuse(os.chroot, '/tmp')", blocked_with(&["EPERM"])),
        // mount(2) a tmpfs.
        attempt(
            "privileges",
            "mount syscall",
            "print(syscall(165, b'none', b'/tmp', b'tmpfs', 0, None))",
            syscalls_refused(),
        ),
        // setuid(0), setgid(0), setgroups([0]).
        attempt(
            "privileges",
            "setuid 0",
            "refuse(os.setuid, 0, what='setuid')\nrefuse(os.setgid, 0, what='setgid')\nrefuse(os.setgroups, [0], what='setgroups')",
            blocked_with(&["EPERM"]),
        ),
    ]
}
