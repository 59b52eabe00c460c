//! Request bodies: JSON objects of required string fields, refused the way the original's FastAPI did (422 with
//! a `detail` list of `{type, loc, msg, input}`), whatever the content type.

use axum::body::Body;
use futures_util::StreamExt;
use serde_json::{json, Map, Value};

use super::bodies::{Location, ValidationError};
use super::error::ApiError;

/// Longest `user_uuid` accepted.
pub(super) const USER_ID_MAX: usize = 256;

/// The `user_uuid` field every endpoint takes: 1 to 256 characters.
pub(super) const USER_FIELD: Field = Field { name: "user_uuid", min: 1, max: USER_ID_MAX };

/// Reads the body and returns the named string fields, each within its length bounds.
pub(super) async fn string_fields<const N: usize>(
    body: Body,
    limit: usize,
    fields: [Field; N],
) -> Result<[String; N], ApiError> {
    let bytes = read_limited(body, limit).await?;
    let value = parse(&bytes)?;
    let Value::Object(object) = &value else {
        return Err(ApiError::Validation(vec![refusal(
            "model_attributes_type",
            None,
            "Input should be a valid dictionary or object to extract fields from".into(),
            value,
        )]));
    };
    let mut errors = Vec::new();
    let values = fields.map(|field| match check(object, &field) {
        Ok(text) => text,
        Err(error) => {
            errors.push(*error);
            String::new()
        }
    });
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(ApiError::Validation(errors))
    }
}

/// A body larger than its limit is still read (and thrown away) up to this many bytes, so the client, which is
/// usually still sending, gets to read the 413 instead of a reset connection.
pub(super) const DRAIN_CAP: usize = 64 * 1024 * 1024;

/// Reads the whole body if it is at most `limit` bytes.
async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { break };
        seen = seen.saturating_add(chunk.len());
        if seen <= limit {
            bytes.extend_from_slice(&chunk);
        } else if seen > DRAIN_CAP {
            break;
        }
    }
    if seen > limit {
        return Err(ApiError::TooLarge { limit });
    }
    Ok(bytes)
}

/// A required string field and its length bounds.
pub(super) struct Field {
    /// The key.
    pub(super) name: &'static str,
    /// Fewest characters.
    pub(super) min: usize,
    /// Most characters.
    pub(super) max: usize,
}

fn parse(bytes: &[u8]) -> Result<Value, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::Validation(vec![refusal("missing", None, "Field required".into(), Value::Null)]));
    }
    serde_json::from_slice(bytes).map_err(|err| {
        let mut error = refusal("json_invalid", None, "JSON decode error".into(), json!({}));
        error.loc.push(Location::Index(err.column()));
        error.ctx = Some(json!({ "error": err.to_string() }));
        ApiError::Validation(vec![error])
    })
}

/// A problem at `body` or at `body.<field>`.
fn refusal(kind: &'static str, field: Option<&'static str>, msg: String, input: Value) -> ValidationError {
    let loc = std::iter::once("body").chain(field).map(Location::Key).collect();
    ValidationError { kind, loc, msg, input, ctx: None }
}

/// The field's text, or the problem with it (boxed: it is large, and rare).
fn check(object: &Map<String, Value>, field: &Field) -> Result<String, Box<ValidationError>> {
    let at = Some(field.name);
    match object.get(field.name) {
        None => Err(Box::new(refusal("missing", at, "Field required".into(), Value::Object(object.clone())))),
        Some(Value::String(text)) => {
            let chars = text.chars().count();
            if chars < field.min {
                let msg = format!("String should have at least {} character", field.min);
                let mut error = refusal("string_too_short", at, msg, Value::String(text.clone()));
                error.ctx = Some(json!({ "min_length": field.min }));
                Err(Box::new(error))
            } else if chars > field.max {
                let msg = format!("String should have at most {} characters", field.max);
                let mut error = refusal("string_too_long", at, msg, text.chars().take(64).collect::<String>().into());
                error.ctx = Some(json!({ "max_length": field.max }));
                Err(Box::new(error))
            } else {
                Ok(text.clone())
            }
        }
        Some(other) => {
            Err(Box::new(refusal("string_type", at, "Input should be a valid string".into(), other.clone())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: Field = Field { name: "user_uuid", min: 1, max: USER_ID_MAX };
    const CODE: Field = Field { name: "code", min: 0, max: usize::MAX };

    async fn fields(body: &[u8]) -> Result<[String; 2], Vec<Value>> {
        let as_json = |list: Vec<ValidationError>| list.iter().map(|e| serde_json::to_value(e).unwrap()).collect();
        string_fields(Body::from(body.to_vec()), 1 << 20, [USER, CODE]).await.map_err(|err| match err {
            ApiError::Validation(list) => as_json(list),
            other => panic!("not a validation error: {other:?}"),
        })
    }

    /// A valid body yields its fields.
    #[tokio::test]
    async fn valid_body() {
        let [user, code] = fields(br#"{"user_uuid":"u1","code":"print(1)"}"#).await.unwrap();
        assert_eq!((user.as_str(), code.as_str()), ("u1", "print(1)"));
    }

    /// Each malformed body gets the FastAPI error type and location the original's clients see.
    #[tokio::test]
    async fn malformed_bodies_name_the_problem() {
        let cases: [(&[u8], &str, Value); 6] = [
            (b"not json", "json_invalid", json!(["body", 2])),
            (b"", "missing", json!(["body"])),
            (b"[1]", "model_attributes_type", json!(["body"])),
            (br#"{"code":"1"}"#, "missing", json!(["body", "user_uuid"])),
            (br#"{"user_uuid":5,"code":"1"}"#, "string_type", json!(["body", "user_uuid"])),
            (br#"{"user_uuid":"","code":"1"}"#, "string_too_short", json!(["body", "user_uuid"])),
        ];
        for (body, kind, loc) in cases {
            let errors = fields(body).await.unwrap_err();
            assert_eq!(errors[0]["type"], kind, "{}", String::from_utf8_lossy(body));
            if kind != "json_invalid" {
                assert_eq!(errors[0]["loc"], loc);
            }
        }
    }

    /// Invalid UTF-8 is a JSON error, not a crash.
    #[tokio::test]
    async fn invalid_utf8_is_422() {
        let errors = fields(b"{\"user_uuid\":\"\xff\",\"code\":\"1\"}").await.unwrap_err();
        assert_eq!(errors[0]["type"], "json_invalid");
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    const USER: Field = USER_FIELD;
    const CODE: Field = Field { name: "code", min: 0, max: usize::MAX };

    fn run(body: Vec<u8>) -> Result<[String; 2], ApiError> {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(string_fields(Body::from(body), 4096, [USER, CODE]))
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            ".{0,300}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_]{0,10}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Arbitrary bytes never panic and are either accepted or refused as 422/413.
        #[test]
        fn arbitrary_bytes_are_accepted_or_refused(body in prop::collection::vec(any::<u8>(), 0..600)) {
            match run(body) {
                Ok(_) | Err(ApiError::Validation(_)) | Err(ApiError::TooLarge { .. }) => {}
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
        }

        /// A JSON object is accepted exactly when both fields are strings within bounds, and then yields them.
        #[test]
        fn objects_are_judged_by_their_fields(user in json_value(), code in json_value(), extra in json_value()) {
            let body = serde_json::json!({ "user_uuid": user, "code": code, "extra": extra });
            let valid_user = matches!(&user, Value::String(u) if (1..=USER_ID_MAX).contains(&u.chars().count()));
            let valid = valid_user && code.is_string();
            match run(body.to_string().into_bytes()) {
                Ok([u, c]) => {
                    prop_assert!(valid);
                    prop_assert_eq!(Value::String(u), user);
                    prop_assert_eq!(Value::String(c), code);
                }
                Err(ApiError::Validation(errors)) => {
                    prop_assert!(!valid);
                    prop_assert!(!errors.is_empty());
                    for error in errors {
                        let error = serde_json::to_value(error).unwrap();
                        prop_assert!(error["type"].is_string() && error["msg"].is_string() && error["loc"].is_array());
                    }
                }
                Err(ApiError::TooLarge { .. }) => prop_assert!(body.to_string().len() > 4096),
                Err(other) => prop_assert!(false, "unexpected {other:?}"),
            }
        }
    }
}
