//! The API described by the server itself: `/openapi.json` is a valid OpenAPI 3.1 document whose every operation
//! is served, and which says what the server really answers; `/docs` is a page whose assets all come from the
//! server. (That every route of the router is documented is held in `src/api/openapi/tests.rs`, in process.)

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::util::{shared, user, TOKEN};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// The served document, fetched without a token.
async fn document() -> Value {
    let (status, text) = shared().client().get_anonymous("/openapi.json").await;
    assert_eq!(status, 200, "/openapi.json needs no token: {text}");
    serde_json::from_str(&text).expect("/openapi.json is JSON")
}

/// Every (method, path, operation) of the document.
fn operations(document: &Value) -> Vec<(&'static str, String, &Value)> {
    let mut all = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in METHODS {
            if let Some(operation) = item.get(method) {
                all.push((method, path.clone(), operation));
            }
        }
    }
    all
}

/// Every `$ref` anywhere in `value`.
fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(target)) = object.get("$ref") {
                found.push(target);
            }
            object.values().for_each(|v| refs(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
        _ => {}
    }
}

/// The document parses as OpenAPI 3.1 and holds together: refs resolve, operations have responses and unique ids,
/// the token's security scheme exists and is what protected operations require, with their 401.
#[tokio::test]
async fn document_is_valid_openapi_3_1() {
    let document = document().await;
    let spec = oas3::from_json(document.to_string()).expect("an OpenAPI 3.1 document");
    let version = spec.validate_version().expect("a version oas3 supports");
    assert_eq!((version.major, version.minor), (3, 1), "{version}");
    for (path, method, operation) in spec.operations() {
        operation.request_body(&spec).unwrap_or_else(|err| panic!("{method} {path}: request body: {err}"));
        operation.parameters(&spec).unwrap_or_else(|err| panic!("{method} {path}: parameters: {err}"));
        let declared = operation.responses.as_ref().map_or(0, |r| r.len());
        assert_eq!(operation.responses(&spec).len(), declared, "{method} {path}: every response resolves");
    }

    let mut targets = Vec::new();
    refs(&document, &mut targets);
    assert!(targets.len() > 10, "the bodies are referenced schemas: {targets:?}");
    for target in targets {
        let pointer = target.strip_prefix('#').unwrap_or_else(|| panic!("{target} is not local"));
        assert!(document.pointer(pointer).is_some(), "{target} does not resolve");
    }

    let scheme = &document["components"]["securitySchemes"]["token"];
    assert_eq!((scheme["type"].as_str(), scheme["in"].as_str()), (Some("apiKey"), Some("header")), "{scheme}");
    assert_eq!(scheme["name"], "X-Auth-Token");
    let mut ids = BTreeSet::new();
    for (method, path, operation) in operations(&document) {
        let id = operation["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no operationId"));
        assert!(ids.insert(id.to_owned()), "operationId {id} twice");
        assert!(operation["tags"].as_array().is_some_and(|t| !t.is_empty()), "{method} {path} has no tag");
        let responses = operation["responses"].as_object().filter(|r| !r.is_empty());
        let responses = responses.unwrap_or_else(|| panic!("{method} {path} has no responses"));
        for (status, response) in responses {
            assert!(response["description"].is_string(), "{method} {path} {status} has no description");
        }
        let public = ["/", "/health", "/openapi.json"].contains(&path.as_str())
            || path.starts_with("/docs")
            || path.starts_with("/console/");
        let security = operation.get("security").and_then(Value::as_array);
        if public {
            assert!(security.is_none_or(|s| s.is_empty()), "{method} {path} is public: {security:?}");
        } else {
            let requires = security.is_some_and(|s| s.iter().any(|r| r.get("token").is_some()));
            assert!(requires && responses.contains_key("401"), "{method} {path} must require the token");
        }
        if operation.get("requestBody").is_some() {
            assert!(responses.contains_key("413") && responses.contains_key("422"), "{method} {path}");
        }
    }
    let execute = &document["paths"]["/execute"]["post"]["responses"];
    for status in ["200", "400", "401", "409", "413", "422", "503", "504"] {
        assert!(execute.get(status).is_some(), "/execute documents {status}");
    }
}

/// A path of the template with each parameter filled with its example.
fn concrete(path: &str, operation: &Value) -> String {
    let mut path = path.to_owned();
    for parameter in operation["parameters"].as_array().into_iter().flatten() {
        let name = parameter["name"].as_str().unwrap();
        let example = parameter["example"].as_str().or(parameter["schema"]["example"].as_str()).unwrap_or("x");
        path = path.replace(&format!("{{{name}}}"), example);
    }
    path
}

/// Every documented operation is served: it answers something other than 405 or the router's own 404 (a handler's
/// 404, e.g. a user without files, says why in `detail`), with the token where the document says one is needed,
/// and 401 without it.
#[tokio::test]
async fn every_documented_operation_is_served() {
    let document = document().await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for (method, path, operation) in operations(&document) {
        let url = format!("{}{}", shared().url, concrete(&path, operation));
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let protected = operation.get("security").and_then(Value::as_array).is_some_and(|s| !s.is_empty());
        let request = http.request(method.clone(), &url).header("X-Auth-Token", TOKEN).body("{}");
        let answer = request.send().await.unwrap();
        let status = answer.status().as_u16();
        let handled = answer.json::<Value>().await.is_ok_and(|body| body["detail"].is_string());
        assert!(status != 405 && (status != 404 || handled), "{method} {path}: {status}");
        let documented = operation["responses"].get(status.to_string()).is_some();
        assert!(documented, "{method} {path} answered {status}, which it does not document");
        let anonymous = http.request(method.clone(), &url).body("{}").send().await.unwrap().status().as_u16();
        assert_eq!(anonymous == 401, protected, "{method} {path} without a token: {anonymous}");
    }
}

/// The properties and required names of a schema, through `$ref`s and `allOf`.
fn shape(document: &Value, schema: &Value, properties: &mut Map<String, Value>, required: &mut BTreeSet<String>) {
    if let Some(target) = schema["$ref"].as_str() {
        return shape(document, document.pointer(&target[1..]).unwrap(), properties, required);
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        shape(document, part, properties, required);
    }
    properties.extend(schema["properties"].as_object().cloned().unwrap_or_default());
    required.extend(schema["required"].as_array().into_iter().flatten().map(|r| r.as_str().unwrap().to_owned()));
}

/// A real answer has every property its documented schema requires, and no property it does not document.
fn assert_matches(document: &Value, path: &str, method: &str, status: u16, answer: &Value) {
    let response = &document["paths"][path][method]["responses"][status.to_string()];
    let schema = &response["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "{method} {path} documents no JSON body for {status}: {response}");
    let (mut properties, mut required) = (Map::new(), BTreeSet::new());
    shape(document, schema, &mut properties, &mut required);
    let keys: BTreeSet<String> = answer.as_object().unwrap().keys().cloned().collect();
    assert!(required.is_subset(&keys), "{path} {status}: required {required:?}, answered {keys:?}");
    let documented: BTreeSet<String> = properties.keys().cloned().collect();
    assert!(keys.is_subset(&documented), "{path} {status}: answered {keys:?}, documented {documented:?}");
}

/// The documented 200, 400 and 422 bodies of `/execute`, and `/status`'s, are what the server really answers.
#[tokio::test]
async fn documented_bodies_are_what_the_server_answers() {
    let document = document().await;
    let api = shared().client();
    let who = user("openapi");
    let (status, answer) = api.execute(&who, "print('hi')\n6 * 7").await;
    assert_eq!((status, answer["result_text"].as_str()), (200, Some("hi\n42")), "{answer}");
    assert_matches(&document, "/execute", "post", 200, &answer);
    let (status, answer) = api.execute(&who, "1 / 0").await;
    assert_eq!(status, 400, "{answer}");
    assert_matches(&document, "/execute", "post", 400, &answer);
    let reasons = &document["components"]["schemas"]["Reason"]["enum"];
    assert!(reasons.as_array().unwrap().contains(&answer["reason"]), "{reasons} lacks {}", answer["reason"]);
    let (status, answer) = api.raw("/execute", Some(TOKEN), b"{}".to_vec()).await;
    assert_eq!(status, 422, "{answer}");
    assert_matches(&document, "/execute", "post", 422, &answer);
    assert_matches(&document, "/status", "get", 200, &api.status().await);
    api.release(&who).await;
}

/// `/docs` is an HTML page (no token) whose every script, style sheet and icon is served by this server, and
/// which reads this server's document with no online validator.
#[tokio::test]
async fn docs_page_loads_everything_from_the_server() {
    let http = reqwest::Client::new();
    let response = http.get(format!("{}/docs", shared().url)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let page_url = response.url().clone();
    assert!(page_url.path().ends_with("/docs/"), "{page_url}");
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/html"), "{content_type}");
    let page = response.text().await.unwrap();
    let mut assets = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        for piece in page.split(attribute).skip(1) {
            assets.push(piece.split('"').next().unwrap().to_owned());
        }
    }
    assert!(assets.len() >= 4, "scripts and style sheets: {assets:?}");
    for asset in &assets {
        let url = page_url.join(asset).unwrap();
        assert_eq!(url.origin(), page_url.origin(), "{asset} is not served by this server");
        let status = http.get(url.clone()).send().await.unwrap().status();
        assert_eq!(status, 200, "{url}");
    }
    let initializer_url = page_url.join("swagger-initializer.js").unwrap();
    assert!(assets.iter().any(|a| page_url.join(a).unwrap() == initializer_url), "{assets:?}");
    let initializer = http.get(initializer_url).send().await.unwrap().text().await.unwrap();
    assert!(initializer.contains("\"url\": \"../openapi.json\""), "{initializer}");
    assert!(initializer.contains("\"validatorUrl\": \"none\""), "{initializer}");
    assert!(!initializer.contains("http://") && !initializer.contains("https://"), "{initializer}");
}
