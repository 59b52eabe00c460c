//! CPU spent over a stretch of the bench: the scheduler's run time of every thread
//! (`/proc/<pid>/task/<tid>/schedstat`), the service's split between the sandboxes, the zygote and the gateway, and
//! the whole machine's (every thread but the bench's own), with the kernel's threads (kdamond, kworkers) apart.

use std::collections::HashMap;

use crate::target::Server;

/// Run time so far, ns: of the gateway, of the zygote (if any), of each sandbox process by pid, and of every
/// thread on the machine by (pid, tid) with whether it is a kernel thread.
pub(crate) struct CpuSnapshot {
    gateway: u64,
    zygote: Option<u64>,
    sandboxes: HashMap<u32, u64>,
    machine: HashMap<(u32, u32), (u64, bool)>,
}

/// CPU per start over a stretch, ms.
pub(crate) struct CpuPerStart {
    pub(crate) sandboxes: f64,
    pub(crate) zygote: Option<f64>,
    pub(crate) gateway: f64,
    /// Every thread on the machine but the bench's (threads that ended within the stretch are not counted).
    pub(crate) machine: f64,
    /// The kernel's own threads, part of `machine`.
    pub(crate) kernel_threads: f64,
}

impl CpuPerStart {
    /// The mean of several stretches' figures (`None` for none).
    pub(crate) fn mean(all: &[CpuPerStart]) -> Option<CpuPerStart> {
        let n = all.len() as f64;
        (!all.is_empty()).then(|| CpuPerStart {
            sandboxes: all.iter().map(|c| c.sandboxes).sum::<f64>() / n,
            zygote: all.iter().map(|c| c.zygote).sum::<Option<f64>>().map(|ms| ms / n),
            gateway: all.iter().map(|c| c.gateway).sum::<f64>() / n,
            machine: all.iter().map(|c| c.machine).sum::<f64>() / n,
            kernel_threads: all.iter().map(|c| c.kernel_threads).sum::<f64>() / n,
        })
    }
}

impl CpuSnapshot {
    /// One walk through `/proc`: the service's figures are sums over the machine's threads read in it.
    pub(crate) fn take(server: &Server) -> Option<CpuSnapshot> {
        let machine = machine_run_times();
        let mut by_process: HashMap<u32, u64> = HashMap::new();
        for ((pid, _), (ns, _)) in &machine {
            *by_process.entry(*pid).or_default() += ns;
        }
        let run_time_ns = |pid: u32| by_process.get(&pid).copied().unwrap_or(0);
        let sandboxes = server.sandbox_pids().into_iter().flatten().map(|pid| (pid, run_time_ns(pid))).collect();
        Some(CpuSnapshot {
            gateway: run_time_ns(server.process.pid()?),
            zygote: server.zygote_pid().map(run_time_ns),
            sandboxes,
            machine,
        })
    }

    /// What was spent from `self` to `later`, per each of `starts` sandbox starts in between. Sandbox processes
    /// that ended in between are not counted (the bench keeps its sessions until it has measured).
    pub(crate) fn per_start(&self, later: &CpuSnapshot, starts: usize) -> CpuPerStart {
        let ms = |ns: u64| ns as f64 / 1e6 / starts.max(1) as f64;
        let sandboxes =
            later.sandboxes.iter().map(|(pid, ns)| ns.saturating_sub(*self.sandboxes.get(pid).unwrap_or(&0))).sum();
        let (mut machine, mut kernel_threads) = (0, 0);
        for (task, (ns, kernel)) in &later.machine {
            let spent = ns.saturating_sub(self.machine.get(task).map_or(0, |(before, _)| *before));
            machine += spent;
            kernel_threads += if *kernel { spent } else { 0 };
        }
        CpuPerStart {
            sandboxes: ms(sandboxes),
            zygote: self.zygote.zip(later.zygote).map(|(before, after)| ms(after.saturating_sub(before))),
            gateway: ms(later.gateway.saturating_sub(self.gateway)),
            machine: ms(machine),
            kernel_threads: ms(kernel_threads),
        }
    }
}

/// Run time so far of every thread of `pid` by tid, ns (none if it is gone).
fn thread_run_times(pid: u32) -> Vec<(u32, u64)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    tasks
        .flatten()
        .filter_map(|task| {
            let tid = task.file_name().to_str()?.parse().ok()?;
            let text = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            Some((tid, text.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// Run time so far of every thread of every process but this one (whose walk through `/proc` would count itself),
/// by (pid, tid), and whether it is one of the kernel's threads (kthreadd, pid 2, and its children).
fn machine_run_times() -> HashMap<(u32, u32), (u64, bool)> {
    let Ok(processes) = std::fs::read_dir("/proc") else { return HashMap::new() };
    let mut times = HashMap::new();
    let pids = processes.flatten().filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok());
    for pid in pids.filter(|pid| *pid != std::process::id()) {
        let kernel = pid == KTHREADD || parent_pid(pid) == Some(KTHREADD);
        for (tid, ns) in thread_run_times(pid) {
            times.insert((pid, tid), (ns, kernel));
        }
    }
    times
}

/// The pid of kthreadd, parent of the kernel's threads.
const KTHREADD: u32 = 2;

/// The parent of `pid`, from `/proc/<pid>/stat` (after the command name, which may hold spaces and parentheses).
fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")?.1.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walk finds a process of ours (not as a kernel thread) but not this one, and kthreadd's children as kernel
    /// threads; a thread that burns CPU shows it in what a snapshot later reports.
    #[test]
    fn machine_run_times_see_every_thread_and_tell_kernel_ones() {
        let me = std::process::id();
        assert_eq!(parent_pid(me), Some(nix::unistd::getppid().as_raw() as u32));
        let mut sleeper = std::process::Command::new("sleep").arg("10").spawn().unwrap();
        let before = machine_run_times();
        let _ = sleeper.kill();
        let _ = sleeper.wait();
        assert_eq!(before.get(&(sleeper.id(), sleeper.id())).map(|(_, kernel)| *kernel), Some(false));
        assert!(!before.keys().any(|(pid, _)| *pid == me), "the bench's own threads counted");
        assert!(before.iter().any(|((pid, _), (_, kernel))| *kernel && *pid != KTHREADD), "no kernel thread seen");
        // 30 ms of this thread's own CPU time, however long the machine makes that take.
        let tid = nix::unistd::gettid().as_raw() as u32;
        let spin_before = thread_run_times(me).into_iter().find(|(t, _)| *t == tid).unwrap().1;
        let cpu_ns = || {
            let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).unwrap();
            now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
        };
        let started = cpu_ns();
        while cpu_ns() - started < 30_000_000 {}
        let after = thread_run_times(me).into_iter().find(|(t, _)| *t == tid).unwrap().1;
        assert!(after - spin_before >= 29_000_000, "30 ms of spinning counted as {} ns", after - spin_before);
    }
}
