//! The plugin registry. Each bundled plugin lives in one folder of the workspace's `plugins/`
//! directory: `schema.rs` (its config, checks and [`PluginSchema`]: name, priority, scopes,
//! protocols, config fields) is compiled here; `handler.rs` (what it does to requests) is
//! compiled into the node; a plugin that owns credentials has its `credential.rs` entity in
//! the entity registry ([`crate::entities`]). The list below is the one place that names the
//! bundled plugins: `/plugins/enabled`, `/schemas/plugins/{name}`, config validation and the
//! node's handler table all come from it.
//!
//! A config is validated once, when written; what is stored is the normalised form with every
//! default filled in, which the data plane parses back without any chance of failure.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::FieldErrors;
use crate::schema::FieldDecl;

/// A plugin's static description, declared once in its folder.
#[derive(Debug)]
pub struct PluginSchema {
    /// Kong's name (`key-auth`).
    pub name: &'static str,
    /// Kong's static priority: higher runs first in each phase.
    pub priority: u32,
    /// Whether an instance may be scoped to a consumer. Authentication plugins identify the
    /// consumer, so they cannot.
    pub consumer_scope: bool,
    /// The protocols an instance may list (the default of its `protocols`).
    pub protocols: &'static [&'static str],
    /// The config's fields, as `/schemas/plugins/{name}` prints them.
    pub config: &'static [FieldDecl],
    /// A valid config (tests check every declared field comes back from it).
    pub example: &'static str,
    /// Checks a config (`{}` when absent) and returns it with every default filled in; errors
    /// are keyed under `config.`.
    pub validate: fn(&Value) -> Result<Value, FieldErrors>,
    /// Kong's `entity_checks` for the plugin, as JSON, shown by `/schemas/plugins/{name}`.
    pub entity_checks: &'static str,
}

macro_rules! plugins {
    ($($module:ident at $path:literal),* $(,)?) => {
        $(
            #[path = $path]
            pub mod $module;
        )*

        /// Every bundled plugin.
        pub const ALL: &[&PluginSchema] = &[$(&$module::SCHEMA),*];
    };
}

plugins! {
    key_auth at "../../../plugins/key_auth/schema.rs",
    rate_limiting at "../../../plugins/rate_limiting/schema.rs",
    correlation_id at "../../../plugins/correlation_id/schema.rs",
    basic_auth at "../../../plugins/basic_auth/schema.rs",
    jwt at "../../../plugins/jwt/schema.rs",
    hmac_auth at "../../../plugins/hmac_auth/schema.rs",
    acl at "../../../plugins/acl/schema.rs",
    ip_restriction at "../../../plugins/ip_restriction/schema.rs",
    bot_detection at "../../../plugins/bot_detection/schema.rs",
    request_termination at "../../../plugins/request_termination/schema.rs",
    request_size_limiting at "../../../plugins/request_size_limiting/schema.rs",
    cors at "../../../plugins/cors/schema.rs",
    request_transformer at "../../../plugins/request_transformer/schema.rs",
    response_ratelimiting at "../../../plugins/response_ratelimiting/schema.rs",
    file_log at "../../../plugins/file_log/schema.rs",
    http_log at "../../../plugins/http_log/schema.rs",
    prometheus at "../../../plugins/prometheus/schema.rs",
    response_transformer at "../../../plugins/response_transformer/schema.rs",
    proxy_cache at "../../../plugins/proxy_cache/schema.rs",
}

pub mod custom_fields;

/// Kong's check on a `realm`: it goes into a quoted `WWW-Authenticate` parameter, so no
/// quote, backslash or control character.
pub fn check_realm(realm: &str) -> Result<(), FieldErrors> {
    if realm.is_empty()
        || realm
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_control())
    {
        return Err(FieldErrors::single(
            "config.realm",
            "must not contain quotes, backslashes or control characters",
        ));
    }
    Ok(())
}

/// The bundled plugin named `name`.
pub fn find(name: &str) -> Option<&'static PluginSchema> {
    ALL.iter().copied().find(|p| p.name == name)
}

/// The priority of a bundled plugin, or `None` for an unknown name.
pub fn priority(name: &str) -> Option<u32> {
    find(name).map(|p| p.priority)
}

/// Whether instances of `name` may be scoped to a consumer.
pub fn allows_consumer_scope(name: &str) -> bool {
    find(name).is_none_or(|p| p.consumer_scope)
}

/// Validates a plugin's `config` (absent means all defaults) and returns its normalised form.
/// Errors are keyed under `config.`.
pub fn validate(name: &str, config: Option<&Value>) -> Result<Value, FieldErrors> {
    let empty = Value::Object(Default::default());
    let config = match config {
        None | Some(Value::Null) => &empty,
        Some(v) => v,
    };
    match find(name) {
        Some(p) => (p.validate)(config),
        None => Err(FieldErrors::single(
            "name",
            format!("plugin '{name}' not enabled; add it to the 'plugins' configuration property"),
        )),
    }
}

/// Kong's `GET /schemas/plugins/{name}` body.
pub fn schema_json(p: &PluginSchema) -> Value {
    let consumer = if p.consumer_scope {
        json!({"consumer": {"type": "foreign", "reference": "consumers", "eq": null}})
    } else {
        json!({"consumer": {"type": "foreign", "reference": "consumers", "eq": null,
                            "description": "Custom type for representing a foreign key with a null value allowed."}})
    };
    json!({
        "fields": [
            consumer,
            {"protocols": {"type": "set", "required": true, "default": p.protocols,
                           "elements": {"type": "string", "one_of": p.protocols}}},
            {"config": {"type": "record", "required": true,
                        "fields": crate::schema::describe_fields(p.config)}},
        ],
        "entity_checks": serde_json::from_str::<Value>(p.entity_checks).unwrap_or(json!([])),
    })
}

/// Serializes a config, printing whole numbers without a fraction (`5`, not `5.0`) as Kong does.
pub fn to_value<T: Serialize>(t: &T) -> Value {
    fn whole(v: Value) -> Value {
        match v {
            Value::Number(n) => match n.as_f64() {
                Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9.0e15 => {
                    Value::from(f as i64)
                }
                _ => Value::Number(n),
            },
            Value::Object(m) => Value::Object(m.into_iter().map(|(k, v)| (k, whole(v))).collect()),
            Value::Array(a) => Value::Array(a.into_iter().map(whole).collect()),
            other => other,
        }
    }
    whole(serde_json::to_value(t).unwrap_or(Value::Null))
}

/// Deserializes `v` into `T`, turning serde's first error into a field error under `config`.
pub fn parse_typed<T: DeserializeOwned>(v: &Value) -> Result<T, FieldErrors> {
    if !v.is_object() {
        return Err(FieldErrors::single("config", "expected a record"));
    }
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.inner().to_string();
        serde_error_to_field("config", &path, &msg)
    })
}

/// Maps one serde error (path + message) to Kong's per-field message.
pub fn serde_error_to_field(prefix: &str, path: &str, msg: &str) -> FieldErrors {
    let join = |p: &str, leaf: &str| {
        let mut s = String::from(prefix);
        for part in [p, leaf] {
            if !part.is_empty() && part != "." {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(part);
            }
        }
        s
    };
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let field = rest.split('`').next().unwrap_or("");
        // The path may or may not already end with the unknown field's name.
        let parent = match path.rsplit_once('.') {
            Some((p, last)) if last == field => p,
            None if path == field => "",
            _ => path,
        };
        return FieldErrors::single(&join(parent, field), "unknown field");
    }
    if let Some(rest) = msg.strip_prefix("missing field `") {
        let field = rest.split('`').next().unwrap_or("");
        return FieldErrors::single(&join(path, field), "required field missing");
    }
    let clean = match msg.find(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    let friendly = if clean.starts_with("invalid type") {
        let expected = clean.rsplit("expected ").next().unwrap_or("");
        let what = if expected.contains("bool") {
            "a boolean"
        } else if expected.contains("string") || expected.contains("Scalar") {
            "a string"
        } else if expected.contains("sequence") || expected.contains("OneOrMany") {
            "an array"
        } else if expected.contains("map") || expected.contains("struct") {
            "a record"
        } else if expected.contains("u16")
            || expected.contains("u32")
            || expected.contains("u64")
            || expected.contains("i32")
            || expected.contains("i64")
            || expected.contains("integer")
        {
            "an integer"
        } else if expected.contains("f64") {
            "a number"
        } else {
            expected
        };
        format!("expected {what}")
    } else if clean.starts_with("unknown variant") {
        let allowed = clean
            .rsplit("expected ")
            .next()
            .unwrap_or("")
            .replace('`', "\"");
        format!("expected one of: {allowed}")
    } else {
        clean.to_string()
    };
    FieldErrors::single(&join(path, ""), friendly)
}

/// Serde's default for fields that default to true.
pub fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_plugin_declares_the_config_it_stores() {
        for p in ALL {
            let example: Value = serde_json::from_str(p.example).unwrap();
            let stored = validate(p.name, Some(&example))
                .unwrap_or_else(|e| panic!("{}: example refused: {}", p.name, e.message()));
            let mut keys: Vec<&str> = stored
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let mut declared: Vec<&str> = p.config.iter().map(|f| f.name).collect();
            keys.sort();
            declared.sort();
            assert_eq!(
                keys, declared,
                "{}: stored config vs declared fields",
                p.name
            );
            assert_eq!(find(p.name).map(|f| f.priority), Some(p.priority));
        }
    }

    #[test]
    fn unknown_plugin_is_named() {
        let e = validate("nope", None).unwrap_err();
        assert_eq!(
            e.to_json()["name"],
            "plugin 'nope' not enabled; add it to the 'plugins' configuration property"
        );
    }
}
