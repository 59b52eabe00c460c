//! [`FakeKernel`] (feature `fake-kernel`): a scripted kernel on real ipc sockets and the real wire protocol,
//! for fast tests of this client and of the gateway without Python.
//!
//! Code is a script, one command per line, run in order (ipykernel's order: `busy`, `execute_input`, outputs,
//! `execute_reply`, `idle`):
//! - `print:TEXT` / `stderr:TEXT`: a stream output `TEXT\n` on stdout / stderr
//! - `result:TEXT`: an `execute_result` with `text/plain` TEXT
//! - `display:MIME:DATA`: a `display_data` with `{MIME: DATA}`
//! - `clear`: a `clear_output`
//! - `foreign:TEXT`: a stdout stream whose parent is some other request (clients must ignore it)
//! - `after_reply:TEXT`: a stdout stream sent after the `execute_reply` but before `idle`
//! - `error:NAME`: an error output `NAME` and an error reply; stops the script
//! - `sleep:MS`: busy for MS milliseconds; an `interrupt_request` ends it with `KeyboardInterrupt`
//! - anything else: no output
//!
//! Its iopub is a plain PUB socket; [`FakeKernel::start_welcoming`] also has it publish `iopub_welcome` until its
//! shell gets a first request (as ipykernel's XPUB greets each new subscriber).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use zeromq::{PubSocket, RouterSocket, Socket, SocketSend, ZmqMessage};

use crate::connection::ConnectionInfo;
use crate::error::{Channel, Error};
use crate::socket;
use crate::wire::{Header, Incoming, Signer};

/// A running fake kernel. Dropping it stops it (its sockets close, like a killed process).
#[derive(Debug)]
pub struct FakeKernel {
    info: ConnectionInfo,
    /// Owns the socket directory when created by [`FakeKernel::start`].
    _dir: Option<tempfile::TempDir>,
    tasks: Vec<JoinHandle<()>>,
    /// Becomes `true` once a `shutdown_request` was answered.
    exited: watch::Receiver<bool>,
    /// `kernel_info_request`s received on shell so far.
    kernel_infos: Arc<AtomicUsize>,
}

impl FakeKernel {
    /// Starts a fake kernel in a fresh temporary directory.
    pub async fn start() -> Result<FakeKernel, Error> {
        Self::start_in_temp_dir(false).await
    }

    /// [`FakeKernel::start`], publishing `iopub_welcome` every 5 ms until its shell gets a first request.
    pub async fn start_welcoming() -> Result<FakeKernel, Error> {
        Self::start_in_temp_dir(true).await
    }

    async fn start_in_temp_dir(welcome: bool) -> Result<FakeKernel, Error> {
        let dir = tempfile::Builder::new().prefix("fk").tempdir().expect("creating a temporary directory");
        let mut kernel = Self::bind_with(ConnectionInfo::ipc(dir.path()), welcome).await?;
        kernel._dir = Some(dir);
        Ok(kernel)
    }

    /// Starts a fake kernel on the endpoints of `info` (as a launcher would start a real one).
    pub async fn bind(info: ConnectionInfo) -> Result<FakeKernel, Error> {
        Self::bind_with(info, false).await
    }

    async fn bind_with(info: ConnectionInfo, welcome: bool) -> Result<FakeKernel, Error> {
        let shell = bound::<RouterSocket>(&info, Channel::Shell).await?;
        let control = bound::<RouterSocket>(&info, Channel::Control).await?;
        let iopub = bound::<PubSocket>(&info, Channel::IoPub).await?;
        let (publish, outbox) = mpsc::unbounded_channel();
        let (interrupts, _) = watch::channel(0u64);
        let (exit, exited) = watch::channel(false);
        let (served, _) = watch::channel(false);
        let kernel_infos = Arc::new(AtomicUsize::new(0));
        let state = State {
            signer: Signer::new(&info.key),
            session: uuid::Uuid::new_v4().to_string(),
            publish,
            interrupts,
            exit,
            served,
            kernel_infos: Arc::clone(&kernel_infos),
        };
        let mut tasks = vec![
            tokio::spawn(run_iopub(iopub, outbox)),
            tokio::spawn(run_shell(shell, state.clone())),
            tokio::spawn(run_control(control, state.clone())),
        ];
        if welcome {
            tasks.push(tokio::spawn(welcome_until_served(state)));
        }
        Ok(FakeKernel { info, _dir: None, tasks, exited, kernel_infos })
    }

    /// Where to connect.
    pub fn connection_info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// How many `kernel_info_request`s its shell received so far.
    pub fn kernel_info_requests(&self) -> usize {
        self.kernel_infos.load(Ordering::SeqCst)
    }

    /// Resolves once the kernel answered a `shutdown_request` (the fake's "process exit").
    pub async fn exited(&self) {
        let mut exited = self.exited.clone();
        let _ = exited.wait_for(|done| *done).await;
    }
}

impl Drop for FakeKernel {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn bound<S: Socket>(info: &ConnectionInfo, channel: Channel) -> Result<S, Error> {
    let endpoint = info.endpoint(channel);
    let mut socket = S::new();
    socket.bind(&endpoint).await.map_err(|source| Error::Bind { channel, endpoint, source })?;
    Ok(socket)
}

/// What the shell and control tasks share.
#[derive(Clone)]
struct State {
    signer: Signer,
    session: String,
    /// Signed iopub messages for the publisher task (keeps their order).
    publish: mpsc::UnboundedSender<ZmqMessage>,
    /// Bumped by each `interrupt_request`.
    interrupts: watch::Sender<u64>,
    exit: watch::Sender<bool>,
    /// Becomes `true` at the shell's first request.
    served: watch::Sender<bool>,
    kernel_infos: Arc<AtomicUsize>,
}

impl State {
    fn publish(&self, parent: &Bytes, msg_type: &str, content: Value) {
        let topic = Bytes::from(format!("kernel.fake.{msg_type}"));
        let header = Header::new(msg_type, &self.session);
        let message = self.signer.encode(&[topic], &header, parent.clone(), &content).expect("JSON encodes");
        let _ = self.publish.send(message);
    }

    fn status(&self, parent: &Bytes, state: &str) {
        self.publish(parent, "status", json!({ "execution_state": state }));
    }

    async fn reply(&self, socket: &mut RouterSocket, request: &Incoming, msg_type: &str, content: Value) {
        let header = Header::new(msg_type, &self.session);
        let message = self
            .signer
            .encode(&request.identities, &header, request.header_bytes.clone(), &content)
            .expect("JSON encodes");
        if let Err(err) = socket.send(message).await {
            tracing::debug!(error = %err, "fake kernel could not reply");
        }
    }
}

/// Publishes `iopub_welcome` every 5 ms until the shell gets its first request: a PUB socket drops what it sends
/// before a subscriber is connected, so one of them reaches the client once it is.
async fn welcome_until_served(state: State) {
    let mut served = state.served.subscribe();
    let no_parent = Bytes::from_static(b"{}");
    while !*served.borrow_and_update() {
        state.publish(&no_parent, "iopub_welcome", json!({ "subscription": "" }));
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(5)) => {}
            _ = served.changed() => {}
        }
    }
}

async fn run_iopub(mut iopub: PubSocket, mut outbox: mpsc::UnboundedReceiver<ZmqMessage>) {
    while let Some(message) = outbox.recv().await {
        let _ = iopub.send(message).await;
    }
}

async fn run_control(mut control: RouterSocket, state: State) {
    while let Ok(request) = socket::recv(&mut control, &state.signer, Channel::Control).await {
        match request.header.msg_type.as_str() {
            "interrupt_request" => {
                state.interrupts.send_modify(|n| *n += 1);
                state.reply(&mut control, &request, "interrupt_reply", json!({"status": "ok"})).await;
            }
            "shutdown_request" => {
                let restart = request.content::<Value>("shutdown content").ok().map(|c| c["restart"] == true);
                let content = json!({"status": "ok", "restart": restart.unwrap_or(false)});
                state.reply(&mut control, &request, "shutdown_reply", content).await;
                let _ = state.exit.send(true);
            }
            "kernel_info_request" => state.reply(&mut control, &request, "kernel_info_reply", kernel_info()).await,
            _ => {}
        }
    }
}

async fn run_shell(mut shell: RouterSocket, state: State) {
    let mut execution_count = 0i64;
    let mut exited = state.exit.subscribe();
    loop {
        let request = tokio::select! {
            request = socket::recv(&mut shell, &state.signer, Channel::Shell) => match request {
                Ok(request) => request,
                Err(_) => return,
            },
            _ = exited.wait_for(|done| *done) => return,
        };
        state.served.send_replace(true);
        let parent = &request.header_bytes;
        state.status(parent, "busy");
        match request.header.msg_type.as_str() {
            "kernel_info_request" => {
                state.kernel_infos.fetch_add(1, Ordering::SeqCst);
                state.reply(&mut shell, &request, "kernel_info_reply", kernel_info()).await;
            }
            "execute_request" => {
                execution_count += 1;
                let code = request
                    .content::<Value>("execute content")
                    .ok()
                    .and_then(|c| c["code"].as_str().map(str::to_owned));
                let code = code.unwrap_or_default();
                state.publish(parent, "execute_input", json!({"code": code, "execution_count": execution_count}));
                let reply = execute(&state, parent, &code, execution_count).await;
                state.reply(&mut shell, &request, "execute_reply", reply).await;
                for text in code.lines().filter_map(|line| line.strip_prefix("after_reply:")) {
                    state.publish(parent, "stream", json!({"name": "stdout", "text": format!("{text}\n")}));
                }
            }
            _ => {}
        }
        state.status(parent, "idle");
    }
}

/// Runs a script, publishing its outputs; returns the `execute_reply` content.
async fn execute(state: &State, parent: &Bytes, code: &str, count: i64) -> Value {
    let stream = |name: &str, text: &str| json!({"name": name, "text": format!("{text}\n")});
    for line in code.lines() {
        let (command, arg) = line.split_once(':').unwrap_or((line, ""));
        match command {
            "print" => state.publish(parent, "stream", stream("stdout", arg)),
            "stderr" => state.publish(parent, "stream", stream("stderr", arg)),
            "result" => state.publish(
                parent,
                "execute_result",
                json!({"execution_count": count, "data": {"text/plain": arg}, "metadata": {}}),
            ),
            "display" => {
                let (mime, data) = arg.split_once(':').unwrap_or((arg, ""));
                state.publish(parent, "display_data", json!({"data": {mime: data}, "metadata": {}, "transient": {}}));
            }
            "clear" => state.publish(parent, "clear_output", json!({"wait": false})),
            "foreign" => {
                let foreign = Bytes::from(serde_json::to_vec(&Header::new("execute_request", "other")).expect("JSON"));
                state.publish(&foreign, "stream", stream("stdout", arg));
            }
            "error" => return error(state, parent, count, arg, "scripted error"),
            "sleep" => {
                let mut interrupts = state.interrupts.subscribe();
                interrupts.borrow_and_update();
                let millis = arg.parse().unwrap_or(0);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(millis)) => {}
                    _ = interrupts.changed() => return error(state, parent, count, "KeyboardInterrupt", ""),
                }
            }
            _ => {}
        }
    }
    json!({"status": "ok", "execution_count": count, "user_expressions": {}, "payload": []})
}

/// Publishes an error output and returns the matching error reply.
fn error(state: &State, parent: &Bytes, count: i64, ename: &str, evalue: &str) -> Value {
    let traceback = [format!("{ename}: {evalue}")];
    state.publish(parent, "error", json!({"ename": ename, "evalue": evalue, "traceback": traceback}));
    json!({"status": "error", "execution_count": count, "ename": ename, "evalue": evalue, "traceback": traceback})
}

fn kernel_info() -> Value {
    json!({
        "status": "ok",
        "protocol_version": "5.3",
        "implementation": "fake",
        "implementation_version": "0.1.0",
        "language_info": {"name": "python", "version": "3.11", "file_extension": ".py"},
        "banner": "fake kernel",
    })
}
