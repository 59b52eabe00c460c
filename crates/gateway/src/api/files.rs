//! `/files`: a session's `/sandbox` over HTTP: `PUT` uploads, `GET` downloads or lists, `DELETE` deletes. Never
//! through the kernel, so it works while code runs. Paths are checked and resolved by [`crate::files`].

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use nix::errno::Errno;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::bodies::Detail;
use super::body::{DRAIN_CAP, USER_ID_MAX};
use super::{ApiError, AppState};
use crate::files::{FilesError, SandboxDir, UserPath};

/// `GET /files/{user_uuid}` (also with a trailing `/`), and `PUT`, `GET`, `DELETE /files/{user_uuid}/{path}`.
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(list_slash)).routes(routes!(download, upload, delete))
}

/// The query of a listing: the directory to list, `/sandbox` itself by default.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// The directory to list, relative to `/sandbox`; empty for `/sandbox` itself.
    #[serde(default)]
    path: String,
}

/// `200` of a listing.
#[derive(Serialize, ToSchema)]
struct FileListing {
    /// The directory listed, relative to `/sandbox` (empty: `/sandbox` itself).
    path: String,
    /// Every entry below it, recursively, sorted by path.
    entries: Vec<FileEntry>,
    /// True when the listing stopped at its bounds (10,000 entries, 16 levels) before seeing everything.
    truncated: bool,
}

/// One entry of a listing.
#[derive(Serialize, ToSchema)]
struct FileEntry {
    /// Relative to `/sandbox`.
    path: String,
    /// `file`, `directory`, `symlink`, `fifo`, `socket` or `device`.
    kind: &'static str,
    /// Size in bytes (of the link itself for a symlink).
    size: u64,
    /// Last modification, seconds since the Unix epoch.
    modified: f64,
}

/// `200` of an upload.
#[derive(Serialize, ToSchema)]
struct Uploaded {
    /// The file written, relative to `/sandbox`.
    path: String,
    /// Its size in bytes.
    size: u64,
}

/// `200` of a delete.
#[derive(Serialize, ToSchema)]
struct Deleted {
    /// `ok`.
    status: &'static str,
    /// What was deleted, relative to `/sandbox`.
    path: String,
    /// What it was (`file`, `directory`, `symlink`, ...).
    kind: &'static str,
}

/// Lists a directory of the user's `/sandbox`, recursively (bounded). A user without a session has no files: 404.
#[utoipa::path(
    get,
    path = "/files/{user_uuid}",
    tag = "files",
    params(("user_uuid" = String, Path, description = "The user whose session's `/sandbox` is listed."), ListQuery),
    responses(
        (status = 200, description = "The entries.", body = FileListing),
        (status = 400, description = "The path is refused: `..`, absolute, a symlink on the way, not a directory.",
            body = Detail),
        (status = 404, description = "The user has no session (so no files), or no such directory.", body = Detail),
    )
)]
async fn list(
    state: State<AppState>,
    user: Result<Path<String>, PathRejection>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<FileListing>, ApiError> {
    list_files(state, user, query).await
}

/// The same listing as `GET /files/{user_uuid}`.
#[utoipa::path(
    get,
    path = "/files/{user_uuid}/",
    tag = "files",
    params(("user_uuid" = String, Path, description = "The user whose session's `/sandbox` is listed."), ListQuery),
    responses(
        (status = 200, description = "The entries.", body = FileListing),
        (status = 400, description = "The path is refused.", body = Detail),
        (status = 404, description = "The user has no session, or no such directory.", body = Detail),
    )
)]
async fn list_slash(
    state: State<AppState>,
    user: Result<Path<String>, PathRejection>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<FileListing>, ApiError> {
    list_files(state, user, query).await
}

async fn list_files(
    State(state): State<AppState>,
    user: Result<Path<String>, PathRejection>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<FileListing>, ApiError> {
    let user = checked_user(user.map_err(|err| ApiError::InvalidUrl(err.body_text()))?.0)?;
    let Query(query) = query.map_err(|err| ApiError::InvalidUrl(err.body_text()))?;
    let path = UserPath::parse(&query.path).map_err(FilesError::from)?;
    let dir = session_files(&state, &user)?;
    let listing = {
        let path = path.clone();
        let listed = tokio::task::spawn_blocking(move || dir.list(&path)).await;
        listed.unwrap_or(Err(FilesError::System { action: "list", path: query.path, errno: Errno::EIO }))?
    };
    let entries = listing
        .entries
        .into_iter()
        .map(|e| FileEntry { path: e.path, kind: e.kind.as_str(), size: e.size, modified: e.modified })
        .collect();
    Ok(Json(FileListing { path: path.to_string(), entries, truncated: listing.truncated }))
}

/// Streams a regular file of the user's `/sandbox`.
#[utoipa::path(
    get,
    path = "/files/{user_uuid}/{*path}",
    tag = "files",
    params(
        ("user_uuid" = String, Path, description = "The user whose session's file is meant."),
        ("path" = String, Path, description = "The file, relative to `/sandbox`, e.g. `out/data.csv`."),
    ),
    responses(
        (status = 200, description = "The file's bytes.", content_type = "application/octet-stream",
            body = Vec<u8>),
        (status = 400, description = "The path is refused: `..`, absolute, a symlink on the way, a fifo, socket \
            or device, a directory.", body = Detail),
        (status = 404, description = "The user has no session, or no such file.", body = Detail),
    )
)]
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
/// missing parent directories; the file belongs to the sandbox's user. Replaces an existing file whole.
#[utoipa::path(
    put,
    path = "/files/{user_uuid}/{*path}",
    tag = "files",
    params(
        ("user_uuid" = String, Path, description = "The user whose session's file is written."),
        ("path" = String, Path, description = "The file, relative to `/sandbox`, e.g. `data/input.csv`."),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes."),
    responses(
        (status = 200, description = "Written.", body = Uploaded),
        (status = 400, description = "The path is refused: `..`, absolute, a symlink on the way, not a regular \
            file, or the body was cut.", body = Detail),
        (status = 413, description = "Larger than `file_limit_mib` (100 MiB), or `/sandbox` is full, or the \
            session's memory limit is reached (files in `/sandbox` count against it).", body = Detail),
        (status = 503, description = "No sandbox can be had now for a new session.", body = Detail),
    )
)]
async fn upload(
    State(state): State<AppState>,
    target: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Uploaded>, ApiError> {
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
            if matches!(err, FilesError::TooLarge { .. } | FilesError::NoSpace { .. } | FilesError::MemoryFull) {
                drain(&mut stream, seen).await;
            }
            return Err(err.into());
        }
    }
    let size = upload.finish().await?;
    tracing::info!(%user, %path, size, "file uploaded");
    Ok(Json(Uploaded { path: path.to_string(), size }))
}

/// Deletes a file, link, special file or empty directory of the user's `/sandbox` (a link, not its target).
#[utoipa::path(
    delete,
    path = "/files/{user_uuid}/{*path}",
    tag = "files",
    params(
        ("user_uuid" = String, Path, description = "The user whose session's file is deleted."),
        ("path" = String, Path, description = "What to delete, relative to `/sandbox`."),
    ),
    responses(
        (status = 200, description = "Deleted.", body = Deleted),
        (status = 400, description = "The path is refused: `..`, absolute, a symlink on the way.", body = Detail),
        (status = 404, description = "The user has no session, or no such file.", body = Detail),
        (status = 409, description = "A directory that is not empty.", body = Detail),
    )
)]
async fn delete(
    State(state): State<AppState>,
    target: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Deleted>, ApiError> {
    let (user, path) = file_target(target)?;
    let dir = session_files(&state, &user)?;
    let kind = dir.delete(&path)?;
    tracing::info!(%user, %path, kind = kind.as_str(), "file deleted");
    Ok(Json(Deleted { status: "ok", path: path.to_string(), kind: kind.as_str() }))
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
