//! The escape and abuse suite: a table of attacks run from inside real sandboxed kernels, each of which must be
//! positively contained, while a canary session of another user keeps counting correctly the whole time.
//!
//! Each [`Attempt`] runs as a user of its own on a private server; its Python prints a verdict line per probe
//! (`BLOCKED ...` when contained, `ESCAPED ...` when not, `SYSCALL <ret> <errno>` for raw system calls) that its
//! check reads. After every attempt the same user must get an answer again (the session recovers), a long-lived
//! witness session of another user must still have its state, and the attempt's user is released.

mod checks;
mod files;
mod kernel_surface;
mod network;
mod privileges;
mod processes;
mod resources;
mod targets;

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{user, TestServer, TOKEN};

use targets::{fill_in, Targets};

/// The first uid of the suite's sandboxes (one per slot), per launcher; host processes of these uids must be out
/// of reach.
const UID_BASES: [(&str, u32); 2] = [("zygote", 230_000), ("exec", 240_000)];
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

/// The suite against kernels forked from the zygote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_and_abuse_suite_zygote() {
    escape_and_abuse_suite("zygote").await;
}

/// The suite against kernels started by the exec launcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escape_and_abuse_suite_exec() {
    escape_and_abuse_suite("exec").await;
}

/// Every attack in the table, one after another on a private server with `launcher`, with the canary counting
/// throughout.
async fn escape_and_abuse_suite(launcher: &str) {
    let started = Instant::now();
    let uid_base = UID_BASES.iter().find(|(name, _)| *name == launcher).expect("a known launcher").1;
    let uid_base_flag = uid_base.to_string();
    let max = MAX_SANDBOXES.to_string();
    let tmpfs = TMPFS_MIB.to_string();
    let pids = PIDS_LIMIT.to_string();
    let server = TestServer::start(&[
        "--launcher",
        launcher,
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
        &uid_base_flag,
    ]);
    server.client_blocking_wait_ready();
    let data_dir = server.data_dir.display().to_string();
    // The harness passes the token in the environment; put the file there too, as a target.
    std::fs::write(server.data_dir.join("auth_token.txt"), TOKEN).unwrap();
    let targets = Targets::new(data_dir, uid_base);
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
        network::attempts(&targets),
        files::attempts(&targets),
        processes::attempts(&targets),
        privileges::attempts(),
        resources::attempts(),
        kernel_surface::attempts(),
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
                println!(
                    "escape ({launcher}): contained  {:<10} {:<28} {secs:5.1}s  {note}",
                    attempt.category, attempt.name
                )
            }
            Err(reason) => {
                println!(
                    "escape ({launcher}): NOT CONTAINED {:<10} {:<28} {secs:5.1}s  {reason}",
                    attempt.category, attempt.name
                );
                failed.push(format!("{}/{}: {reason}", attempt.category, attempt.name));
            }
        }
    }

    stop.store(true, Ordering::Relaxed);
    let stats = canary_task.await.expect("the canary task");
    let total = attempts.len();
    let summary = format!(
        "escape suite ({launcher} launcher): {}/{total} attempts contained in {:.0}s\n",
        total - failed.len(),
        started.elapsed().as_secs_f64()
    );
    // Written past the test harness's capture, so CI's log shows the count even when the test passes.
    let _ = std::io::Write::write_all(&mut std::io::stderr(), summary.as_bytes());
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
