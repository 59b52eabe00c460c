//! The HTTP contract: tokens, malformed bodies, release and status, as the original's clients read them.

use serde_json::{json, Value};

use crate::util::{shared, user, TestServer, TOKEN};

/// Missing or wrong token is 401 with the original's body; /health needs none.
#[tokio::test]
async fn token_is_required() {
    let api = shared().client();
    let body = json!({"user_uuid": "u", "code": "1"}).to_string().into_bytes();
    for token in [None, Some("wrong"), Some("")] {
        let (status, answer) = api.raw("/execute", token, body.clone()).await;
        assert_eq!(status, 401, "token {token:?}");
        assert_eq!(answer, json!({"detail": "Invalid or missing authentication token"}));
    }
    let (status, answer) = api.raw("/release", None, br#"{"user_uuid":"u"}"#.to_vec()).await;
    assert_eq!((status, answer["detail"].as_str()), (401, Some("Invalid or missing authentication token")));
    let (status, _) = api.get_anonymous("/status").await;
    assert_eq!(status, 401, "/status requires the token, as the documentation says");
    let (status, text) = api.get_anonymous("/health").await;
    assert_eq!(status, 200, "{text}");
}

/// Malformed bodies are 422 with a FastAPI-style detail list naming the problem.
#[tokio::test]
async fn malformed_bodies_are_422() {
    let api = shared().client();
    let cases: [(&[u8], &str); 5] = [
        (b"{not json", "json_invalid"),
        (br#"{"code": "1"}"#, "missing"),
        (br#"{"user_uuid": 7, "code": "1"}"#, "string_type"),
        (br#"{"user_uuid": "u", "code": ["1"]}"#, "string_type"),
        (b"\"just a string\"", "model_attributes_type"),
    ];
    for (body, kind) in cases {
        let (status, answer) = api.raw("/execute", Some(TOKEN), body.to_vec()).await;
        assert_eq!(status, 422, "{}: {answer}", String::from_utf8_lossy(body));
        assert_eq!(answer["detail"][0]["type"], kind, "{answer}");
        assert!(answer["detail"][0]["msg"].is_string());
        assert!(answer["detail"][0]["loc"].is_array());
    }
    let (status, answer) = api.raw("/release", Some(TOKEN), b"{}".to_vec()).await;
    assert_eq!((status, answer["detail"][0]["loc"].clone()), (422, json!(["body", "user_uuid"])));
}

/// Release answers the original's body, for known and unknown users alike, and frees the sandbox.
#[tokio::test]
async fn release_answers_the_originals_body() {
    let api = shared().client();
    let who = user("release-body");
    api.run_ok(&who, "x = 1").await;
    let (status, answer) = api.release(&who).await;
    assert_eq!(status, 200);
    assert_eq!(answer, json!({"status": "ok", "detail": format!("Worker for user {who} has been released.")}));
    let (status, answer) = api.release("nobody-ever").await;
    assert_eq!(status, 200);
    assert_eq!(answer["detail"], "Worker for user nobody-ever has been released.");
}

/// /status has the original's four fields with their types.
#[tokio::test]
async fn status_has_the_original_fields() {
    let api = shared().client();
    let status = api.status().await;
    let object = status.as_object().unwrap();
    let mut keys: Vec<_> = object.keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["busy_workers", "idle_workers_in_pool", "is_initializing", "total_workers"]);
    for key in ["busy_workers", "idle_workers_in_pool", "total_workers"] {
        assert!(object[key].is_u64(), "{key}: {status}");
    }
    assert_eq!(object["is_initializing"], Value::Bool(false));
    let total = object["total_workers"].as_u64().unwrap();
    assert!(total >= object["idle_workers_in_pool"].as_u64().unwrap());
}

/// A browser page from another origin may call the API (CORS preflight allowed).
#[tokio::test]
async fn cors_allows_any_origin() {
    let response = reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, format!("{}/execute", shared().url))
        .header("Origin", "null")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "x-auth-token,content-type")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    assert!(response.headers().contains_key("access-control-allow-origin"));
}

/// One access-log line per request at info, with route, status, user and duration; the code and its output never
/// appear at info; colour codes only on a terminal.
#[tokio::test]
async fn each_request_is_logged_once_without_code() {
    let temp = tempfile::Builder::new().prefix("ci-log-").tempdir().unwrap();
    let server = TestServer::start_logging(temp.path(), &["--warm-sandboxes", "1"], TOKEN, "gateway=info");
    let api = server.client();
    let who = user("logged");
    let secret = "print('output-3f9a'); code_7c21 = 1";
    api.run_ok(&who, secret).await;
    let (status, _) = api.raw("/execute", None, b"{}".to_vec()).await;
    assert_eq!(status, 401);
    // The line is written after the answer is sent: give the server a moment.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let lines = server.log_lines();
    let answered = |needles: &[&str]| {
        lines.iter().filter(|l| l.contains("answered") && needles.iter().all(|n| l.contains(n))).count()
    };
    let user_field = format!("user=\"{who}\"");
    assert_eq!(answered(&["route=/execute", &user_field, "status=200", "ms="]), 1, "{lines:#?}");
    assert_eq!(answered(&["route=/execute", "status=401"]), 1, "{lines:#?}");
    assert!(!lines.iter().any(|l| l.contains("code_7c21") || l.contains("output-3f9a")), "{lines:#?}");
    // Written to a pipe, not a terminal: plain text, no colour codes for log files and collectors to carry.
    assert!(!lines.iter().any(|l| l.contains('\u{1b}')), "{lines:#?}");
}
