//! `proxy-cache`'s config (Kong 3.9.3's `kong/plugins/proxy-cache/schema.lua`): which
//! requests and responses are cached (methods, statuses, content types), for how long
//! (`cache_ttl`, `storage_ttl`, or the response's `Cache-Control` with `cache_control`), what
//! the cache key varies on (`vary_query_params`, `vary_headers`, `ignore_uri_case`) and which
//! diagnostic headers are sent.
//!
//! Only the `memory` strategy exists (as in Kong OSS). Kong's memory strategy names an nginx
//! shared dict (`memory.dictionary_name`) and refuses one that does not exist; Tollgate has
//! no shared dicts and one process-wide cache store, so any name is accepted and kept, and
//! every instance uses that one store (Kong's instances share one too when they name the same
//! dict, which is the usual setup).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{parse_typed, to_value, yes, PluginSchema};
use crate::error::FieldErrors;
use crate::lenient;
use crate::schema::{FieldDecl, FieldType};

/// What `request_method` may hold (schema.lua `one_of`).
pub const METHODS: &[&str] = &["HEAD", "GET", "POST", "PATCH", "PUT"];

/// Most entries in one list: the config is read on every request.
pub const MAX_LIST: usize = 1000;

pub const SCHEMA: PluginSchema = PluginSchema {
    name: "proxy-cache",
    // kong/plugins/proxy-cache/handler.lua: PRIORITY = 100.
    priority: 100,
    consumer_scope: true,
    // typedefs.protocols, of which Tollgate proxies these.
    protocols: &["grpc", "grpcs", "http", "https"],
    config: &[
        FieldDecl::new("response_code", FieldType::Array)
            .required()
            .default("[200,301,404]"),
        FieldDecl::new("request_method", FieldType::Array)
            .required()
            .default(r#"["GET","HEAD"]"#),
        FieldDecl::new("content_type", FieldType::Array)
            .required()
            .default(r#"["text/plain","application/json"]"#),
        FieldDecl::new(
            "cache_ttl",
            FieldType::Integer {
                min: 1,
                max: i64::MAX,
            },
        )
        .default("300"),
        FieldDecl::new("strategy", FieldType::OneOf(&["memory"])).required(),
        FieldDecl::new("cache_control", FieldType::Boolean)
            .required()
            .default("false"),
        FieldDecl::new("ignore_uri_case", FieldType::Boolean).default("false"),
        FieldDecl::new(
            "storage_ttl",
            FieldType::Integer {
                min: i64::MIN,
                max: i64::MAX,
            },
        ),
        FieldDecl::new("memory", FieldType::Record),
        FieldDecl::new("vary_query_params", FieldType::Array),
        FieldDecl::new("vary_headers", FieldType::Array),
        FieldDecl::new("response_headers", FieldType::Record),
    ],
    example: r#"{"strategy": "memory", "cache_ttl": 60, "vary_query_params": ["page"], "vary_headers": ["accept-language"], "storage_ttl": 120}"#,
    validate,
    entity_checks: "[]",
};

/// The backing stores (schema.lua `strategies.STRATEGY_TYPES`).
pub const STRATEGIES: &[&str] = &["memory"];

/// `memory`: the shared dict Kong would store entries in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    #[serde(default = "dictionary_name")]
    pub dictionary_name: String,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        MemoryConfig {
            dictionary_name: dictionary_name(),
        }
    }
}

fn dictionary_name() -> String {
    "kong_db_cache".into()
}

/// Which diagnostic headers are sent (a `Kong-Debug` request header sends them all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseHeaders {
    #[serde(default = "yes")]
    pub age: bool,
    #[serde(rename = "X-Cache-Status", default = "yes")]
    pub x_cache_status: bool,
    #[serde(rename = "X-Cache-Key", default = "yes")]
    pub x_cache_key: bool,
}

impl Default for ResponseHeaders {
    fn default() -> Self {
        ResponseHeaders {
            age: true,
            x_cache_status: true,
            x_cache_key: true,
        }
    }
}

/// The `proxy-cache` plugin's config, every default filled in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyCacheConfig {
    /// Checked apart (see [`check_response_codes`]) for Kong's per-element messages.
    #[serde(default = "default_codes")]
    pub response_code: Vec<u16>,
    #[serde(default = "default_methods")]
    pub request_method: Vec<String>,
    #[serde(default = "default_types")]
    pub content_type: Vec<String>,
    #[serde(default = "default_ttl")]
    pub cache_ttl: i64,
    /// Optional while parsing so that its absence reads as Kong's `required field missing`.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub strategy: Option<String>,
    #[serde(default)]
    pub cache_control: bool,
    #[serde(default)]
    pub ignore_uri_case: bool,
    #[serde(default)]
    pub storage_ttl: Option<i64>,
    #[serde(default)]
    pub memory: MemoryConfig,
    #[serde(default, deserialize_with = "lenient::opt_string_list")]
    pub vary_query_params: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::opt_string_list")]
    pub vary_headers: Option<Vec<String>>,
    #[serde(default)]
    pub response_headers: ResponseHeaders,
}

fn default_codes() -> Vec<u16> {
    vec![200, 301, 404]
}
fn default_methods() -> Vec<String> {
    vec!["GET".into(), "HEAD".into()]
}
fn default_types() -> Vec<String> {
    vec!["text/plain".into(), "application/json".into()]
}
fn default_ttl() -> i64 {
    300
}

impl ProxyCacheConfig {
    /// Reads a stored (validated) config back.
    pub fn parse(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }
}

/// Kong's checks on `response_code`: an array (`expected an array`) of at least one
/// (`length must be at least 1`) integers (`expected an integer`) between 100 and 900
/// (`value should be between 100 and 900`), each bad element reported at its position.
pub fn check_response_codes(v: Option<&Value>) -> Result<Option<Vec<u16>>, FieldErrors> {
    let at = |msg: &str| FieldErrors::single("config.response_code", msg);
    let list = match v {
        None => return Ok(None),
        Some(Value::Null) => return Err(at("required field missing")),
        Some(Value::Array(a)) => a,
        Some(_) => return Err(at("expected an array")),
    };
    if list.is_empty() {
        return Err(at("length must be at least 1"));
    }
    if list.len() > MAX_LIST {
        return Err(at(&format!("length must be at most {MAX_LIST}")));
    }
    let mut e = FieldErrors::new();
    let mut out = Vec::with_capacity(list.len());
    for (i, x) in list.iter().enumerate() {
        let code = x
            .as_i64()
            .or_else(|| x.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64));
        match code {
            Some(c) if (100..=900).contains(&c) => out.push(c as u16),
            Some(_) => e.add(
                &format!("config.response_code.{}", i + 1),
                "value should be between 100 and 900",
            ),
            None => e.add(
                &format!("config.response_code.{}", i + 1),
                "expected an integer",
            ),
        }
    }
    e.into_result()?;
    Ok(Some(out))
}

fn validate(config: &Value) -> Result<Value, FieldErrors> {
    let Some(obj) = config.as_object() else {
        return Err(FieldErrors::single("config", "expected a record"));
    };
    let mut rest: Map<String, Value> = obj.clone();
    let codes = rest.remove("response_code");
    let mut e = FieldErrors::new();
    let codes = match check_response_codes(codes.as_ref()) {
        Ok(c) => c,
        Err(x) => {
            e.merge(x);
            None
        }
    };
    let mut c: ProxyCacheConfig = match parse_typed(&Value::Object(rest)) {
        Ok(c) => c,
        Err(x) => {
            e.merge(x);
            return Err(e);
        }
    };
    if let Some(codes) = codes {
        c.response_code = codes;
    }
    match &c.strategy {
        None => e.add("config.strategy", "required field missing"),
        Some(s) if !STRATEGIES.contains(&s.as_str()) => e.add(
            "config.strategy",
            format!("expected one of: {}", STRATEGIES.join(", ")),
        ),
        Some(_) => {}
    }
    for (i, m) in c.request_method.iter().enumerate() {
        if !METHODS.contains(&m.as_str()) {
            e.add(
                &format!("config.request_method.{}", i + 1),
                format!("expected one of: {}", METHODS.join(", ")),
            );
        }
    }
    if c.cache_ttl <= 0 {
        e.add("config.cache_ttl", "value must be greater than 0");
    }
    for (name, len) in [
        ("request_method", Some(c.request_method.len())),
        ("content_type", Some(c.content_type.len())),
        (
            "vary_query_params",
            c.vary_query_params.as_ref().map(Vec::len),
        ),
        ("vary_headers", c.vary_headers.as_ref().map(Vec::len)),
    ] {
        if len.is_some_and(|n| n > MAX_LIST) {
            e.add(
                &format!("config.{name}"),
                format!("length must be at most {MAX_LIST}"),
            );
        }
    }
    e.into_result()?;
    Ok(to_value(&c))
}

#[cfg(test)]
mod tests {
    use super::super::validate;
    use serde_json::json;

    // Facts from Kong 3.9.3's spec/03-plugins/31-proxy-cache/01-schema_spec.lua.
    #[test]
    fn defaults_and_kongs_messages() {
        let v = validate("proxy-cache", Some(&json!({"strategy": "memory"}))).unwrap();
        assert_eq!(v["response_code"], json!([200, 301, 404]));
        assert_eq!(v["request_method"], json!(["GET", "HEAD"]));
        assert_eq!(v["content_type"], json!(["text/plain", "application/json"]));
        assert_eq!(v["cache_ttl"], 300);
        assert_eq!(v["memory"]["dictionary_name"], "kong_db_cache");
        assert_eq!(v["response_headers"]["X-Cache-Key"], true);
        assert!(v["storage_ttl"].is_null());
        let err = |c| {
            validate("proxy-cache", Some(&c))
                .unwrap_err()
                .to_json()
        };
        assert_eq!(
            err(json!({"strategy": "memory", "response_code": [99]}))["config"]["response_code"],
            json!(["value should be between 100 and 900"])
        );
        assert_eq!(
            err(json!({"strategy": "memory", "response_code": []}))["config"]["response_code"],
            "length must be at least 1"
        );
        assert_eq!(
            err(json!({"strategy": "memory", "response_code": ""}))["config"]["response_code"],
            "expected an array"
        );
        assert_eq!(
            err(json!({"strategy": "memory", "response_code": [true, "alo", 123]}))["config"]
                ["response_code"],
            json!(["expected an integer", "expected an integer"])
        );
        assert_eq!(
            err(json!({"strategy": "memory", "response_code": [123.5]}))["config"]
                ["response_code"],
            json!(["expected an integer"])
        );
        assert_eq!(
            err(json!({"strategy": "memory", "cache_ttl": -1}))["config"]["cache_ttl"],
            "value must be greater than 0"
        );
        assert_eq!(
            err(json!({"strategy": "redis"}))["config"]["strategy"],
            "expected one of: memory"
        );
        assert_eq!(
            err(json!({}))["config"]["strategy"],
            "required field missing"
        );
        assert_eq!(
            err(json!({"strategy": "memory", "request_method": ["DELETE"]}))["config"]
                ["request_method"],
            json!(["expected one of: HEAD, GET, POST, PATCH, PUT"])
        );
    }
}
