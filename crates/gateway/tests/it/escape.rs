//! The escape and abuse suite: a table of attacks run from inside real sandboxed kernels, each of which must be
//! positively contained, while a canary session of another user keeps counting correctly the whole time.
//!
//! Each [`Attempt`] runs as a user of its own on a private server; its Python prints a verdict line per probe
//! (`BLOCKED ...` when contained, `ESCAPED ...` when not, `SYSCALL <ret> <errno>` for raw system calls) that its
//! check reads. After every attempt the same user must get an answer again (the session recovers), a long-lived
//! witness session of another user must still have its state, and the attempt's user is released.

use std::fmt::Write as _;
use std::io::ErrorKind;
use std::net::TcpListener;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{user, TestServer, TOKEN};

/// The first uid of the suite's sandboxes (one per slot); host processes of these uids must be out of reach.
const UID_BASE: u32 = 230_000;
/// The suite server's `--max-sandboxes`.
const MAX_SANDBOXES: u32 = 12;
/// The suite server's `--sandbox-size-mib`, `--tmp-size-mib` (and the fixed size of `/dev/shm`).
const TMPFS_MIB: u32 = 64;
/// The suite server's `--pids-limit`.
const PIDS_LIMIT: u32 = 64;

/// What the suite's checks see: the answer's status and JSON body.
type Check = Box<dyn Fn(u16, &Value) -> Result<(), String> + Send + Sync>;
/// A host-side verification run after the attempt's user was released.
type After = Box<dyn Fn() -> Result<(), String> + Send + Sync>;

/// One attack: its code, run as a fresh user, and the check that wants proof of containment.
struct Attempt {
    name: &'static str,
    category: &'static str,
    code: String,
    check: Check,
    after: Option<After>,
}

fn attempt(category: &'static str, name: &'static str, code: impl Into<String>, check: Check) -> Attempt {
    Attempt { name, category, code: code.into(), check, after: None }
}

/// Helpers every attempt's code can use (prepended to it; prints nothing).
const PRELUDE: &str = r#"
import os, sys, errno, ctypes, socket, struct, subprocess, time, signal
libc = ctypes.CDLL(None, use_errno=True)
def ename(e):
    return errno.errorcode.get(e.errno, str(e.errno))
def refuse(action, *args, what=''):
    """Runs action(*args): an OSError is containment (BLOCKED <type> <errno>), success an escape."""
    try:
        result = action(*args)
    except OSError as e:
        print('BLOCKED', type(e).__name__, ename(e), what)
    else:
        print('ESCAPED', what, repr(result)[:200])
def absent(path):
    """The path must not exist, and opening it must fail."""
    if os.path.lexists(path):
        print('ESCAPED exists', path)
        return
    try:
        open(path, 'rb').close()
    except OSError as e:
        print('BLOCKED', type(e).__name__, ename(e), path)
    else:
        print('ESCAPED opened', path)
def syscall(nr, *args):
    """A raw system call: 'SYSCALL <ret> <errno name or ->'."""
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    err = ctypes.get_errno()
    return 'SYSCALL %d %s' % (ret, errno.errorcode.get(err, str(err)) if ret == -1 else '-')
def in_child(fn):
    """Runs fn in a forked child (so a success cannot change the kernel itself); returns what it returned."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(w, str(fn()).encode())
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    out = os.read(r, 4096).decode()
    os.close(r)
    return out or 'CHILD-DIED'
def fill(path, limit_mib, seconds=3.5):
    """Writes 1 MiB chunks to path until an error, limit_mib or the time is up; removes the file."""
    n, chunk, start = 0, b'\0' * (1 << 20), time.monotonic()
    try:
        with open(path, 'wb', buffering=0) as f:
            while n < limit_mib and time.monotonic() - start < seconds:
                f.write(chunk)
                n += 1
        print('ESCAPED wrote', n, 'MiB to', path)
    except OSError as e:
        print('BLOCKED' if n <= limit_mib else 'ESCAPED', type(e).__name__, ename(e), 'after %d MiB' % n, path)
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass
"#;

// ---------------------------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------------------------

/// `result_text` of a 200 answer, or why there is none.
fn ok_text(status: u16, body: &Value) -> Result<String, String> {
    if status != 200 {
        return Err(format!("expected 200, got {status}"));
    }
    Ok(body["result_text"].as_str().unwrap_or_default().to_owned())
}

/// The non-empty lines of a 200 answer's text; at least one.
fn verdict_lines(status: u16, body: &Value) -> Result<Vec<String>, String> {
    let text = ok_text(status, body)?;
    let lines: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    if lines.is_empty() {
        return Err("no verdict printed".into());
    }
    Ok(lines)
}

/// Every verdict line says `BLOCKED`.
fn blocked() -> Check {
    blocked_with(&[])
}

/// Every verdict line says `BLOCKED` and names one of `tokens` (an errno, an exception type...); none: any.
fn blocked_with(tokens: &'static [&'static str]) -> Check {
    Box::new(move |status, body| {
        for line in verdict_lines(status, body)? {
            if !line.starts_with("BLOCKED") {
                return Err(format!("not contained: {line}"));
            }
            if !tokens.is_empty() && !line.split_whitespace().any(|w| tokens.contains(&w)) {
                return Err(format!("blocked, but not as expected ({tokens:?}): {line}"));
            }
        }
        Ok(())
    })
}

/// Every line is `SYSCALL -1 <errno>` with an errno of refusal: EPERM, EACCES or ENOSYS.
fn syscalls_refused() -> Check {
    Box::new(|status, body| {
        for line in verdict_lines(status, body)? {
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["SYSCALL", "-1", "EPERM" | "EACCES" | "ENOSYS"] => {}
                _ => return Err(format!("system call not refused: {line}")),
            }
        }
        Ok(())
    })
}

/// A 400 whose `reason` is one of `reasons`.
fn reason_in(reasons: &'static [&'static str]) -> Check {
    Box::new(move |status, body| {
        let reason = body["reason"].as_str().unwrap_or_default();
        if status == 400 && reasons.contains(&reason) {
            Ok(())
        } else {
            Err(format!("expected a 400 with reason {reasons:?}, got {status} {reason:?}"))
        }
    })
}

/// A 400 of the code raising `ename` (the kernel and its state survive).
fn raised(ename: &'static str) -> Check {
    Box::new(move |status, body| {
        if status == 400 && body["reason"] == "error" && body["error"]["ename"] == ename {
            Ok(())
        } else {
            Err(format!("expected {ename} raised, got {status} {}", body["detail"]))
        }
    })
}

/// Any of `checks` passes.
fn any_of(checks: Vec<Check>) -> Check {
    Box::new(move |status, body| {
        let mut reasons = Vec::new();
        for check in &checks {
            match check(status, body) {
                Ok(()) => return Ok(()),
                Err(reason) => reasons.push(reason),
            }
        }
        Err(reasons.join(" / "))
    })
}

/// `first`, and then the host-side `also`.
fn and_then(first: Check, also: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> Check {
    Box::new(move |status, body| {
        first(status, body)?;
        also()
    })
}

/// The server answered with a well-formed JSON answer: a 200, or a 400 naming its reason.
fn valid_answer() -> Check {
    Box::new(|status, body| {
        if !body.is_object() {
            return Err(format!("not a JSON object answer ({status})"));
        }
        match status {
            200 if body["result_text"].is_string() || body["result_text"].is_null() => Ok(()),
            400 if body["reason"].is_string() && body["detail"].is_string() => Ok(()),
            _ => Err(format!("malformed answer ({status})")),
        }
    })
}

/// Nothing has connected to `listener` (non-blocking).
fn untouched(listener: &TcpListener) -> Result<(), String> {
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
        Err(e) => Err(format!("listener error: {e}")),
        Ok((_, from)) => Err(format!("the host listener got a connection from {from}")),
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The host side: things the attacks aim at
// ---------------------------------------------------------------------------------------------------------------

/// What the attempts target on the host.
struct Targets {
    /// On 127.0.0.1.
    loopback: Arc<TcpListener>,
    /// On ::1, if the host has IPv6.
    loopback6: Option<Arc<TcpListener>>,
    /// On 0.0.0.0 and [::]: any host address would reach them.
    any4: Arc<TcpListener>,
    any6: Option<Arc<TcpListener>>,
    /// The host's own non-loopback addresses (from `ip -o addr`).
    addresses: Vec<String>,
    /// An abstract unix socket of the host's network namespace.
    abstract_name: String,
    _abstract: UnixListener,
    /// `sleep` processes on the host running as each of the sandbox uids.
    sleepers: Arc<Mutex<Vec<Child>>>,
    /// The server's data directory (holds the token file).
    data_dir: String,
    /// A file name the witness planted in its `/sandbox`, `/tmp` and `/dev/shm`.
    marker: String,
    /// Metadata of host files the attacks aim at, to compare after.
    host_files: Arc<Vec<(String, String)>>,
}

fn metadata_line(path: &str) -> String {
    match std::fs::metadata(path) {
        Ok(m) => format!("{:o} {}:{} {} {}", m.mode(), m.uid(), m.gid(), m.len(), m.mtime()),
        Err(e) => format!("error {e}"),
    }
}

impl Targets {
    fn new(data_dir: String) -> Targets {
        let bind = |address: &str| {
            let listener = TcpListener::bind(address).ok()?;
            listener.set_nonblocking(true).unwrap();
            Some(Arc::new(listener))
        };
        let abstract_name = format!("escape-suite-{}", uuid::Uuid::new_v4());
        let abstract_listener =
            UnixListener::bind_addr(&UnixAddr::from_abstract_name(&abstract_name).unwrap()).unwrap();
        abstract_listener.set_nonblocking(true).unwrap();
        let sleepers = (UID_BASE..UID_BASE + MAX_SANDBOXES)
            .map(|uid| {
                Command::new("sleep")
                    .arg("600")
                    .uid(uid)
                    .gid(uid)
                    .stdin(Stdio::null())
                    .spawn()
                    .expect("starting a host process as a sandbox uid")
            })
            .collect();
        let host_files = ["/etc/shadow", "/etc/passwd", "/root/.ssh", "/root/.cargo"]
            .iter()
            .map(|p| (p.to_string(), metadata_line(p)))
            .collect();
        Targets {
            loopback: bind("127.0.0.1:0").expect("a loopback listener"),
            loopback6: bind("[::1]:0"),
            any4: bind("0.0.0.0:0").expect("a wildcard listener"),
            any6: bind("[::]:0"),
            addresses: host_addresses(),
            abstract_name,
            _abstract: abstract_listener,
            sleepers: Arc::new(Mutex::new(sleepers)),
            data_dir,
            marker: format!("escape-marker-{}", uuid::Uuid::new_v4()),
            host_files: Arc::new(host_files),
        }
    }

    /// No host listener got a connection.
    fn listeners_untouched(&self) -> impl Fn() -> Result<(), String> + Send + Sync + 'static {
        let listeners: Vec<Arc<TcpListener>> =
            [Some(self.loopback.clone()), self.loopback6.clone(), Some(self.any4.clone()), self.any6.clone()]
                .into_iter()
                .flatten()
                .collect();
        move || listeners.iter().try_for_each(|l| untouched(l))
    }

    /// Every host process running as a sandbox uid is still alive.
    fn sleepers_alive(&self) -> impl Fn() -> Result<(), String> + Send + Sync + 'static {
        let sleepers = self.sleepers.clone();
        move || {
            for child in sleepers.lock().unwrap().iter_mut() {
                if let Ok(Some(exit)) = child.try_wait() {
                    return Err(format!("host process {} (a sandbox uid) was killed: {exit}", child.id()));
                }
            }
            Ok(())
        }
    }

    /// The host files' metadata is what it was.
    fn host_files_unchanged(&self) -> impl Fn() -> Result<(), String> + Send + Sync + 'static {
        let files = self.host_files.clone();
        move || {
            for (path, before) in files.iter() {
                let now = metadata_line(path);
                if &now != before {
                    return Err(format!("host {path} changed: {before} -> {now}"));
                }
            }
            Ok(())
        }
    }
}

impl Drop for Targets {
    fn drop(&mut self) {
        for child in self.sleepers.lock().unwrap().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The host's non-loopback, non-link-local addresses, read from `ip -o addr`.
fn host_addresses() -> Vec<String> {
    let Ok(out) = Command::new("ip").args(["-o", "addr"]).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (interface, address) = (fields.get(1)?, fields.get(3)?);
            let address = address.split('/').next()?;
            (*interface != "lo" && !address.starts_with("fe80")).then(|| address.to_owned())
        })
        .collect()
}

/// Fills `@NAME@` placeholders of a code template.
fn fill_in(template: &str, values: &[(&str, String)]) -> String {
    values.iter().fold(template.to_owned(), |code, (name, value)| code.replace(&format!("@{name}@"), value))
}

// ---------------------------------------------------------------------------------------------------------------
// The attempts
// ---------------------------------------------------------------------------------------------------------------

fn network_attempts(t: &Targets) -> Vec<Attempt> {
    let connect = r#"
for host, port in @TARGETS@:
    s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)
    s.settimeout(2)
    refuse(s.connect, (host, port), what='%s:%d' % (host, port))
    s.close()
"#;
    let mut loopback = vec![format!("('127.0.0.1', {})", t.loopback.local_addr().unwrap().port())];
    if let Some(l6) = &t.loopback6 {
        loopback.push(format!("('::1', {})", l6.local_addr().unwrap().port()));
    }
    let port4 = t.any4.local_addr().unwrap().port();
    let port6 = t.any6.as_ref().map_or(port4, |l| l.local_addr().unwrap().port());
    let mut others: Vec<String> =
        t.addresses.iter().map(|a| format!("('{a}', {})", if a.contains(':') { port6 } else { port4 })).collect();
    // 0.0.0.0 means "this host" to connect().
    others.push(format!("('0.0.0.0', {port4})"));
    let refused = &["ECONNREFUSED", "ENETUNREACH", "EHOSTUNREACH", "EADDRNOTAVAIL"];
    vec![
        // TCP to listeners on the host's loopback (IPv4 and IPv6): they must get nothing.
        attempt(
            "network",
            "host loopback listener",
            fill_in(connect, &[("TARGETS", format!("[{}]", loopback.join(", ")))]),
            and_then(blocked_with(refused), t.listeners_untouched()),
        ),
        // TCP to a wildcard listener through each of the host's other addresses.
        attempt(
            "network",
            "host addresses",
            fill_in(connect, &[("TARGETS", format!("[{}]", others.join(", ")))]),
            and_then(blocked_with(refused), t.listeners_untouched()),
        ),
        // An abstract unix socket of the host (abstract names are per network namespace).
        attempt(
            "network",
            "host abstract unix socket",
            fill_in(
                "s = socket.socket(socket.AF_UNIX)\nrefuse(s.connect, '\\0@NAME@')",
                &[("NAME", t.abstract_name.clone())],
            ),
            blocked_with(&["ECONNREFUSED", "ENOENT"]),
        ),
        // DNS resolution of a public name.
        attempt("network", "dns lookup", "refuse(socket.getaddrinfo, 'pypi.org', 443)", blocked_with(&["gaierror"])),
        // A UDP datagram to a public resolver (only `lo` exists: it fails locally, nothing leaves).
        attempt(
            "network",
            "udp to 8.8.8.8",
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nrefuse(s.sendto, b'\\0', ('8.8.8.8', 53))",
            blocked_with(&["ENETUNREACH", "EHOSTUNREACH"]),
        ),
        // A raw IP socket.
        attempt(
            "network",
            "raw socket",
            "refuse(socket.socket, socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)",
            blocked_with(&["EPERM", "EACCES", "EAFNOSUPPORT", "ENOTSUP", "EOPNOTSUPP"]),
        ),
        // A packet socket (link layer).
        attempt(
            "network",
            "packet socket",
            "refuse(socket.socket, socket.AF_PACKET, socket.SOCK_RAW, 0)",
            blocked_with(&["EPERM", "EACCES", "EAFNOSUPPORT", "ENOTSUP", "EOPNOTSUPP"]),
        ),
        // A netlink socket adding an address to `lo`: creating it or the change must be refused.
        attempt(
            "network",
            "netlink route change",
            r#"
try:
    nl = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
except OSError as e:
    print('BLOCKED', type(e).__name__, ename(e), 'socket')
else:
    ifa = struct.pack('=BBBBI', socket.AF_INET, 8, 0, 0, 1)
    attrs = struct.pack('=HH4s', 8, 2, socket.inet_aton('10.9.9.9')) + struct.pack('=HH4s', 8, 1, socket.inet_aton('10.9.9.9'))
    body = ifa + attrs
    nl.send(struct.pack('=IHHII', 16 + len(body), 20, 1 | 4 | 0x400 | 0x200, 1, 0) + body)
    reply = nl.recv(4096)
    code = struct.unpack_from('=i', reply, 16)[0]
    print('BLOCKED' if code < 0 else 'ESCAPED', 'netlink', errno.errorcode.get(-code, code))
"#,
            blocked_with(&["EPERM", "EACCES", "EAFNOSUPPORT", "ENOTSUP", "EOPNOTSUPP"]),
        ),
        // Binding a privileged port.
        attempt(
            "network",
            "privileged port",
            "s = socket.socket()\nrefuse(s.bind, ('0.0.0.0', 80))",
            blocked_with(&["EACCES", "EPERM"]),
        ),
    ]
}

fn file_attempts(t: &Targets) -> Vec<Attempt> {
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

fn process_attempts(t: &Targets) -> Vec<Attempt> {
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

fn privilege_attempts() -> Vec<Attempt> {
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

fn resource_attempts() -> Vec<Attempt> {
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

fn kernel_attempts() -> Vec<Attempt> {
    let calls: &[(&'static str, &'static str)] = &[
        // bpf(BPF_MAP_CREATE) of an array map.
        ("bpf", "attr = ctypes.create_string_buffer(72)\nstruct.pack_into('IIII', attr, 0, 2, 4, 4, 1)\nprint(syscall(321, 0, attr, 72))"),
        // perf_event_open of a software clock on itself.
        ("perf_event_open", "attr = ctypes.create_string_buffer(128)\nstruct.pack_into('IIQ', attr, 0, 1, 64, 0)\nstruct.pack_into('Q', attr, 40, 1 | 32 | 64)\nprint(syscall(298, attr, 0, -1, -1, 0))"),
        // keyctl(KEYCTL_GET_KEYRING_ID, session keyring, create).
        ("keyctl", "print(syscall(250, 0, -3, 1))"),
        // add_key of a user key to the process keyring.
        ("add_key", "print(syscall(248, b'user', b'escape', b'x', 1, -2))"),
        // userfaultfd, plain and user-mode-only.
        ("userfaultfd", "print(syscall(323, 0o2000000))\nprint(syscall(323, 0o2000000 | 1))"),
        // io_uring_setup with one entry.
        ("io_uring_setup", "params = ctypes.create_string_buffer(120)\nprint(syscall(425, 1, params))"),
        // kexec_load of nothing.
        ("kexec_load", "print(syscall(246, 0, 0, None, 0))"),
        // init_module of an empty image.
        ("init_module", "print(syscall(175, None, 0, b''))"),
        // finit_module from /dev/null.
        ("finit_module", "print(syscall(313, os.open('/dev/null', os.O_RDONLY), b'', 0))"),
        // personality(ADDR_NO_RANDOMIZE) (restored if it worked).
        ("personality", "line = syscall(135, 0x0040000)\nprint(line)\nif not line.startswith('SYSCALL -1'):\n    libc.syscall(ctypes.c_long(135), ctypes.c_long(int(line.split()[1])))"),
        // open_by_handle_at with a forged handle.
        ("open_by_handle_at", "handle = ctypes.create_string_buffer(16)\nstruct.pack_into('Ii', handle, 0, 8, 1)\nprint(syscall(304, -100, handle, 0))"),
        // setns into its own mount and network namespaces.
        ("setns", "print(syscall(308, os.open('/proc/self/ns/mnt', os.O_RDONLY), 0))\nprint(syscall(308, os.open('/proc/self/ns/net', os.O_RDONLY), 0))"),
        // unshare(CLONE_NEWNS | CLONE_NEWNET).
        ("unshare", "print(syscall(272, 0x20000 | 0x40000000))"),
        // Keyctl through the x32 ABI number (a classic filter bypass).
        ("x32 keyctl", "print(syscall(0x40000000 | 250, 0, -3, 1))"),
        // fsopen of a tmpfs (the new mount API).
        ("fsopen", "print(syscall(430, b'tmpfs', 0))"),
        // syslog(SYSLOG_ACTION_READ_ALL): the kernel log.
        ("syslog", "buf = ctypes.create_string_buffer(4096)\nprint(syscall(103, 3, buf, 4096))"),
        // acct turning on process accounting.
        ("acct", "print(syscall(163, b'/tmp/acct'))"),
    ];
    calls.iter().map(|(name, code)| attempt("kernel", name, *code, syscalls_refused())).collect()
}

// ---------------------------------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------------------------------

/// A client that reports transport failures instead of panicking.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    url: String,
}

impl Client {
    async fn execute(&self, user: &str, code: &str) -> Result<(u16, Value), String> {
        self.post("/execute", json!({ "user_uuid": user, "code": code })).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<(u16, Value), String> {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .header("X-Auth-Token", TOKEN)
            .json(&body)
            .timeout(Duration::from_secs(120))
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| format!("reading the answer failed: {e}"))?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::String(text))))
    }

    /// Runs `code` as `who` and wants exactly `expected` as `result_text`.
    async fn expect(&self, who: &str, code: &str, expected: &str) -> Result<(), String> {
        let (status, body) = self.execute(who, code).await?;
        let text = body["result_text"].as_str().unwrap_or_default();
        if status == 200 && text == expected {
            Ok(())
        } else {
            Err(format!("{code:?} gave {status} {}", brief(&body)))
        }
    }
}

/// A short description of an answer for messages.
fn brief(body: &Value) -> String {
    let mut out = String::new();
    if let Some(reason) = body["reason"].as_str() {
        let _ = write!(out, "reason={reason} ");
    }
    if let Some(detail) = body["detail"].as_str() {
        let _ = write!(out, "detail={:?} ", cut(detail, 160));
    }
    if body["output_truncated"] == true {
        out.push_str("output_truncated ");
    }
    match body["result_text"].as_str() {
        Some(text) if text.len() > 300 => {
            let _ = write!(out, "text={:?}... ({} bytes)", cut(text, 120), text.len());
        }
        Some(text) => {
            let _ = write!(out, "text={text:?}");
        }
        None if !body.is_object() => {
            let _ = write!(out, "non-JSON answer {:?}", cut(&body.to_string(), 200));
        }
        None => {}
    }
    out.trim_end().to_owned()
}

fn cut(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// The canary's tally.
#[derive(Debug, Default)]
struct CanaryStats {
    answers: u64,
    wrong: u64,
    failures: u64,
    problems: Vec<String>,
}

/// Another user counting `n += 1; n` until `stop`; every answer must be the next integer.
async fn canary(client: Client, stop: Arc<AtomicBool>) -> CanaryStats {
    let who = user("canary");
    let mut stats = CanaryStats::default();
    if let Err(problem) = client.expect(&who, "n = 0", "").await {
        stats.failures += 1;
        stats.problems.push(problem);
    }
    let mut expected = 1u64;
    while !stop.load(Ordering::Relaxed) {
        let answer = client.execute(&who, "n += 1; n").await;
        stats.answers += 1;
        match answer {
            Ok((200, body)) => {
                let text = body["result_text"].as_str().unwrap_or_default();
                if text == expected.to_string() {
                    expected += 1;
                } else {
                    stats.wrong += 1;
                    stats.problems.push(format!("wanted {expected}, got {text:?}"));
                    expected = text.parse::<u64>().map_or(expected + 1, |n| n + 1);
                }
            }
            Ok((status, body)) => {
                stats.failures += 1;
                stats.problems.push(format!("{status} {}", brief(&body)));
            }
            Err(problem) => {
                stats.failures += 1;
                stats.problems.push(problem);
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stats
}

/// Runs one attempt as a fresh user: the check, then recovery of that user, the witness's state, release.
async fn run(client: &Client, attempt: &Attempt, witness: &str, witness_count: &mut u64) -> Result<String, String> {
    let who = user(&format!("escape-{}", attempt.name.replace([' ', '/', '*'], "-")));
    let (status, body) = client.execute(&who, &format!("{PRELUDE}\n{}", attempt.code)).await?;
    let note = brief(&body);
    let verdict = (attempt.check)(status, &body).map_err(|reason| format!("{reason} [{note}]"));
    let recovered = client
        .expect(&who, "'alive'", "'alive'")
        .await
        .map_err(|e| format!("the attacker's session did not recover: {e}"));
    *witness_count += 1;
    let count = witness_count.to_string();
    let witness_ok = client
        .expect(witness, "witness += 1; witness", &count)
        .await
        .map_err(|e| format!("the witness session was harmed: {e}"));
    let released = match client.post("/release", json!({ "user_uuid": who })).await {
        Ok((200, _)) => Ok(()),
        Ok((status, body)) => Err(format!("release gave {status} {body}")),
        Err(e) => Err(e),
    };
    verdict?;
    recovered?;
    witness_ok?;
    released?;
    if let Some(after) = &attempt.after {
        after()?;
    }
    Ok(note)
}

/// Every attack in the table, one after another on a private server, with the canary counting throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_and_abuse_suite() {
    let started = Instant::now();
    let uid_base = UID_BASE.to_string();
    let max = MAX_SANDBOXES.to_string();
    let tmpfs = TMPFS_MIB.to_string();
    let pids = PIDS_LIMIT.to_string();
    let server = TestServer::start(&[
        "--warm-sandboxes",
        "2",
        "--max-sandboxes",
        &max,
        "--execution-timeout-secs",
        "5",
        "--interrupt-grace-secs",
        "1",
        "--memory-limit-mib",
        "512",
        "--pids-limit",
        &pids,
        "--sandbox-size-mib",
        &tmpfs,
        "--tmp-size-mib",
        &tmpfs,
        "--uid-base",
        &uid_base,
    ]);
    server.client_blocking_wait_ready();
    let data_dir = server.data_dir.display().to_string();
    // The harness passes the token in the environment; put the file there too, as a target.
    std::fs::write(server.data_dir.join("auth_token.txt"), TOKEN).unwrap();
    let targets = Targets::new(data_dir);
    let client = Client { http: reqwest::Client::new(), url: server.url.clone() };

    // The witness: another session with state, and a marker in each of its writable places.
    let witness = user("witness");
    let plant = fill_in(
        "witness = 0\nfor d in ('/sandbox', '/tmp', '/dev/shm'):\n    open(d + '/@MARKER@', 'w').write('secret')",
        &[("MARKER", targets.marker.clone())],
    );
    client.expect(&witness, &plant, "").await.expect("planting the witness");

    let stop = Arc::new(AtomicBool::new(false));
    let canary_task = tokio::spawn(canary(client.clone(), stop.clone()));

    let attempts: Vec<Attempt> = [
        network_attempts(&targets),
        file_attempts(&targets),
        process_attempts(&targets),
        privilege_attempts(),
        resource_attempts(),
        kernel_attempts(),
    ]
    .into_iter()
    .flatten()
    .collect();

    let mut witness_count = 0;
    let mut failed = Vec::new();
    for attempt in &attempts {
        let at = Instant::now();
        let outcome = run(&client, attempt, &witness, &mut witness_count).await;
        let secs = at.elapsed().as_secs_f64();
        match &outcome {
            Ok(note) => {
                println!("escape: contained  {:<10} {:<28} {secs:5.1}s  {note}", attempt.category, attempt.name)
            }
            Err(reason) => {
                println!("escape: NOT CONTAINED {:<10} {:<28} {secs:5.1}s  {reason}", attempt.category, attempt.name);
                failed.push(format!("{}/{}: {reason}", attempt.category, attempt.name));
            }
        }
    }

    stop.store(true, Ordering::Relaxed);
    let stats = canary_task.await.expect("the canary task");
    let total = attempts.len();
    println!(
        "escape suite: {}/{total} attempts contained in {:.0}s",
        total - failed.len(),
        started.elapsed().as_secs_f64()
    );
    for failure in &failed {
        println!("  not contained: {failure}");
    }
    println!(
        "canary: {} answers, {} wrong, {} failures {:?}",
        stats.answers,
        stats.wrong,
        stats.failures,
        stats.problems.iter().take(5).collect::<Vec<_>>()
    );
    assert!(total >= 40, "the suite has {total} attempts");
    assert!(failed.is_empty(), "{} attempts not contained", failed.len());
    assert!(stats.answers > 0, "the canary never ran");
    assert_eq!((stats.wrong, stats.failures), (0, 0), "the canary was disturbed: {:?}", stats.problems);
}
