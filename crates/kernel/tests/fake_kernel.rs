//! Client behaviour against the fake kernel (feature `fake-kernel`): readiness, output order, idle waiting,
//! errors, interrupts, stale and foreign messages, connect timing.

use std::time::{Duration, Instant};

use kernel::{Client, ConnectionInfo, Error, ExecuteReply, ExecuteStatus, FakeKernel, Output, StreamName};

const READY: Duration = Duration::from_secs(5);

async fn ready_client(kernel: &FakeKernel) -> Client {
    let mut client = Client::connect(kernel.connection_info()).await.expect("connect");
    let info = client.wait_ready(READY).await.expect("ready");
    assert_eq!(info.implementation, "fake");
    client
}

async fn run(client: &mut Client, code: &str) -> (Vec<Output>, ExecuteReply) {
    let mut outputs = Vec::new();
    let reply = client.execute(code, &mut |output| outputs.push(output)).await.expect("execute");
    (outputs, reply)
}

fn stdout(text: &str) -> Output {
    Output::Stream { name: StreamName::Stdout, text: format!("{text}\n") }
}

/// Pins that after `wait_ready` the very first cell's output is never lost (iopub is really connected).
#[tokio::test]
async fn first_output_after_ready_is_not_lost() {
    for _ in 0..5 {
        let kernel = FakeKernel::start().await.unwrap();
        let mut client = ready_client(&kernel).await;
        let (outputs, reply) = run(&mut client, "print:hello").await;
        assert_eq!(outputs, vec![stdout("hello")]);
        assert_eq!((reply.status, reply.execution_count), (ExecuteStatus::Ok, Some(1)));
    }
}

/// Pins that `wait_connected` asks a kernel that greets its subscribers nothing (its start is not lengthened by a
/// request), and that the first cell's output still arrives.
#[tokio::test]
async fn wait_connected_sends_no_request_to_a_welcoming_kernel() {
    for _ in 0..5 {
        let kernel = FakeKernel::start_welcoming().await.unwrap();
        let mut client = Client::connect(kernel.connection_info()).await.expect("connect");
        client.wait_connected(READY).await.expect("connected");
        let (outputs, reply) = run(&mut client, "print:hello").await;
        assert_eq!(outputs, vec![stdout("hello")]);
        assert_eq!((reply.status, reply.execution_count), (ExecuteStatus::Ok, Some(1)));
        assert_eq!(kernel.kernel_info_requests(), 0, "wait_connected sent a kernel_info_request");
    }
}

/// Pins that a kernel without `iopub_welcome` is still waited for properly: `kernel_info_request`s until its iopub
/// shows, so the first cell's output is not lost.
#[tokio::test]
async fn wait_connected_asks_a_silent_kernel() {
    let kernel = FakeKernel::start().await.unwrap();
    let mut client = Client::connect(kernel.connection_info()).await.expect("connect");
    client.wait_connected(READY).await.expect("connected");
    assert!(kernel.kernel_info_requests() >= 1, "no kernel_info_request: iopub was never shown connected");
    let (outputs, _) = run(&mut client, "print:hello").await;
    assert_eq!(outputs, vec![stdout("hello")]);
}

/// Pins output order across types, and that outputs sent after the reply (before idle) are still delivered.
#[tokio::test]
async fn outputs_arrive_in_order_until_idle() {
    let kernel = FakeKernel::start().await.unwrap();
    let mut client = ready_client(&kernel).await;
    let code = "print:a\nstderr:b\ndisplay:image/png:aGk=\nclear\nresult:42\nafter_reply:late";
    let (outputs, reply) = run(&mut client, code).await;
    assert_eq!(outputs.len(), 6, "{outputs:?}");
    assert_eq!(outputs[0], stdout("a"));
    assert_eq!(outputs[1], Output::Stream { name: StreamName::Stderr, text: "b\n".into() });
    assert!(matches!(&outputs[2], Output::DisplayData { data, .. } if data["image/png"] == "aGk="));
    assert_eq!(outputs[3], Output::ClearOutput { wait: false });
    assert!(
        matches!(&outputs[4], Output::ExecuteResult { execution_count: 1, data, .. } if data["text/plain"] == "42")
    );
    assert_eq!(outputs[5], stdout("late"));
    assert_eq!(reply.status, ExecuteStatus::Ok);
}

/// Pins that a user error is an Error output plus an error reply with the exception name, not an Err.
#[tokio::test]
async fn user_error_is_reported_in_reply_and_output() {
    let kernel = FakeKernel::start().await.unwrap();
    let mut client = ready_client(&kernel).await;
    let (outputs, reply) = run(&mut client, "print:before\nerror:ValueError\nprint:never").await;
    assert_eq!(outputs.len(), 2);
    assert!(matches!(&outputs[1], Output::Error(e) if e.ename == "ValueError"));
    assert_eq!(reply.status, ExecuteStatus::Error);
    assert_eq!(reply.error.unwrap().ename, "ValueError");
}

/// Pins that the Interrupter works while execute is in flight, and the kernel stays usable afterwards.
#[tokio::test]
async fn interrupt_while_executing() {
    let kernel = FakeKernel::start().await.unwrap();
    let mut client = ready_client(&kernel).await;
    let interrupter = client.interrupter();
    let started = Instant::now();
    let interrupting = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        interrupter.interrupt().await
    });
    let (outputs, reply) = run(&mut client, "sleep:10000\nprint:never").await;
    interrupting.await.unwrap().expect("interrupt_reply");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(reply.error.unwrap().ename, "KeyboardInterrupt");
    assert!(matches!(&outputs[..], [Output::Error(e)] if e.ename == "KeyboardInterrupt"));
    let (outputs, _) = run(&mut client, "print:still here").await;
    assert_eq!(outputs, vec![stdout("still here")]);
}

/// Pins that messages of other parents are ignored, including leftovers of an execute dropped mid-way.
#[tokio::test]
async fn foreign_and_stale_messages_are_skipped() {
    let kernel = FakeKernel::start().await.unwrap();
    let mut client = ready_client(&kernel).await;
    let (outputs, _) = run(&mut client, "foreign:not mine\nprint:mine").await;
    assert_eq!(outputs, vec![stdout("mine")]);

    let mut seen = Vec::new();
    let dropped = tokio::time::timeout(
        Duration::from_millis(50),
        client.execute("print:stale1\nsleep:200\nprint:stale2", &mut |o| seen.push(o)),
    )
    .await;
    assert!(dropped.is_err(), "execute should still be running");
    let (outputs, reply) = run(&mut client, "print:fresh").await;
    assert_eq!(outputs, vec![stdout("fresh")]);
    assert_eq!(reply.execution_count, Some(3));
}

/// Pins that connect waits for socket files that do not exist yet (the kernel binds later).
#[tokio::test]
async fn connect_waits_for_socket_files() {
    let dir = tempfile::tempdir().unwrap();
    let info = ConnectionInfo::ipc(dir.path());
    let connecting = tokio::spawn({
        let info = info.clone();
        async move { Client::connect(&info).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let kernel = FakeKernel::bind(info).await.unwrap();
    let mut client = connecting.await.unwrap().expect("connect after late bind");
    client.wait_ready(READY).await.expect("ready");
    drop(kernel);
}

/// Pins that connect gives up with a Timeout when no kernel ever binds.
#[tokio::test]
async fn connect_times_out_without_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let info = ConnectionInfo::ipc(dir.path());
    let err = Client::connect_with_timeout(&info, Duration::from_millis(100)).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
}

/// Pins that messages signed with another key are dropped: a client with the wrong key never becomes ready.
#[tokio::test]
async fn wrong_key_is_never_ready() {
    let kernel = FakeKernel::start().await.unwrap();
    let mut info = kernel.connection_info().clone();
    info.key = "not-the-key".into();
    let mut client = Client::connect(&info).await.unwrap();
    let err = client.wait_ready(Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
}

/// Pins shutdown over control: the kernel answers and exits.
#[tokio::test]
async fn shutdown_over_control() {
    let kernel = FakeKernel::start().await.unwrap();
    let client = ready_client(&kernel).await;
    client.interrupter().shutdown(false).await.expect("shutdown_reply");
    tokio::time::timeout(Duration::from_secs(1), kernel.exited()).await.expect("exited");
}

/// Pins that a kernel going away mid-execution ends `execute` with `Disconnected` instead of hanging.
#[tokio::test]
async fn dropped_kernel_is_noticed() {
    let kernel = FakeKernel::start().await.unwrap();
    let mut client = ready_client(&kernel).await;
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(kernel);
    });
    let result = tokio::time::timeout(Duration::from_secs(5), client.execute("sleep:10000", &mut |_| {}))
        .await
        .expect("execute must not hang");
    killer.await.unwrap();
    assert!(matches!(result, Err(Error::Disconnected { .. })), "{result:?}");
}
