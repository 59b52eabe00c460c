//! The original's load test (SPEC.md): users at once, each running one stateful scenario (arithmetic, list or
//! numpy) for a number of requests with 0.1–0.5 s think time, every answer checked, release at the end.
//! Through a server with the default pool (5 warm, at least 30 max), and on bare kernels as the floor.

use std::time::{Duration, Instant};

use gateway::kernel_env::KernelEnv;
use serde_json::json;

use crate::report::{summary_json, Report, Summary};
use crate::target::{start_bare_many, Server, Session};
use crate::Params;

/// A stateful scenario: produces each request's code and the expected answer.
enum Scenario {
    Arithmetic { x: i64 },
    List { sum: i64 },
    Numpy { values: [i64; 3], shift: u32 },
}

impl Scenario {
    fn pick() -> Scenario {
        match rand::random_range(0..3) {
            0 => Scenario::Arithmetic { x: rand::random_range(-1000..1000) },
            1 => Scenario::List { sum: 0 },
            _ => Scenario::Numpy { values: [0; 3], shift: 0 },
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Scenario::Arithmetic { .. } => "arithmetic",
            Scenario::List { .. } => "list",
            Scenario::Numpy { .. } => "numpy",
        }
    }

    /// The code of request `i` and the exact `result_text` it must give.
    fn step(&mut self, i: usize) -> (String, String) {
        match self {
            Scenario::Arithmetic { x } if i == 0 => (format!("x = {x}"), String::new()),
            Scenario::Arithmetic { x } => {
                let k = rand::random_range(-50..50);
                *x += k;
                (format!("x += {k}; print(x)"), format!("{x}\n"))
            }
            Scenario::List { sum } if i == 0 => {
                let items: Vec<i64> = (0..5).map(|_| rand::random_range(0..100)).collect();
                *sum = items.iter().sum();
                (format!("my_list = {items:?}"), String::new())
            }
            Scenario::List { sum } => {
                let k = rand::random_range(-100..100);
                *sum += k;
                (format!("my_list.append({k}); print(sum(my_list))"), format!("{sum}\n"))
            }
            Scenario::Numpy { values, .. } if i == 0 => {
                let (a, d) = (rand::random_range(-100..100), rand::random_range(1..20));
                *values = [a, a + d, a + 2 * d];
                (format!("import numpy as np; arr = np.array({values:?})"), String::new())
            }
            Scenario::Numpy { values, shift } if i % 2 == 1 => {
                // Doubling is kept bounded (×2 at most 20 times net) so int64 never overflows.
                let k: i64 = if *shift < 20 && rand::random_bool(0.5) { 2 } else { -1 };
                *shift += u32::from(k == 2);
                *values = values.map(|v| v * k);
                (format!("arr = arr * {k}; print(np.sum(arr))"), format!("{}\n", values.iter().sum::<i64>()))
            }
            Scenario::Numpy { values, .. } => ("print(np.mean(arr))".into(), format!("{}.0\n", values[1])),
        }
    }
}

#[derive(Default)]
struct Tally {
    samples: Vec<f64>,
    sent: usize,
    ok: usize,
    verified: usize,
    failures: Vec<String>,
    /// Users that saw at least one failure or wrong answer.
    users_failing: usize,
}

async fn user(session: Session, requests: usize) -> (Tally, &'static str) {
    let mut scenario = Scenario::pick();
    let mut tally = Tally::default();
    for i in 0..requests {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(rand::random_range(100..=500))).await;
        }
        let (code, expected) = scenario.step(i);
        let (ms, outcome) = session.timed(&code).await;
        tally.sent += 1;
        tally.samples.push(ms);
        match outcome {
            Ok(text) => {
                tally.ok += 1;
                if text == expected {
                    tally.verified += 1;
                } else {
                    tally.failures.push(format!("wrong answer to {code:?}: {text:?}, expected {expected:?}"));
                }
            }
            Err(err) => tally.failures.push(err),
        }
    }
    session.release().await;
    (tally, scenario.name())
}

/// All users at once; returns the merged tally and the wall time.
async fn drive(sessions: Vec<Session>, requests: usize) -> (Tally, f64, Vec<&'static str>) {
    let started = Instant::now();
    let tasks: Vec<_> = sessions.into_iter().map(|s| tokio::spawn(user(s, requests))).collect();
    let mut all = Tally::default();
    let mut scenarios = Vec::new();
    for task in tasks {
        if let Ok((t, name)) = task.await {
            all.samples.extend(t.samples);
            all.sent += t.sent;
            all.ok += t.ok;
            all.verified += t.verified;
            all.users_failing += usize::from(!t.failures.is_empty());
            all.failures.extend(t.failures);
            scenarios.push(name);
        }
    }
    (all, started.elapsed().as_secs_f64(), scenarios)
}

fn tally_json(t: &Tally, secs: f64, scenarios: &[&str]) -> serde_json::Value {
    let count = |name: &str| scenarios.iter().filter(|s| **s == name).count();
    json!({
        "requests": t.sent, "ok": t.ok, "verified": t.verified, "users_with_failures": t.users_failing,
        "success_rate": t.ok as f64 / t.sent.max(1) as f64, "verified_rate": t.verified as f64 / t.sent.max(1) as f64,
        "secs": secs, "req_per_s": t.sent as f64 / secs, "latency": summary_json(&t.samples),
        "scenarios": { "arithmetic": count("arithmetic"), "list": count("list"), "numpy": count("numpy") },
        "first_failures": t.failures.iter().take(10).collect::<Vec<_>>(), "samples": t.samples,
    })
}

pub(crate) async fn run(env: &KernelEnv, p: &Params, report: &mut Report) -> anyhow::Result<()> {
    let (users, requests) = (p.load_users, p.load_requests);
    let section = "load";
    eprintln!("bench: load test, floor ({users} bare kernels)");
    let kernels = start_bare_many(env, users, 4, p.start_deadline).await?;
    let sessions = kernels.iter().map(|k| k.session.clone()).collect();
    let (floor, floor_secs, floor_scen) = drive(sessions, requests).await;
    drop(kernels);

    eprintln!("bench: load test, server with the default pool (5 warm)");
    let server = Server::start(env, 5, users.max(30))?;
    server.http.wait_status(p.start_deadline, |s| s["is_initializing"] == false).await;
    let sessions = (0..users).map(|i| server.http.session(format!("load-{i}"))).collect();
    // A snapshot of the pool halfway through (think time averages 0.3 s), to explain any 503s.
    let probe = server.http.clone();
    let half = Duration::from_millis(150 * requests as u64);
    let mid = tokio::spawn(async move {
        tokio::time::sleep(half).await;
        probe.status().await.ok()
    });
    let (http, http_secs, http_scen) = drive(sessions, requests).await;
    let mid_status = mid.await.ok().flatten();
    eprintln!("bench: load test, /status halfway: {mid_status:?}");
    report.put(section, "http_status_halfway", json!(mid_status));
    drop(server);

    let rate = |t: &Tally, n: usize| 100.0 * n as f64 / t.sent.max(1) as f64;
    let title = format!("{users} users x {requests} requests");
    report.text(
        section,
        &format!("{title}: success rate"),
        format!("{:.2} %", rate(&http, http.ok)),
        &format!("{:.2} %", rate(&floor, floor.ok)),
    );
    report.text(
        section,
        "  verified rate",
        format!("{:.2} %", rate(&http, http.verified)),
        &format!("{:.2} %", rate(&floor, floor.verified)),
    );
    report.text(
        section,
        "  users that saw a failure",
        http.users_failing.to_string(),
        &floor.users_failing.to_string(),
    );
    report.ratio(section, "  throughput", http.sent as f64 / http_secs, Some(floor.sent as f64 / floor_secs), "req/s");
    if let (Some(h), Some(f)) = (Summary::of(&http.samples), Summary::of(&floor.samples)) {
        report.ms(section, "  latency p50", h.p50, Some(f.p50));
        report.ms(section, "  latency p95", h.p95, Some(f.p95));
        report.ms(section, "  latency min", h.min, Some(f.min));
        report.ms(section, "  latency max", h.max, Some(f.max));
    }
    for failure in http.failures.iter().take(5) {
        eprintln!("bench: load failure: {failure}");
    }
    report.put(section, "users", json!(users));
    report.put(section, "requests_per_user", json!(requests));
    report.put(section, "http", tally_json(&http, http_secs, &http_scen));
    report.put(section, "floor", tally_json(&floor, floor_secs, &floor_scen));
    Ok(())
}
