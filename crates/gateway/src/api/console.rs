//! The web console: `GET /` serves its page and `GET /console/{*path}` its assets, embedded in the binary and
//! public (the page holds no secret; every API call it makes sends the token the user typed).
//!
//! The files live in `crates/gateway/web/`, laid out so that `web/index.html` also works opened from disk: it
//! loads `console/...` relative to itself. Vendored libraries (`web/console/vendor/`, see its README) come with
//! their licences, which are served too.

use std::collections::HashMap;
use std::sync::OnceLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::bodies::Detail;
use super::AppState;

/// One embedded file.
struct Asset {
    /// Its path under `/console/` (empty for the page itself, served at `/`).
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $content_type:expr) => {
        Asset { path: $path, content_type: $content_type, body: include_bytes!(concat!("../../web/console/", $path)) }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The page, served at `/`.
static INDEX: Asset =
    Asset { path: "", content_type: "text/html; charset=utf-8", body: include_bytes!("../../web/index.html") };

/// Everything under `/console/`.
static ASSETS: &[Asset] = &[
    asset!("console.js", JS),
    asset!("console.css", CSS),
    asset!("vendor/codemirror/codemirror.js", JS),
    asset!("vendor/codemirror/codemirror.css", CSS),
    asset!("vendor/codemirror/python.js", JS),
    asset!("vendor/codemirror/runmode.js", JS),
    asset!("vendor/codemirror/LICENSE", TEXT),
    asset!("vendor/ansi_up/ansi_up.js", JS),
    asset!("vendor/ansi_up/LICENSE", TEXT),
];

/// `GET /` and `GET /console/{*path}`.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(index)).routes(routes!(asset))
}

/// The web console: a page to run code in a session, with its outputs as they stream in. Needs no token (the
/// page asks for it and sends it with each call).
#[utoipa::path(
    get,
    path = "/",
    tag = "service",
    responses(
        (status = 200, description = "The page.", content_type = "text/html", body = String),
        (status = 304, description = "The browser's copy is current (`If-None-Match`)."),
    )
)]
async fn index(headers: HeaderMap) -> Response {
    serve(&INDEX, &headers)
}

/// One of the console's files (script, style sheet, vendored library and its licence).
#[utoipa::path(
    get,
    path = "/console/{*path}",
    tag = "service",
    params(("path" = String, Path, description = "A file of the console.", example = "console.js")),
    responses(
        (status = 200, description = "The file.", content_type = "application/octet-stream", body = String),
        (status = 304, description = "The browser's copy is current (`If-None-Match`)."),
        (status = 404, description = "The console has no such file.", body = Detail),
    )
)]
async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|asset| asset.path == path) {
        Some(asset) => serve(asset, &headers),
        None => (StatusCode::NOT_FOUND, Json(Detail { detail: format!("No console file {path:?}") })).into_response(),
    }
}

/// The file with its type and an `ETag`; `304` when the browser already has this version. `no-cache` makes the
/// browser ask each time (the URLs carry no version), which costs a 304 once the files are cached.
fn serve(asset: &Asset, headers: &HeaderMap) -> Response {
    let etag = etag(asset);
    let cached = headers.get(header::IF_NONE_MATCH).is_some_and(|given| given.as_bytes() == etag.as_bytes());
    let common = [
        (header::ETAG, HeaderValue::from_str(etag).expect("hex is a valid header")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
    ];
    if cached {
        (StatusCode::NOT_MODIFIED, common).into_response()
    } else {
        (common, [(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    }
}

/// A strong `ETag` from the content, computed once per file.
fn etag(asset: &Asset) -> &'static str {
    static TAGS: OnceLock<HashMap<&'static str, String>> = OnceLock::new();
    let tags = TAGS.get_or_init(|| {
        let tag = |asset: &Asset| {
            let digest = Sha256::digest(asset.body);
            let hex: String = digest[..12].iter().map(|byte| format!("{byte:02x}")).collect();
            format!("\"{hex}\"")
        };
        std::iter::once(&INDEX).chain(ASSETS).map(|asset| (asset.path, tag(asset))).collect()
    });
    &tags[asset.path]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every script and style sheet under `web/console/` is embedded: a file added there cannot be forgotten.
    #[test]
    fn every_console_file_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web/console");
        let mut pending = vec![root.clone()];
        let mut found = 0;
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    pending.push(path);
                } else if path.extension().is_some_and(|e| e == "js" || e == "css") {
                    let name = path.strip_prefix(&root).unwrap().to_str().unwrap();
                    assert!(ASSETS.iter().any(|a| a.path == name), "{name} is not in ASSETS");
                    found += 1;
                }
            }
        }
        assert!(found >= 5, "only {found} files found");
    }

    /// Each file has its own tag, stable across calls.
    #[test]
    fn etags_differ_per_file() {
        let tags: Vec<&str> = std::iter::once(&INDEX).chain(ASSETS).map(etag).collect();
        let mut unique = tags.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), tags.len());
        assert_eq!(etag(&ASSETS[0]), tags[1]);
    }
}
