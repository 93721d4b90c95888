//! `request-size-limiting`'s config (Kong 3.9.3's
//! `kong/plugins/request-size-limiting/schema.lua`): the largest request body, in a unit, and
//! whether a `Content-Length` is required.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{parse_typed, to_value, PluginSchema};
use crate::error::FieldErrors;
use crate::schema::{FieldDecl, FieldType};

pub const SCHEMA: PluginSchema = PluginSchema {
    name: "request-size-limiting",
    priority: 951,
    consumer_scope: true,
    protocols: &["grpc", "grpcs", "http", "https"],
    config: &[
        FieldDecl::new(
            "allowed_payload_size",
            FieldType::Integer {
                min: i64::MIN,
                max: i64::MAX,
            },
        )
        .default("128"),
        FieldDecl::new(
            "size_unit",
            FieldType::OneOf(&["megabytes", "kilobytes", "bytes"]),
        )
        .required()
        .default(r#""megabytes""#),
        FieldDecl::new("require_content_length", FieldType::Boolean)
            .required()
            .default("false"),
    ],
    example: r#"{"allowed_payload_size": 10, "size_unit": "kilobytes"}"#,
    validate,
    entity_checks: "[]",
};

/// The unit `allowed_payload_size` counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SizeUnit {
    Megabytes,
    Kilobytes,
    Bytes,
}

impl SizeUnit {
    /// Kong's `unit_multiplication_factor`: binary units (1 MB = 2^20 bytes).
    pub fn bytes(self) -> u64 {
        match self {
            SizeUnit::Megabytes => 1 << 20,
            SizeUnit::Kilobytes => 1 << 10,
            SizeUnit::Bytes => 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSizeLimitingConfig {
    #[serde(default = "default_size")]
    pub allowed_payload_size: Option<i64>,
    #[serde(default = "default_unit")]
    pub size_unit: SizeUnit,
    #[serde(default)]
    pub require_content_length: bool,
}

fn default_size() -> Option<i64> {
    Some(128)
}

fn default_unit() -> SizeUnit {
    SizeUnit::Megabytes
}

impl RequestSizeLimitingConfig {
    pub fn parse(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }

    /// The limit in bytes; `None` (no limit) when the size is unset.
    pub fn limit(&self) -> Option<u64> {
        let n = self.allowed_payload_size?;
        Some(u64::try_from(n).unwrap_or(0).saturating_mul(self.size_unit.bytes()))
    }
}

fn validate(config: &Value) -> Result<Value, FieldErrors> {
    if let Some(v) = config.get("allowed_payload_size") {
        if !v.is_null() && !v.as_f64().is_some_and(|f| f.fract() == 0.0) {
            return Err(FieldErrors::single(
                "config.allowed_payload_size",
                "expected an integer",
            ));
        }
    }
    const UNITS: [&str; 3] = ["megabytes", "kilobytes", "bytes"];
    match config.get("size_unit") {
        Some(Value::Null) => {
            return Err(FieldErrors::single(
                "config.size_unit",
                "required field missing",
            ))
        }
        Some(v) if !v.as_str().is_some_and(|u| UNITS.contains(&u)) => {
            return Err(FieldErrors::single(
                "config.size_unit",
                format!("expected one of: {}", UNITS.join(", ")),
            ))
        }
        _ => {}
    }
    let mut c = config.clone();
    if let Some(f) = c.get("allowed_payload_size").and_then(Value::as_f64) {
        c["allowed_payload_size"] = Value::from(f as i64);
    }
    let c: RequestSizeLimitingConfig = parse_typed(&c)?;
    Ok(to_value(&c))
}

#[cfg(test)]
mod tests {
    use super::super::validate;
    use super::*;
    use serde_json::json;

    #[test]
    fn units_are_binary_as_kongs() {
        let v = validate("request-size-limiting", None).unwrap();
        assert_eq!(
            v,
            json!({"allowed_payload_size": 128, "size_unit": "megabytes",
                   "require_content_length": false})
        );
        let c = RequestSizeLimitingConfig::parse(&v).unwrap();
        assert_eq!(c.limit(), Some(128 * 1_048_576));
        let e = validate("request-size-limiting", Some(&json!({"size_unit": "gigabytes"})))
            .unwrap_err()
            .to_json();
        assert_eq!(
            e["config"]["size_unit"],
            "expected one of: megabytes, kilobytes, bytes"
        );
    }
}
