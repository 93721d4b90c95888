//! `response-transformer`'s config (Kong 3.9.3's
//! `kong/plugins/response-transformer/schema.lua`): what to remove, rename, replace, add and
//! append in the response's headers and JSON body, with the JSON type of added values.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::request_transformer::{split_entry, valid_header_name};
use super::{parse_typed, to_value, PluginSchema};
use crate::error::FieldErrors;
use crate::schema::{FieldDecl, FieldType};

/// Most entries in one list.
pub const MAX_ENTRIES: usize = 1000;

pub const SCHEMA: PluginSchema = PluginSchema {
    name: "response-transformer",
    priority: 800,
    consumer_scope: true,
    protocols: &["grpc", "grpcs", "http", "https"],
    config: &[
        FieldDecl::new("remove", FieldType::Record),
        FieldDecl::new("rename", FieldType::Record),
        FieldDecl::new("replace", FieldType::Record),
        FieldDecl::new("add", FieldType::Record),
        FieldDecl::new("append", FieldType::Record),
    ],
    example: r#"{"add": {"headers": ["x-added:1"], "json": ["flag:true"], "json_types": ["boolean"]}}"#,
    validate,
    entity_checks: "[]",
};

/// `remove` and `rename`: names only, or `old:new`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lists {
    #[serde(default)]
    pub json: Vec<String>,
    #[serde(default)]
    pub headers: Vec<String>,
}

/// `replace`, `add`, `append`: `name:value`, with the JSON type of each value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypedLists {
    #[serde(default)]
    pub json: Vec<String>,
    #[serde(default)]
    pub json_types: Vec<String>,
    #[serde(default)]
    pub headers: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseTransformerConfig {
    #[serde(default)]
    pub remove: Lists,
    #[serde(default)]
    pub rename: Lists,
    #[serde(default)]
    pub replace: TypedLists,
    #[serde(default)]
    pub add: TypedLists,
    #[serde(default)]
    pub append: TypedLists,
}

impl ResponseTransformerConfig {
    pub fn parse(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }

    /// Whether any JSON edit is configured (Kong's `is_body_transform_set`).
    pub fn edits_json(&self) -> bool {
        !(self.remove.json.is_empty()
            && self.rename.json.is_empty()
            && self.replace.json.is_empty()
            && self.add.json.is_empty()
            && self.append.json.is_empty())
    }
}

const JSON_TYPES: [&str; 3] = ["boolean", "number", "string"];

fn validate(config: &Value) -> Result<Value, FieldErrors> {
    let mut e = FieldErrors::new();
    for op in ["remove", "rename", "replace", "add", "append"] {
        if let Some(Value::Object(rec)) = config.get(op) {
            for list in ["json", "headers", "json_types"] {
                if rec.get(list).is_some_and(Value::is_null) {
                    e.add(&format!("config.{op}.{list}"), "required field missing");
                }
            }
        }
    }
    if !e.is_empty() {
        return Err(e);
    }
    let c: ResponseTransformerConfig = parse_typed(config)?;
    let colon = |entry: &str| entry.find(':').is_some_and(|i| i > 0);
    let mut check = |op: &str, list: &str, entries: &[String], f: &dyn Fn(&str) -> Option<String>| {
        if entries.len() > MAX_ENTRIES {
            e.add(
                &format!("config.{op}.{list}"),
                format!("length must be at most {MAX_ENTRIES}"),
            );
            return;
        }
        for (i, entry) in entries.iter().enumerate() {
            if let Some(m) = f(entry) {
                e.add(&format!("config.{op}.{list}.{}", i + 1), m);
            }
        }
    };
    let needs_colon = |entry: &str| (!colon(entry)).then(|| format!("invalid value: {entry}"));
    let rename_header = |entry: &str| {
        if !colon(entry) {
            return Some(format!("invalid value: {entry}"));
        }
        let (name, value) = split_entry(entry);
        if !valid_header_name(name) {
            return Some(format!("'{name}' is not a valid header"));
        }
        (!valid_header_name(value)).then(|| format!("'{value}' is not a valid header"))
    };
    let json_type =
        |t: &str| (!JSON_TYPES.contains(&t)).then(|| format!("expected one of: {}", JSON_TYPES.join(", ")));
    let none = |_: &str| None;
    check("remove", "json", &c.remove.json, &none);
    check("remove", "headers", &c.remove.headers, &none);
    check("rename", "json", &c.rename.json, &needs_colon);
    check("rename", "headers", &c.rename.headers, &rename_header);
    for (op, l) in [("replace", &c.replace), ("add", &c.add), ("append", &c.append)] {
        check(op, "json", &l.json, &needs_colon);
        check(op, "json_types", &l.json_types, &json_type);
        check(op, "headers", &l.headers, &needs_colon);
    }
    e.into_result()?;
    Ok(to_value(&c))
}

#[cfg(test)]
mod tests {
    use super::super::validate;
    use serde_json::json;

    // Facts from Kong 3.9.3's spec/03-plugins/15-response-transformer/03-api_spec.lua.
    #[test]
    fn kongs_schema_messages() {
        let v = validate("response-transformer", None).unwrap();
        assert_eq!(v["add"], json!({"json": [], "json_types": [], "headers": []}));
        let err = |c| {
            validate("response-transformer", Some(&c))
                .unwrap_err()
                .to_json()
        };
        assert_eq!(
            err(json!({"rename": {"headers": ["x-requ,est-id:x-custom"]}}))["config"]["rename"]
                ["headers"][0],
            "'x-requ,est-id' is not a valid header"
        );
        assert_eq!(
            err(json!({"add": {"headers": ["just_a_key"]}}))["config"]["add"]["headers"][0],
            "invalid value: just_a_key"
        );
        assert_eq!(
            err(json!({"add": {"json_types": ["object"]}}))["config"]["add"]["json_types"][0],
            "expected one of: boolean, number, string"
        );
        assert_eq!(
            err(json!({"append": {"json": null}}))["config"]["append"]["json"],
            "required field missing"
        );
    }
}
