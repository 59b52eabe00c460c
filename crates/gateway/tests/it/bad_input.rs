//! Bad input never yields a 5xx: each gets a 4xx that says what was wrong, and other sessions don't notice.

use serde_json::json;

use crate::util::{shared, user, TOKEN};

/// Every malformed request gets a 4xx with a `detail`, while a bystander's session keeps its state throughout.
#[tokio::test]
async fn bad_requests_get_4xx_and_harm_nobody() {
    let api = shared().client();
    let bystander = user("bystander");
    api.run_ok(&bystander, "kept = 'safe'").await;
    let long_user = "u".repeat(10_000);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("non-JSON", b"print(1)".to_vec(), 422),
        ("invalid UTF-8", b"{\"user_uuid\": \"\xff\xfe\", \"code\": \"1\"}".to_vec(), 422),
        ("wrong types", br#"{"user_uuid": ["a"], "code": {"x": 1}}"#.to_vec(), 422),
        ("null fields", br#"{"user_uuid": null, "code": null}"#.to_vec(), 422),
        ("empty user", br#"{"user_uuid": "", "code": "1"}"#.to_vec(), 422),
        ("10,000-character user", json!({"user_uuid": long_user, "code": "1"}).to_string().into_bytes(), 422),
        ("empty body", Vec::new(), 422),
        ("JSON array", b"[]".to_vec(), 422),
        (
            "code over the limit",
            json!({"user_uuid": "big", "code": "#".repeat(1100 * 1024)}).to_string().into_bytes(),
            413,
        ),
        ("huge body", vec![b' '; 12 * 1024 * 1024], 413),
    ];
    for (what, body, expected) in cases {
        let (status, answer) = api.raw("/execute", Some(TOKEN), body).await;
        assert_eq!(status, expected, "{what}: {answer}");
        assert!(answer["detail"].is_string() || answer["detail"].is_array(), "{what}: {answer}");
    }
    let (status, answer) = api.execute(&user("nul"), "x = 1\0").await;
    assert_eq!(status, 400, "NUL byte in code: {answer}");
    assert!(answer["detail"].as_str().unwrap().starts_with("Python Execution Error: "), "{answer}");
    for odd in ["../../etc", "a/b/c", "/etc/passwd", "..", "名前 with spaces", "x\0y"] {
        let (status, answer) = api.execute(odd, "'fine'").await;
        assert_eq!((status, answer["result_text"].as_str()), (200, Some("'fine'")), "user {odd:?}: {answer}");
        assert_eq!(api.release(odd).await.0, 200);
    }
    assert_eq!(api.run_ok(&bystander, "kept").await, "'safe'");
}

/// Output past the limit is cut with a marker and flagged, and the answer stays valid JSON.
#[tokio::test]
async fn huge_output_is_truncated_and_flagged() {
    let api = shared().client();
    let who = user("huge-output");
    let (status, body) = api.execute(&who, "print('x' * 7_000_000)\nprint('after')").await;
    assert_eq!(status, 200);
    assert_eq!(body["output_truncated"], true);
    let text = body["result_text"].as_str().unwrap();
    assert!(text.len() <= 5 * 1024 * 1024 + 200, "{} bytes", text.len());
    assert!(text.contains("[output truncated"), "marker present");
    assert!(!text.contains("after"), "outputs after the limit are dropped");
    let (status, body) = api.execute(&who, "'y' * 100_000_000").await;
    assert_eq!((status, body["output_truncated"].as_bool()), (200, Some(true)));
    let (status, body) = api.execute(&who, "print('small')").await;
    assert_eq!((status, body["output_truncated"].as_bool()), (200, Some(false)));
    assert_eq!(body["result_text"], "small\n");
}
