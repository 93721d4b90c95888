//! `request-transformer`'s config (Kong 3.9.3's `kong/plugins/request-transformer/schema.lua`):
//! what to remove, rename, replace, add and append in the headers, query string and body of
//! requests, the URI to replace the path with, and the method to send. Values are templates
//! ([`template`]); those of the body and query string are compiled when written, as Kong does,
//! so a malformed one is refused with a 400.

#[path = "template.rs"]
pub mod template;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{parse_typed, to_value, PluginSchema};
use crate::error::FieldErrors;
use crate::schema::{FieldDecl, FieldType};
use template::Template;

/// Most entries in one list.
pub const MAX_ENTRIES: usize = 1000;

pub const SCHEMA: PluginSchema = PluginSchema {
    name: "request-transformer",
    priority: 801,
    consumer_scope: true,
    protocols: &["grpc", "grpcs", "http", "https", "tcp", "tls", "tls_passthrough", "udp", "ws", "wss"],
    config: &[
        FieldDecl::new("http_method", FieldType::String { min: 1, max: 64 }),
        FieldDecl::new("remove", FieldType::Record),
        FieldDecl::new("rename", FieldType::Record),
        FieldDecl::new("replace", FieldType::Record),
        FieldDecl::new("add", FieldType::Record),
        FieldDecl::new("append", FieldType::Record),
    ],
    example: r#"{"add": {"headers": ["x-added:1"], "querystring": ["q:$(headers.host)"]}}"#,
    validate,
    entity_checks: "[]",
};

/// One operation's lists.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lists {
    #[serde(default)]
    pub body: Vec<String>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub querystring: Vec<String>,
}

/// `replace`'s lists, and the URI.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplaceLists {
    #[serde(default)]
    pub body: Vec<String>,
    #[serde(default)]
    pub headers: Vec<String>,
    #[serde(default)]
    pub querystring: Vec<String>,
    #[serde(default)]
    pub uri: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestTransformerConfig {
    #[serde(default)]
    pub http_method: Option<String>,
    #[serde(default)]
    pub remove: Lists,
    #[serde(default)]
    pub rename: Lists,
    #[serde(default)]
    pub replace: ReplaceLists,
    #[serde(default)]
    pub add: Lists,
    #[serde(default)]
    pub append: Lists,
}

impl RequestTransformerConfig {
    pub fn parse(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }
}

/// Kong's split of an entry: the name up to the first `:`, the colons after it skipped, the
/// rest the value (`^([^:]+):*(.-)$`).
pub fn split_entry(entry: &str) -> (&str, &str) {
    match entry.find(':') {
        Some(i) => (&entry[..i], entry[i..].trim_start_matches(':')),
        None => (entry, ""),
    }
}

/// Kong's `validate_header_name`.
pub fn valid_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Kong's `check_for_value`: a value is present and compiles as a template.
fn check_value(entry: &str) -> Result<(), String> {
    let (name, value) = split_entry(entry);
    if value.is_empty() {
        return Err(format!("key '{name}' has no value"));
    }
    Template::compile(value)
        .map(drop)
        .map_err(|e| format!("value '{value}' is not in supported format, error:{e}"))
}

/// Kong's `validate_headers`: the name (and, for rename, the value) are header names.
fn check_header(entry: &str, value_too: bool) -> Result<(), String> {
    let (name, value) = split_entry(entry);
    if !valid_header_name(name) {
        return Err(format!("'{name}' is not a valid header"));
    }
    if value_too && !valid_header_name(value) {
        return Err(format!("'{value}' is not a valid header"));
    }
    Ok(())
}

/// Kong's `match = "^[^:]+:.*$"`.
fn check_colon(entry: &str) -> Result<(), String> {
    match entry.find(':') {
        Some(i) if i > 0 => Ok(()),
        _ => Err(format!("invalid value: {entry}")),
    }
}

const OPS: [&str; 5] = ["remove", "rename", "replace", "add", "append"];
const LISTS: [&str; 3] = ["body", "headers", "querystring"];

fn validate(config: &Value) -> Result<Value, FieldErrors> {
    let mut e = FieldErrors::new();
    // An explicit null list is missing (Kong keeps `ngx.null`, then fails `required`).
    for op in OPS {
        if let Some(Value::Object(rec)) = config.get(op) {
            for list in LISTS {
                if rec.get(list).is_some_and(Value::is_null) {
                    e.add(&format!("config.{op}.{list}"), "required field missing");
                }
            }
        }
    }
    if !e.is_empty() {
        return Err(e);
    }
    let c: RequestTransformerConfig = parse_typed(config)?;
    if let Some(m) = &c.http_method {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
            e.add("config.http_method", format!("invalid value: {m}"));
        }
    }
    let lists = |op: &str| -> [&Vec<String>; 3] {
        match op {
            "remove" => [&c.remove.body, &c.remove.headers, &c.remove.querystring],
            "rename" => [&c.rename.body, &c.rename.headers, &c.rename.querystring],
            "replace" => [&c.replace.body, &c.replace.headers, &c.replace.querystring],
            "add" => [&c.add.body, &c.add.headers, &c.add.querystring],
            _ => [&c.append.body, &c.append.headers, &c.append.querystring],
        }
    };
    for op in OPS {
        for (list, entries) in LISTS.iter().zip(lists(op)) {
            if entries.len() > MAX_ENTRIES {
                e.add(
                    &format!("config.{op}.{list}"),
                    format!("length must be at most {MAX_ENTRIES}"),
                );
                continue;
            }
            for (i, entry) in entries.iter().enumerate() {
                let checked = match (op, *list) {
                    ("remove", "headers") => check_header(entry, false),
                    ("remove", _) => Ok(()),
                    (_, "headers") => check_colon(entry)
                        .and_then(|()| check_header(entry, op == "rename")),
                    _ => check_value(entry),
                };
                if let Err(m) = checked {
                    e.add(&format!("config.{op}.{list}.{}", i + 1), m);
                }
            }
        }
    }
    if let Some(uri) = &c.replace.uri {
        if let Err(err) = Template::compile(uri) {
            e.add(
                "config.replace.uri",
                format!("value '{uri}' is not in supported format, error:{err}"),
            );
        }
    }
    e.into_result()?;
    Ok(to_value(&c))
}

#[cfg(test)]
mod tests {
    use super::super::validate;
    use super::*;
    use serde_json::json;

    // Facts from Kong 3.9.3's spec/03-plugins/36-request-transformer/01-schema_spec.lua and
    // 03-api_spec.lua.
    #[test]
    fn kongs_schema_messages() {
        let v = validate("request-transformer", None).unwrap();
        assert_eq!(v["add"], json!({"body": [], "headers": [], "querystring": []}));
        let err = |c| {
            validate("request-transformer", Some(&c))
                .unwrap_err()
                .to_json()
        };
        assert_eq!(
            err(json!({"http_method": "HELLO!"}))["config"]["http_method"],
            "invalid value: HELLO!"
        );
        assert_eq!(
            err(json!({"add": {"querystring": ["uri_param2"]}}))["config"]["add"]["querystring"][0],
            "key 'uri_param2' has no value"
        );
        assert_eq!(
            err(json!({"add": {"headers": ["just_a_key"]}}))["config"]["add"]["headers"][0],
            "invalid value: just_a_key"
        );
        assert!(
            err(json!({"add": {"querystring": ["p:$(uri_captures user2)"]}}))["config"]["add"]
                ["querystring"][0]
                .as_str()
                .unwrap()
                .starts_with("value '$(uri_captures user2)' is not in supported format, error:")
        );
        assert_eq!(
            err(json!({"remove": {"body": null}}))["config"]["remove"]["body"],
            "required field missing"
        );
        assert_eq!(split_entry("a::b:c"), ("a", "b:c"));
    }
}
