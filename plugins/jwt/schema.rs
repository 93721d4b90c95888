//! `jwt`'s config (Kong 3.9.3's `kong/plugins/jwt/schema.lua`): where tokens are looked for,
//! which claim names the credential, which registered claims are checked.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{parse_typed, to_value, yes, PluginSchema};
use crate::error::FieldErrors;
use crate::lenient;
use crate::schema::{FieldDecl, FieldType};

pub const SCHEMA: PluginSchema = PluginSchema {
    name: "jwt",
    priority: 1450,
    consumer_scope: false,
    protocols: &["grpc", "grpcs", "http", "https", "ws", "wss"],
    config: &[
        FieldDecl::new("uri_param_names", FieldType::Set).default(r#"["jwt"]"#),
        FieldDecl::new("cookie_names", FieldType::Set).default("[]"),
        FieldDecl::new("key_claim_name", FieldType::String { min: 1, max: 256 })
            .default(r#""iss""#),
        FieldDecl::new("secret_is_base64", FieldType::Boolean)
            .required()
            .default("false"),
        FieldDecl::new("claims_to_verify", FieldType::Set),
        FieldDecl::new("anonymous", FieldType::String { min: 1, max: 512 }),
        FieldDecl::new("run_on_preflight", FieldType::Boolean)
            .required()
            .default("true"),
        FieldDecl::new(
            "maximum_expiration",
            FieldType::Integer {
                min: 0,
                max: 31_536_000,
            },
        )
        .default("0"),
        FieldDecl::new("header_names", FieldType::Set).default(r#"["authorization"]"#),
        FieldDecl::new("realm", FieldType::String { min: 1, max: 512 }),
    ],
    example: r#"{"claims_to_verify": ["exp"], "maximum_expiration": 60}"#,
    validate,
    entity_checks: r#"[{"conditional": {"if_field": "config.maximum_expiration", "if_match": {"gt": 0}, "then_field": "config.claims_to_verify", "then_match": {"contains": "exp"}}}]"#,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    #[serde(default = "default_uri_params", deserialize_with = "de_uri_params")]
    pub uri_param_names: Vec<String>,
    #[serde(default, deserialize_with = "de_list")]
    pub cookie_names: Vec<String>,
    #[serde(default = "default_claim")]
    pub key_claim_name: String,
    #[serde(default)]
    pub secret_is_base64: bool,
    #[serde(default, deserialize_with = "lenient::opt_string_list")]
    pub claims_to_verify: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub anonymous: Option<String>,
    #[serde(default = "yes")]
    pub run_on_preflight: bool,
    #[serde(default)]
    pub maximum_expiration: f64,
    #[serde(default = "default_headers", deserialize_with = "de_headers")]
    pub header_names: Vec<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub realm: Option<String>,
}

fn default_uri_params() -> Vec<String> {
    vec!["jwt".into()]
}
fn default_headers() -> Vec<String> {
    vec!["authorization".into()]
}
fn default_claim() -> String {
    "iss".into()
}
fn de_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(lenient::opt_string_list(d)?.unwrap_or_default())
}
fn de_uri_params<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(lenient::opt_string_list(d)?.unwrap_or_else(default_uri_params))
}
fn de_headers<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(lenient::opt_string_list(d)?.unwrap_or_else(default_headers))
}

impl JwtConfig {
    pub fn parse(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }

    /// Whether a registered claim is to be verified.
    pub fn verifies(&self, claim: &str) -> bool {
        self.claims_to_verify
            .as_ref()
            .is_some_and(|c| c.iter().any(|x| x == claim))
    }
}

fn validate(config: &Value) -> Result<Value, FieldErrors> {
    let mut c: JwtConfig = parse_typed(config)?;
    let mut e = FieldErrors::new();
    if let Some(claims) = &mut c.claims_to_verify {
        for (i, claim) in claims.iter().enumerate() {
            if claim != "exp" && claim != "nbf" {
                e.add(
                    &format!("config.claims_to_verify.{}", i + 1),
                    "expected one of: exp, nbf",
                );
            }
        }
        dedup(claims);
    }
    if !(0.0..=31_536_000.0).contains(&c.maximum_expiration) {
        e.add(
            "config.maximum_expiration",
            "value should be between 0 and 31536000",
        );
    }
    if e.is_empty() && c.maximum_expiration > 0.0 && !c.verifies("exp") {
        e.add_entity(
            "failed conditional validation given value of field 'config.maximum_expiration'",
        );
        e.add("config.claims_to_verify", "expected to contain: exp");
    }
    for list in [&mut c.uri_param_names, &mut c.cookie_names, &mut c.header_names] {
        dedup(list);
    }
    if c.key_claim_name.is_empty() {
        e.add("config.key_claim_name", "length must be at least 1");
    }
    if let Some(realm) = &c.realm {
        super::check_realm(realm)?;
    }
    e.into_result()?;
    Ok(to_value(&c))
}

/// Kong's sets keep the first of equal elements.
fn dedup(list: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    list.retain(|x| seen.insert(x.clone()));
}
