//! `soak`: many concurrent users, some of them attackers, against the real server for a given time; reports
//! wrong answers and 5xx among the honest users (target: 0) and the host's memory before and after.
//!
//! `cargo run --release --bin soak -- --users 24 --attackers 4 --duration-secs 300` starts its own server (the
//! `code-interpreter` binary next to this one, with a temporary data directory), or drives `--url` with `--token`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use gateway::harness::ServerProcess;
use serde_json::{json, Value};

/// Soak test of the Code Interpreter API.
#[derive(Debug, Parser)]
struct Args {
    /// Honest users, each running a stateful scenario whose every answer is verified.
    #[arg(long, default_value_t = 16)]
    users: usize,
    /// Attackers, each cycling through abusive code (fork, memory, CPU, output and disk bombs, exits).
    #[arg(long, default_value_t = 4)]
    attackers: usize,
    /// How long to run, in seconds.
    #[arg(long, default_value_t = 60)]
    duration_secs: u64,
    /// Server to drive; without it a server is started for the run.
    #[arg(long)]
    url: Option<String>,
    /// Token of `--url`.
    #[arg(long, env = "AUTH_TOKEN")]
    token: Option<String>,
    /// Kernel environment of the started server [default: the default one].
    #[arg(long)]
    kernel_env: Option<PathBuf>,
}

/// Abusive snippets the attackers cycle through.
const ATTACKS: &[&str] = &[
    "import os\nwhile True:\n    os.fork()",
    "x = bytearray(8 << 30)",
    "while True: pass",
    "print('x' * 20_000_000)",
    "import os; os._exit(3)",
    "f = open('/sandbox/fill', 'wb')\nwhile True: f.write(b'0' * (1 << 20))",
    "import threading, time\nwhile True: threading.Thread(target=time.sleep, args=(60,)).start()",
    "fds = [open('/dev/null') for _ in range(100000)]",
    "sum(range(10**13))",
];

#[derive(Default)]
struct Tally {
    honest_ok: AtomicU64,
    honest_wrong: AtomicU64,
    honest_5xx: AtomicU64,
    honest_other: AtomicU64,
    attacks: AtomicU64,
    attack_5xx: AtomicU64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _temp;
    let (server, url, token) = match &args.url {
        Some(url) => (None, url.clone(), args.token.clone().context("--url needs --token or AUTH_TOKEN")?),
        None => {
            let exe = std::env::current_exe()?.with_file_name("code-interpreter");
            let temp = tempfile::Builder::new().prefix("soak-").tempdir()?;
            let token = uuid::Uuid::new_v4().to_string();
            let env = args.kernel_env.clone().unwrap_or_else(|| gateway::config::default_data_dir().join("kernel-env"));
            let max = (args.users + args.attackers + 4).to_string();
            let flags = ["--kernel-env", env.to_str().context("kernel env path")?, "--max-sandboxes", &max];
            let server = ServerProcess::start(&exe, temp.path(), &token, &flags, &[("RUST_LOG", "gateway=warn")])?;
            let url = server.url.clone();
            _temp = temp;
            (Some(server), url, token)
        }
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let result = runtime.block_on(soak(&args, &url, &token));
    drop(server);
    result
}

async fn soak(args: &Args, url: &str, token: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build()?;
    let client = Client { http, url: url.to_owned(), token: token.to_owned() };
    while client.get_status().await.map(|s| s["is_initializing"] == true).unwrap_or(true) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let memory_before = mem_available_mib();
    let tally = Arc::new(Tally::default());
    let until = Instant::now() + Duration::from_secs(args.duration_secs);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.users {
        tasks.push(tokio::spawn(honest(client.clone(), format!("soak-user-{i}"), until, tally.clone())));
    }
    for i in 0..args.attackers {
        tasks.push(tokio::spawn(attacker(client.clone(), format!("soak-attacker-{i}"), i, until, tally.clone())));
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let memory_after = mem_available_mib();
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    println!("soak: {} honest users, {} attackers, {elapsed:.0} s", args.users, args.attackers);
    println!(
        "honest requests: {} verified, {} wrong answers, {} 5xx, {} other failures ({:.1} req/s)",
        get(&tally.honest_ok),
        get(&tally.honest_wrong),
        get(&tally.honest_5xx),
        get(&tally.honest_other),
        get(&tally.honest_ok) as f64 / elapsed
    );
    println!("attacks: {} sent, {} answered 5xx", get(&tally.attacks), get(&tally.attack_5xx));
    println!("host MemAvailable: {memory_before} MiB before, {memory_after} MiB after");
    if get(&tally.honest_wrong) + get(&tally.honest_5xx) + get(&tally.honest_other) > 0 {
        bail!("honest users saw wrong answers or failures");
    }
    Ok(())
}

/// A stateful counter scenario: every answer must be the next integer.
async fn honest(client: Client, user: String, until: Instant, tally: Arc<Tally>) {
    let mut expected = rand::random_range(0..1000i64);
    let mut reset = true;
    while Instant::now() < until {
        let code = if reset { format!("x = {expected}\nprint(x)") } else { "x += 1\nprint(x)".to_owned() };
        let (status, body) = client.execute(&user, &code).await;
        match status {
            200 if body["result_text"] == json!(format!("{expected}\n")) => {
                tally.honest_ok.fetch_add(1, Ordering::Relaxed);
                reset = false;
                expected += 1;
            }
            200 => {
                eprintln!("WRONG answer for {user}: expected {expected}, got {body}");
                tally.honest_wrong.fetch_add(1, Ordering::Relaxed);
                reset = true;
            }
            500..=599 => {
                eprintln!("{status} for honest {user}: {body}");
                tally.honest_5xx.fetch_add(1, Ordering::Relaxed);
                reset = true;
            }
            _ => {
                eprintln!("{status} for honest {user}: {body}");
                tally.honest_other.fetch_add(1, Ordering::Relaxed);
                reset = true;
            }
        }
        if rand::random_ratio(1, 200) {
            client.release(&user).await;
            reset = true;
        }
        tokio::time::sleep(Duration::from_millis(rand::random_range(20..200))).await;
    }
    client.release(&user).await;
}

/// Cycles through the attacks; only 5xx answers are counted against the service.
async fn attacker(client: Client, user: String, offset: usize, until: Instant, tally: Arc<Tally>) {
    let mut next = offset;
    while Instant::now() < until {
        let (status, body) = client.execute(&user, ATTACKS[next % ATTACKS.len()]).await;
        tally.attacks.fetch_add(1, Ordering::Relaxed);
        if status >= 500 {
            eprintln!("{status} for attacker {user}: {body}");
            tally.attack_5xx.fetch_add(1, Ordering::Relaxed);
        }
        next += 1;
    }
    client.release(&user).await;
}

#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Client {
    async fn execute(&self, user: &str, code: &str) -> (u16, Value) {
        self.post("/execute", json!({ "user_uuid": user, "code": code })).await
    }

    async fn release(&self, user: &str) {
        self.post("/release", json!({ "user_uuid": user })).await;
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let sent = self.http.post(format!("{}{path}", self.url)).header("X-Auth-Token", &self.token).json(&body);
        match sent.send().await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.json().await.unwrap_or(Value::Null))
            }
            Err(err) => (599, json!({ "transport_error": err.to_string() })),
        }
    }

    async fn get_status(&self) -> anyhow::Result<Value> {
        let response = self.http.get(format!("{}/status", self.url)).header("X-Auth-Token", &self.token).send().await?;
        Ok(response.json().await?)
    }
}

/// `MemAvailable` of the host in MiB.
fn mem_available_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib / 1024)
}
