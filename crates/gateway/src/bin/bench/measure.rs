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

/// `x = 0`, `warmup` untimed increments, then `n` timed increments, each answer checked.
pub(crate) async fn latency(session: &Session, warmup: usize, n: usize) -> Latency {
    let mut bad = usize::from(session.run("x = 0").await.is_err());
    let mut expected = 0u64;
    for _ in 0..warmup {
        expected += 1;
        bad += usize::from(session.run(INCREMENT).await != Ok(format!("{expected}\n")));
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        expected += 1;
        let (ms, outcome) = session.timed(INCREMENT).await;
        samples.push(ms);
        if outcome != Ok(format!("{expected}\n")) {
            bad += 1;
        }
    }
    Latency { samples, bad }
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
