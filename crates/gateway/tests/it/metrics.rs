//! `GET /metrics`: the counters and histograms move by exactly what was done, the token rules, the listener of
//! its own. Each test has a server of its own, so no other test's requests move its counters.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::util::{user, TestServer, TOKEN};

/// Each sample of a text exposition: series (name and labels, as written) to value.
fn samples(body: &str) -> HashMap<String, f64> {
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
            (series.to_owned(), value.parse().unwrap_or_else(|_| panic!("not a value: {line:?}")))
        })
        .collect()
}

/// A scrape's samples, read by series.
struct Scrape(HashMap<String, f64>);

impl Scrape {
    /// The value of `series`; a missing series fails the test.
    fn get(&self, series: &str) -> f64 {
        *self.0.get(series).unwrap_or_else(|| panic!("no {series} in {:?}", self.0.keys().collect::<Vec<_>>()))
    }

    /// How far `series` moved since `earlier` (a series absent there counts from 0).
    fn delta(&self, earlier: &Scrape, series: &str) -> f64 {
        self.get(series) - earlier.0.get(series).copied().unwrap_or(0.0)
    }
}

/// GET `url` with the token if given and an `Accept` header if given: status, content type, body.
async fn get(url: &str, token: Option<&str>, accept: Option<&str>) -> (u16, String, String) {
    let mut request = reqwest::Client::new().get(url).timeout(Duration::from_secs(30));
    if let Some(token) = token {
        request = request.header("X-Auth-Token", token);
    }
    if let Some(accept) = accept {
        request = request.header("Accept", accept);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type =
        response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

/// Scrapes `server`'s `/metrics` with the token.
async fn scrape(server: &TestServer) -> Scrape {
    let (status, content_type, body) = get(&format!("{}/metrics", server.url), Some(TOKEN), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    Scrape(samples(&body))
}

fn executions(reason: &str) -> String {
    format!("code_interpreter_executions_total{{reason=\"{reason}\"}}")
}

fn terminations(reason: &str) -> String {
    format!("code_interpreter_sandbox_terminations_total{{reason=\"{reason}\"}}")
}

fn requests(route: &str, status: u16) -> String {
    format!("code_interpreter_http_requests_total{{route=\"{route}\",status=\"{status}\"}}")
}

/// Executions are counted once each by reason (over `/execute` and `/execute/stream`), their durations and the
/// sandbox starts land in the histograms, lost kernels and releases count as terminations, requests are counted by
/// route template and status (401 and 422 included, unknown paths under one label), and the gauges show the pool.
#[tokio::test]
async fn counters_move_by_what_was_done() {
    let server =
        TestServer::start(&["--warm-sandboxes", "1", "--execution-timeout-secs", "1", "--interrupt-grace-secs", "1"]);
    let api = server.client();
    api.wait_ready().await;
    let before = scrape(&server).await;
    for reason in ["ok", "error", "timeout", "timeout_restarted", "kernel_died", "out_of_memory", "pids_limit"] {
        assert_eq!(before.get(&executions(reason)), 0.0, "every reason is exported from the start");
    }
    assert_eq!(before.get(&terminations("released")), 0.0);
    assert_eq!(before.get(r#"code_interpreter_sandboxes{state="warm"}"#), 1.0);
    assert_eq!(before.get(r#"code_interpreter_sandboxes{state="assigned"}"#), 0.0);
    assert_eq!(before.get("code_interpreter_sandboxes_max"), 30.0);
    assert_eq!(before.get("code_interpreter_initializing"), 0.0);
    assert!(before.get("code_interpreter_sandbox_start_duration_seconds_count") >= 1.0, "the warm fill was timed");

    let who = user("metrics");
    api.run_ok(&who, "x = 1").await;
    let (status, events) = api.execute_stream(&who, "print(x)").await;
    assert_eq!((status, events.last().map(|e| e.1.as_str())), (200, Some("result")), "{events:?}");
    for (code, reason) in [
        ("1/0", "error"),
        ("while True: pass", "timeout"),
        ("sum(range(10**13))", "timeout_restarted"),
        ("import os; os._exit(1)", "kernel_died"),
    ] {
        let (status, body) = api.execute(&who, code).await;
        assert_eq!((status, body["reason"].as_str()), (400, Some(reason)), "{code}: {body}");
    }
    let busy = tokio::spawn({
        let (api, who) = (api.clone(), who.clone());
        async move { api.execute(&who, "import time; time.sleep(0.8); 'done'").await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while scrape(&server).await.get(r#"code_interpreter_sessions{state="busy"}"#) != 1.0 {
        assert!(Instant::now() < deadline, "the running execution never showed as a busy session");
    }
    let (status, body) = busy.await.unwrap();
    assert_eq!((status, body["result_text"].as_str()), (200, Some("'done'")), "{body}");
    let idle = scrape(&server).await;
    assert_eq!(idle.get(r#"code_interpreter_sessions{state="busy"}"#), 0.0);
    assert_eq!(idle.get(r#"code_interpreter_sessions{state="idle"}"#), 1.0);
    assert_eq!(idle.get(r#"code_interpreter_sandboxes{state="assigned"}"#), 1.0);
    assert_eq!(api.release(&who).await.0, 200);

    let code = json!({"user_uuid": "u", "code": "1"}).to_string().into_bytes();
    assert_eq!(api.raw("/execute", None, code).await.0, 401);
    assert_eq!(api.raw("/execute", Some(TOKEN), b"{not json".to_vec()).await.0, 422);
    assert_eq!(api.get_anonymous("/no/such/path").await.0, 404);
    assert_eq!(api.get_anonymous("/metrics").await.0, 401);

    let after = scrape(&server).await;
    for (reason, count) in
        [("ok", 3.0), ("error", 1.0), ("timeout", 1.0), ("timeout_restarted", 1.0), ("kernel_died", 1.0)]
    {
        assert_eq!(after.delta(&before, &executions(reason)), count, "executions {reason}");
    }
    for reason in ["out_of_memory", "pids_limit", "unresponsive"] {
        assert_eq!(after.delta(&before, &executions(reason)), 0.0, "executions {reason}");
    }
    assert_eq!(after.delta(&before, "code_interpreter_execution_duration_seconds_count"), 7.0);
    assert!(after.delta(&before, "code_interpreter_execution_duration_seconds_sum") >= 2.0, "a timeout lasts 1 s");
    assert!(
        after.delta(&before, "code_interpreter_sandbox_start_duration_seconds_count") >= 2.0,
        "the user's kernels after the two losses were started after the first scrape"
    );
    for (reason, count) in [("timeout_restarted", 1.0), ("kernel_died", 1.0), ("released", 1.0)] {
        assert_eq!(after.delta(&before, &terminations(reason)), count, "terminations {reason}");
    }
    for (route, status, count) in [
        ("/execute", 200, 2.0),
        ("/execute", 400, 4.0),
        ("/execute", 401, 1.0),
        ("/execute", 422, 1.0),
        ("/execute/stream", 200, 1.0),
        ("/release", 200, 1.0),
        ("/metrics", 401, 1.0),
        ("unmatched", 404, 1.0),
    ] {
        assert_eq!(after.delta(&before, &requests(route, status)), count, "requests {route} {status}");
    }
    assert!(after.0.keys().all(|series| !series.contains("/no/such/path")), "raw paths are never labels");
}

/// With `metrics_listen`, `/metrics` is served there without a token (OpenMetrics when asked for) and not on the
/// API's address; a session recycled for idleness counts as an `idle_timeout` termination.
#[tokio::test]
async fn separate_listener_serves_without_token() {
    let server = TestServer::start(&[
        "--warm-sandboxes",
        "0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--idle-timeout-secs",
        "1",
        "--reap-interval-secs",
        "1",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let metrics_url = loop {
        let address = server.log_lines().iter().find_map(|line| {
            let rest = line.split("metrics on http://").nth(1)?;
            Some(rest.split_whitespace().next()?.to_owned())
        });
        if let Some(address) = address {
            break format!("http://{address}");
        }
        assert!(Instant::now() < deadline, "the server never said where the metrics are");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status, content_type, body) = get(&metrics_url, None, None).await;
    assert_eq!((status, content_type.as_str()), (200, "text/plain; version=0.0.4; charset=utf-8"), "{body}");
    let values = samples(&body);
    assert_eq!(values.get(r#"code_interpreter_executions_total{reason="ok"}"#), Some(&0.0), "{body}");
    assert!(body.contains("# TYPE code_interpreter_execution_duration_seconds histogram"), "{body}");
    let (status, content_type, body) = get(&metrics_url, None, Some("application/openmetrics-text")).await;
    assert_eq!((status, content_type.as_str()), (200, "application/openmetrics-text; version=1.0.0; charset=utf-8"));
    assert!(body.ends_with("# EOF\n"), "{body}");
    let (status, _, _) = get(&format!("{}/metrics", server.url), Some(TOKEN), None).await;
    assert_eq!(status, 404, "not on the API's address");
    let (status, _, body) = get(&metrics_url, None, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        samples(&body).get(r#"code_interpreter_http_requests_total{route="/metrics",status="200"}"#),
        Some(&2.0)
    );

    let api = server.client();
    let who = user("metrics-idle");
    api.run_ok(&who, "1").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, _, body) = get(&metrics_url, None, None).await;
        let values = Scrape(samples(&body));
        if values.get(&terminations("idle_timeout")) == 1.0 {
            assert_eq!(values.get(r#"code_interpreter_sessions{state="idle"}"#), 0.0, "{body}");
            assert_eq!(values.get(r#"code_interpreter_sandboxes{state="assigned"}"#), 0.0, "{body}");
            assert_eq!(values.get(&terminations("released")), 0.0, "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "the idle session was never counted as recycled: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
