//! `correlation-id`'s config: the header that carries a request's id, how a missing id is
//! made, and whether the client gets it back.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{parse_typed, to_value, PluginSchema};
use crate::error::FieldErrors;
use crate::schema::{FieldDecl, FieldType};

pub const SCHEMA: PluginSchema = PluginSchema {
    name: "correlation-id",
    priority: 100_001,
    consumer_scope: true,
    protocols: &["grpc", "grpcs", "http", "https"],
    config: &[
        FieldDecl::new("header_name", FieldType::String { min: 1, max: 256 })
            .default(r#""Kong-Request-ID""#),
        FieldDecl::new(
            "generator",
            FieldType::OneOf(&["uuid", "uuid#counter", "tracker"]),
        )
        .required()
        .default(r##""uuid#counter""##),
        FieldDecl::new("echo_downstream", FieldType::Boolean)
            .required()
            .default("false"),
    ],
    example: "{}",
    validate,
    entity_checks: "[]",
};

/// How a missing id is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Generator {
    /// A random UUID per request.
    #[serde(rename = "uuid")]
    Uuid,
    /// A UUID per process, then `#` and a counter: cheap and still unique.
    #[serde(rename = "uuid#counter")]
    UuidCounter,
    /// `server address-port-pid-connection-request on connection-time`.
    #[serde(rename = "tracker")]
    Tracker,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorrelationIdConfig {
    #[serde(default = "default_header")]
    pub header_name: String,
    #[serde(default = "default_generator")]
    pub generator: Generator,
    #[serde(default)]
    pub echo_downstream: bool,
}

fn default_header() -> String {
    "Kong-Request-ID".into()
}

fn default_generator() -> Generator {
    Generator::UuidCounter
}

impl CorrelationIdConfig {
    pub fn parse(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }
}

fn validate(config: &Value) -> Result<Value, FieldErrors> {
    // Required fields with defaults: absent takes the default, an explicit null is missing
    // (Kong keeps `ngx.null`, then fails `required`).
    for f in ["generator", "echo_downstream"] {
        if config.get(f).is_some_and(Value::is_null) {
            return Err(FieldErrors::single(
                &format!("config.{f}"),
                "required field missing",
            ));
        }
    }
    let c: CorrelationIdConfig = parse_typed(config)?;
    let valid = !c.header_name.is_empty()
        && c.header_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !valid {
        return Err(FieldErrors::single(
            "config.header_name",
            format!(
                "bad header name '{}', allowed characters are A-Z, a-z, 0-9, '_', and '-'",
                c.header_name
            ),
        ));
    }
    Ok(to_value(&c))
}

#[cfg(test)]
mod tests {
    use super::super::validate;
    use serde_json::json;

    #[test]
    fn defaults_are_kongs() {
        let v = validate("correlation-id", None).unwrap();
        assert_eq!(
            v,
            json!({"header_name": "Kong-Request-ID", "generator": "uuid#counter",
                   "echo_downstream": false})
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        let e = validate("correlation-id", Some(&json!({"generator": "random"}))).unwrap_err();
        assert!(e.to_json()["config"]["generator"]
            .as_str()
            .unwrap()
            .starts_with("expected one of"));
        let e = validate("correlation-id", Some(&json!({"header_name": "a b"}))).unwrap_err();
        assert!(e.to_json()["config"]["header_name"].is_string());
    }
}
