//! Cold sessions (no warm sandbox: request to first answer for a new user, one at a time and many at once) and
//! memory (PSS per idle session with n sessions alive, the gateway's RSS). Both use a server with
//! `--warm-sandboxes 0`, so every sandbox alive belongs to a session.

use std::time::{Duration, Instant};

use gateway::kernel_env::KernelEnv;
use serde_json::json;

use crate::cpu::{CpuPerStart, CpuSnapshot};
use crate::measure::batched;
use crate::report::{summary_json, Report, Summary};
use crate::target::{BareKernel, Server, Session};
use crate::Params;

/// The first statement of a new user.
const FIRST: &str = "x = 1; print(x)";

/// Bare kernel from nothing to the first answer, ms; the kernel is stopped (and gone) before this returns.
async fn bare_cold(env: &KernelEnv) -> Option<f64> {
    let (ms, kernel) = bare_cold_kept(env).await?;
    kernel.stop().await;
    ms
}

/// Bare kernel from nothing to the first answer: ms (`None` if it failed to answer) and the kernel, still running.
async fn bare_cold_kept(env: &KernelEnv) -> Option<(Option<f64>, BareKernel)> {
    let started = Instant::now();
    let kernel = BareKernel::start(env).await.map_err(|err| eprintln!("bench: bare kernel: {err:#}")).ok()?;
    let answered = kernel.session.run(FIRST).await.is_ok();
    Some((answered.then(|| started.elapsed().as_secs_f64() * 1e3), kernel))
}

/// A new user's first request through HTTP, ms (`None` if it failed).
async fn http_cold(session: Session) -> Option<f64> {
    let (ms, outcome) = session.timed(FIRST).await;
    match outcome {
        Ok(text) if text == "1\n" => Some(ms),
        other => {
            eprintln!("bench: cold request failed: {other:?}");
            None
        }
    }
}

pub(crate) async fn run_cold(env: &KernelEnv, p: &Params, report: &mut Report) -> anyhow::Result<()> {
    // The floor is measured with the default launcher's server, taking turns with it (one cold start each, then one
    // burst each), so that both sides of a ratio meet the same minutes of the machine.
    let (mut floor_seq, mut floor_conc) = (Vec::new(), Vec::new());
    for launcher in ["zygote", "exec"] {
        let with_floor = launcher == "zygote";
        eprintln!("bench: cold starts, server with --warm-sandboxes 0 --launcher {launcher}");
        let server = Server::start_with(env, 0, p.cold_seq + p.cold_bursts * p.cold_conc + 2, launcher)?;
        server.ready().await;
        let mut http_seq = Vec::new();
        let mut users = Vec::new();
        for i in 0..p.cold_seq {
            if with_floor {
                floor_seq.extend(bare_cold(env).await);
            }
            let session = server.http.session(format!("cold-seq-{i}"));
            http_seq.extend(http_cold(session.clone()).await);
            users.push(session);
        }
        // One burst is a small sample on a noisy machine: several, each right after the floor's, pooled.
        let (mut http_conc, mut cpus) = (Vec::new(), Vec::new());
        for burst in 0..p.cold_bursts {
            if with_floor {
                // Kept until all answered (a burst's kernels all alive, as the server's are), then stopped and
                // waited for: their teardown is no part of the server's burst that follows.
                let bare = (0..p.cold_conc).map(|_| bare_cold_kept(env));
                let (answers, kernels): (Vec<_>, Vec<_>) =
                    futures_util::future::join_all(bare).await.into_iter().flatten().unzip();
                floor_conc.extend(answers.into_iter().flatten());
                futures_util::future::join_all(kernels.into_iter().map(BareKernel::stop)).await;
            }
            let conc: Vec<Session> =
                (0..p.cold_conc).map(|i| server.http.session(format!("cold-conc-{burst}-{i}"))).collect();
            let before = CpuSnapshot::take(&server);
            let answers = futures_util::future::join_all(conc.iter().cloned().map(http_cold)).await;
            http_conc.extend(answers.into_iter().flatten());
            let after = CpuSnapshot::take(&server);
            cpus.extend(after.zip(before).map(|(after, before)| before.per_start(&after, p.cold_conc)));
            users.extend(conc);
        }
        let cpu = CpuPerStart::mean(&cpus);
        for session in &users {
            session.release().await;
        }
        drop(server);
        // The default launcher keeps the plain keys; the exec launcher's figures are for comparison.
        let (label, prefix) = if launcher == "zygote" { ("", "") } else { (" (exec launcher)", "exec_") };
        let mut put = |figure: &str, key: &str, n: usize, h: &[f64], f: &[f64]| {
            let value = json!({ "n": n, "http": summary_json(h), "floor": summary_json(f), "http_samples": h,
                "floor_samples": f, "launcher": launcher });
            report.put("cold", &format!("{prefix}{key}"), value);
            match (Summary::of(h), Summary::of(f)) {
                (Some(hs), fs) => {
                    report.ms("cold", &format!("{figure}{label} p50 (n={}/{n})", hs.n), hs.p50, fs.map(|s| s.p50));
                    report.ms("cold", "  p95", hs.p95, fs.map(|s| s.p95));
                }
                (None, _) => report.skipped("cold", figure, "every cold request failed (see stderr)"),
            }
        };
        put("new user, one at a time", "sequential", p.cold_seq, &http_seq, &floor_seq);
        let bursts = if p.cold_bursts > 1 { format!(", {} bursts", p.cold_bursts) } else { String::new() };
        let at_once = format!("{} new users at once{bursts}", p.cold_conc);
        put(&at_once, "concurrent", p.cold_bursts * p.cold_conc, &http_conc, &floor_conc);
        if let Some(cpu) = cpu {
            let zygote = cpu.zygote.map_or("-".to_owned(), |ms| format!("{ms:.1}"));
            let value = format!("{:.1} / {zygote} / {:.1} ms", cpu.sandboxes, cpu.gateway);
            report.text("cold", &format!("  CPU per start{label}: sandbox / zygote / gateway"), value, "-");
            let machine = format!("{:.1} / {:.1} ms", cpu.machine, cpu.kernel_threads);
            report.text("cold", &format!("  CPU per start{label}, machine: all / kernel threads"), machine, "-");
            let json = json!({ "sandbox_ms": cpu.sandboxes, "zygote_ms": cpu.zygote, "gateway_ms": cpu.gateway,
                "machine_ms": cpu.machine, "kernel_threads_ms": cpu.kernel_threads });
            report.put("cold", &format!("{prefix}concurrent_cpu_per_start"), json);
        }
    }
    Ok(())
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

pub(crate) async fn run_memory(env: &KernelEnv, p: &Params, report: &mut Report) -> anyhow::Result<()> {
    let settle = Duration::from_secs(2);
    eprintln!("bench: memory, floor");
    let mut floor = Vec::new();
    let mut kernels: Vec<BareKernel> = Vec::new();
    for &n in &p.memory_points {
        let more = batched(n.saturating_sub(kernels.len()), 4, |_| BareKernel::start(env)).await;
        for kernel in more {
            let kernel = kernel?;
            kernel.session.run("x = 0").await.ok();
            kernels.push(kernel);
        }
        tokio::time::sleep(settle).await;
        let pss: Vec<f64> = kernels.iter().filter_map(BareKernel::pss_mib).collect();
        floor.push((n, pss));
    }
    drop(kernels);

    let mut points = Vec::new();
    for launcher in ["zygote", "exec"] {
        // The exec launcher only at the first point: enough for the comparison, and it is the slow one.
        let counts: Vec<usize> = if launcher == "zygote" {
            p.memory_points.clone()
        } else {
            p.memory_points.iter().copied().take(1).collect()
        };
        points.extend(memory_points(env, launcher, &counts, &floor, report).await?);
    }
    report.put("memory", "points", serde_json::Value::Array(points));
    Ok(())
}

/// Sessions of one launcher's server at each count: PSS per session (its cgroup's processes), the zygote's PSS,
/// the gateway's RSS.
async fn memory_points(
    env: &KernelEnv,
    launcher: &str,
    counts: &[usize],
    floor: &[(usize, Vec<f64>)],
    report: &mut Report,
) -> anyhow::Result<Vec<serde_json::Value>> {
    eprintln!("bench: memory, server with --warm-sandboxes 0 --launcher {launcher}");
    let settle = Duration::from_secs(2);
    let max = counts.iter().copied().max().unwrap_or(0);
    let server = Server::start_with(env, 0, max + 2, launcher)?;
    server.ready().await;
    let label = if launcher == "zygote" { String::new() } else { format!(" ({launcher} launcher)") };
    let mut sessions: Vec<Session> = Vec::new();
    let mut points = Vec::new();
    for (&n, (_, floor_pss)) in counts.iter().zip(floor) {
        let start = sessions.len();
        let created = batched(n.saturating_sub(start), 4, |i| {
            let session = server.http.session(format!("mem-{}", start + i));
            async move { session.run("x = 0").await.map(|_| session) }
        })
        .await;
        for session in created {
            match session {
                Ok(session) => sessions.push(session),
                Err(err) => eprintln!("bench: creating a session failed: {err}"),
            }
        }
        let alive = sessions.len();
        server.http.wait_status(Duration::from_secs(30), |s| s["total_workers"].as_u64() == Some(alive as u64)).await;
        tokio::time::sleep(settle).await;
        let pss = server.sandbox_pss_mib();
        let zygote = server.zygote_pss_mib();
        let rss = server.rss_mib();
        let figure = format!("PSS per idle session, {n} alive (mean){label}");
        match mean(&pss) {
            Some(m) if alive == n => report.ratio("memory", &figure, m, mean(floor_pss), "MiB"),
            Some(_) => report.skipped("memory", &figure, &format!("only {alive} of {n} sessions could be created")),
            None => report.skipped("memory", &figure, "no sandbox cgroup with processes found"),
        }
        if let Some(zygote) = zygote {
            report.ratio("memory", "  zygote PSS (its share of the shared pages)", zygote, None, "MiB");
            if let (Some(m), true) = (mean(&pss), alive > 0) {
                let all_in = m + zygote / alive as f64;
                report.ratio("memory", "  per session, zygote included", all_in, mean(floor_pss), "MiB");
            }
        }
        if let Some(rss) = rss {
            report.ratio("memory", &format!("  gateway RSS, {alive} sessions"), rss, None, "MiB");
        }
        points.push(json!({
            "launcher": launcher, "sessions": n, "alive": alive, "sandboxes_measured": pss.len(),
            "pss_mib_mean": mean(&pss), "pss_mib_total": pss.iter().sum::<f64>(), "pss_mib_each": pss,
            "zygote_pss_mib": zygote,
            "floor_kernels": floor_pss.len(), "floor_pss_mib_mean": mean(floor_pss), "floor_pss_mib_each": floor_pss,
            "gateway_rss_mib": rss,
        }));
    }
    for session in &sessions {
        session.release().await;
    }
    drop(server);
    Ok(points)
}
