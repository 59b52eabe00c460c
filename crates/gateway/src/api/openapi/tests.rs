//! Holds the router to its document: every route the axum router serves is in `/openapi.json` with its method,
//! every documented operation is served, and the request schemas say what the body parser accepts.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;

use crate::api::body::USER_FIELD;
use crate::api::{router, AppState};
use crate::launcher::{BoxFuture, Kernel, LaunchError, Launcher};
use crate::metrics::Metrics;
use crate::pool::{ExecLimits, Pool, PoolConfig};

const TOKEN: &str = "t";

/// A launcher that never delivers a kernel: these tests only route.
struct NoKernels;

impl Launcher for NoKernels {
    fn launch(&self, _slot: usize) -> BoxFuture<'_, Result<Kernel, LaunchError>> {
        Box::pin(std::future::pending())
    }

    fn cleanup_stale(&self) -> Result<usize, LaunchError> {
        Ok(0)
    }
}

fn app() -> Router {
    let limits =
        ExecLimits { timeout: Duration::from_secs(1), grace: Duration::from_secs(1), output_bytes: 1, pids: 1 };
    let config = PoolConfig {
        warm: 0,
        max: 1,
        limits,
        idle_timeout: Duration::from_secs(60),
        reap_interval: Duration::from_secs(60),
    };
    let metrics = Metrics::new(limits.timeout, limits.grace);
    let pool = Pool::start(config, Arc::new(NoKernels), metrics.clone()).unwrap();
    router(AppState {
        pool,
        token: TOKEN.into(),
        memory_limit_mib: 1,
        code_limit_bytes: 1024,
        metrics,
        metrics_on_api: true,
        file_limit_bytes: 1 << 20,
    })
}

/// The methods a route may have (HEAD comes with GET, OPTIONS is CORS's).
const METHODS: [Method; 5] = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];

/// The path templates of every route of the router, read from the router itself, so a route added by any means,
/// documented or not, is seen: its `Debug` lists them first, as `paths: {RouteId(n): "/path", ...}` (then the
/// fallback's own).
fn served_paths(router: &Router) -> BTreeSet<String> {
    let debug = format!("{router:?}");
    let start = debug.find("paths: {").expect("the router's Debug lists its paths") + "paths: {".len();
    let mut rest = &debug[start..];
    let mut paths = BTreeSet::new();
    while let Some(entry) = rest.strip_prefix("RouteId(") {
        let (id, after) = entry.split_once("): \"").expect("RouteId(n): \"path\"");
        assert!(id.chars().all(|c| c.is_ascii_digit()), "{id}");
        let (path, after) = after.split_once('"').unwrap();
        paths.insert(path.to_owned());
        rest = after.strip_prefix(", ").unwrap_or(after);
    }
    assert!(rest.starts_with('}'), "unparsed paths: {rest}");
    paths
}

/// `{name}` and `{*name}` (axum) both as OpenAPI's `{name}`.
fn as_documented(path: &str) -> String {
    path.replace("{*", "{")
}

/// A path of the template, each parameter filled in.
fn concrete(path: &str, fill: &str) -> String {
    let mut out = String::new();
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(if segment.starts_with('{') { fill } else { segment });
    }
    out
}

/// Whether the router has a route for this method and path: anything but 405 (method) or 418 (the test's
/// fallback: no path) is routed. The token is sent (the token check answers 401 before a 405) with an empty body;
/// a handler still busy after a while (waiting for a kernel that never comes) was routed too.
async fn routed(router: &Router, method: &Method, path: &str) -> bool {
    let request = Request::builder().method(method.clone()).uri(path).header("x-auth-token", TOKEN);
    let answer = router.clone().oneshot(request.body(Body::empty()).unwrap());
    match tokio::time::timeout(Duration::from_secs(5), answer).await {
        Ok(response) => {
            let status = response.unwrap().status();
            status != StatusCode::METHOD_NOT_ALLOWED && status != StatusCode::IM_A_TEAPOT
        }
        Err(_) => true,
    }
}

async fn document(router: &Router) -> Value {
    let request = Request::builder().uri("/openapi.json").body(Body::empty()).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    serde_json::from_slice(&axum::body::to_bytes(response.into_body(), 1 << 24).await.unwrap()).unwrap()
}

fn documented(document: &Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method.as_str().to_lowercase()).is_some() {
                operations.insert((method.to_string(), path.clone()));
            }
        }
    }
    operations
}

/// Every method of every route the router serves is documented, and every documented operation is served.
#[tokio::test]
async fn the_document_lists_exactly_the_served_routes() {
    let app = app();
    let document = document(&app).await;
    let documented = documented(&document);
    let app = app.fallback(|| async { StatusCode::IM_A_TEAPOT });
    let paths = served_paths(&app);
    assert!(paths.contains("/execute") && paths.contains("/health"), "routes not found in {app:?}");
    let mut served = BTreeSet::new();
    for path in &paths {
        for method in &METHODS {
            if routed(&app, method, &concrete(path, "probe")).await {
                served.insert((method.to_string(), as_documented(path)));
            }
        }
    }
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(undocumented.is_empty(), "served but not in /openapi.json (add them with `routes!`): {undocumented:?}");
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(unserved.is_empty(), "in /openapi.json but not served: {unserved:?}");
    assert!(documented.contains(&("POST".into(), "/execute".into())), "{documented:?}");
}

/// The request schemas state the bounds the body parser enforces on `user_uuid`.
#[tokio::test]
async fn request_schemas_state_the_parsers_bounds() {
    let document = document(&app()).await;
    for schema in ["ExecuteRequest", "UserRequest"] {
        let user = &document["components"]["schemas"][schema]["properties"]["user_uuid"];
        assert_eq!(user["minLength"], USER_FIELD.min, "{schema}: {user}");
        assert_eq!(user["maxLength"], USER_FIELD.max, "{schema}: {user}");
        let required = &document["components"]["schemas"][schema]["required"];
        assert!(required.as_array().unwrap().contains(&"user_uuid".into()), "{schema}: {required}");
    }
}
