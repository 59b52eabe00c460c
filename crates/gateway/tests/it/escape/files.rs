//! The file attempts: host secrets (repository, toolchain, ssh keys, shadow, the token), other sessions' files,
//! read-only places, link tricks, `/proc`, `/sys`, `/dev` and device nodes.

use crate::util::TOKEN;

use super::checks::{blocked, blocked_with, verdict_lines};
use super::targets::{fill_in, Targets};
use super::{attempt, Attempt};

pub(super) fn attempts(t: &Targets) -> Vec<Attempt> {
    let absent_all = |paths: &[&str]| paths.iter().map(|p| format!("absent({p:?})\n")).collect::<String>();
    let not_there = &["ENOENT", "EACCES"];
    let repo = env!("CARGO_MANIFEST_DIR");
    let token_file = format!("{}/auth_token.txt", t.data_dir);
    vec![
        // The repository the server was built from.
        attempt(
            "files",
            "repository",
            absent_all(&[repo, &format!("{repo}/Cargo.toml"), "/work"]),
            blocked_with(not_there),
        ),
        // The host's Rust toolchain.
        attempt("files", "/root/.cargo", absent_all(&["/root/.cargo", "/root/.cargo/bin"]), blocked_with(not_there)),
        // The host's ssh keys.
        attempt("files", "/root/.ssh", absent_all(&["/root/.ssh", "/root/.ssh/authorized_keys"]), blocked_with(not_there)),
        // The host's password hashes.
        attempt("files", "/etc/shadow", absent_all(&["/etc/shadow", "/etc/gshadow"]), blocked_with(not_there)),
        // The server's token file and data directory.
        attempt(
            "files",
            "token file",
            absent_all(&[&token_file, &t.data_dir]),
            blocked_with(not_there),
        ),
        // The token in the kernel's environment, any visible process's environment or the session directory.
        attempt(
            "files",
            "token in environment",
            fill_in(
                r#"
token, found = '@TOKEN@', []
found += ['env:' + k for k, v in os.environ.items() if token in v or token in k]
for p in os.listdir('/proc'):
    for part in ('environ', 'cmdline'):
        try:
            if p.isdigit() and token.encode() in open('/proc/%s/%s' % (p, part), 'rb').read():
                found.append(p + '/' + part)
        except OSError:
            pass
for name in os.listdir('/run/kernel'):
    try:
        if token.encode() in open('/run/kernel/' + name, 'rb').read():
            found.append(name)
    except OSError:
        pass
print('BLOCKED' if not found else 'ESCAPED', 'token-found-in', found)
"#,
                &[("TOKEN", TOKEN.to_owned())],
            ),
            blocked(),
        ),
        // Another session's files: the witness's marker in its /sandbox, /tmp and /dev/shm, searched everywhere.
        attempt(
            "files",
            "other session's files",
            fill_in(
                r#"
name, hits = '@MARKER@', []
# The big read-only binds of host directories are skipped, unless something is mounted inside them.
skip = ['/usr', sys.base_prefix, '/opt/kernel-env', '/proc']
mounts = [l.split()[4] for l in open('/proc/self/mountinfo')]
nested = [m for m in mounts if any(m.startswith(p + '/') for p in skip)]
prune = sum([['-path', p, '-prune', '-o'] for p in skip], [])
found = subprocess.run(['find', '/'] + nested + prune + ['-name', name, '-print'], capture_output=True, text=True, timeout=4)
hits += found.stdout.split()
for p in os.listdir('/proc'):
    for d in ('sandbox', 'tmp', 'dev/shm'):
        if p.isdigit() and os.path.lexists('/proc/%s/root/%s/%s' % (p, d, name)):
            hits.append(p + '/' + d)
searched = sum(1 for _ in os.scandir('/'))
print('BLOCKED' if not hits and searched else 'ESCAPED', 'hits', hits)
"#,
                &[("MARKER", t.marker.clone())],
            ),
            blocked(),
        ),
        // Writing outside the writable mounts.
        attempt(
            "files",
            "write read-only places",
            r#"
for path in ['/usr/escape', '/escape', '/etc/escape', '/opt/kernel-env/escape', '/proc/escape']:
    refuse(lambda p=path: os.open(p, os.O_WRONLY | os.O_CREAT, 0o644), what=path)
refuse(lambda: os.open('/etc/passwd', os.O_WRONLY | os.O_APPEND), what='/etc/passwd')
refuse(lambda: os.open(sys.executable, os.O_WRONLY), what=sys.executable)
"#,
            blocked_with(&["EROFS", "EACCES", "EPERM", "ETXTBSY", "ENOENT"]),
        ),
        // Symlinks from /sandbox to host secrets and through pid 1's root.
        attempt(
            "files",
            "symlink tricks",
            r#"
for i, target in enumerate(['/etc/shadow', '/proc/1/root/etc/shadow', '/proc/1/root/work', '/proc/1/cwd/..']):
    link = '/sandbox/link%d' % i
    os.symlink(target, link)
    try:
        if os.path.isdir(link):
            same = sorted(os.listdir(link)) == sorted(os.listdir('/'))
            print('BLOCKED same-root' if same else 'ESCAPED listed', target)
        else:
            print('ESCAPED read', len(open(link, 'rb').read()), 'bytes of', target)
    except OSError as e:
        print('BLOCKED', type(e).__name__, ename(e), target)
"#,
            blocked_with(&["ENOENT", "EACCES", "same-root"]),
        ),
        // Hard links to files of another uid on other mounts (/etc, /usr) into /sandbox, /tmp and the session dir.
        attempt(
            "files",
            "hard links",
            r#"
for source, target in [('/etc/passwd', '/sandbox/x'), ('/usr/bin/su', '/tmp/su'), ('/usr/bin/su', '/run/kernel/su'), ('/run/kernel/kernel.json', '/tmp/k')]:
    refuse(os.link, source, target, what=source + '->' + target)
"#,
            blocked_with(&["EXDEV", "EPERM", "EACCES"]),
        ),
        // pid 1's root directory: invisible, refused, or just the sandbox's own root.
        attempt(
            "files",
            "/proc/1/root",
            r#"
try:
    entries = os.listdir('/proc/1/root')
except OSError as e:
    print('BLOCKED', type(e).__name__, ename(e))
else:
    print('BLOCKED same-root' if sorted(entries) == sorted(os.listdir('/')) else 'ESCAPED', entries)
"#,
            blocked_with(&["ENOENT", "EACCES", "same-root"]),
        ),
        // Other processes' environments (pid 1 and any process of another uid).
        attempt(
            "files",
            "/proc/*/environ",
            r#"
me, readable = os.getuid(), []
for p in os.listdir('/proc'):
    try:
        if p.isdigit() and os.stat('/proc/' + p).st_uid != me:
            open('/proc/%s/environ' % p, 'rb').read()
            readable.append(p)
    except OSError:
        pass
print('BLOCKED' if not readable else 'ESCAPED', 'foreign environ readable:', readable)
refuse(lambda: open('/proc/1/environ', 'rb').read(), what='pid 1')
"#,
            blocked_with(&["foreign", "ENOENT", "EACCES", "EPERM"]),
        ),
        // /sys: not mounted, or empty.
        attempt(
            "files",
            "/sys",
            "entries = os.listdir('/sys') if os.path.isdir('/sys') else []\nprint('BLOCKED' if not entries else 'ESCAPED', entries)",
            blocked(),
        ),
        // /dev holds only the harmless devices.
        attempt(
            "files",
            "/dev contents",
            r#"
allowed = {'null', 'zero', 'full', 'random', 'urandom', 'tty', 'fd', 'stdin', 'stdout', 'stderr', 'shm'}
extra = sorted(set(os.listdir('/dev')) - allowed)
print('BLOCKED' if not extra else 'ESCAPED', 'extra', extra)
"#,
            blocked(),
        ),
        // Block devices and kernel memory: absent.
        attempt(
            "files",
            "block devices",
            absent_all(&["/dev/vda", "/dev/sda", "/dev/nvme0n1", "/dev/mem", "/dev/kmem", "/dev/kmsg", "/dev/port"]),
            blocked_with(not_there),
        ),
        // Creating device nodes.
        attempt(
            "files",
            "mknod",
            r#"
import stat
refuse(os.mknod, '/sandbox/vda', stat.S_IFBLK | 0o600, os.makedev(253, 0), what='block')
refuse(os.mknod, '/tmp/mem', stat.S_IFCHR | 0o600, os.makedev(1, 1), what='char')
"#,
            blocked_with(&["EPERM", "EACCES"]),
        ),
        // Symlinks planted in the session directory (a host directory) to host files, then the session released:
        // the host files must be untouched.
        Attempt {
            after: Some(Box::new(t.host_files_unchanged())),
            ..attempt(
                "files",
                "session dir symlinks",
                r#"
for name, target in [('escape-shadow', '/etc/shadow'), ('escape-root', '/root'), ('escape-passwd', '/etc/passwd')]:
    try:
        os.symlink(target, '/run/kernel/' + name)
        print('PLANTED', name)
    except OSError as e:
        print('BLOCKED', type(e).__name__, ename(e), name)
"#,
                Box::new(|status, body| {
                    for line in verdict_lines(status, body)? {
                        if !line.starts_with("PLANTED") && !line.starts_with("BLOCKED") {
                            return Err(format!("unexpected: {line}"));
                        }
                    }
                    Ok(())
                }),
            )
        },
    ]
}
