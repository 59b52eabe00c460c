//! `bench`: the project's benchmark. Every figure is measured in one run next to its floor: the project's own
//! Jupyter client (`kernel::Client`, no HTTP) driving a bare ipykernel (no sandbox) from the same kernel
//! environment. Prints a table (figure, value, floor, difference), writes every number to `<out>/bench.json`
//! and charts (`latency.png`, `throughput.png`, `cold.png`) drawn by `python/bench_charts.py`.
//!
//! ```sh
//! cargo build --release -p gateway
//! ./target/release/bench --quick                 # every section, small N (CI, about 2 minutes on 2 cores)
//! ./target/release/bench                          # full mode (adds 128 users, 100 sessions, 30 x 100 load test)
//! ./target/release/bench --only latency,cold      # some sections
//! ```
//!
//! Sections: `latency` (p50/p95/p99/mean of `x += 1; print(x)`), `throughput` (closed loops of 1, 8, 32 (+128)
//! users; 8 requests queued on one session), `cold` (new user without a warm sandbox, one at a time and 20 at
//! once; warm acquisition; both launchers), `memory` (PSS per idle session, the zygote's, gateway RSS), `load`
//! (the original's load test), `ceiling` (live sessions held at once: 40 in quick mode, 600 in full mode).
//! Starts the `code-interpreter` binary next to this one, as root (it builds sandboxes). No timing assertions.

mod ceiling;
mod cold;
mod cpu;
mod hot;
mod load;
mod measure;
mod report;
mod target;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde_json::json;

use crate::report::Report;

/// The project's benchmark: the real server over HTTP against its floor (direct client, bare kernel).
#[derive(Debug, Parser)]
#[command(after_help = "Sections: latency, throughput, cold, memory, load, ceiling. Output: a table on stdout, \
    <out>/bench.json with every number and sample, <out>/{latency,throughput,cold}.png.")]
struct Args {
    /// Small N, every section (meant to finish in about 2 minutes on 2 cores).
    #[arg(long)]
    quick: bool,
    /// Run only these sections (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = ["latency", "throughput", "cold", "memory", "load", "ceiling"])]
    only: Vec<String>,
    /// Output directory for bench.json and the charts.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// Kernel environment [default: <default data dir>/kernel-env, created if missing].
    #[arg(long)]
    kernel_env: Option<PathBuf>,
    /// Skip drawing the charts.
    #[arg(long)]
    no_charts: bool,
}

/// Which sections run.
pub(crate) struct Sections {
    pub(crate) latency: bool,
    pub(crate) throughput: bool,
    pub(crate) cold: bool,
    pub(crate) memory: bool,
    pub(crate) load: bool,
    pub(crate) ceiling: bool,
}

/// Sizes of the run.
pub(crate) struct Params {
    pub(crate) latency_n: usize,
    pub(crate) warmup: usize,
    pub(crate) levels: Vec<usize>,
    pub(crate) tp_duration: Duration,
    pub(crate) queue_depth: usize,
    pub(crate) cold_seq: usize,
    pub(crate) cold_conc: usize,
    /// Bursts of `cold_conc` new users at once, one after the other (sessions kept), pooled into one figure.
    pub(crate) cold_bursts: usize,
    pub(crate) warm_samples: usize,
    pub(crate) memory_points: Vec<usize>,
    pub(crate) load_users: usize,
    pub(crate) load_requests: usize,
    /// Sessions the ceiling section tries to hold at once.
    pub(crate) ceiling_target: usize,
    /// How long starting many kernels (bare or warm sandboxes) may take before the rest is reported skipped.
    pub(crate) start_deadline: Duration,
}

impl Params {
    fn new(quick: bool) -> Params {
        if quick {
            Params {
                latency_n: 200,
                warmup: 20,
                levels: vec![1, 8, 32],
                tp_duration: Duration::from_secs(2),
                queue_depth: 8,
                cold_seq: 5,
                cold_conc: 20,
                cold_bursts: 1,
                warm_samples: 10,
                memory_points: vec![10],
                load_users: 5,
                load_requests: 10,
                ceiling_target: 40,
                start_deadline: Duration::from_secs(120),
            }
        } else {
            Params {
                latency_n: 2000,
                warmup: 100,
                levels: vec![1, 8, 32, 128],
                tp_duration: Duration::from_secs(10),
                queue_depth: 8,
                cold_seq: 30,
                cold_conc: 20,
                cold_bursts: 3,
                warm_samples: 30,
                memory_points: vec![10, 100],
                load_users: 30,
                load_requests: 100,
                ceiling_target: 600,
                start_deadline: Duration::from_secs(600),
            }
        }
    }

    fn to_json(&self) -> serde_json::Value {
        json!({
            "latency_n": self.latency_n, "warmup": self.warmup, "levels": self.levels,
            "throughput_secs": self.tp_duration.as_secs_f64(), "queue_depth": self.queue_depth,
            "cold_sequential": self.cold_seq, "cold_concurrent": self.cold_conc,
            "cold_bursts": self.cold_bursts, "warm_samples": self.warm_samples,
            "memory_points": self.memory_points, "load_users": self.load_users, "load_requests": self.load_requests,
            "ceiling_target": self.ceiling_target,
            "start_deadline_secs": self.start_deadline.as_secs_f64(),
        })
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let all = args.only.is_empty();
    let on = |name: &str| all || args.only.iter().any(|s| s == name);
    let sel = Sections {
        latency: on("latency"),
        throughput: on("throughput"),
        cold: on("cold"),
        memory: on("memory"),
        load: on("load"),
        ceiling: on("ceiling"),
    };
    let params = Params::new(args.quick);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(run(&args, &sel, &params))
}

async fn run(args: &Args, sel: &Sections, p: &Params) -> anyhow::Result<()> {
    let started = Instant::now();
    let root = args.kernel_env.clone().unwrap_or_else(|| gateway::config::default_data_dir().join("kernel-env"));
    let env = gateway::kernel_env::ensure(&root, None).await.context("kernel environment")?;
    let mut report = Report::new();
    report.put("run", "mode", json!(if args.quick { "quick" } else { "full" }));
    report.put("run", "params", p.to_json());
    report.put("run", "cpus", json!(std::thread::available_parallelism().map_or(0, |n| n.get())));
    report.put("run", "python", json!(env.python_version));

    if sel.latency || sel.throughput || sel.cold {
        hot::run(&env, p, sel, &mut report).await?;
    }
    if sel.cold {
        cold::run_cold(&env, p, &mut report).await?;
    }
    if sel.memory {
        cold::run_memory(&env, p, &mut report).await?;
    }
    if sel.load {
        load::run(&env, p, &mut report).await?;
    }
    if sel.ceiling {
        ceiling::run(&env, p, &mut report).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    report.put("run", "secs", json!(secs));

    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let json_path = args.out.join("bench.json");
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report.json)?)?;
    println!(
        "bench ({} mode, {secs:.0} s); floor = kernel::Client on a bare ipykernel, same run",
        if args.quick { "quick" } else { "full" }
    );
    print!("{}", report.table());
    println!("numbers: {}", json_path.display());
    if !args.no_charts {
        charts(&env.python, &json_path, &args.out);
    }
    Ok(())
}

/// Draws the charts with the kernel environment's python (it has matplotlib); a failure is reported, not fatal.
fn charts(python: &Path, json_path: &Path, out: &Path) {
    const SCRIPT: &str = include_str!("../../../../../python/bench_charts.py");
    let status = std::process::Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(json_path)
        .arg(out)
        .env("MPLBACKEND", "Agg")
        .env("MPLCONFIGDIR", std::env::temp_dir().join("bench-mpl"))
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => eprintln!("bench: charts failed ({s})"),
        Err(err) => eprintln!("bench: cannot run {}: {err}", python.display()),
    }
}
