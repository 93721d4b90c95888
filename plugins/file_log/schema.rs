//! `file-log`'s config (Kong 3.9.3's `kong/plugins/file-log/schema.lua`): the file each
//! request's log record is appended to, and whether it is reopened for every write (so that
//! a rotated file is followed).
//!
//! `custom_fields_by_lua` takes constant snippets only (Tollgate runs no Lua:
//! [`super::custom_fields`]).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{parse_typed, to_value, PluginSchema};
use crate::error::FieldErrors;
use crate::schema::{FieldDecl, FieldType};

pub const SCHEMA: PluginSchema = PluginSchema {
    name: "file-log",
    priority: 9,
    consumer_scope: true,
    protocols: &["grpc", "grpcs", "http", "https"],
    config: &[
        FieldDecl::new("path", FieldType::String { min: 1, max: 4096 }).required(),
        FieldDecl::new("reopen", FieldType::Boolean)
            .required()
            .default("false"),
        FieldDecl::new("custom_fields_by_lua", FieldType::Record),
    ],
    example: r#"{"path": "/tmp/file.log"}"#,
    validate,
    entity_checks: "[]",
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLogConfig {
    pub path: String,
    #[serde(default)]
    pub reopen: bool,
    #[serde(default)]
    pub custom_fields_by_lua: Option<Map<String, Value>>,
}

impl FileLogConfig {
    pub fn parse(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }
}

/// Kong's `match = [[^[^*&%%\`]+$]]` (a Lua pattern: `%%` is a literal `%`): no `*`, `&`, `%`,
/// `` ` `` or `\`, and not empty.
pub fn valid_path(p: &str) -> bool {
    !p.is_empty() && !p.contains(['*', '&', '%', '`', '\\'])
}

fn validate(config: &Value) -> Result<Value, FieldErrors> {
    let c: FileLogConfig = parse_typed(config)?;
    if !valid_path(&c.path) {
        return Err(FieldErrors::single("config.path", "not a valid filename"));
    }
    super::custom_fields::parse(&c.custom_fields_by_lua)?;
    Ok(to_value(&FileLogConfig {
        ..c
    }))
}

#[cfg(test)]
mod tests {
    use super::super::validate;
    use serde_json::json;

    #[test]
    fn defaults_are_kongs() {
        let v = validate("file-log", Some(&json!({"path": "/tmp/x.log"}))).unwrap();
        assert_eq!(
            v,
            json!({"path": "/tmp/x.log", "reopen": false, "custom_fields_by_lua": null})
        );
        let e = validate("file-log", None).unwrap_err();
        assert_eq!(e.to_json()["config"]["path"], "required field missing");
    }

    #[test]
    fn kongs_path_pattern_is_enforced() {
        // spec/03-plugins/04-file-log/02-schema_spec.lua: `/ovo*` is refused.
        for bad in ["/ovo*", "/a&b", "/a%b", "/a`b", "/a\\b"] {
            let e = validate("file-log", Some(&json!({"path": bad}))).unwrap_err();
            assert_eq!(e.to_json()["config"]["path"], "not a valid filename", "{bad}");
        }
        assert!(validate("file-log", Some(&json!({"path": "/tmp/a b-c_d.log"}))).is_ok());
    }

    #[test]
    fn lua_fields_are_constants_only() {
        assert!(validate(
            "file-log",
            Some(&json!({"path": "/tmp/x", "custom_fields_by_lua": {"a": "return 1"}}))
        )
        .is_ok());
        let e = validate(
            "file-log",
            Some(&json!({"path": "/tmp/x", "custom_fields_by_lua": {"a": "return ngx.now()"}})),
        )
        .unwrap_err();
        assert!(e.to_json()["config"]["custom_fields_by_lua"]["a"]
            .as_str()
            .unwrap()
            .contains("no Lua"));
    }
}
