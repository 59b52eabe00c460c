//! Sections on ready sessions: execute latency, throughput vs users, 8 requests queued on one session, and warm
//! acquisition (a new user's first answer when a warm sandbox is waiting). The floor's bare kernels and the real
//! server (every needed sandbox warm: warm = max, so no refill runs while measuring) are alive together and
//! measured taking turns, so that both sides of each ratio meet the same machine.

use std::time::Instant;

use gateway::kernel_env::KernelEnv;
use serde_json::{json, Value};

use crate::measure::{self, Latency, Throughput};
use crate::report::{summary_json, Report, Summary};
use crate::target::{start_bare_many, Server, Session};
use crate::{Params, Sections};

/// Numbers of one side.
#[derive(Default)]
struct Side {
    /// "floor" or "server", for progress lines.
    name: &'static str,
    latency: Option<Latency>,
    throughput: Vec<(usize, Throughput)>,
    queue: Option<Throughput>,
    first: Vec<f64>,
    /// Sessions that could be had (kernels started / sandboxes warm).
    available: usize,
}

/// Runs the selected hot sections on every side at once (`sides[i]` with `sessions[i]`, already created), so that
/// both meet the same machine: latency in blocks taking turns, each throughput level on one side right after the
/// other (who goes first swaps every level).
async fn drive(p: &Params, sel: &Sections, sides: &mut [Side], sessions: &[&[Session]]) {
    // Sides without a session (nothing could be started) are left out, and reported as such.
    let live: Vec<usize> = (0..sides.len()).filter(|&i| !sessions[i].is_empty()).collect();
    if sel.latency {
        let firsts: Vec<&Session> = live.iter().map(|&i| &sessions[i][0]).collect();
        for (&i, latency) in live.iter().zip(measure::latency(&firsts, p.warmup, p.latency_n).await) {
            sides[i].latency = Some(latency);
        }
    }
    if sel.throughput {
        for (level, &users) in p.levels.iter().enumerate() {
            for j in 0..live.len() {
                let i = live[(j + level) % live.len()];
                if users > sessions[i].len() {
                    continue;
                }
                let result = measure::closed_loops(&sessions[i][..users], p.tp_duration).await;
                eprintln!("bench: throughput {users} users, {}: {:.1} req/s", sides[i].name, result.per_sec);
                sides[i].throughput.push((users, result));
            }
        }
        for &i in &live {
            let queued = vec![sessions[i][0].clone(); p.queue_depth];
            sides[i].queue = Some(measure::closed_loops(&queued, p.tp_duration).await);
        }
    }
}

/// How many sessions the hot sections need.
fn needed(p: &Params, sel: &Sections) -> usize {
    let mut n = 1;
    if sel.throughput {
        n = n.max(p.levels.iter().copied().max().unwrap_or(1));
    }
    if sel.cold {
        n = n.max(p.warm_samples);
    }
    n
}

/// Starts the floor's bare kernels and the server's warm sandboxes, measures both side by side, reports both.
pub(crate) async fn run(env: &KernelEnv, p: &Params, sel: &Sections, report: &mut Report) -> anyhow::Result<()> {
    let n = needed(p, sel);
    eprintln!("bench: starting {n} bare kernels (floor)");
    let started = Instant::now();
    let kernels = start_bare_many(env, n, 4, p.start_deadline).await?;
    report.put(
        "setup",
        "floor_kernels_started",
        json!({ "n": kernels.len(), "secs": started.elapsed().as_secs_f64() }),
    );
    let floor_sessions: Vec<Session> = kernels.iter().map(|k| k.session.clone()).collect();
    let mut floor = Side { name: "floor", available: floor_sessions.len(), ..Side::default() };
    for session in &floor_sessions {
        floor.first.push(session.timed("x = 0").await.0);
    }

    eprintln!("bench: starting the server with {n} warm sandboxes");
    let server = Server::start(env, n, n)?;
    let started = Instant::now();
    let want = n;
    let filled = server
        .http
        .wait_status(p.start_deadline, |s| s["idle_workers_in_pool"].as_u64().unwrap_or(0) as usize >= want)
        .await;
    let warm = server.http.status().await.ok().and_then(|s| s["idle_workers_in_pool"].as_u64()).unwrap_or(0) as usize;
    let fill_secs = started.elapsed().as_secs_f64();
    eprintln!("bench: {warm} of {n} sandboxes warm after {fill_secs:.0} s");
    report.put(
        "setup",
        "server_warm_fill",
        json!({ "wanted": n, "warm": warm, "secs": fill_secs, "complete": filled }),
    );
    let mut http_sessions = Vec::new();
    let mut http = Side { name: "server", ..Side::default() };
    for i in 0..warm {
        let session = server.http.session(format!("hot-{i}"));
        let (ms, outcome) = session.timed("x = 0").await;
        if let Err(err) = outcome {
            eprintln!("bench: creating session {i} failed: {err}");
            break;
        }
        http.first.push(ms);
        http_sessions.push(session);
    }
    http.available = http_sessions.len();

    let mut sides = [floor, http];
    drive(p, sel, &mut sides, &[&floor_sessions, &http_sessions]).await;
    let rss = server.rss_mib();
    for session in &http_sessions {
        session.release().await;
    }
    drop(server);
    drop(floor_sessions);
    drop(kernels);

    let [floor, http] = sides;
    report_side(p, sel, &http, &floor, rss, report);
    Ok(())
}

fn throughput_json(t: &Throughput) -> Value {
    json!({ "req_per_s": t.per_sec, "ok": t.ok, "failed": t.failed, "secs": t.secs, "latency": summary_json(&t.samples) })
}

fn report_side(p: &Params, sel: &Sections, http: &Side, floor: &Side, rss: Option<f64>, report: &mut Report) {
    if sel.latency {
        report_latency(p, http, floor, report);
    }
    if sel.throughput {
        let mut points = Vec::new();
        for &users in &p.levels {
            let h = http.throughput.iter().find(|(u, _)| *u == users).map(|(_, t)| t);
            let f = floor.throughput.iter().find(|(u, _)| *u == users).map(|(_, t)| t);
            let figure = format!("throughput, {users} users (req/s)");
            match (h, f) {
                (Some(h), f) => {
                    report.ratio("throughput", &figure, h.per_sec, f.map(|f| f.per_sec), "req/s");
                    if h.failed > 0 {
                        report.text(
                            "throughput",
                            &format!("  failed requests, {users} users"),
                            h.failed.to_string(),
                            "-",
                        );
                    }
                }
                (None, _) => report.skipped(
                    "throughput",
                    &figure,
                    &format!(
                        "only {} sandboxes warm and {} bare kernels started within {:?}",
                        http.available, floor.available, p.start_deadline
                    ),
                ),
            }
            points.push(json!({ "users": users, "http": h.map(throughput_json), "floor": f.map(throughput_json) }));
        }
        report.put("throughput", "levels", Value::Array(points));
        if let (Some(h), Some(f)) = (&http.queue, &floor.queue) {
            let figure = format!("{} concurrent on one session (req/s)", p.queue_depth);
            report.ratio("throughput", &figure, h.per_sec, Some(f.per_sec), "req/s");
            if let (Some(hs), Some(fs)) = (Summary::of(&h.samples), Summary::of(&f.samples)) {
                report.ms("throughput", "  queued request latency p50", hs.p50, Some(fs.p50));
            }
            report.put(
                "throughput",
                "one_session_queue",
                json!({ "depth": p.queue_depth, "http": throughput_json(h), "floor": throughput_json(f) }),
            );
        }
        if let Some(rss) = rss {
            let figure = format!("gateway RSS after, {} sessions", http.available);
            report.ratio("throughput", &figure, rss, None, "MiB");
            report.put("throughput", "gateway_rss_mib", json!({ "sessions": http.available, "rss_mib": rss }));
        }
    }
    if sel.cold {
        let k = p.warm_samples;
        let h = &http.first[..http.first.len().min(k)];
        let f = &floor.first[..floor.first.len().min(k)];
        report.put(
            "cold",
            "warm_acquisition",
            json!({ "http": summary_json(h), "floor": summary_json(f), "http_samples": h, "floor_samples": f }),
        );
        match (Summary::of(h), Summary::of(f)) {
            (Some(hs), fs) => {
                report.ms("cold", &format!("warm acquisition p50 (n={})", hs.n), hs.p50, fs.map(|s| s.p50))
            }
            (None, _) => report.skipped("cold", "warm acquisition", "no warm sandbox could be had"),
        }
    }
}

fn report_latency(p: &Params, http: &Side, floor: &Side, report: &mut Report) {
    let (Some(h), Some(f)) = (&http.latency, &floor.latency) else {
        report.skipped("latency", "execute latency", "no session could be had");
        return;
    };
    let (Some(hs), Some(fs)) = (Summary::of(&h.samples), Summary::of(&f.samples)) else { return };
    let n = p.latency_n;
    report.ms("latency", &format!("`x += 1; print(x)` p50 (n={n})"), hs.p50, Some(fs.p50));
    report.ms("latency", "  p95", hs.p95, Some(fs.p95));
    report.ms("latency", "  p99", hs.p99, Some(fs.p99));
    report.ms("latency", "  mean", hs.mean, Some(fs.mean));
    if h.bad + f.bad > 0 {
        report.text("latency", "  wrong or failed answers", h.bad.to_string(), &f.bad.to_string());
    }
    report.put(
        "latency",
        "execute",
        json!({
            "code": measure::INCREMENT, "warmup": p.warmup,
            "http": hs.to_json(), "floor": fs.to_json(), "http_bad": h.bad, "floor_bad": f.bad,
            "difference_ms": { "p50": hs.p50 - fs.p50, "p95": hs.p95 - fs.p95, "p99": hs.p99 - fs.p99, "mean": hs.mean - fs.mean },
            "http_samples": h.samples, "floor_samples": f.samples,
        }),
    );
}
