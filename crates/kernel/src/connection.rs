//! [`ConnectionInfo`]: where a kernel's ipc sockets live, its signing key, and the connection file it reads.

use std::fmt;
use std::path::{Path, PathBuf};

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::error::Channel;

/// File-name prefix of the socket files: endpoint `ipc://<dir>/k-<port>`.
const SOCKET_PREFIX: &str = "k";

/// How to reach one kernel: the content of a Jupyter connection file, with `ip` as seen by this process.
///
/// For `transport = "ipc"`, Jupyter's convention is that `ip` is a path prefix and each port is a suffix:
/// the shell socket is the file `<ip>-<shell_port>`.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// Always `"ipc"` here: no TCP port races, and network namespaces do not get in the way.
    pub transport: String,
    /// Socket path prefix on this side of the sandbox (host path), e.g. `/run/sessions/42/k`.
    pub ip: String,
    /// Suffix of the shell socket file.
    pub shell_port: u16,
    /// Suffix of the iopub socket file.
    pub iopub_port: u16,
    /// Suffix of the stdin socket file (unused by this client, but the kernel binds it).
    pub stdin_port: u16,
    /// Suffix of the control socket file.
    pub control_port: u16,
    /// Suffix of the heartbeat socket file (unused by this client; process exit tells us about death).
    pub hb_port: u16,
    /// HMAC key, UTF-8 bytes used as is (Jupyter does not hex-decode it).
    pub key: String,
    /// Always `"hmac-sha256"`.
    pub signature_scheme: String,
    /// Kernel name, informational.
    pub kernel_name: String,
}

impl ConnectionInfo {
    /// New ipc connection with a random 32-byte hex key; sockets at `<host_dir>/k-<port>`.
    ///
    /// Keep `host_dir` short: a Unix socket path is limited to 107 bytes.
    pub fn ipc(host_dir: &Path) -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        ConnectionInfo {
            transport: "ipc".to_owned(),
            ip: prefix_in(host_dir),
            shell_port: 1,
            iopub_port: 2,
            stdin_port: 3,
            control_port: 4,
            hb_port: 5,
            key: hex::encode(key),
            signature_scheme: "hmac-sha256".to_owned(),
            kernel_name: "python3".to_owned(),
        }
    }

    /// The JSON connection file as the kernel must see it, when `host_dir` is mounted at `dir_in_kernel` inside its sandbox.
    pub fn connection_file_json(&self, dir_in_kernel: &Path) -> String {
        let seen_by_kernel = ConnectionInfo { ip: prefix_in(dir_in_kernel), ..self.clone() };
        serde_json::to_string_pretty(&seen_by_kernel).expect("ConnectionInfo serializes to JSON")
    }

    /// The ZeroMQ endpoint of `channel` on this side, e.g. `ipc:///run/sessions/42/k-1`.
    pub fn endpoint(&self, channel: Channel) -> String {
        let port = match channel {
            Channel::Shell => self.shell_port,
            Channel::IoPub => self.iopub_port,
            Channel::Control => self.control_port,
        };
        format!("{}://{}-{}", self.transport, self.ip, port)
    }

    /// The socket file of `channel` on this side (ipc only), used to wait for the kernel to bind.
    pub fn socket_path(&self, channel: Channel) -> Option<PathBuf> {
        let endpoint = self.endpoint(channel);
        endpoint.strip_prefix("ipc://").map(PathBuf::from)
    }
}

/// `<dir>/k` as a string (socket paths must be valid UTF-8 in endpoints).
fn prefix_in(dir: &Path) -> String {
    dir.join(SOCKET_PREFIX).to_string_lossy().into_owned()
}

/// Redacts the key: connection info ends up in logs.
impl fmt::Debug for ConnectionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectionInfo")
            .field("transport", &self.transport)
            .field("ip", &self.ip)
            .field("shell_port", &self.shell_port)
            .field("iopub_port", &self.iopub_port)
            .field("control_port", &self.control_port)
            .field("key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the ipc naming convention: `ip` is a prefix, ports are suffixes, and the kernel sees its own mount path.
    #[test]
    fn connection_file_uses_kernel_side_path() {
        let info = ConnectionInfo::ipc(Path::new("/host/s1"));
        assert_eq!(info.endpoint(Channel::Shell), "ipc:///host/s1/k-1");
        assert_eq!(info.socket_path(Channel::IoPub).unwrap(), Path::new("/host/s1/k-2"));
        let json: serde_json::Value = serde_json::from_str(&info.connection_file_json(Path::new("/session"))).unwrap();
        assert_eq!(json["ip"], "/session/k");
        assert_eq!(json["transport"], "ipc");
        assert_eq!(json["signature_scheme"], "hmac-sha256");
        assert_eq!(json["key"].as_str().unwrap().len(), 64);
        assert_eq!(json["control_port"], 4);
    }

    /// Pins that keys are random per connection and never printed by Debug.
    #[test]
    fn keys_are_random_and_redacted() {
        let a = ConnectionInfo::ipc(Path::new("/x"));
        let b = ConnectionInfo::ipc(Path::new("/x"));
        assert_ne!(a.key, b.key);
        assert!(!format!("{a:?}").contains(&a.key));
    }
}
