//! Client behaviour against a real ipykernel over ipc, when `KERNEL_TEST_PYTHON` names a Python with ipykernel
//! (e.g. `/work/kvenv/bin/python`); otherwise each test says loudly that it was skipped. Also measures the
//! round trip of `x += 1`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kernel::{Client, ConnectionInfo, Error, ExecuteReply, ExecuteStatus, Output, StreamName};
use tokio::process::{Child, Command};

/// A kernel process that is killed when the test ends, pass or fail.
struct RealKernel {
    child: Child,
    client: Client,
    _dir: tempfile::TempDir,
}

impl Drop for RealKernel {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Starts `$KERNEL_TEST_PYTHON -m ipykernel_launcher` on ipc sockets in a temp dir and waits until ready.
async fn start_kernel(test: &str) -> Option<RealKernel> {
    let Some(python) = std::env::var_os("KERNEL_TEST_PYTHON").map(PathBuf::from) else {
        eprintln!("SKIPPED {test}: set KERNEL_TEST_PYTHON to a Python with ipykernel to run real-kernel tests");
        return None;
    };
    let dir = tempfile::Builder::new().prefix("rk").tempdir().unwrap();
    let info = ConnectionInfo::ipc(dir.path());
    let file = dir.path().join("kernel.json");
    std::fs::write(&file, info.connection_file_json(dir.path())).unwrap();
    let child = Command::new(python)
        .args(["-m", "ipykernel_launcher", "-f"])
        .arg(&file)
        .arg("--HistoryManager.enabled=False")
        .env("IPYTHONDIR", dir.path().join("ipython"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawning ipykernel");
    let started = Instant::now();
    let mut client = Client::connect_with_timeout(&info, Duration::from_secs(20)).await.expect("connect");
    let kernel_info = client.wait_ready(Duration::from_secs(20)).await.expect("ready");
    eprintln!(
        "{test}: {} {} (protocol {}) ready in {:?}",
        kernel_info.implementation,
        kernel_info.implementation_version,
        kernel_info.protocol_version,
        started.elapsed()
    );
    assert_eq!(kernel_info.language_info.name, "python");
    assert!(kernel_info.protocol_version.starts_with('5'));
    Some(RealKernel { child, client, _dir: dir })
}

async fn run(client: &mut Client, code: &str) -> (Vec<Output>, ExecuteReply) {
    let mut outputs = Vec::new();
    let reply = client.execute(code, &mut |output| outputs.push(output)).await.expect("execute");
    (outputs, reply)
}

/// Collects the text of one stream.
fn text(outputs: &[Output], stream: StreamName) -> String {
    outputs
        .iter()
        .filter_map(|o| match o {
            Output::Stream { name, text } if *name == stream => Some(text.as_str()),
            _ => None,
        })
        .collect()
}

/// Pins state across cells, stdout, stderr kept apart, and expression results as text/plain.
#[tokio::test]
async fn state_streams_and_results() {
    let Some(mut k) = start_kernel("state_streams_and_results").await else {
        return;
    };
    let (_, reply) = run(&mut k.client, "x = 1").await;
    assert_eq!(reply.status, ExecuteStatus::Ok);
    let (outputs, _) = run(&mut k.client, "x += 1; print(x)").await;
    assert_eq!(text(&outputs, StreamName::Stdout), "2\n");

    let (outputs, reply) = run(&mut k.client, "x * 21").await;
    let Some(Output::ExecuteResult { data, execution_count, .. }) = outputs.first() else {
        panic!("no execute_result: {outputs:?}")
    };
    assert_eq!(data["text/plain"], "42");
    assert_eq!(Some(*execution_count), reply.execution_count);

    let code = "import sys\nprint('out')\nprint('err', file=sys.stderr)";
    let (outputs, _) = run(&mut k.client, code).await;
    assert_eq!(text(&outputs, StreamName::Stdout), "out\n");
    assert_eq!(text(&outputs, StreamName::Stderr), "err\n");
}

/// Pins exceptions (Error output + error reply with ename) and rich display data (image/png).
#[tokio::test]
async fn errors_and_display_data() {
    let Some(mut k) = start_kernel("errors_and_display_data").await else {
        return;
    };
    let (outputs, reply) = run(&mut k.client, "1/0").await;
    assert_eq!(reply.status, ExecuteStatus::Error);
    assert_eq!(reply.error.as_ref().unwrap().ename, "ZeroDivisionError");
    assert!(matches!(&outputs[..], [Output::Error(e)] if e.ename == "ZeroDivisionError" && !e.traceback.is_empty()));

    let code = "from IPython.display import display; display({'image/png': 'aGk='}, raw=True)";
    let (outputs, reply) = run(&mut k.client, code).await;
    assert_eq!(reply.status, ExecuteStatus::Ok);
    assert!(matches!(&outputs[..], [Output::DisplayData { data, .. }] if data["image/png"] == "aGk="), "{outputs:?}");
}

/// Pins interrupting a busy loop over control: KeyboardInterrupt, and the kernel keeps its state.
#[tokio::test]
async fn interrupt_keeps_state() {
    let Some(mut k) = start_kernel("interrupt_keeps_state").await else {
        return;
    };
    run(&mut k.client, "x = 41").await;
    let interrupter = k.client.interrupter();
    let interrupting = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let sent = Instant::now();
        interrupter.interrupt().await.map(|()| sent)
    });
    let (outputs, reply) = run(&mut k.client, "while True: pass").await;
    let sent = interrupting.await.unwrap().expect("interrupt_reply");
    eprintln!("interrupt took effect in {:?}", sent.elapsed());
    assert_eq!(reply.error.unwrap().ename, "KeyboardInterrupt");
    assert!(outputs.iter().any(|o| matches!(o, Output::Error(e) if e.ename == "KeyboardInterrupt")));
    let (outputs, _) = run(&mut k.client, "print(x + 1)").await;
    assert_eq!(text(&outputs, StreamName::Stdout), "42\n");
}

/// Pins that a kernel dying mid-execution ends `execute` at once with `Disconnected` (no hang).
#[tokio::test]
async fn kernel_death_is_noticed() {
    let Some(mut k) = start_kernel("kernel_death_is_noticed").await else {
        return;
    };
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(5), k.client.execute("import os; os._exit(3)", &mut |_| {}))
        .await
        .expect("execute must not hang when the kernel dies");
    eprintln!("death noticed in {:?}", started.elapsed());
    assert!(matches!(result, Err(Error::Disconnected { .. })), "{result:?}");
    assert!(k.client.execute("1", &mut |_| {}).await.is_err());
}

/// Measures the round trip of `x += 1` (prints p50/p90/p99; does not assert on time).
#[tokio::test]
async fn round_trip_latency() {
    let Some(mut k) = start_kernel("round_trip_latency").await else {
        return;
    };
    run(&mut k.client, "x = 0").await;
    for _ in 0..20 {
        run(&mut k.client, "x += 1").await;
    }
    let mut samples: Vec<Duration> = Vec::with_capacity(300);
    for _ in 0..300 {
        let started = Instant::now();
        let (_, reply) = run(&mut k.client, "x += 1").await;
        samples.push(started.elapsed());
        assert_eq!(reply.status, ExecuteStatus::Ok);
    }
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    eprintln!("round trip `x += 1` over ipc: p50 {:?}, p90 {:?}, p99 {:?}", at(0.5), at(0.9), at(0.99));
    let (outputs, _) = run(&mut k.client, "print(x)").await;
    assert_eq!(text(&outputs, StreamName::Stdout), "320\n");
}
