//! The API described: the OpenAPI 3.1 document at `GET /openapi.json`, generated from the handlers'
//! `#[utoipa::path]` and the bodies' `ToSchema` (each route is registered together with its documentation by
//! `utoipa_axum::routes!`), and the API page at `GET /docs` (Swagger UI, its files embedded in the binary: it
//! works offline). Neither needs the token: they document, they don't act.

use std::sync::{Arc, LazyLock};

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi as _};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::Config;

use super::bodies::{Detail, ValidationErrors};
use super::AppState;

/// The security scheme of the `X-Auth-Token` header, as operations name it.
const TOKEN_SCHEME: &str = "token";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Code Interpreter",
        description = "Every user gets an isolated, stateful Python session: code sent with a `user_uuid` runs in \
            that user's own IPython kernel, inside a Linux sandbox (namespaces, a private read-only root, cgroups, \
            an unprivileged uid, no network). Variables, imports and functions persist between requests; text, \
            tracebacks and plots come back.\n\nEvery endpoint but `GET /health`, `GET /openapi.json`, the API \
            page at `GET /docs` and the web console (`GET /`, `GET /console/...`) needs the header \
            `X-Auth-Token`: the server's `AUTH_TOKEN`, else the content of \
            `<data-dir>/auth_token.txt` (`code-interpreter token` prints it). A missing or wrong token is `401 \
            {\"detail\": \"Invalid or missing authentication token\"}`.\n\nThis document is generated from the \
            code and served by it, as is the page at `/docs`: both work offline."
    ),
    tags(
        (name = "execution", description = "Run code in a user's session."),
        (name = "sessions", description = "A session's lifecycle and the pool of sandboxes."),
        (name = "files", description = "A session's `/sandbox`: upload, list, download, delete. Never through the \
            kernel, so it works while code runs; nothing outside `/sandbox` can be reached."),
        (name = "service", description = "Liveness and this documentation; no token."),
    ),
    components(schemas(Detail, ValidationErrors)),
    modifiers(&TokenScheme),
)]
struct ApiDoc;

/// Declares the `X-Auth-Token` security scheme.
struct TokenScheme;

impl Modify for TokenScheme {
    fn modify(&self, openapi: &mut OpenApi) {
        let key =
            ApiKeyValue::with_description("X-Auth-Token", "The service's token (`code-interpreter token` prints it).");
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(TOKEN_SCHEME, SecurityScheme::ApiKey(ApiKey::Header(key)));
    }
}

/// The document's base: title, description, tags, the security scheme; the routes add their paths.
pub(super) fn base_document() -> OpenApi {
    ApiDoc::openapi()
}

/// Documents that every operation of `router` requires the token (as the router's token check does): its
/// security requirement and its `401`.
pub(super) fn requiring_token(mut router: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    for operation in operations(router.get_openapi_mut()) {
        operation.security = Some(vec![SecurityRequirement::new(TOKEN_SCHEME, Vec::<String>::new())]);
        add_response(operation, 401, "No or wrong `X-Auth-Token`.", "Detail");
    }
    router
}

/// Writes axum's catch-all parameters (`{*path}`) as OpenAPI's path templates have them (`{path}`).
pub(super) fn with_openapi_templates(mut document: OpenApi) -> OpenApi {
    let paths = std::mem::take(&mut document.paths.paths);
    document.paths.paths = paths.into_iter().map(|(path, item)| (path.replace("{*", "{"), item)).collect();
    document
}

/// Documents what `body.rs` refuses for every operation that takes a body: `413` and `422`.
pub(super) fn with_body_refusals(mut document: OpenApi) -> OpenApi {
    for operation in operations(&mut document).filter(|operation| operation.request_body.is_some()) {
        let too_large = "The body is too large: code beyond `code_limit_kib` (1 MiB), or a body far beyond that.";
        add_response(operation, 413, too_large, "Detail");
        let invalid = "The body is not JSON, lacks a field or has a wrong type (FastAPI's `detail` list).";
        add_response(operation, 422, invalid, "ValidationErrors");
    }
    document
}

fn operations(document: &mut OpenApi) -> impl Iterator<Item = &mut Operation> {
    document.paths.paths.values_mut().flat_map(|item| {
        [&mut item.get, &mut item.put, &mut item.post, &mut item.delete, &mut item.patch, &mut item.head]
            .into_iter()
            .flatten()
    })
}

fn add_response(operation: &mut Operation, status: u16, description: &str, schema: &str) {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name(schema))).build();
    let response = ResponseBuilder::new().description(description).content("application/json", content).build();
    operation.responses.responses.insert(status.to_string(), response.into());
}

/// `GET /openapi.json`, `GET /docs`, `GET /docs/`, `GET /docs/{file}`; the handlers read the document from an
/// `Extension` (see [`serving`]).
pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(docs))
        .routes(routes!(docs_index))
        .routes(routes!(docs_file))
}

/// The finished document, serialized once, for `GET /openapi.json`.
#[derive(Clone)]
pub(super) struct Served(Arc<str>);

/// The layer that hands the finished document to `GET /openapi.json`.
pub(super) fn serving(document: &OpenApi) -> Extension<Served> {
    let json = document.to_json().unwrap_or_else(|err| format!(r#"{{"detail":"unserializable: {err}"}}"#));
    Extension(Served(json.into()))
}

/// This document: OpenAPI 3.1, generated from the code. Needs no token.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "service",
    responses((status = 200, description = "The OpenAPI 3.1 document.", content_type = "application/json",
        body = Object))
)]
async fn openapi_json(Extension(Served(json)): Extension<Served>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], json.to_string()).into_response()
}

/// The API page: Swagger UI, served by this binary with every asset (works offline). Needs no token.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "service",
    responses((status = 303, description = "Redirects to `/docs/`, the page.", headers(("location" = String))))
)]
async fn docs() -> Redirect {
    // Relative, so the page also works behind a proxy that serves the API under a prefix.
    Redirect::to("docs/")
}

/// The API page's HTML.
#[utoipa::path(
    get,
    path = "/docs/",
    tag = "service",
    responses((status = 200, description = "The page.", content_type = "text/html", body = String))
)]
async fn docs_index() -> Response {
    page_file("index.html")
}

/// One of the API page's files (script, style sheet, icon).
#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "service",
    params(("file" = String, Path, description = "A file of the page.", example = "swagger-ui.css")),
    responses(
        (status = 200, description = "The file.", content_type = "application/octet-stream", body = String),
        (status = 404, description = "The page has no such file.", body = Detail),
    )
)]
async fn docs_file(Path(file): Path<String>) -> Response {
    page_file(&file)
}

/// Swagger UI's configuration: this server's document, and no online validator (it would call swagger.io).
static PAGE_CONFIG: LazyLock<Arc<Config<'static>>> =
    LazyLock::new(|| Arc::new(Config::new(["../openapi.json"]).validator_url("none")));

fn page_file(file: &str) -> Response {
    match utoipa_swagger_ui::serve(file, Arc::clone(&PAGE_CONFIG)) {
        Ok(Some(found)) => ([(header::CONTENT_TYPE, found.content_type)], found.bytes.into_owned()).into_response(),
        Ok(None) => {
            let detail = format!("The API page has no file {file:?}.");
            (StatusCode::NOT_FOUND, Json(Detail { detail })).into_response()
        }
        Err(err) => {
            let detail = format!("The API page's file {file:?} could not be prepared: {err}");
            (StatusCode::INTERNAL_SERVER_ERROR, Json(Detail { detail })).into_response()
        }
    }
}

#[cfg(test)]
mod tests;
