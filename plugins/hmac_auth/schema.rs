//! `hmac-auth`'s config (Kong 3.9.3's `kong/plugins/hmac-auth/schema.lua`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{parse_typed, to_value, PluginSchema};
use crate::error::FieldErrors;
use crate::lenient;
use crate::schema::{FieldDecl, FieldType};

/// Kong's digest algorithms, in its order.
pub const ALGORITHMS: &[&str] = &["hmac-sha1", "hmac-sha256", "hmac-sha384", "hmac-sha512"];

pub const SCHEMA: PluginSchema = PluginSchema {
    name: "hmac-auth",
    priority: 1030,
    consumer_scope: false,
    protocols: &["grpc", "grpcs", "http", "https", "ws", "wss"],
    config: &[
        FieldDecl::new("hide_credentials", FieldType::Boolean)
            .required()
            .default("false"),
        FieldDecl::new("clock_skew", FieldType::Number).default("300"),
        FieldDecl::new("anonymous", FieldType::String { min: 1, max: 512 }),
        FieldDecl::new("validate_request_body", FieldType::Boolean)
            .required()
            .default("false"),
        FieldDecl::new("enforce_headers", FieldType::Array).default("[]"),
        FieldDecl::new("algorithms", FieldType::Array)
            .default(r#"["hmac-sha1", "hmac-sha256", "hmac-sha384", "hmac-sha512"]"#),
        FieldDecl::new("realm", FieldType::String { min: 1, max: 512 }),
    ],
    example: "{}",
    validate,
    entity_checks: "[]",
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HmacAuthConfig {
    #[serde(default)]
    pub hide_credentials: bool,
    #[serde(default = "default_skew")]
    pub clock_skew: f64,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub anonymous: Option<String>,
    #[serde(default)]
    pub validate_request_body: bool,
    #[serde(default, deserialize_with = "de_list")]
    pub enforce_headers: Vec<String>,
    #[serde(default = "default_algorithms", deserialize_with = "de_algorithms")]
    pub algorithms: Vec<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub realm: Option<String>,
}

fn default_skew() -> f64 {
    300.0
}
fn default_algorithms() -> Vec<String> {
    ALGORITHMS.iter().map(|s| s.to_string()).collect()
}
fn de_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(lenient::opt_string_list(d)?.unwrap_or_default())
}
fn de_algorithms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(lenient::opt_string_list(d)?.unwrap_or_else(default_algorithms))
}

impl HmacAuthConfig {
    pub fn parse(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }
}

fn validate(config: &Value) -> Result<Value, FieldErrors> {
    let c: HmacAuthConfig = parse_typed(config)?;
    let mut e = FieldErrors::new();
    if c.clock_skew <= 0.0 || !c.clock_skew.is_finite() {
        e.add("config.clock_skew", "value must be greater than 0");
    }
    for (i, a) in c.algorithms.iter().enumerate() {
        if !ALGORITHMS.contains(&a.as_str()) {
            e.add(
                &format!("config.algorithms.{}", i + 1),
                "expected one of: hmac-sha1, hmac-sha256, hmac-sha384, hmac-sha512",
            );
        }
    }
    if let Some(realm) = &c.realm {
        super::check_realm(realm)?;
    }
    e.into_result()?;
    Ok(to_value(&c))
}
