//! [`Interrupter`]: a cloneable handle to the control channel, usable while an execution is in flight.
//!
//! A small task owns the control socket and serves one request at a time from a channel, so no lock is held
//! across an `.await` and a caller that gives up never leaves the socket half-used. The task ends when the
//! [`Client`](crate::Client) and every `Interrupter` are dropped.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use zeromq::DealerSocket;

use crate::error::{Channel, Error};
use crate::message::ControlReply;
use crate::socket;
use crate::wire::Signer;

/// How long to wait for a control reply by default. ipykernel answers control from its own thread, in ms.
pub const DEFAULT_CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// One request for the control task.
struct ControlRequest {
    /// `interrupt_request` or `shutdown_request`.
    msg_type: &'static str,
    /// The reply we wait for, named in timeouts.
    reply_type: &'static str,
    content: Value,
    timeout: Duration,
    done: oneshot::Sender<Result<(), Error>>,
}

/// Sends interrupts and shutdowns on the control channel. Cheap to clone; works while
/// [`Client::execute`](crate::Client::execute) is running.
#[derive(Clone, Debug)]
pub struct Interrupter {
    requests: mpsc::Sender<ControlRequest>,
    /// How long to wait for each reply.
    timeout: Duration,
}

impl std::fmt::Debug for ControlRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlRequest").field("msg_type", &self.msg_type).finish_non_exhaustive()
    }
}

impl Interrupter {
    /// Starts the task owning `socket` and returns the first handle.
    pub(crate) fn spawn(socket: DealerSocket, signer: Signer, session: String) -> Self {
        let (requests, rx) = mpsc::channel(8);
        tokio::spawn(serve(socket, signer, session, rx));
        Interrupter { requests, timeout: DEFAULT_CONTROL_TIMEOUT }
    }

    /// The same handle with another reply timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends `interrupt_request` and waits for `interrupt_reply`. The running cell then typically ends with a
    /// `KeyboardInterrupt` error; code stuck in C may ignore it (the caller must then kill the kernel).
    pub async fn interrupt(&self) -> Result<(), Error> {
        self.request("interrupt_request", "interrupt_reply", json!({})).await
    }

    /// Sends `shutdown_request` and waits for `shutdown_reply`; the kernel exits soon after.
    pub async fn shutdown(&self, restart: bool) -> Result<(), Error> {
        self.request("shutdown_request", "shutdown_reply", json!({ "restart": restart })).await
    }

    async fn request(&self, msg_type: &'static str, reply_type: &'static str, content: Value) -> Result<(), Error> {
        let (done, result) = oneshot::channel();
        let request = ControlRequest { msg_type, reply_type, content, timeout: self.timeout, done };
        self.requests.send(request).await.map_err(|_| Error::Closed)?;
        result.await.map_err(|_| Error::Closed)?
    }
}

/// The control task: one request at a time, each answered on its oneshot.
async fn serve(
    mut socket: DealerSocket,
    signer: Signer,
    session: String,
    mut requests: mpsc::Receiver<ControlRequest>,
) {
    while let Some(request) = requests.recv().await {
        let result = round_trip(&mut socket, &signer, &session, &request).await;
        if let Err(err) = &result {
            tracing::warn!(request = request.msg_type, error = %err, "control request failed");
        }
        let _ = request.done.send(result);
    }
}

/// Sends one control request and waits for its reply, skipping late replies to earlier (timed-out) requests.
async fn round_trip(
    socket: &mut DealerSocket,
    signer: &Signer,
    session: &str,
    request: &ControlRequest,
) -> Result<(), Error> {
    let header = socket::send(socket, signer, Channel::Control, session, request.msg_type, &request.content).await?;
    let wait_reply = async {
        loop {
            let message = socket::recv(socket, signer, Channel::Control).await?;
            if message.is_child_of(&header.msg_id) {
                return Ok::<_, Error>(message);
            }
        }
    };
    let reply = tokio::time::timeout(request.timeout, wait_reply)
        .await
        .map_err(|_| Error::Timeout { what: request.reply_type })??;
    let content: ControlReply = reply.content("control reply content")?;
    match content.status.as_deref() {
        Some("error") => {
            Err(Error::Refused { request: request.msg_type, ename: content.ename, evalue: content.evalue })
        }
        _ => Ok(()),
    }
}
