//! The Prometheus metrics: every metric the service exports (names under `code_interpreter_`), the cheap calls the
//! pool and the API make to update them, and their exposition in the Prometheus text or OpenMetrics format.
//!
//! Updates on the request path are atomic increments on counters made at start, or one short lock of a histogram;
//! the pool's gauges are read from the pool at scrape time, so they are never stale.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{prometheus_text, text, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// The label of HTTP requests whose path matched no route (the raw path would make the label set unbounded).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Every `reason` an execution can end with, as its answer names it (`pool::End::reason`).
const EXECUTION_REASONS: [&str; 8] =
    ["ok", "error", "timeout", "timeout_restarted", "kernel_died", "out_of_memory", "pids_limit", "unresponsive"];

/// Why a sandbox was destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// Its user's session was released (`POST /release`).
    Released,
    /// Its user's session was idle past the idle timeout.
    IdleTimeout,
    /// The service shut down.
    Shutdown,
    /// A warm (unassigned) kernel was found dead when a user was to get it.
    WarmDied,
    /// An execution lost the session's state; the execution's reason (`timeout_restarted`, `kernel_died`,
    /// `out_of_memory`, `pids_limit`, `unresponsive`).
    StateLost(&'static str),
}

impl Termination {
    /// The `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Termination::Released => "released",
            Termination::IdleTimeout => "idle_timeout",
            Termination::Shutdown => "shutdown",
            Termination::WarmDied => "warm_died",
            Termination::StateLost(reason) => reason,
        }
    }
}

/// Every termination reason, so each series exists (at 0) from the start.
const TERMINATION_REASONS: [Termination; 9] = [
    Termination::Released,
    Termination::IdleTimeout,
    Termination::Shutdown,
    Termination::WarmDied,
    Termination::StateLost("timeout_restarted"),
    Termination::StateLost("kernel_died"),
    Termination::StateLost("out_of_memory"),
    Termination::StateLost("pids_limit"),
    Termination::StateLost("unresponsive"),
];

/// The pool's counts at one moment, for the gauges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// Warm kernels ready for a new user.
    pub warm: usize,
    /// Warm kernels being started.
    pub starting: usize,
    /// Sandboxes bound to a user's session (or starting for one).
    pub assigned: usize,
    /// The sandbox maximum.
    pub max: usize,
    /// User sessions with code running or queued.
    pub sessions_busy: usize,
    /// User sessions with nothing to do.
    pub sessions_idle: usize,
    /// Whether the initial warm fill is still running.
    pub initializing: bool,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Cow<'static, str>,
    status: u16,
}

/// The service's metrics: a cheap handle, shared by the pool and the API.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    sandboxes: Family<StateLabel, Gauge>,
    sandboxes_max: Gauge,
    sessions: Family<StateLabel, Gauge>,
    initializing: Gauge,
    /// One counter per known reason, made at start: the hot path finds its counter without a lock.
    executions: Vec<(&'static str, Counter)>,
    executions_family: Family<ReasonLabel, Counter>,
    execution_duration: Histogram,
    terminations: Family<ReasonLabel, Counter>,
    sandbox_start_duration: Histogram,
    sandbox_start_failures: Counter,
    requests: Family<RequestLabels, Counter>,
}

/// Bounds of the execution histogram below the timeout, in seconds: a millisecond up to minutes.
const EXECUTION_BUCKETS: [f64; 17] =
    [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// Bounds of the sandbox start histogram, in seconds: a zygote fork takes tens of milliseconds, an exec'd kernel
/// a few hundred, many at once seconds.
const SANDBOX_START_BUCKETS: [f64; 14] = [0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];

/// The execution histogram's bounds: [`EXECUTION_BUCKETS`] below the timeout, then the timeout (an interrupted
/// execution ends just after it) and the timeout plus the grace (a replaced kernel's execution ends there).
fn execution_buckets(timeout: Duration, grace: Duration) -> Vec<f64> {
    let (timeout, restart) = (timeout.as_secs_f64(), (timeout + grace).as_secs_f64());
    let mut bounds: Vec<f64> = EXECUTION_BUCKETS.iter().copied().filter(|b| *b < timeout * 0.99).collect();
    // Rounded to the millisecond, so the `le` labels read as written.
    bounds.extend([timeout * 1.01, restart * 1.01].map(|bound| (bound * 1e3).round() / 1e3));
    bounds
}

impl Metrics {
    /// Registers every metric; `timeout` and `grace` are the executions' limits, which set the histogram's upper
    /// buckets.
    pub fn new(timeout: Duration, grace: Duration) -> Metrics {
        let mut registry = Registry::with_prefix("code_interpreter");
        let sandboxes = Family::<StateLabel, Gauge>::default();
        registry.register(
            "sandboxes",
            "Sandboxes alive or starting, by state: warm (ready for a new user), starting (a warm start in \
             progress), assigned (bound to a user's session, or starting for one)",
            sandboxes.clone(),
        );
        let sandboxes_max = Gauge::default();
        registry.register("sandboxes_max", "The most sandboxes alive at once (max_sandboxes)", sandboxes_max.clone());
        let sessions = Family::<StateLabel, Gauge>::default();
        registry.register("sessions", "User sessions, by state: busy (code running or queued), idle", sessions.clone());
        let initializing = Gauge::default();
        registry.register("initializing", "1 while the initial warm fill is running", initializing.clone());
        let executions_family = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "executions",
            "Executions answered, by reason (ok, or the failure reason the answer carries), from /execute and \
             /execute/stream alike",
            executions_family.clone(),
        );
        let executions = EXECUTION_REASONS
            .iter()
            .map(|reason| (*reason, executions_family.get_or_create_owned(&ReasonLabel { reason })))
            .collect();
        let execution_duration = Histogram::new(execution_buckets(timeout, grace));
        registry.register_with_unit(
            "execution_duration",
            "Wall time of executions, from sending the code to the kernel to its end",
            Unit::Seconds,
            execution_duration.clone(),
        );
        let terminations = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "sandbox_terminations",
            "Sandboxes destroyed, by reason: released, idle_timeout, shutdown, warm_died, or the execution \
             reason that lost the session's state",
            terminations.clone(),
        );
        for termination in TERMINATION_REASONS {
            terminations.get_or_create_owned(&ReasonLabel { reason: termination.label() });
        }
        let sandbox_start_duration = Histogram::new(SANDBOX_START_BUCKETS);
        registry.register_with_unit(
            "sandbox_start_duration",
            "Time from asking the launcher for a sandbox to its kernel answering",
            Unit::Seconds,
            sandbox_start_duration.clone(),
        );
        let sandbox_start_failures = Counter::default();
        registry.register("sandbox_start_failures", "Sandbox starts that failed", sandbox_start_failures.clone());
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route (the matched route template, or \"unmatched\") and status",
            requests.clone(),
        );
        let inner = Inner {
            registry,
            sandboxes,
            sandboxes_max,
            sessions,
            initializing,
            executions,
            executions_family,
            execution_duration,
            terminations,
            sandbox_start_duration,
            sandbox_start_failures,
            requests,
        };
        Metrics { inner: Arc::new(inner) }
    }

    /// Counts an execution that ended with `reason`; `ran` is its duration, `None` if the code was not run.
    pub fn execution_ended(&self, reason: &'static str, ran: Option<Duration>) {
        match self.inner.executions.iter().find(|(known, _)| *known == reason) {
            Some((_, counter)) => counter.inc(),
            None => self.inner.executions_family.get_or_create(&ReasonLabel { reason }).inc(),
        };
        if let Some(duration) = ran {
            self.inner.execution_duration.observe(duration.as_secs_f64());
        }
    }

    /// Counts a sandbox destroyed for `why`.
    pub fn sandbox_terminated(&self, why: Termination) {
        self.inner.terminations.get_or_create(&ReasonLabel { reason: why.label() }).inc();
    }

    /// Records a sandbox start that took `took`, or a failed one.
    pub fn sandbox_started(&self, took: Option<Duration>) {
        match took {
            Some(took) => self.inner.sandbox_start_duration.observe(took.as_secs_f64()),
            None => {
                self.inner.sandbox_start_failures.inc();
            }
        }
    }

    /// Counts an answered HTTP request; `route` is the matched route template or [`UNMATCHED_ROUTE`].
    pub fn http_request(&self, route: Cow<'static, str>, status: u16) {
        self.inner.requests.get_or_create(&RequestLabels { route, status }).inc();
    }

    /// Every metric, with the pool's gauges set from `census`: in the OpenMetrics text format if `openmetrics`,
    /// else the Prometheus text format 0.0.4. Returns the content type and the body.
    pub fn encode(&self, census: Census, openmetrics: bool) -> (&'static str, String) {
        let inner = &*self.inner;
        for (state, count) in [("warm", census.warm), ("starting", census.starting), ("assigned", census.assigned)] {
            inner.sandboxes.get_or_create(&StateLabel { state }).set(count as i64);
        }
        for (state, count) in [("busy", census.sessions_busy), ("idle", census.sessions_idle)] {
            inner.sessions.get_or_create(&StateLabel { state }).set(count as i64);
        }
        inner.sandboxes_max.set(census.max as i64);
        inner.initializing.set(i64::from(census.initializing));
        let mut body = String::with_capacity(8 * 1024);
        // Writing to a String cannot fail.
        if openmetrics {
            let _ = text::encode(&mut body, &inner.registry);
            ("application/openmetrics-text; version=1.0.0; charset=utf-8", body)
        } else {
            let _ = prometheus_text::encode(&mut body, &inner.registry);
            (prometheus_text::CONTENT_TYPE, body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Each sample line of a text exposition: series (name and labels) to value.
    fn samples(body: &str) -> HashMap<&str, f64> {
        body.lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
            .map(|line| {
                let (series, value) = line.rsplit_once(' ').unwrap();
                (series, value.parse().unwrap())
            })
            .collect()
    }

    /// The exposition names every metric with the prefix, `_total` counters, `_seconds` histograms and HELP texts;
    /// updates show in it.
    #[test]
    fn exposition_has_names_labels_and_values() {
        let metrics = Metrics::new(Duration::from_secs(10), Duration::from_secs(2));
        metrics.execution_ended("ok", Some(Duration::from_millis(3)));
        metrics.execution_ended("timeout", Some(Duration::from_millis(10_050)));
        metrics.execution_ended("kernel_died", None);
        metrics.sandbox_terminated(Termination::StateLost("kernel_died"));
        metrics.sandbox_started(Some(Duration::from_millis(40)));
        metrics.sandbox_started(None);
        metrics.http_request(Cow::Borrowed("/execute"), 401);
        metrics.http_request(Cow::Borrowed(UNMATCHED_ROUTE), 404);
        let census = Census { warm: 2, assigned: 3, max: 30, sessions_busy: 1, sessions_idle: 2, ..Census::default() };
        let (content_type, body) = metrics.encode(census, false);
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        let values = samples(&body);
        for (series, value) in [
            (r#"code_interpreter_executions_total{reason="ok"}"#, 1.0),
            (r#"code_interpreter_executions_total{reason="timeout"}"#, 1.0),
            (r#"code_interpreter_executions_total{reason="kernel_died"}"#, 1.0),
            (r#"code_interpreter_executions_total{reason="out_of_memory"}"#, 0.0),
            ("code_interpreter_execution_duration_seconds_count", 2.0),
            (r#"code_interpreter_execution_duration_seconds_bucket{le="0.005"}"#, 1.0),
            (r#"code_interpreter_execution_duration_seconds_bucket{le="10.1"}"#, 2.0),
            (r#"code_interpreter_sandbox_terminations_total{reason="kernel_died"}"#, 1.0),
            (r#"code_interpreter_sandbox_terminations_total{reason="released"}"#, 0.0),
            ("code_interpreter_sandbox_start_duration_seconds_count", 1.0),
            ("code_interpreter_sandbox_start_failures_total", 1.0),
            (r#"code_interpreter_http_requests_total{route="/execute",status="401"}"#, 1.0),
            (r#"code_interpreter_http_requests_total{route="unmatched",status="404"}"#, 1.0),
            (r#"code_interpreter_sandboxes{state="warm"}"#, 2.0),
            (r#"code_interpreter_sandboxes{state="assigned"}"#, 3.0),
            ("code_interpreter_sandboxes_max", 30.0),
            (r#"code_interpreter_sessions{state="busy"}"#, 1.0),
            ("code_interpreter_initializing", 0.0),
        ] {
            assert_eq!(values.get(series), Some(&value), "{series} in\n{body}");
        }
        assert!(body.contains("# HELP code_interpreter_executions_total Executions answered"), "{body}");
        assert!(body.contains("# TYPE code_interpreter_execution_duration_seconds histogram"), "{body}");
        let (content_type, body) = metrics.encode(census, true);
        assert!(content_type.starts_with("application/openmetrics-text"));
        assert!(body.ends_with("# EOF\n"), "{body}");
    }

    /// The execution buckets go from a millisecond to just past the timeout and the timeout plus the grace.
    #[test]
    fn execution_buckets_end_at_the_timeout() {
        let bounds = execution_buckets(Duration::from_secs(10), Duration::from_secs(2));
        assert_eq!(bounds.first(), Some(&0.001));
        assert_eq!(&bounds[bounds.len() - 3..], &[5.0, 10.1, 12.12]);
        assert!(bounds.windows(2).all(|pair| pair[0] < pair[1]), "{bounds:?}");
    }
}
