//! [`Client`]: connects to one kernel, waits until it is really ready, and runs code, streaming its outputs.

use std::time::Duration;

use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use serde_json::json;
use tokio::time::Instant;
use zeromq::{DealerSocket, Socket, SocketEvent, SubSocket};

use crate::connection::ConnectionInfo;
use crate::control::Interrupter;
use crate::error::{Channel, Error};
use crate::message::{ExecuteReply, ExecuteRequest, KernelInfo, Output, Status};
use crate::socket;
use crate::wire::Signer;

/// How long [`Client::connect`] waits for the kernel to create and bind its sockets.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How often [`Client::wait_ready`] repeats `kernel_info_request` until iopub is seen connected.
const READY_PROBE_INTERVAL: Duration = Duration::from_millis(100);

/// What [`Client::wait_until`] waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ready {
    /// iopub connected and a `kernel_info_reply` received.
    Answered,
    /// iopub connected.
    Connected,
}

impl Ready {
    fn what(self) -> &'static str {
        match self {
            Ready::Answered => "kernel_info_reply and iopub status",
            Ready::Connected => "iopub_welcome or iopub status",
        }
    }
}

/// A connection to one kernel: shell and iopub owned here, control behind [`Interrupter`].
///
/// One request at a time (`&mut self`): a session serializes its executions.
///
/// # Cancel safety
/// Dropping [`execute`](Client::execute) or [`wait_ready`](Client::wait_ready) mid-way loses nothing on the
/// sockets. The kernel still runs the abandoned request (interrupt it first if that matters); its late
/// replies and outputs stay queued and the next call skips them because their parent `msg_id` is not its own.
pub struct Client {
    /// Requests and replies (DEALER).
    shell: DealerSocket,
    /// Outputs and status (SUB, subscribed to everything).
    iopub: SubSocket,
    /// Events of the shell socket: a `Disconnected` means the kernel is gone, so waits end at once
    /// instead of hanging (zeromq's receive just stays pending when the peer goes away).
    shell_events: BoxStream<'static, SocketEvent>,
    /// Keyed HMAC, cloned per message.
    signer: Signer,
    /// Our session id, stamped on every header.
    session: String,
    /// Handle to the control task, cloned out by [`Client::interrupter`].
    interrupter: Interrupter,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("session", &self.session).finish_non_exhaustive()
    }
}

impl Client {
    /// Connect shell (DEALER), iopub (SUB, subscribe all) and control (DEALER). The socket files may not exist
    /// yet: waits up to [`DEFAULT_CONNECT_TIMEOUT`] for them to appear.
    pub async fn connect(info: &ConnectionInfo) -> Result<Client, Error> {
        Self::connect_with_timeout(info, DEFAULT_CONNECT_TIMEOUT).await
    }

    /// [`Client::connect`] with an explicit deadline for the kernel to bind its sockets.
    pub async fn connect_with_timeout(info: &ConnectionInfo, timeout: Duration) -> Result<Client, Error> {
        let deadline = Instant::now() + timeout;
        let (mut shell, iopub, control) = tokio::try_join!(
            socket::connect::<DealerSocket>(info, Channel::Shell, deadline),
            async {
                let mut iopub = socket::connect::<SubSocket>(info, Channel::IoPub, deadline).await?;
                iopub.subscribe("").await.map_err(|source| Error::Connect {
                    channel: Channel::IoPub,
                    endpoint: info.endpoint(Channel::IoPub),
                    source,
                })?;
                Ok(iopub)
            },
            socket::connect::<DealerSocket>(info, Channel::Control, deadline),
        )?;
        let shell_events = shell.monitor().boxed();
        let signer = Signer::new(&info.key);
        let session = uuid::Uuid::new_v4().to_string();
        let interrupter = Interrupter::spawn(control, signer.clone(), session.clone());
        Ok(Client { shell, iopub, shell_events, signer, session, interrupter })
    }

    /// Waits until the kernel answers on shell AND its iopub reaches us: sends `kernel_info_request` (again
    /// every 100 ms while iopub is silent) until both the `kernel_info_reply` and an iopub `status` for one of
    /// those requests (or an `iopub_welcome`) arrived. Before that, outputs of a first cell can be lost.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<KernelInfo, Error> {
        let info = self.wait_until(timeout, Ready::Answered).await?;
        Ok(info.expect("`Ready::Answered` waits for the kernel info"))
    }

    /// Waits until the kernel's iopub reaches us, which is all a first request needs (the shell socket queues
    /// it until the kernel serves it). Returns at the kernel's `iopub_welcome` (ipykernel 7 sends one to each
    /// new subscriber) without a request of its own, so a kernel's start is not lengthened by answering one;
    /// a kernel that sends no welcome within 100 ms gets [`Client::wait_ready`]'s `kernel_info_request`s.
    pub async fn wait_connected(&mut self, timeout: Duration) -> Result<(), Error> {
        self.wait_until(timeout, Ready::Connected).await.map(drop)
    }

    async fn wait_until(&mut self, timeout: Duration, until: Ready) -> Result<Option<KernelInfo>, Error> {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        // Only a kernel whose iopub stays silent is asked: at once when its info is wanted, else after a while.
        let first_probe = match until {
            Ready::Answered => Instant::now(),
            Ready::Connected => Instant::now() + READY_PROBE_INTERVAL,
        };
        let mut probe = tokio::time::interval_at(first_probe, READY_PROBE_INTERVAL);
        probe.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sent: Vec<String> = Vec::new();
        let mut info: Option<KernelInfo> = None;
        let mut iopub_connected = false;
        loop {
            if iopub_connected && (info.is_some() || until == Ready::Connected) {
                return Ok(info);
            }
            tokio::select! {
                biased;
                () = &mut deadline => return Err(Error::Timeout { what: until.what() }),
                event = self.shell_events.next() => check_alive(event)?,
                message = socket::recv(&mut self.iopub, &self.signer, Channel::IoPub), if !iopub_connected => {
                    let message = message?;
                    let ours = message.parent_msg_id.as_ref().is_some_and(|id| sent.contains(id));
                    iopub_connected = message.header.msg_type == "iopub_welcome"
                        || (ours && message.header.msg_type == "status");
                }
                message = socket::recv(&mut self.shell, &self.signer, Channel::Shell), if info.is_none() => {
                    let message = message?;
                    let ours = message.parent_msg_id.as_ref().is_some_and(|id| sent.contains(id));
                    if ours && message.header.msg_type == "kernel_info_reply" {
                        info = Some(message.content("kernel_info_reply content")?);
                    }
                }
                _ = probe.tick(), if !iopub_connected || (sent.is_empty() && until == Ready::Answered) => {
                    let header = socket::send(
                        &mut self.shell, &self.signer, Channel::Shell, &self.session, "kernel_info_request", &json!({}),
                    )
                    .await?;
                    sent.push(header.msg_id);
                }
            }
        }
    }

    /// Runs `code` (not silent, stored in history, no stdin) and calls `on_output` for each of its iopub
    /// outputs in the order the kernel emitted them. Completes once BOTH the `execute_reply` arrived and
    /// iopub reported `idle` for this request, so no output is lost. Messages of other requests are skipped.
    ///
    /// A user exception is not an `Err`: it is an [`Output::Error`] and a reply with status `Error`.
    /// If the kernel dies meanwhile, returns [`Error::Disconnected`] as soon as its shell socket closes.
    /// There is no timeout here: race this future against your deadline, then [`Interrupter::interrupt`]
    /// (see the cancel-safety note on [`Client`]).
    pub async fn execute(
        &mut self,
        code: &str,
        on_output: &mut (dyn FnMut(Output) + Send),
    ) -> Result<ExecuteReply, Error> {
        let request = ExecuteRequest::new(code);
        let header =
            socket::send(&mut self.shell, &self.signer, Channel::Shell, &self.session, "execute_request", &request)
                .await?;
        let msg_id = header.msg_id;
        let mut reply: Option<ExecuteReply> = None;
        let mut idle = false;
        while reply.is_none() || !idle {
            tokio::select! {
                biased;
                message = socket::recv(&mut self.iopub, &self.signer, Channel::IoPub), if !idle => {
                    let message = message?;
                    if !message.is_child_of(&msg_id) {
                        continue;
                    }
                    if message.header.msg_type == "status" {
                        let status: Status<'_> = message.content("status content")?;
                        idle = status.execution_state == "idle";
                    } else if let Some(output) = Output::from_iopub(&message.header.msg_type, &message.content)? {
                        on_output(output);
                    }
                }
                message = socket::recv(&mut self.shell, &self.signer, Channel::Shell), if reply.is_none() => {
                    let message = message?;
                    if message.is_child_of(&msg_id) && message.header.msg_type == "execute_reply" {
                        reply = Some(ExecuteReply::from_content(&message.content)?);
                    }
                }
                event = self.shell_events.next() => check_alive(event)?,
            }
        }
        Ok(reply.expect("loop exits only with a reply"))
    }

    /// A cloneable handle for interrupts and shutdown, usable while [`execute`](Client::execute) is in flight.
    pub fn interrupter(&self) -> Interrupter {
        self.interrupter.clone()
    }
}

/// Turns a shell socket event into [`Error::Disconnected`] when the kernel went away.
fn check_alive(event: Option<SocketEvent>) -> Result<(), Error> {
    match event {
        Some(SocketEvent::Disconnected(_)) | None => Err(Error::Disconnected { channel: Channel::Shell }),
        Some(_) => Ok(()),
    }
}
