//! `acl`'s config (Kong 3.9.3's `kong/plugins/acl/schema.lua`): exactly one of an allow or a
//! deny list of groups.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{parse_typed, to_value, PluginSchema};
use crate::error::FieldErrors;
use crate::lenient;
use crate::schema::{FieldDecl, FieldType};

pub const SCHEMA: PluginSchema = PluginSchema {
    name: "acl",
    priority: 950,
    consumer_scope: false,
    protocols: &["grpc", "grpcs", "http", "https", "ws", "wss"],
    config: &[
        FieldDecl::new("allow", FieldType::Array),
        FieldDecl::new("deny", FieldType::Array),
        FieldDecl::new("hide_groups_header", FieldType::Boolean)
            .required()
            .default("false"),
        FieldDecl::new("always_use_authenticated_groups", FieldType::Boolean)
            .required()
            .default("false"),
    ],
    example: r#"{"allow": ["admins"]}"#,
    validate,
    entity_checks: r#"[{"only_one_of": ["config.allow", "config.deny"]}, {"at_least_one_of": ["config.allow", "config.deny"]}]"#,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclConfig {
    #[serde(default, deserialize_with = "lenient::opt_string_list")]
    pub allow: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::opt_string_list")]
    pub deny: Option<Vec<String>>,
    #[serde(default)]
    pub hide_groups_header: bool,
    #[serde(default)]
    pub always_use_authenticated_groups: bool,
}

impl AclConfig {
    pub fn parse(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }
}

fn nonempty(l: &Option<Vec<String>>) -> bool {
    l.as_ref().is_some_and(|l| !l.is_empty())
}

fn validate(config: &Value) -> Result<Value, FieldErrors> {
    let c: AclConfig = parse_typed(config)?;
    let mut e = FieldErrors::new();
    match (nonempty(&c.allow), nonempty(&c.deny)) {
        (true, true) => e.add_entity(
            "only one of these fields must be non-empty: 'config.allow', 'config.deny'",
        ),
        (false, false) => e.add_entity(
            "at least one of these fields must be non-empty: 'config.allow', 'config.deny'",
        ),
        _ => {}
    }
    e.into_result()?;
    Ok(to_value(&c))
}
