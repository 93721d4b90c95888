//! `key-auth`'s config: where to look for a key, whether to hide it, the anonymous consumer.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{parse_typed, to_value, yes, PluginSchema};
use crate::error::FieldErrors;
use crate::lenient;
use crate::schema::{FieldDecl, FieldType};

pub const SCHEMA: PluginSchema = PluginSchema {
    name: "key-auth",
    priority: 1250,
    consumer_scope: false,
    protocols: &["grpc", "grpcs", "http", "https", "ws", "wss"],
    config: &[
        FieldDecl::new("key_names", FieldType::Array)
            .required()
            .default(r#"["apikey"]"#),
        FieldDecl::new("hide_credentials", FieldType::Boolean).default("false"),
        FieldDecl::new("anonymous", FieldType::String { min: 1, max: 512 }),
        FieldDecl::new("key_in_header", FieldType::Boolean).default("true"),
        FieldDecl::new("key_in_query", FieldType::Boolean).default("true"),
        FieldDecl::new("key_in_body", FieldType::Boolean).default("false"),
        FieldDecl::new("run_on_preflight", FieldType::Boolean).default("true"),
        FieldDecl::new("realm", FieldType::String { min: 1, max: 512 }),
    ],
    example: "{}",
    validate,
    entity_checks: "[]",
};

fn validate(config: &Value) -> Result<Value, FieldErrors> {
    let c: KeyAuthConfig = parse_typed(config)?;
    c.check()?;
    Ok(to_value(&c))
}

/// The `key-auth` plugin's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyAuthConfig {
    #[serde(default = "default_key_names", deserialize_with = "de_key_names")]
    pub key_names: Vec<String>,
    #[serde(default)]
    pub hide_credentials: bool,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub anonymous: Option<String>,
    #[serde(default = "yes")]
    pub key_in_header: bool,
    #[serde(default = "yes")]
    pub key_in_query: bool,
    #[serde(default)]
    pub key_in_body: bool,
    #[serde(default = "yes")]
    pub run_on_preflight: bool,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub realm: Option<String>,
}

fn default_key_names() -> Vec<String> {
    vec!["apikey".to_string()]
}

fn de_key_names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(lenient::opt_string_list(d)?.unwrap_or_else(default_key_names))
}

impl KeyAuthConfig {
    pub fn parse(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }

    fn check(&self) -> Result<(), FieldErrors> {
        let mut e = FieldErrors::new();
        if self.key_names.is_empty() {
            e.add("config.key_names", "length must be at least 1");
        }
        for (i, k) in self.key_names.iter().enumerate() {
            if k.is_empty() || !k.bytes().all(is_header_token_byte) {
                e.add(
                    &format!("config.key_names.{}", i + 1),
                    format!(
                        "bad header name '{k}', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
                    ),
                );
            }
        }
        e.into_result()
    }
}

fn is_header_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}


#[cfg(test)]
mod tests {
    use super::super::validate;
    use serde_json::json;

    #[test]
    fn key_auth_defaults_are_kongs() {
        let v = validate("key-auth", None).unwrap();
        assert_eq!(
            v,
            json!({"key_names": ["apikey"], "hide_credentials": false, "anonymous": null,
                   "key_in_header": true, "key_in_query": true, "key_in_body": false,
                   "run_on_preflight": true, "realm": null})
        );
    }

    #[test]
    fn key_auth_rejects_bad_key_names() {
        // Kong names the bad item by its position: `fields.config.key_names` is a list.
        let e = validate("key-auth", Some(&json!({"key_names": ["ok", "bad name"]}))).unwrap_err();
        assert_eq!(e.to_json()["config"]["key_names"][0], serde_json::Value::Null);
        assert!(e.to_json()["config"]["key_names"][1].is_string());
        assert!(e.message().contains("config.key_names: "), "{}", e.message());
        let e = validate("key-auth", Some(&json!({"key_names": []}))).unwrap_err();
        assert!(e.to_json()["config"]["key_names"].is_string());
    }
}
