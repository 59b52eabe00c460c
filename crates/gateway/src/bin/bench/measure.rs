//! Measurement loops, the same for both sides: they take [`Session`]s and do not know which side they drive.

use std::time::{Duration, Instant};

use crate::target::Session;

/// The trivial statement whose latency is measured, after `x = 0`.
pub(crate) const INCREMENT: &str = "x += 1; print(x)";

/// Result of sequential executions on one session.
pub(crate) struct Latency {
    /// Per-request milliseconds.
    pub(crate) samples: Vec<f64>,
    /// Requests that failed or answered a wrong value.
    pub(crate) bad: usize,
}

/// Timed increments per block of [`latency`]: small enough that every side sees the same minutes of the machine.
const LATENCY_BLOCK: usize = 50;

/// `x = 0` and `warmup` untimed increments on every session, then `n` timed increments on each, in blocks that
/// take turns between the sessions (so a noisy minute of a shared machine falls on both sides alike); every
/// answer checked. One [`Latency`] per session, in order.
pub(crate) async fn latency(sessions: &[&Session], warmup: usize, n: usize) -> Vec<Latency> {
    let mut results: Vec<Latency> = Vec::with_capacity(sessions.len());
    let mut expected = vec![0u64; sessions.len()];
    for (session, expected) in sessions.iter().zip(&mut expected) {
        let mut bad = usize::from(session.run("x = 0").await.is_err());
        for _ in 0..warmup {
            *expected += 1;
            bad += usize::from(session.run(INCREMENT).await != Ok(format!("{expected}\n")));
        }
        results.push(Latency { samples: Vec::with_capacity(n), bad });
    }
    let mut done = 0;
    let mut round = 0;
    while done < n {
        let block = LATENCY_BLOCK.min(n - done);
        // Who goes first alternates, so neither side always follows the other's burst.
        for k in 0..sessions.len() {
            let i = (k + round) % sessions.len();
            for _ in 0..block {
                expected[i] += 1;
                let (ms, outcome) = sessions[i].timed(INCREMENT).await;
                results[i].samples.push(ms);
                if outcome != Ok(format!("{}\n", expected[i])) {
                    results[i].bad += 1;
                }
            }
        }
        done += block;
        round += 1;
    }
    results
}

/// Result of closed loops run for a fixed time.
pub(crate) struct Throughput {
    /// Completed successful requests per second, over the whole run (wall clock until the last loop ended).
    pub(crate) per_sec: f64,
    /// Milliseconds of every successful request.
    pub(crate) samples: Vec<f64>,
    pub(crate) ok: usize,
    pub(crate) failed: usize,
    pub(crate) secs: f64,
}

/// One closed loop of [`INCREMENT`] per entry of `sessions` (entries may repeat a session: its requests queue),
/// each sending its next request as soon as the previous answered, until `duration` has passed.
pub(crate) async fn closed_loops(sessions: &[Session], duration: Duration) -> Throughput {
    let started = Instant::now();
    let until = started + duration;
    let tasks: Vec<_> = sessions
        .iter()
        .cloned()
        .map(|session| {
            tokio::spawn(async move {
                let (mut samples, mut failed) = (Vec::new(), 0usize);
                while Instant::now() < until {
                    let (ms, outcome) = session.timed(INCREMENT).await;
                    match outcome {
                        Ok(_) => samples.push(ms),
                        Err(err) => {
                            failed += 1;
                            if failed <= 3 {
                                eprintln!("bench: request failed: {err}");
                            }
                        }
                    }
                }
                (samples, failed)
            })
        })
        .collect();
    let (mut samples, mut failed) = (Vec::new(), 0);
    for task in tasks {
        if let Ok((s, f)) = task.await {
            samples.extend(s);
            failed += f;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    Throughput { per_sec: samples.len() as f64 / secs, ok: samples.len(), failed, samples, secs }
}

/// Runs `f(i)` for `i in 0..n`, at most `parallel` at a time, in order of `i` per batch.
pub(crate) async fn batched<F, Fut, T>(n: usize, parallel: usize, f: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let end = (i + parallel.max(1)).min(n);
        out.extend(futures_util::future::join_all((i..end).map(&f)).await);
        i = end;
    }
    out
}
