//! `basic-auth`'s config (Kong 3.9.3's `kong/plugins/basic-auth/schema.lua`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{parse_typed, to_value, PluginSchema};
use crate::error::FieldErrors;
use crate::lenient;
use crate::schema::{FieldDecl, FieldType};

pub const SCHEMA: PluginSchema = PluginSchema {
    name: "basic-auth",
    priority: 1100,
    consumer_scope: false,
    protocols: &["grpc", "grpcs", "http", "https", "ws", "wss"],
    config: &[
        FieldDecl::new("anonymous", FieldType::String { min: 1, max: 512 }),
        FieldDecl::new("hide_credentials", FieldType::Boolean)
            .required()
            .default("false"),
        FieldDecl::new("realm", FieldType::String { min: 1, max: 512 })
            .required()
            .default(r#""service""#),
    ],
    example: "{}",
    validate,
    entity_checks: "[]",
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuthConfig {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub anonymous: Option<String>,
    #[serde(default)]
    pub hide_credentials: bool,
    #[serde(default = "default_realm")]
    pub realm: String,
}

fn default_realm() -> String {
    "service".into()
}

impl BasicAuthConfig {
    pub fn parse(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }
}

fn validate(config: &Value) -> Result<Value, FieldErrors> {
    let c: BasicAuthConfig = parse_typed(config)?;
    super::check_realm(&c.realm)?;
    Ok(to_value(&c))
}
