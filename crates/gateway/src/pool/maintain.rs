//! Background upkeep of the pool: keep the warm kernels topped up, recycle idle sessions.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{error_chain, PooledKernel, Shared};
use crate::metrics::Termination;

/// Warm starts run at most this many at a time, so a refill does not starve running sessions of CPU.
const PARALLEL_WARM_STARTS: usize = 2;

/// Keeps `config.warm` kernels ready; ends the initial fill (`initializing`) once they are, or once a start has
/// failed (the failure is logged; later attempts back off).
pub(super) async fn refill(shared: Arc<Shared>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        loop {
            let slot = {
                let mut state = shared.state();
                let wanted = state.warm.len() + state.warm_starting < shared.config.warm;
                if state.closed || !wanted || state.warm_starting >= PARALLEL_WARM_STARTS {
                    break;
                }
                let Some(slot) = shared.slots.take() else {
                    break;
                };
                state.warm_starting += 1;
                slot
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let result = shared.launch(slot.index()).await;
                let unwanted = {
                    let mut state = shared.state();
                    state.warm_starting -= 1;
                    match result {
                        Ok(kernel) if !state.closed => {
                            let ms = started.elapsed().as_millis() as u64;
                            tracing::info!(sandbox = %kernel.name, ms, "warm kernel ready");
                            shared.deliver_warm(&mut state, PooledKernel { kernel, _slot: slot });
                            if state.warm.len() >= shared.config.warm {
                                shared.initializing.store(false, Ordering::Release);
                            }
                            None
                        }
                        Ok(kernel) => Some(Ok(PooledKernel { kernel, _slot: slot })),
                        Err(err) => {
                            // The oldest claim waited for this kernel: free the slot, then let it try again.
                            drop(slot);
                            state.claims.pop_front();
                            Some(Err(err))
                        }
                    }
                };
                match unwanted {
                    None => {}
                    Some(Ok(kernel)) => kernel.destroy(&shared.metrics, Termination::Shutdown).await,
                    Some(Err(err)) => {
                        tracing::error!(cause = %error_chain(&err), "warm sandbox start failed");
                        shared.initializing.store(false, Ordering::Release);
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                shared.refill.notify_one();
            });
        }
        tokio::select! {
            () = shared.closing.cancelled() => return,
            () = shared.refill.notified() => backoff = Duration::from_millis(500),
            () = tokio::time::sleep(backoff) => backoff = (backoff * 2).min(Duration::from_secs(30)),
        }
    }
}

/// Releases sessions idle longer than the idle timeout, every reap interval.
pub(super) async fn reap(shared: Arc<Shared>) {
    let mut ticks = tokio::time::interval(shared.config.reap_interval);
    ticks.tick().await;
    loop {
        tokio::select! {
            () = shared.closing.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let idle: Vec<_> = {
            let mut state = shared.state();
            let users: Vec<String> = state
                .sessions
                .iter()
                .filter(|(_, s)| s.activity().idle_for(shared.config.idle_timeout))
                .map(|(user, _)| user.clone())
                .collect();
            users.into_iter().filter_map(|u| state.sessions.remove(&u).map(|s| (u, s))).collect()
        };
        for (user, session) in idle {
            tracing::info!(%user, "recycling idle session");
            session.close(Termination::IdleTimeout).await;
        }
        if !shared.state().closed {
            shared.refill.notify_one();
        }
    }
}
