//! A user's session: an actor task owning the user's kernel, running that user's executions one at a time in
//! arrival order, replacing the kernel when it was lost, and destroying it when released.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::output::OutputTap;
use super::{execution, End, Execution, PoolError, PooledKernel, Reservation, Shared};
use crate::files::SandboxDir;
use crate::metrics::Termination;

type Reply = oneshot::Sender<Result<Execution, PoolError>>;
/// The answer to [`Job::Open`].
pub(super) type FilesReply = oneshot::Sender<Result<Arc<SandboxDir>, PoolError>>;

/// What a session is asked to do, in arrival order.
enum Job {
    /// Run code.
    Execute { code: String, reply: Reply, tap: Option<OutputTap> },
    /// Bind a kernel if none is bound, and answer with its `/sandbox` (an upload to a new session).
    Open { reply: FilesReply },
}

impl Job {
    fn released(self) {
        match self {
            Job::Execute { reply, .. } => drop(reply.send(Err(PoolError::Released))),
            Job::Open { reply } => drop(reply.send(Err(PoolError::Released))),
        }
    }
}

/// The pool's handle on a session actor.
pub(super) struct SessionHandle {
    jobs: mpsc::UnboundedSender<Job>,
    activity: Arc<Activity>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// What the reaper reads (when the session was last used and whether it has work), and the running execution's
/// interrupt handle, for `/interrupt`.
pub(super) struct Activity {
    last: Mutex<Instant>,
    pending: AtomicUsize,
    running: Mutex<Option<kernel::Interrupter>>,
    /// Why the session was closed, for the termination count of its kernel.
    closed_for: OnceLock<Termination>,
    /// The bound kernel's `/sandbox`, for the files API, which never waits behind executions.
    files: Mutex<Option<Arc<SandboxDir>>>,
}

impl Activity {
    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// Interrupts the execution running now, if any (queued ones are not touched); returns whether one was.
    pub(super) async fn interrupt(&self) -> Result<bool, kernel::Error> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match running {
            Some(interrupter) => interrupter.interrupt().await.map(|()| true),
            None => Ok(false),
        }
    }

    /// Whether the session has code running or queued.
    pub(super) fn is_busy(&self) -> bool {
        self.pending.load(Ordering::Acquire) > 0
    }

    /// The bound kernel's `/sandbox`, if a kernel is bound. A file operation is work in the session: it keeps the
    /// session from being reaped as idle, as an execution does.
    pub(super) fn files(&self) -> Option<Arc<SandboxDir>> {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if files.is_some() {
            self.touch();
        }
        files
    }

    fn set_files(&self, files: Option<Arc<SandboxDir>>) {
        *self.files.lock().unwrap_or_else(|e| e.into_inner()) = files;
    }

    /// Whether the session has had no work for at least `idle`.
    pub(super) fn idle_for(&self, idle: std::time::Duration) -> bool {
        self.pending.load(Ordering::Acquire) == 0
            && self.last.lock().unwrap_or_else(|e| e.into_inner()).elapsed() >= idle
    }
}

impl SessionHandle {
    /// Queues an execution behind the session's earlier ones.
    pub(super) fn submit(&self, code: String, reply: Reply, tap: Option<OutputTap>) {
        self.push(Job::Execute { code, reply, tap });
    }

    /// Queues a request for the session's `/sandbox`, binding a kernel first if none is.
    pub(super) fn open_files(&self, reply: FilesReply) {
        self.push(Job::Open { reply });
    }

    fn push(&self, job: Job) {
        self.activity.pending.fetch_add(1, Ordering::AcqRel);
        self.activity.touch();
        if let Err(mpsc::error::SendError(job)) = self.jobs.send(job) {
            self.activity.pending.fetch_sub(1, Ordering::AcqRel);
            job.released();
        }
    }

    /// The session's activity, shared: for `/interrupt`, which must not hold the pool's lock while it waits.
    pub(super) fn running_handle(&self) -> Arc<Activity> {
        Arc::clone(&self.activity)
    }

    /// The session's activity, for the reaper.
    pub(super) fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Stops the session: a running execution is abandoned, queued ones are answered `Released`, and the kernel
    /// is destroyed (counted under `why`) before this returns.
    pub(super) async fn close(self, why: Termination) {
        let _ = self.activity.closed_for.set(why);
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// Starts the actor of `user`'s session with the kernel (or slot) reserved for it.
pub(super) fn spawn(shared: Arc<Shared>, user: String, reservation: Reservation) -> SessionHandle {
    let (jobs, queue) = mpsc::unbounded_channel();
    let activity = Arc::new(Activity {
        last: Mutex::new(Instant::now()),
        pending: AtomicUsize::new(0),
        running: Mutex::new(None),
        closed_for: OnceLock::new(),
        files: Mutex::new(None),
    });
    let cancel = CancellationToken::new();
    let actor = Actor { shared, user, activity: activity.clone(), cancel: cancel.clone() };
    let task = tokio::spawn(actor.run(queue, reservation));
    SessionHandle { jobs, activity, cancel, task }
}

struct Actor {
    shared: Arc<Shared>,
    user: String,
    activity: Arc<Activity>,
    cancel: CancellationToken,
}

impl Actor {
    #[tracing::instrument(name = "session", skip_all, fields(user = %self.user))]
    async fn run(self, mut queue: mpsc::UnboundedReceiver<Job>, reservation: Reservation) {
        let mut reservation = Some(reservation);
        let mut kernel: Option<PooledKernel> = None;
        loop {
            let job = tokio::select! {
                () = self.cancel.cancelled() => break,
                job = queue.recv() => match job { Some(job) => job, None => break },
            };
            let served = match job {
                Job::Execute { code, reply, tap } => {
                    let counted = async {
                        let outcome = self.execute(&mut kernel, &mut reservation, &code, tap).await;
                        if let Ok(execution) = &outcome {
                            let ran = (!matches!(execution.end, End::DiedIdle(_))).then_some(execution.duration);
                            self.shared.metrics.execution_ended(execution.end.reason(), ran);
                        }
                        outcome
                    };
                    self.serve(reply, counted).await
                }
                Job::Open { reply } => self.serve(reply, self.open_files(&mut kernel, &mut reservation)).await,
            };
            if served.is_break() {
                break;
            }
        }
        queue.close();
        while let Ok(job) = queue.try_recv() {
            job.released();
        }
        self.activity.set_files(None);
        if let Some(kernel) = kernel {
            let why = self.activity.closed_for.get().copied().unwrap_or(Termination::Released);
            kernel.destroy(&self.shared.metrics, why).await;
        }
        tracing::info!("session closed");
    }

    fn finished(&self) {
        self.activity.pending.fetch_sub(1, Ordering::AcqRel);
    }

    /// Runs `work` for a job and sends its outcome to `reply`; breaks if the session was closed meanwhile.
    async fn serve<T>(
        &self,
        reply: oneshot::Sender<Result<T, PoolError>>,
        work: impl std::future::Future<Output = Result<T, PoolError>>,
    ) -> ControlFlow<()> {
        let outcome = tokio::select! {
            () = self.cancel.cancelled() => {
                let _ = reply.send(Err(PoolError::Released));
                self.finished();
                return ControlFlow::Break(());
            }
            outcome = work => outcome,
        };
        self.activity.touch();
        self.finished();
        let _ = reply.send(outcome);
        ControlFlow::Continue(())
    }

    /// The bound kernel's `/sandbox`, binding a kernel first if none is. A kernel that died while idle is left
    /// for the next execution to report.
    async fn open_files(
        &self,
        kernel: &mut Option<PooledKernel>,
        reservation: &mut Option<Reservation>,
    ) -> Result<Arc<SandboxDir>, PoolError> {
        if kernel.as_ref().is_some_and(|k| k.kernel.process.has_exited()) {
            return Err(PoolError::KernelLost);
        }
        Ok(Arc::clone(&self.bind(kernel, reservation).await?.kernel.files))
    }

    /// The bound kernel, binding one (warm, claimed or started) if none is.
    async fn bind<'k>(
        &self,
        kernel: &'k mut Option<PooledKernel>,
        reservation: &mut Option<Reservation>,
    ) -> Result<&'k mut PooledKernel, PoolError> {
        if kernel.is_none() {
            let reserved = match reservation.take() {
                Some(reserved) => reserved,
                None => self.shared.reserve()?,
            };
            let fresh = self.shared.kernel_for(reserved).await?;
            tracing::info!(sandbox = %fresh.kernel.name, "kernel bound to session");
            self.activity.set_files(Some(Arc::clone(&fresh.kernel.files)));
            *kernel = Some(fresh);
        }
        Ok(kernel.as_mut().expect("bound above"))
    }

    async fn execute(
        &self,
        kernel: &mut Option<PooledKernel>,
        reservation: &mut Option<Reservation>,
        code: &str,
        tap: Option<OutputTap>,
    ) -> Result<Execution, PoolError> {
        if let Some(dead) = kernel.take_if(|k| k.kernel.process.has_exited()) {
            let exit = dead.kernel.process.exited().await;
            tracing::info!(sandbox = %dead.kernel.name, %exit, "the session's kernel had died while idle");
            self.activity.set_files(None);
            let not_run = Execution::not_run(exit, self.shared.config.limits);
            dead.destroy(&self.shared.metrics, Termination::StateLost(not_run.end.reason())).await;
            self.shared.refill.notify_one();
            // Running the code on a fresh kernel would hide that its variables are gone: say so instead.
            return Ok(not_run);
        }
        let current = self.bind(kernel, reservation).await?;
        *self.activity.running.lock().unwrap_or_else(|e| e.into_inner()) = Some(current.kernel.client.interrupter());
        let files = Arc::clone(&current.kernel.files);
        let start = files.run_start().await;
        let mut execution = execution::run(&mut current.kernel, code, self.shared.config.limits, tap).await;
        *self.activity.running.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if !execution.end.state_lost() {
            execution.files = files.written_since(start).await;
        }
        tracing::info!(
            sandbox = %current.kernel.name,
            reason = execution.end.reason(),
            duration_ms = execution.duration.as_secs_f64() * 1e3,
            "executed"
        );
        if execution.end.state_lost() {
            self.activity.set_files(None);
            if let Some(lost) = kernel.take() {
                lost.destroy(&self.shared.metrics, Termination::StateLost(execution.end.reason())).await;
            }
            self.shared.refill.notify_one();
        }
        Ok(execution)
    }
}
