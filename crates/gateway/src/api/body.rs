//! Request bodies: JSON objects of required string fields, refused the way the original's FastAPI did (422 with
//! a `detail` list of `{type, loc, msg, input}`), whatever the content type.

use axum::body::{to_bytes, Body};
use serde_json::{json, Map, Value};

use super::error::ApiError;

/// Most bytes a request body may have.
pub(super) const BODY_LIMIT: usize = 4 * 1024 * 1024;

/// Longest `user_uuid` accepted.
pub(super) const USER_ID_MAX: usize = 256;

/// Reads the body and returns the named string fields, each within its length bounds.
pub(super) async fn string_fields<const N: usize>(
    body: Body,
    fields: [Field; N],
) -> Result<[String; N], ApiError> {
    let bytes = to_bytes(body, BODY_LIMIT)
        .await
        .map_err(|_| ApiError::TooLarge { limit: BODY_LIMIT })?;
    let value = parse(&bytes)?;
    let Value::Object(object) = &value else {
        return Err(ApiError::Validation(vec![json!({
            "type": "model_attributes_type",
            "loc": ["body"],
            "msg": "Input should be a valid dictionary or object to extract fields from",
            "input": value,
        })]));
    };
    let mut errors = Vec::new();
    let values = fields.map(|field| match check(object, &field) {
        Ok(text) => text,
        Err(error) => {
            errors.push(error);
            String::new()
        }
    });
    if errors.is_empty() {
        Ok(values)
    } else {
        Err(ApiError::Validation(errors))
    }
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
        return Err(ApiError::Validation(vec![json!({
            "type": "missing", "loc": ["body"], "msg": "Field required", "input": null,
        })]));
    }
    serde_json::from_slice(bytes).map_err(|err| {
        ApiError::Validation(vec![json!({
            "type": "json_invalid",
            "loc": ["body", err.column()],
            "msg": "JSON decode error",
            "input": {},
            "ctx": { "error": err.to_string() },
        })])
    })
}

fn check(object: &Map<String, Value>, field: &Field) -> Result<String, Value> {
    let input = Value::Object(object.clone());
    match object.get(field.name) {
        None => Err(
            json!({ "type": "missing", "loc": ["body", field.name], "msg": "Field required", "input": input }),
        ),
        Some(Value::String(text)) => {
            let chars = text.chars().count();
            if chars < field.min {
                Err(json!({
                    "type": "string_too_short", "loc": ["body", field.name],
                    "msg": format!("String should have at least {} character", field.min),
                    "input": text, "ctx": { "min_length": field.min },
                }))
            } else if chars > field.max {
                Err(json!({
                    "type": "string_too_long", "loc": ["body", field.name],
                    "msg": format!("String should have at most {} characters", field.max),
                    "input": text.chars().take(64).collect::<String>(), "ctx": { "max_length": field.max },
                }))
            } else {
                Ok(text.clone())
            }
        }
        Some(other) => Err(json!({
            "type": "string_type", "loc": ["body", field.name], "msg": "Input should be a valid string", "input": other,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: Field = Field {
        name: "user_uuid",
        min: 1,
        max: USER_ID_MAX,
    };
    const CODE: Field = Field {
        name: "code",
        min: 0,
        max: usize::MAX,
    };

    async fn fields(body: &[u8]) -> Result<[String; 2], Vec<Value>> {
        string_fields(Body::from(body.to_vec()), [USER, CODE])
            .await
            .map_err(|err| match err {
                ApiError::Validation(list) => list,
                other => panic!("not a validation error: {other:?}"),
            })
    }

    /// A valid body yields its fields.
    #[tokio::test]
    async fn valid_body() {
        let [user, code] = fields(br#"{"user_uuid":"u1","code":"print(1)"}"#)
            .await
            .unwrap();
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
            (
                br#"{"user_uuid":5,"code":"1"}"#,
                "string_type",
                json!(["body", "user_uuid"]),
            ),
            (
                br#"{"user_uuid":"","code":"1"}"#,
                "string_too_short",
                json!(["body", "user_uuid"]),
            ),
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
        let errors = fields(b"{\"user_uuid\":\"\xff\",\"code\":\"1\"}")
            .await
            .unwrap_err();
        assert_eq!(errors[0]["type"], "json_invalid");
    }
}
