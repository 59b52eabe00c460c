//! Sockets: connecting to a kernel's ipc endpoints (waiting for the socket files to appear), and sending and
//! receiving signed messages on them.

use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use zeromq::{Socket, SocketOptions, SocketRecv, SocketSend};

use crate::connection::ConnectionInfo;
use crate::error::{Channel, Error};
use crate::wire::{Header, Incoming, Signer};

/// How often to look for a socket file the kernel has not created yet.
const SOCKET_FILE_POLL: Duration = Duration::from_millis(5);

/// Connects a new socket of type `S` to `channel`, waiting until `deadline` for the kernel to bind it.
///
/// We poll for the socket file ourselves (every 5 ms) because zeromq's own retry backs off exponentially,
/// which would add up to a second to a sandboxed kernel's start. Each look is a plain `stat` on this task: the
/// socket files are on local storage (the session's own tmpfs), where it does not block, and handing it to the
/// blocking pool cost two thread wake-ups per look. (Waking on an inotify event instead was measured slower: a
/// connection made the moment the kernel binds its first socket delayed its readiness by ~4 ms.)
pub(crate) async fn connect<S: Socket>(info: &ConnectionInfo, channel: Channel, deadline: Instant) -> Result<S, Error> {
    let endpoint = info.endpoint(channel);
    let connect_error = |source| Error::Connect { channel, endpoint: endpoint.clone(), source };
    if let Some(path) = info.socket_path(channel) {
        while std::fs::symlink_metadata(&path).is_err() {
            if Instant::now() >= deadline {
                return Err(Error::Timeout { what: "kernel socket files" });
            }
            tokio::time::sleep(SOCKET_FILE_POLL).await;
        }
    }
    let mut options = SocketOptions::default();
    options.connect_timeout(deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1)));
    let mut socket = S::with_options(options);
    socket.connect(&endpoint).await.map_err(connect_error)?;
    Ok(socket)
}

/// Signs and sends one message without routing identities, returning its header (for matching replies).
pub(crate) async fn send<C: Serialize>(
    socket: &mut impl SocketSend,
    signer: &Signer,
    channel: Channel,
    session: &str,
    msg_type: &'static str,
    content: &C,
) -> Result<Header, Error> {
    let header = Header::new(msg_type, session);
    let message = signer.encode(&[], &header, bytes::Bytes::from_static(b"{}"), content)?;
    socket.send(message).await.map_err(|source| Error::Send { channel, msg_type, source })?;
    Ok(header)
}

/// Receives the next well-formed, correctly signed message. Bad messages are logged and dropped: a forged or
/// garbled message must not end a session, and must not be acted on either.
///
/// Cancel-safe: the only await is the socket's receive, which loses nothing when dropped.
pub(crate) async fn recv(socket: &mut impl SocketRecv, signer: &Signer, channel: Channel) -> Result<Incoming, Error> {
    loop {
        let message = socket.recv().await.map_err(|source| Error::Recv { channel, source })?;
        match signer.decode(message, channel) {
            Ok(incoming) => return Ok(incoming),
            Err(err) => tracing::warn!(%channel, error = %err, "dropping invalid kernel message"),
        }
    }
}
