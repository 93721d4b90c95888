//! `request-termination`'s config (Kong 3.9.3's `kong/plugins/request-termination/schema.lua`):
//! the status and message, or raw body and content type, that answer every request, an echo
//! of the request for debugging, and a trigger that limits it to requests naming it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{parse_typed, to_value, PluginSchema};
use crate::error::FieldErrors;
use crate::lenient;
use crate::schema::{FieldDecl, FieldType};

pub const SCHEMA: PluginSchema = PluginSchema {
    name: "request-termination",
    priority: 2,
    consumer_scope: true,
    protocols: &["grpc", "grpcs", "http", "https"],
    config: &[
        FieldDecl::new("status_code", FieldType::Integer { min: 100, max: 599 })
            .required()
            .default("503"),
        FieldDecl::new("message", FieldType::String { min: 0, max: 65536 }),
        FieldDecl::new("content_type", FieldType::String { min: 0, max: 4096 }),
        FieldDecl::new("body", FieldType::String { min: 0, max: 1 << 20 }),
        FieldDecl::new("echo", FieldType::Boolean)
            .required()
            .default("false"),
        FieldDecl::new("trigger", FieldType::String { min: 1, max: 256 }),
    ],
    example: r#"{"status_code": 403, "message": "So long and thanks for all the fish!"}"#,
    validate,
    entity_checks: "[]",
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestTerminationConfig {
    #[serde(default = "default_status")]
    pub status_code: u16,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub message: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub content_type: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub body: Option<String>,
    #[serde(default)]
    pub echo: bool,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub trigger: Option<String>,
}

fn default_status() -> u16 {
    503
}

impl RequestTerminationConfig {
    pub fn parse(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }
}

/// Kong's `is_present`: a non-empty string.
fn present(s: &Option<String>) -> bool {
    s.as_deref().is_some_and(|s| !s.is_empty())
}

/// Kong's `typedefs.header_name`: letters, digits, `-` and `_`.
pub fn valid_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn validate(config: &Value) -> Result<Value, FieldErrors> {
    // The status is a required integer with a default: absent takes the default, an explicit
    // null is missing (Kong keeps `ngx.null`, then fails `required`).
    match config.get("status_code") {
        Some(Value::Null) => {
            return Err(FieldErrors::single(
                "config.status_code",
                "required field missing",
            ))
        }
        Some(v) => match v.as_f64() {
            Some(f) if f.fract() == 0.0 => {
                if !(100.0..=599.0).contains(&f) {
                    return Err(FieldErrors::single(
                        "config.status_code",
                        "value should be between 100 and 599",
                    ));
                }
            }
            _ => {
                return Err(FieldErrors::single(
                    "config.status_code",
                    "expected an integer",
                ))
            }
        },
        None => {}
    }
    let mut normalised = config.clone();
    if let Some(Value::Number(n)) = normalised.get("status_code") {
        let whole = n.as_f64().unwrap_or(503.0) as u64;
        normalised["status_code"] = Value::from(whole);
    }
    let c: RequestTerminationConfig = parse_typed(&normalised)?;
    if let Some(t) = &c.trigger {
        if !valid_header_name(t) {
            return Err(FieldErrors::single(
                "config.trigger",
                format!("bad header name '{t}', allowed characters are A-Z, a-z, 0-9, '_', and '-'"),
            ));
        }
    }
    if present(&c.message) && (present(&c.content_type) || present(&c.body)) {
        return Err(FieldErrors::single(
            "config",
            "message cannot be used with content_type or body",
        ));
    }
    if present(&c.content_type) && !present(&c.body) {
        return Err(FieldErrors::single("config", "content_type requires a body"));
    }
    if c.echo && (present(&c.content_type) || present(&c.body)) {
        return Err(FieldErrors::single(
            "config",
            "echo cannot be used with content_type and body",
        ));
    }
    Ok(to_value(&c))
}

#[cfg(test)]
mod tests {
    use super::super::validate;
    use serde_json::json;

    // Facts from Kong 3.9.3's spec/03-plugins/14-request-termination/01-schema_spec.lua.
    #[test]
    fn defaults_and_kongs_messages() {
        let v = validate("request-termination", None).unwrap();
        assert_eq!(v["status_code"], 503);
        assert_eq!(v["echo"], false);
        let msg = |c| {
            validate("request-termination", Some(&c))
                .unwrap_err()
                .to_json()
        };
        assert_eq!(
            msg(json!({"status_code": "abc"}))["config"]["status_code"],
            "expected an integer"
        );
        assert_eq!(
            msg(json!({"status_code": null}))["config"]["status_code"],
            "required field missing"
        );
        assert_eq!(
            msg(json!({"status_code": 600}))["config"]["status_code"],
            "value should be between 100 and 599"
        );
        assert_eq!(
            msg(json!({"content_type": "text/html"}))["config"],
            "content_type requires a body"
        );
        assert_eq!(
            msg(json!({"echo": true, "body": "x", "content_type": "a/b"}))["config"],
            "echo cannot be used with content_type and body"
        );
    }
}
