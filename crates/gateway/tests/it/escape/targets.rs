//! The host side the attacks aim at: listeners, abstract socket, processes of the sandbox uids, host files.

use std::net::TcpListener;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixListener};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use super::checks::untouched;
use super::MAX_SANDBOXES;

/// What the attempts target on the host.
pub(super) struct Targets {
    /// On 127.0.0.1.
    pub(super) loopback: Arc<TcpListener>,
    /// On ::1, if the host has IPv6.
    pub(super) loopback6: Option<Arc<TcpListener>>,
    /// On 0.0.0.0 and [::]: any host address would reach them.
    pub(super) any4: Arc<TcpListener>,
    pub(super) any6: Option<Arc<TcpListener>>,
    /// The host's own non-loopback addresses (from `ip -o addr`).
    pub(super) addresses: Vec<String>,
    /// An abstract unix socket of the host's network namespace.
    pub(super) abstract_name: String,
    _abstract: UnixListener,
    /// `sleep` processes on the host running as each of the sandbox uids.
    sleepers: Arc<Mutex<Vec<Child>>>,
    /// The server's data directory (holds the token file).
    pub(super) data_dir: String,
    /// A file name the witness planted in its `/sandbox`, `/tmp` and `/dev/shm`.
    pub(super) marker: String,
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
    pub(super) fn new(data_dir: String, uid_base: u32) -> Targets {
        let bind = |address: &str| {
            let listener = TcpListener::bind(address).ok()?;
            listener.set_nonblocking(true).unwrap();
            Some(Arc::new(listener))
        };
        let abstract_name = format!("escape-suite-{}", uuid::Uuid::new_v4());
        let abstract_listener =
            UnixListener::bind_addr(&UnixAddr::from_abstract_name(&abstract_name).unwrap()).unwrap();
        abstract_listener.set_nonblocking(true).unwrap();
        let sleepers = (uid_base..uid_base + MAX_SANDBOXES)
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
    pub(super) fn listeners_untouched(&self) -> impl Fn() -> Result<(), String> + Send + Sync + 'static {
        let listeners: Vec<Arc<TcpListener>> =
            [Some(self.loopback.clone()), self.loopback6.clone(), Some(self.any4.clone()), self.any6.clone()]
                .into_iter()
                .flatten()
                .collect();
        move || listeners.iter().try_for_each(|l| untouched(l))
    }

    /// Every host process running as a sandbox uid is still alive.
    pub(super) fn sleepers_alive(&self) -> impl Fn() -> Result<(), String> + Send + Sync + 'static {
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
    pub(super) fn host_files_unchanged(&self) -> impl Fn() -> Result<(), String> + Send + Sync + 'static {
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
pub(super) fn fill_in(template: &str, values: &[(&str, String)]) -> String {
    values.iter().fold(template.to_owned(), |code, (name, value)| code.replace(&format!("@{name}@"), value))
}
