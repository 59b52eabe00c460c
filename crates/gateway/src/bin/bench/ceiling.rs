//! The ceiling: how many live sessions this machine holds under the default per-sandbox limits. New users are
//! created (8 at a time, each setting its own state) until the target, the first failure, or the host's
//! `MemAvailable` falling under a reserve; then every session must still answer with its own state.

use std::time::{Duration, Instant};

use gateway::kernel_env::KernelEnv;
use serde_json::json;

use crate::measure::batched;
use crate::report::Report;
use crate::target::{mem_available_mib, Server, Session};
use crate::Params;

/// Stop creating sessions when the host has less memory available than this, MiB.
const RESERVE_MIB: f64 = 1024.0;
/// Sessions created at once.
const PARALLEL: usize = 8;

pub(crate) async fn run(env: &KernelEnv, p: &Params, report: &mut Report) -> anyhow::Result<()> {
    let target = p.ceiling_target;
    eprintln!("bench: ceiling, up to {target} sessions (--warm-sandboxes 0 --max-sandboxes {})", target + 10);
    let server = Server::start(env, 0, target + 10)?;
    server.ready().await;
    let available_before = mem_available_mib();
    let started = Instant::now();
    let mut sessions: Vec<Session> = Vec::new();
    let mut stop = None;
    while sessions.len() < target && stop.is_none() {
        if mem_available_mib().is_some_and(|m| m < RESERVE_MIB) {
            stop = Some(format!("MemAvailable under {RESERVE_MIB} MiB"));
            break;
        }
        let first = sessions.len();
        let batch = PARALLEL.min(target - first);
        let created = batched(batch, batch, |i| {
            let session = server.http.session(format!("ceiling-{}", first + i));
            let code = format!("x = {}; print(x)", first + i);
            async move { (session.run(&code).await, session) }
        })
        .await;
        for (i, (outcome, session)) in created.into_iter().enumerate() {
            match outcome {
                Ok(text) if text == format!("{}\n", first + i) => sessions.push(session),
                other => stop = Some(format!("session {} failed: {other:?}", first + i)),
            }
        }
        if sessions.len() % 100 < PARALLEL {
            eprintln!("bench: ceiling: {} sessions after {:.0} s", sessions.len(), started.elapsed().as_secs_f64());
        }
    }
    let create_secs = started.elapsed().as_secs_f64();
    let created = sessions.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let available_after = mem_available_mib();
    let pss = server.sandbox_pss_mib();
    let zygote = server.zygote_pss_mib();
    let checks = batched(created, PARALLEL, |i| {
        let session = sessions[i].clone();
        async move { session.run("print(x)").await == Ok(format!("{i}\n")) }
    })
    .await;
    let answering = checks.iter().filter(|ok| **ok).count();
    for chunk in sessions.chunks(PARALLEL) {
        futures_util::future::join_all(chunk.iter().map(Session::release)).await;
    }
    drop(server);

    let mean_pss = (!pss.is_empty()).then(|| pss.iter().sum::<f64>() / pss.len() as f64);
    let used_per_session = match (available_before, available_after) {
        (Some(before), Some(after)) if created > 0 => Some((before - after) / created as f64),
        _ => None,
    };
    let why = stop.clone().unwrap_or_else(|| format!("reached the target of {target}"));
    report.text("ceiling", "live sessions answering with their state", format!("{answering} of {created}"), "-");
    report.text("ceiling", "  stopped because", why, "-");
    report.ratio("ceiling", "  sessions created per second", created as f64 / create_secs, None, "/s");
    if let Some(m) = mean_pss {
        report.ratio("ceiling", &format!("  PSS per session, {created} alive"), m, None, "MiB");
    }
    if let Some(used) = used_per_session {
        report.ratio("ceiling", "  host memory used per session (MemAvailable)", used, None, "MiB");
    }
    report.put(
        "ceiling",
        "result",
        json!({
            "target": target, "created": created, "answering": answering, "stopped": stop, "create_secs": create_secs,
            "pss_mib_mean": mean_pss, "zygote_pss_mib": zygote, "mem_available_before_mib": available_before,
            "mem_available_after_mib": available_after, "mem_used_per_session_mib": used_per_session,
        }),
    );
    Ok(())
}
