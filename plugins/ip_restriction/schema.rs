//! `ip-restriction`'s config (Kong 3.9.3's `kong/plugins/ip-restriction/schema.lua`): IPs
//! and CIDR networks, v4 or v6, to allow or deny, and the answer to a refused client.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{parse_typed, to_value, PluginSchema};
use crate::error::FieldErrors;
use crate::lenient;
use crate::schema::{FieldDecl, FieldType};

pub const SCHEMA: PluginSchema = PluginSchema {
    name: "ip-restriction",
    priority: 990,
    consumer_scope: true,
    protocols: &["http", "https", "tcp", "tls", "grpc", "grpcs"],
    config: &[
        FieldDecl::new("allow", FieldType::Array),
        FieldDecl::new("deny", FieldType::Array),
        FieldDecl::new("status", FieldType::Number),
        FieldDecl::new("message", FieldType::String { min: 1, max: 4096 }),
    ],
    example: r#"{"allow": ["10.0.0.0/8", "::1"]}"#,
    validate,
    entity_checks: r#"[{"at_least_one_of": ["config.allow", "config.deny"]}]"#,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpRestrictionConfig {
    #[serde(default, deserialize_with = "de_ips")]
    pub allow: Option<Vec<String>>,
    #[serde(default, deserialize_with = "de_ips")]
    pub deny: Option<Vec<String>>,
    #[serde(default)]
    pub status: Option<f64>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub message: Option<String>,
}

/// A list of addresses, or one given alone as text (a form field); a number is not one.
fn de_ips<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    use serde::de::{Error, Unexpected};
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s])),
        Some(Value::Array(a)) => a
            .into_iter()
            .map(|v| match v {
                Value::String(s) => Ok(s),
                _ => Err(D::Error::invalid_type(Unexpected::Other("non-string"), &"a string")),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(D::Error::invalid_type(Unexpected::Other("value"), &"a sequence")),
    }
}

impl IpRestrictionConfig {
    pub fn parse(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }
}

/// An IP address or a CIDR network, as Kong's `ip_or_cidr` type reads it.
pub fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Some(ipnet::IpNet::from(ip));
    }
    s.parse::<ipnet::IpNet>().ok()
}

fn validate(config: &Value) -> Result<Value, FieldErrors> {
    let c: IpRestrictionConfig = parse_typed(config)?;
    let mut e = FieldErrors::new();
    for (name, list) in [("allow", &c.allow), ("deny", &c.deny)] {
        for (i, s) in list.iter().flatten().enumerate() {
            if parse_net(s).is_none() {
                e.add(
                    &format!("config.{name}.{}", i + 1),
                    format!("invalid ip or cidr range: '{s}'"),
                );
            }
        }
    }
    let nonempty = |l: &Option<Vec<String>>| l.as_ref().is_some_and(|l| !l.is_empty());
    if e.is_empty() && !nonempty(&c.allow) && !nonempty(&c.deny) {
        e.add_entity(
            "at least one of these fields must be non-empty: 'config.allow', 'config.deny'",
        );
    }
    if let Some(s) = c.status {
        // Kong accepts any number here and then fails every refused request with a 500
        // (`kong.response.error` takes 400-599 only); refused when written instead.
        if !(400.0..=599.0).contains(&s) || s.fract() != 0.0 {
            e.add("config.status", "value should be between 400 and 599");
        }
    }
    e.into_result()?;
    Ok(to_value(&c))
}
