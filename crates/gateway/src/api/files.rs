//! `/files`: a session's `/sandbox` over HTTP: `PUT` uploads, `GET` downloads or lists, `DELETE` deletes. Never
//! through the kernel, so it works while code runs. Paths are checked and resolved by [`crate::files`].

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::StreamExt;
use nix::errno::Errno;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

use super::body::{DRAIN_CAP, USER_ID_MAX};
use super::{ApiError, AppState};
use crate::files::{FilesError, SandboxDir, UserPath};

/// `GET /files/{user_uuid}` (also with a trailing `/`), and `PUT`, `GET`, `DELETE /files/{user_uuid}/{path}`.
pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/files/{user_uuid}", get(list))
        .route("/files/{user_uuid}/", get(list))
        .route("/files/{user_uuid}/{*path}", get(download).put(upload).delete(delete))
}

/// The query of a listing: the directory to list, `/sandbox` itself by default.
#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    path: String,
}

/// Lists a directory of the user's `/sandbox`, recursively (bounded).
async fn list(
    State(state): State<AppState>,
    user: Result<Path<String>, PathRejection>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let user = checked_user(user.map_err(|err| ApiError::InvalidUrl(err.body_text()))?.0)?;
    let Query(query) = query.map_err(|err| ApiError::InvalidUrl(err.body_text()))?;
    let path = UserPath::parse(&query.path).map_err(FilesError::from)?;
    let dir = session_files(&state, &user)?;
    let listing = {
        let path = path.clone();
        let listed = tokio::task::spawn_blocking(move || dir.list(&path)).await;
        listed.unwrap_or(Err(FilesError::System { action: "list", path: query.path, errno: Errno::EIO }))?
    };
    let entries: Vec<Value> = listing
        .entries
        .iter()
        .map(|e| json!({ "path": e.path, "kind": e.kind.as_str(), "size": e.size, "modified": e.modified }))
        .collect();
    Ok(Json(json!({ "path": path.to_string(), "entries": entries, "truncated": listing.truncated })))
}

/// Streams a regular file of the user's `/sandbox`.
async fn download(
    State(state): State<AppState>,
    target: Result<Path<(String, String)>, PathRejection>,
) -> Result<Response, ApiError> {
    let (user, path) = file_target(target)?;
    let dir = session_files(&state, &user)?;
    let (file, size) = dir.download(&path)?;
    // At most the size seen when opened, so the body matches its Content-Length even if the file grows.
    let body = Body::from_stream(ReaderStream::new(tokio::fs::File::from_std(file).take(size)));
    let headers =
        [(header::CONTENT_TYPE, "application/octet-stream".to_owned()), (header::CONTENT_LENGTH, size.to_string())];
    Ok((headers, body).into_response())
}

/// Writes the request body to a file of the user's `/sandbox`, creating the session (as `/execute` does) and
/// missing parent directories; the file belongs to the sandbox's user.
async fn upload(
    State(state): State<AppState>,
    target: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let (user, path) = file_target(target)?;
    let limit = state.file_limit_bytes;
    let too_large = || FilesError::TooLarge { limit_mib: limit >> 20 };
    let mut stream = body.into_data_stream();
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        drain(&mut stream, 0).await;
        return Err(too_large().into());
    }
    let dir = state.pool.files_or_start(&user).await?;
    let mut upload = dir.upload(&path, limit)?;
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|err| FilesError::BodyCut(err.to_string()))?;
        seen = seen.saturating_add(chunk.len());
        if let Err(err) = upload.write(&chunk).await {
            drop(upload);
            if matches!(err, FilesError::TooLarge { .. } | FilesError::NoSpace { .. }) {
                drain(&mut stream, seen).await;
            }
            return Err(err.into());
        }
    }
    let size = upload.finish().await?;
    tracing::info!(%user, %path, size, "file uploaded");
    Ok(Json(json!({ "path": path.to_string(), "size": size })))
}

/// Deletes a file, link, special file or empty directory of the user's `/sandbox` (a link, not its target).
async fn delete(
    State(state): State<AppState>,
    target: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let (user, path) = file_target(target)?;
    let dir = session_files(&state, &user)?;
    let kind = dir.delete(&path)?;
    tracing::info!(%user, %path, kind = kind.as_str(), "file deleted");
    Ok(Json(json!({ "status": "ok", "path": path.to_string(), "kind": kind.as_str() })))
}

/// The user and file path of a `/files/{user_uuid}/{path}` URL, checked.
fn file_target(target: Result<Path<(String, String)>, PathRejection>) -> Result<(String, UserPath), ApiError> {
    let Path((user, path)) = target.map_err(|err| ApiError::InvalidUrl(err.body_text()))?;
    let user = checked_user(user)?;
    Ok((user, UserPath::parse_file(&path).map_err(FilesError::from)?))
}

/// `user` if it is a valid `user_uuid` (as in the JSON bodies: 1 to 256 characters).
fn checked_user(user: String) -> Result<String, ApiError> {
    if !(1..=USER_ID_MAX).contains(&user.chars().count()) {
        return Err(ApiError::InvalidUrl(format!("user_uuid must have 1 to {USER_ID_MAX} characters")));
    }
    super::access_log::record_user(&user);
    Ok(user)
}

/// The `/sandbox` of the user's session; a user without a session has no files.
fn session_files(state: &AppState, user: &str) -> Result<Arc<SandboxDir>, ApiError> {
    state.pool.files(user).ok_or_else(|| ApiError::NoSession { user: user.to_owned() })
}

/// Reads and discards the rest of a refused body (up to a cap), so the client, usually still sending, gets to
/// read the answer instead of a reset connection.
async fn drain(stream: &mut axum::body::BodyDataStream, mut seen: usize) {
    while let Some(Ok(chunk)) = stream.next().await {
        seen = seen.saturating_add(chunk.len());
        if seen > DRAIN_CAP {
            break;
        }
    }
}
