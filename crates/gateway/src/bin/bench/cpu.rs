//! CPU spent by the service's processes over a stretch of the bench: the scheduler's run time of every thread
//! (`/proc/<pid>/task/<tid>/schedstat`), split between the sandboxes, the zygote and the gateway.

use std::collections::HashMap;

use crate::target::Server;

/// Run time so far, ns: of the gateway, of the zygote (if any), and of each sandbox process by pid.
pub(crate) struct CpuSnapshot {
    gateway: u64,
    zygote: Option<u64>,
    sandboxes: HashMap<u32, u64>,
}

/// CPU per start over a stretch, ms.
pub(crate) struct CpuPerStart {
    pub(crate) sandboxes: f64,
    pub(crate) zygote: Option<f64>,
    pub(crate) gateway: f64,
}

impl CpuPerStart {
    /// The mean of several stretches' figures (`None` for none).
    pub(crate) fn mean(all: &[CpuPerStart]) -> Option<CpuPerStart> {
        let n = all.len() as f64;
        (!all.is_empty()).then(|| CpuPerStart {
            sandboxes: all.iter().map(|c| c.sandboxes).sum::<f64>() / n,
            zygote: all.iter().map(|c| c.zygote).sum::<Option<f64>>().map(|ms| ms / n),
            gateway: all.iter().map(|c| c.gateway).sum::<f64>() / n,
        })
    }
}

impl CpuSnapshot {
    pub(crate) fn take(server: &Server) -> Option<CpuSnapshot> {
        let sandboxes = server.sandbox_pids().into_iter().flatten().map(|pid| (pid, run_time_ns(pid))).collect();
        Some(CpuSnapshot {
            gateway: run_time_ns(server.process.pid()?),
            zygote: server.zygote_pid().map(run_time_ns),
            sandboxes,
        })
    }

    /// What was spent from `self` to `later`, per each of `starts` sandbox starts in between. Sandbox processes
    /// that ended in between are not counted (the bench keeps its sessions until it has measured).
    pub(crate) fn per_start(&self, later: &CpuSnapshot, starts: usize) -> CpuPerStart {
        let ms = |ns: u64| ns as f64 / 1e6 / starts.max(1) as f64;
        let sandboxes =
            later.sandboxes.iter().map(|(pid, ns)| ns.saturating_sub(*self.sandboxes.get(pid).unwrap_or(&0))).sum();
        CpuPerStart {
            sandboxes: ms(sandboxes),
            zygote: self.zygote.zip(later.zygote).map(|(before, after)| ms(after.saturating_sub(before))),
            gateway: ms(later.gateway.saturating_sub(self.gateway)),
        }
    }
}

/// Run time of every thread of `pid` so far, ns (0 if it is gone).
fn run_time_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|text| text.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}
