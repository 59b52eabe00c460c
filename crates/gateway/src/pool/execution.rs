//! One execution on a kernel under the timeout policy: interrupt at the deadline, replace after the grace, and
//! notice a kernel that dies on the way.

use std::time::{Duration, Instant};

use kernel::{ErrorInfo, ExecuteStatus, Output};

use super::output::{OutputBudget, OutputTap};

use crate::launcher::{Exit, Kernel};

/// How an execution ended.
#[derive(Debug)]
pub enum End {
    /// It finished without raising.
    Ok,
    /// The code raised.
    Error(ErrorInfo),
    /// It ran past the timeout and was interrupted; the kernel and its state survive.
    Timeout,
    /// It ran past the timeout and ignored the interrupt; the kernel was replaced.
    TimeoutRestarted,
    /// The kernel died (exit, signal, memory limit, process limit).
    Died(Exit),
    /// The kernel had died while the session was idle (e.g. its zygote died): the code was not run.
    DiedIdle(Exit),
    /// The kernel stopped answering (protocol failure); it was replaced.
    Unresponsive(kernel::Error),
    /// The code ran into the sandbox's process limit (a fork or thread bomb); the kernel and every process it
    /// started were replaced.
    PidsLimit,
}

impl End {
    /// Whether the session's variables are gone (its kernel must be replaced).
    pub fn state_lost(&self) -> bool {
        matches!(self, End::TimeoutRestarted | End::PidsLimit | End::Died(_) | End::DiedIdle(_) | End::Unresponsive(_))
    }

    /// The name of this end in answers and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            End::Ok => "ok",
            End::Error(_) => "error",
            End::Timeout => "timeout",
            End::TimeoutRestarted => "timeout_restarted",
            End::Died(Exit::OutOfMemory) | End::DiedIdle(Exit::OutOfMemory) => "out_of_memory",
            End::Died(Exit::PidsLimit) | End::DiedIdle(Exit::PidsLimit) | End::PidsLimit => "pids_limit",
            End::Died(_) | End::DiedIdle(_) => "kernel_died",
            End::Unresponsive(_) => "unresponsive",
        }
    }
}

impl Execution {
    /// The answer for code that was not run because the session's kernel had died while idle.
    pub(super) fn not_run(exit: Exit, limits: ExecLimits) -> Execution {
        let end = End::DiedIdle(exit);
        Execution {
            outputs: Vec::new(),
            execution_count: None,
            duration: Duration::ZERO,
            end,
            output_truncated: false,
            limits,
            files: Vec::new(),
        }
    }
}

/// The result of one execution, whatever its end.
#[derive(Debug)]
pub struct Execution {
    /// Every output in the order the kernel emitted it.
    pub outputs: Vec<Output>,
    /// The kernel's execution counter, when it replied.
    pub execution_count: Option<i64>,
    /// Wall time from sending the code to the end.
    pub duration: Duration,
    /// How it ended.
    pub end: End,
    /// Whether outputs were cut or dropped at the output limit.
    pub output_truncated: bool,
    /// The limits that applied (for messages).
    pub limits: ExecLimits,
    /// The regular files in `/sandbox` the run created or modified (empty if its kernel was lost).
    pub files: Vec<crate::files::Written>,
}

/// Limits of one execution.
#[derive(Debug, Clone, Copy)]
pub struct ExecLimits {
    /// When to interrupt.
    pub timeout: Duration,
    /// How long an interrupted execution may take to stop before the kernel is replaced.
    pub grace: Duration,
    /// Most bytes of output kept.
    pub output_bytes: usize,
    /// The sandbox's process limit (for messages).
    pub pids: u64,
}

/// How long a protocol failure waits for the kernel's exit, so a dying kernel is named as such.
const DEATH_GRACE: Duration = Duration::from_secs(2);

enum Phase {
    Running,
    Interrupted,
}

/// Runs `code` on `kernel`. When the result's `end.state_lost()`, the caller must destroy the kernel.
pub(super) async fn run(kernel: &mut Kernel, code: &str, limits: ExecLimits, tap: Option<OutputTap>) -> Execution {
    let started = Instant::now();
    let mut budget = OutputBudget::new(limits.output_bytes, tap);
    let interrupter = kernel.client.interrupter();
    let pids_hits = kernel.process.pids_limit_hits();
    let (end, execution_count) = {
        let mut on_output = |output: Output| budget.push(output);
        let execute = kernel.client.execute(code, &mut on_output);
        tokio::pin!(execute);
        let exited = kernel.process.exited();
        tokio::pin!(exited);
        let deadline = tokio::time::sleep(limits.timeout);
        tokio::pin!(deadline);
        let mut phase = Phase::Running;
        loop {
            tokio::select! {
                biased;
                reply = &mut execute => break match (reply, &phase) {
                    (Ok(reply), Phase::Interrupted) => (End::Timeout, reply.execution_count),
                    (Ok(reply), Phase::Running) => match reply.status {
                        ExecuteStatus::Error => (End::Error(reply.error.unwrap_or_else(unknown_error)), reply.execution_count),
                        _ => (End::Ok, reply.execution_count),
                    },
                    (Err(err), _) => {
                        // A closed socket usually means the kernel is exiting: name its death if it is.
                        match tokio::time::timeout(DEATH_GRACE, &mut exited).await {
                            Ok(exit) => (End::Died(exit), None),
                            Err(_) => (End::Unresponsive(err), None),
                        }
                    }
                },
                exit = &mut exited => break (End::Died(exit), None),
                () = &mut deadline => match phase {
                    Phase::Running => {
                        tracing::info!(sandbox = %kernel.name, "execution timed out: interrupting");
                        let interrupter = interrupter.clone();
                        tokio::spawn(async move {
                            if let Err(err) = interrupter.interrupt().await {
                                tracing::warn!(cause = %err, "interrupt_request failed");
                            }
                        });
                        phase = Phase::Interrupted;
                        deadline.as_mut().reset(tokio::time::Instant::now() + limits.grace);
                    }
                    Phase::Interrupted => break (End::TimeoutRestarted, None),
                },
            }
        }
    };
    let end = match end {
        End::Ok | End::Error(_) | End::Timeout if kernel.process.pids_limit_hits() > pids_hits => End::PidsLimit,
        end => end,
    };
    let (outputs, output_truncated) = budget.finish();
    Execution {
        outputs,
        execution_count,
        duration: started.elapsed(),
        end,
        output_truncated,
        limits,
        files: Vec::new(),
    }
}

fn unknown_error() -> ErrorInfo {
    ErrorInfo {
        ename: "Error".into(),
        evalue: "the kernel reported an error without details".into(),
        traceback: Vec::new(),
    }
}
