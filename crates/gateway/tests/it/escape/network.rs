//! The network attempts: host listeners (loopback, host addresses, an abstract unix socket), DNS, UDP out, raw,
//! packet and netlink sockets, privileged ports.

use super::checks::{and_then, blocked_with};
use super::targets::{fill_in, Targets};
use super::{attempt, Attempt};

pub(super) fn attempts(t: &Targets) -> Vec<Attempt> {
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
