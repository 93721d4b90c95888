//! `bot-detection`'s config (Kong 3.9.3's `kong/plugins/bot-detection/schema.lua`): User-Agent
//! regexes to allow and to deny, besides Kong's built-in list.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{parse_typed, to_value, PluginSchema};
use crate::error::FieldErrors;
use crate::lenient;
use crate::schema::{FieldDecl, FieldType};

/// A configured regex is compiled within this size (the regex crate's bound on its program).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

pub const SCHEMA: PluginSchema = PluginSchema {
    name: "bot-detection",
    priority: 2500,
    consumer_scope: false,
    protocols: &["grpc", "grpcs", "http", "https", "ws", "wss"],
    config: &[
        FieldDecl::new("allow", FieldType::Array).default("[]"),
        FieldDecl::new("deny", FieldType::Array).default("[]"),
    ],
    example: r#"{"allow": ["^MyClient/"], "deny": ["curl"]}"#,
    validate,
    entity_checks: "[]",
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotDetectionConfig {
    #[serde(default, deserialize_with = "de_list")]
    pub allow: Vec<String>,
    #[serde(default, deserialize_with = "de_list")]
    pub deny: Vec<String>,
}

fn de_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(lenient::opt_string_list(d)?.unwrap_or_default())
}

impl BotDetectionConfig {
    pub fn parse(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }
}

/// Compiles a configured regex within the size bound.
pub fn compile(re: &str) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(re)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
}

fn validate(config: &Value) -> Result<Value, FieldErrors> {
    let c: BotDetectionConfig = parse_typed(config)?;
    let mut e = FieldErrors::new();
    for (name, list) in [("allow", &c.allow), ("deny", &c.deny)] {
        for (i, re) in list.iter().enumerate() {
            if compile(re).is_err() {
                e.add(
                    &format!("config.{name}.{}", i + 1),
                    format!("not a valid regex: {re}"),
                );
            }
        }
    }
    e.into_result()?;
    Ok(to_value(&c))
}
