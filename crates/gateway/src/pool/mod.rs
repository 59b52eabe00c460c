//! The pool: sessions by user id, warm spare kernels, the sandbox maximum, background refill and reaping.
//!
//! `pool` knows sessions and kernels, nothing of HTTP. Each user's session is an actor task (`session.rs`) that
//! runs that user's executions one at a time in arrival order; different users never share a lock on the hot
//! path. Kernels come from a `Launcher`.

mod execution;
mod maintain;
mod output;
mod session;
mod slots;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

pub use execution::{End, ExecLimits, Execution};
pub use output::OutputTap;
use session::SessionHandle;
use slots::{Slot, Slots};

use crate::files::SandboxDir;
use crate::launcher::{Kernel, LaunchError, Launcher};
use crate::metrics::{Census, Metrics, Termination};

/// What the pool needs to know of the configuration.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Warm kernels kept ready.
    pub warm: usize,
    /// Most kernels alive or starting.
    pub max: usize,
    /// Limits of each execution.
    pub limits: ExecLimits,
    /// A session idle this long is recycled.
    pub idle_timeout: Duration,
    /// How often idle sessions are looked for.
    pub reap_interval: Duration,
}

/// Why the pool could not run a request.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Every sandbox slot is taken.
    #[error("no sandbox available: all {max} sandboxes are in use; retry later or release a session")]
    Full {
        /// The configured maximum.
        max: usize,
    },
    /// The initial pool fill is still running and no sandbox is ready yet.
    #[error("the service is initializing: sandboxes are still starting; retry in a few seconds")]
    Initializing,
    /// The service is shutting down.
    #[error("the service is shutting down")]
    ShuttingDown,
    /// Starting a sandbox for this session failed.
    #[error("could not start a sandbox for this session: {0}")]
    Launch(String),
    /// The session was released while this request waited for it.
    #[error("the session was released before this request ran")]
    Released,
    /// The session's kernel died while idle, and its `/sandbox` with it.
    #[error(
        "the session's kernel has died and its files are gone; the next /execute reports it and starts a fresh one"
    )]
    KernelLost,
}

/// Counts of `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    /// Sandboxes alive or starting.
    pub total: usize,
    /// Sandboxes bound to a user.
    pub busy: usize,
    /// Warm sandboxes ready for new users.
    pub idle: usize,
    /// Whether the initial fill is still running.
    pub initializing: bool,
}

/// A kernel together with the slot it occupies.
pub struct PooledKernel {
    kernel: Kernel,
    _slot: Slot,
}

impl PooledKernel {
    /// Destroys the kernel's sandbox and frees its slot, then counts it under `why`: a scrape that shows it counted
    /// no longer shows it among the sandboxes.
    async fn destroy(self, metrics: &Metrics, why: Termination) {
        let PooledKernel { kernel, _slot: slot } = self;
        kernel.destroy().await;
        drop(slot);
        metrics.sandbox_terminated(why);
    }
}

/// A kernel for a session: a warm one, or a slot to start one in.
enum Reservation {
    Warm(Box<PooledKernel>),
    Cold(Slot),
    /// Every slot is taken but a warm kernel is starting: it is handed to this claim when ready (the sender is
    /// dropped if that start fails, and the claim tries again).
    Claim(oneshot::Receiver<PooledKernel>),
}

struct State {
    sessions: HashMap<String, SessionHandle>,
    warm: VecDeque<PooledKernel>,
    warm_starting: usize,
    /// Sessions waiting for a warm kernel that is starting, oldest first; never more than `warm_starting`.
    claims: VecDeque<oneshot::Sender<PooledKernel>>,
    closed: bool,
}

struct Shared {
    config: PoolConfig,
    launcher: Arc<dyn Launcher>,
    slots: Slots,
    state: Mutex<State>,
    initializing: AtomicBool,
    /// Wakes the refill task: a warm kernel was taken, a start finished, or the pool is closing.
    refill: Notify,
    /// Cancelled on shutdown: stops the background tasks.
    closing: CancellationToken,
    /// Where executions, sandbox starts and terminations are counted.
    metrics: Metrics,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a warm kernel or a free slot, or says why neither can be had.
    fn reserve(&self) -> Result<Reservation, PoolError> {
        let mut state = self.state();
        if state.closed {
            return Err(PoolError::ShuttingDown);
        }
        let reservation = self.reserve_locked(&mut state);
        drop(state);
        self.refill.notify_one();
        reservation
    }

    fn reserve_locked(&self, state: &mut State) -> Result<Reservation, PoolError> {
        while let Some(kernel) = state.warm.pop_front() {
            if !kernel.kernel.process.has_exited() {
                return Ok(Reservation::Warm(Box::new(kernel)));
            }
            tracing::warn!(sandbox = %kernel.kernel.name, "a warm kernel had died; discarding it");
            let metrics = self.metrics.clone();
            tokio::spawn(async move { kernel.destroy(&metrics, Termination::WarmDied).await });
        }
        state.claims.retain(|claim| !claim.is_closed());
        match self.slots.take() {
            Some(slot) => Ok(Reservation::Cold(slot)),
            None if state.claims.len() < state.warm_starting => {
                let (claim, kernel) = oneshot::channel();
                state.claims.push_back(claim);
                Ok(Reservation::Claim(kernel))
            }
            None if self.initializing.load(Ordering::Acquire) => Err(PoolError::Initializing),
            None => Err(PoolError::Full { max: self.config.max }),
        }
    }

    /// Turns a reservation into a ready kernel, starting one if needed.
    async fn kernel_for(&self, mut reservation: Reservation) -> Result<PooledKernel, PoolError> {
        loop {
            match reservation {
                Reservation::Warm(kernel) => return Ok(*kernel),
                Reservation::Cold(slot) => {
                    let kernel = self.launch(slot.index()).await.map_err(|err| {
                        tracing::error!(cause = %error_chain(&err), "cold sandbox start failed");
                        PoolError::Launch(error_chain(&err))
                    })?;
                    return Ok(PooledKernel { kernel, _slot: slot });
                }
                Reservation::Claim(kernel) => match kernel.await {
                    Ok(kernel) => return Ok(kernel),
                    Err(_) => reservation = self.reserve()?,
                },
            }
        }
    }

    /// Starts a kernel in sandbox slot `slot`, timing the start.
    async fn launch(&self, slot: usize) -> Result<Kernel, LaunchError> {
        let started = std::time::Instant::now();
        let result = self.launcher.launch(slot).await;
        self.metrics.sandbox_started(result.as_ref().ok().map(|_| started.elapsed()));
        result
    }

    /// Hands a freshly started warm kernel to the oldest waiting claim, else puts it in the warm pool.
    fn deliver_warm(&self, state: &mut State, mut kernel: PooledKernel) {
        while let Some(claim) = state.claims.pop_front() {
            match claim.send(kernel) {
                Ok(()) => return,
                Err(unclaimed) => kernel = unclaimed,
            }
        }
        state.warm.push_back(kernel);
    }
}

/// The pool handle: cheap to clone.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

impl Pool {
    /// Removes what an earlier run left, then starts the background refill and reaper.
    pub fn start(config: PoolConfig, launcher: Arc<dyn Launcher>, metrics: Metrics) -> Result<Pool, LaunchError> {
        let removed = launcher.cleanup_stale()?;
        if removed > 0 {
            tracing::info!(removed, "removed sandboxes left by an earlier run");
        }
        let shared = Arc::new(Shared {
            slots: Slots::new(config.max),
            initializing: AtomicBool::new(config.warm > 0),
            config,
            launcher,
            state: Mutex::new(State {
                sessions: HashMap::new(),
                warm: VecDeque::new(),
                warm_starting: 0,
                claims: VecDeque::new(),
                closed: false,
            }),
            refill: Notify::new(),
            closing: CancellationToken::new(),
            metrics,
        });
        tokio::spawn(maintain::refill(shared.clone()));
        tokio::spawn(maintain::reap(shared.clone()));
        Ok(Pool { shared })
    }

    /// Runs `code` in `user`'s session, binding a kernel to the user on first use. Waits behind the user's
    /// earlier requests.
    pub async fn execute(&self, user: &str, code: String) -> Result<Execution, PoolError> {
        self.execute_streamed(user, code, None).await
    }

    /// [`Pool::execute`], passing each output to `tap` as the kernel emits it (after the output limit's cuts).
    pub async fn execute_streamed(
        &self,
        user: &str,
        code: String,
        tap: Option<OutputTap>,
    ) -> Result<Execution, PoolError> {
        let (reply, answer) = oneshot::channel();
        self.with_session(user, |session| session.submit(code, reply, tap))?;
        answer.await.unwrap_or(Err(PoolError::Released))
    }

    /// The `/sandbox` of `user`'s session, if it has a kernel bound; never waits, never starts one.
    pub fn files(&self, user: &str) -> Option<Arc<SandboxDir>> {
        self.shared.state().sessions.get(user).and_then(|session| session.activity().files())
    }

    /// [`Pool::files`], creating the session and binding a kernel first (as `/execute` does) if needed.
    pub async fn files_or_start(&self, user: &str) -> Result<Arc<SandboxDir>, PoolError> {
        if let Some(files) = self.files(user) {
            return Ok(files);
        }
        let (reply, answer) = oneshot::channel();
        self.with_session(user, |session| session.open_files(reply))?;
        answer.await.unwrap_or(Err(PoolError::Released))
    }

    /// Calls `f` with `user`'s session, creating it (with a reserved kernel) if there is none.
    fn with_session(&self, user: &str, f: impl FnOnce(&SessionHandle)) -> Result<(), PoolError> {
        let mut state = self.shared.state();
        if state.closed {
            return Err(PoolError::ShuttingDown);
        }
        if !state.sessions.contains_key(user) {
            let reservation = self.shared.reserve_locked(&mut state)?;
            let handle = session::spawn(self.shared.clone(), user.to_owned(), reservation);
            state.sessions.insert(user.to_owned(), handle);
            self.shared.refill.notify_one();
        }
        f(state.sessions.get(user).expect("inserted above"));
        Ok(())
    }

    /// Interrupts `user`'s running execution (as a timeout would: `KeyboardInterrupt`, state kept); returns
    /// whether one was running. Queued executions of the user run afterwards as usual.
    pub async fn interrupt(&self, user: &str) -> Result<bool, kernel::Error> {
        let activity = self.shared.state().sessions.get(user).map(|session| session.running_handle());
        match activity {
            Some(session) => session.interrupt().await,
            None => Ok(false),
        }
    }

    /// Destroys `user`'s session at once; returns whether there was one.
    pub async fn release(&self, user: &str) -> bool {
        let handle = self.shared.state().sessions.remove(user);
        match handle {
            Some(handle) => {
                handle.close(Termination::Released).await;
                self.shared.refill.notify_one();
                true
            }
            None => false,
        }
    }

    /// Counts for `/status`.
    pub fn status(&self) -> Status {
        let state = self.shared.state();
        let total = self.shared.slots.in_use();
        let idle = state.warm.len();
        Status {
            total,
            busy: total.saturating_sub(idle + state.warm_starting),
            idle,
            initializing: self.shared.initializing.load(Ordering::Acquire),
        }
    }

    /// Counts for the metrics' gauges, read now.
    pub fn census(&self) -> Census {
        let state = self.shared.state();
        let total = self.shared.slots.in_use();
        let sessions_busy = state.sessions.values().filter(|session| session.activity().is_busy()).count();
        Census {
            warm: state.warm.len(),
            starting: state.warm_starting,
            assigned: total.saturating_sub(state.warm.len() + state.warm_starting),
            max: self.shared.config.max,
            sessions_busy,
            sessions_idle: state.sessions.len() - sessions_busy,
            initializing: self.shared.initializing.load(Ordering::Acquire),
        }
    }

    /// Stops taking requests and destroys every kernel, waiting (bounded) until all are gone.
    pub async fn shutdown(&self) {
        let (sessions, warm) = {
            let mut state = self.shared.state();
            state.closed = true;
            state.claims.clear();
            (std::mem::take(&mut state.sessions), std::mem::take(&mut state.warm))
        };
        self.shared.closing.cancel();
        let closes = sessions.into_values().map(|s| tokio::spawn(s.close(Termination::Shutdown)));
        let kills = warm.into_iter().map(|k| {
            let metrics = self.shared.metrics.clone();
            tokio::spawn(async move { k.destroy(&metrics, Termination::Shutdown).await })
        });
        for task in closes.chain(kills).collect::<Vec<_>>() {
            let _ = task.await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while self.shared.slots.in_use() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tracing::info!(left = self.shared.slots.in_use(), "pool shut down");
    }
}

/// An error with its sources, on one line.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
