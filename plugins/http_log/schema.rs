//! `http-log`'s config (Kong 3.9.3's `kong/plugins/http-log/schema.lua` and the `queue`
//! record of `kong/tools/queue_schema.lua`): where each request's log record is sent, how,
//! and how the entries waiting to be sent are queued, batched and retried.
//!
//! The legacy fields `retry_count`, `queue_size` and `flush_timeout` are kept as 3.9.3 keeps
//! them: no default (null), accepted, and converted by [`HttpLogConfig::queue_params`] as
//! `Queue.get_plugin_params` does (`queue_size` other than 1 is the batch size,
//! `flush_timeout` other than 2 the coalescing delay; `retry_count` no longer does anything).
//!
//! `custom_fields_by_lua` takes constant snippets only (Tollgate runs no Lua:
//! [`super::custom_fields`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{parse_typed, to_value, PluginSchema};
use crate::error::FieldErrors;
use crate::schema::{FieldDecl, FieldType};

pub const SCHEMA: PluginSchema = PluginSchema {
    name: "http-log",
    priority: 12,
    consumer_scope: true,
    protocols: &["grpc", "grpcs", "http", "https"],
    config: &[
        FieldDecl::new("http_endpoint", FieldType::String { min: 1, max: 4096 }).required(),
        FieldDecl::new("method", FieldType::OneOf(&["POST", "PUT", "PATCH"]))
            .default(r#""POST""#),
        FieldDecl::new(
            "content_type",
            FieldType::OneOf(&["application/json", "application/json; charset=utf-8"]),
        )
        .default(r#""application/json""#),
        FieldDecl::new("timeout", FieldType::Number).default("10000"),
        FieldDecl::new("keepalive", FieldType::Number).default("60000"),
        FieldDecl::new(
            "retry_count",
            FieldType::Integer {
                min: i64::MIN,
                max: i64::MAX,
            },
        ),
        FieldDecl::new(
            "queue_size",
            FieldType::Integer {
                min: i64::MIN,
                max: i64::MAX,
            },
        ),
        FieldDecl::new("flush_timeout", FieldType::Number),
        FieldDecl::new("headers", FieldType::Record),
        FieldDecl::new("queue", FieldType::Record).required(),
        FieldDecl::new("custom_fields_by_lua", FieldType::Record),
    ],
    example: r#"{"http_endpoint": "http://127.0.0.1:9999/log"}"#,
    validate,
    entity_checks: "[]",
};

/// Kong's `queue` record (`kong/tools/queue_schema.lua`), with its defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    #[serde(default = "one")]
    pub max_batch_size: i64,
    #[serde(default = "one_f")]
    pub max_coalescing_delay: f64,
    #[serde(default = "ten_thousand")]
    pub max_entries: i64,
    #[serde(default)]
    pub max_bytes: Option<i64>,
    #[serde(default = "sixty")]
    pub max_retry_time: f64,
    #[serde(default = "initial_retry_delay")]
    pub initial_retry_delay: f64,
    #[serde(default = "sixty")]
    pub max_retry_delay: f64,
    #[serde(default = "one")]
    pub concurrency_limit: i64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            max_batch_size: 1,
            max_coalescing_delay: 1.0,
            max_entries: 10_000,
            max_bytes: None,
            max_retry_time: 60.0,
            initial_retry_delay: 0.01,
            max_retry_delay: 60.0,
            concurrency_limit: 1,
        }
    }
}

fn one() -> i64 {
    1
}
fn one_f() -> f64 {
    1.0
}
fn ten_thousand() -> i64 {
    10_000
}
fn sixty() -> f64 {
    60.0
}
fn initial_retry_delay() -> f64 {
    0.01
}
fn post() -> String {
    "POST".into()
}
fn json_type() -> String {
    "application/json".into()
}
fn timeout() -> f64 {
    10_000.0
}
fn keepalive() -> f64 {
    60_000.0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpLogConfig {
    pub http_endpoint: String,
    #[serde(default = "post")]
    pub method: String,
    #[serde(default = "json_type")]
    pub content_type: String,
    #[serde(default = "timeout")]
    pub timeout: f64,
    #[serde(default = "keepalive")]
    pub keepalive: f64,
    #[serde(default)]
    pub retry_count: Option<i64>,
    #[serde(default)]
    pub queue_size: Option<i64>,
    #[serde(default)]
    pub flush_timeout: Option<f64>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "queue_or_default")]
    pub queue: QueueConfig,
    #[serde(default)]
    pub custom_fields_by_lua: Option<Map<String, Value>>,
}

/// A null `queue` is the record with its defaults, as Kong fills a record.
fn queue_or_default<'de, D: serde::Deserializer<'de>>(d: D) -> Result<QueueConfig, D::Error> {
    Ok(Option::<QueueConfig>::deserialize(d)?.unwrap_or_default())
}

/// The parts of an `http_endpoint` URL the plugin uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// The path (Kong's `parsed_url.path`, `/` when empty); the query is not sent, as Kong's
    /// `fmt("%s://%s:%d%s", scheme, host, port, path)` drops it.
    pub path: String,
    /// `user:password` before the `@`, sent as basic authentication.
    pub userinfo: Option<String>,
}

/// Parses an `http_endpoint` as Kong's `typedefs.url` checks it (`missing scheme in url`,
/// `missing host in url`); only `http` and `https` can be sent to.
pub fn parse_endpoint(url: &str) -> Result<Endpoint, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("missing scheme in url".into());
    };
    let https = match scheme.to_ascii_lowercase().as_str() {
        "http" => false,
        "https" => true,
        other => return Err(format!("unsupported scheme '{other}' in url (http or https)")),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_string()), h),
        None => (None, authority),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("missing host in url")?;
        let port = after.strip_prefix(':');
        (h.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err("missing host in url".into());
    }
    let port = match port {
        None | Some("") => {
            if https {
                443
            } else {
                80
            }
        }
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("could not parse url. invalid port '{p}'"))?,
    };
    let path = tail.split(['?', '#']).next().unwrap_or("");
    Ok(Endpoint {
        https,
        host,
        port,
        path: if path.is_empty() { "/".into() } else { path.into() },
        userinfo,
    })
}

/// Kong's `tools_http.validate_header_name`.
fn valid_header_name(n: &str) -> bool {
    !n.is_empty()
        && n
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl HttpLogConfig {
    pub fn parse(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }

    /// The queue's parameters with the legacy fields applied (Kong's
    /// `Queue.get_plugin_params`).
    pub fn queue_params(&self) -> QueueConfig {
        let mut q = self.queue.clone();
        if let Some(n) = self.queue_size.filter(|n| *n != 1) {
            q.max_batch_size = n.max(1);
        }
        if let Some(t) = self.flush_timeout.filter(|t| *t != 2.0) {
            q.max_coalescing_delay = t.max(0.0);
        }
        q
    }

    /// The name instances share a queue by (Kong's `make_queue_name`: its format has six
    /// `%s` for eight values, so endpoint, method, content type, timeout, keepalive and
    /// retry_count).
    pub fn queue_name(&self) -> String {
        let n = |f: f64| {
            if f.fract() == 0.0 {
                format!("{}", f as i64)
            } else {
                f.to_string()
            }
        };
        format!(
            "{}:{}:{}:{}:{}:{}",
            self.http_endpoint,
            self.method,
            self.content_type,
            n(self.timeout),
            n(self.keepalive),
            self.retry_count
                .map_or_else(|| "nil".to_string(), |r| r.to_string())
        )
    }
}

fn between(errs: &mut FieldErrors, field: &str, v: f64, lo: f64, hi: f64) {
    if !(lo..=hi).contains(&v) {
        errs.add(
            &format!("config.queue.{field}"),
            format!("value should be between {lo} and {hi}"),
        );
    }
}

fn validate(config: &Value) -> Result<Value, FieldErrors> {
    let c: HttpLogConfig = parse_typed(config)?;
    if !matches!(c.method.as_str(), "POST" | "PUT" | "PATCH") {
        return Err(FieldErrors::single(
            "config.method",
            "expected one of: POST, PUT, PATCH",
        ));
    }
    if !matches!(
        c.content_type.as_str(),
        "application/json" | "application/json; charset=utf-8"
    ) {
        return Err(FieldErrors::single(
            "config.content_type",
            "expected one of: application/json, application/json; charset=utf-8",
        ));
    }
    let endpoint = parse_endpoint(&c.http_endpoint)
        .map_err(|e| FieldErrors::single("config.http_endpoint", e))?;
    if let Some(h) = &c.headers {
        for (k, v) in h {
            let lower = k.to_ascii_lowercase();
            let refused = match lower.as_str() {
                "host" => Some("cannot contain 'Host' header"),
                "content-length" => Some("cannot contain 'Content-Length' header"),
                "content-type" => Some("cannot contain 'Content-Type' header"),
                _ => None,
            };
            if let Some(msg) = refused {
                return Err(FieldErrors::single("config.headers", msg));
            }
            if !valid_header_name(k) {
                return Err(FieldErrors::single(
                    "config.headers",
                    format!(
                        "bad header name '{k}', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
                    ),
                ));
            }
            if v.is_empty() {
                return Err(FieldErrors::single(
                    "config.headers",
                    "length must be at least 1",
                ));
            }
        }
        if endpoint.userinfo.is_some() && h.keys().any(|k| k.eq_ignore_ascii_case("authorization"))
        {
            return Err(FieldErrors::single(
                "config",
                "specifying both an 'Authorization' header and user info in 'http_endpoint' is not allowed",
            ));
        }
    }
    super::custom_fields::parse(&c.custom_fields_by_lua)?;
    let q = &c.queue;
    let mut errs = FieldErrors::new();
    between(&mut errs, "max_batch_size", q.max_batch_size as f64, 1.0, 1e6);
    between(&mut errs, "max_coalescing_delay", q.max_coalescing_delay, 0.0, 3600.0);
    between(&mut errs, "max_entries", q.max_entries as f64, 1.0, 1e6);
    between(&mut errs, "initial_retry_delay", q.initial_retry_delay, 0.001, 1e6);
    between(&mut errs, "max_retry_delay", q.max_retry_delay, 0.001, 1e6);
    if !matches!(q.concurrency_limit, -1 | 1) {
        errs.add("config.queue.concurrency_limit", "expected one of: -1, 1");
    }
    errs.into_result()?;
    Ok(to_value(&HttpLogConfig {
        ..c
    }))
}

#[cfg(test)]
mod tests {
    use super::super::validate;
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_kongs() {
        // kong/plugins/http-log/schema.lua and kong/tools/queue_schema.lua at 3.9.3.
        let v = validate("http-log", Some(&json!({"http_endpoint": "http://a.test/p"}))).unwrap();
        assert_eq!(
            v,
            json!({
                "http_endpoint": "http://a.test/p", "method": "POST",
                "content_type": "application/json", "timeout": 10000, "keepalive": 60000,
                "retry_count": null, "queue_size": null, "flush_timeout": null,
                "headers": null, "custom_fields_by_lua": null,
                "queue": {"max_batch_size": 1, "max_coalescing_delay": 1, "max_entries": 10000,
                          "max_bytes": null, "max_retry_time": 60, "initial_retry_delay": 0.01,
                          "max_retry_delay": 60, "concurrency_limit": 1}
            })
        );
    }

    #[test]
    fn kongs_schema_spec_messages() {
        // spec/03-plugins/03-http-log/02-schema_spec.lua
        let err = |c: Value| validate("http-log", Some(&c)).unwrap_err().to_json();
        let url = "http://myservice.test/path";
        assert_eq!(
            err(json!({"http_endpoint": url, "headers": {"X-My-Header": ""}}))["config"]["headers"],
            "length must be at least 1"
        );
        assert_eq!(
            err(json!({"http_endpoint": url, "headers": {"X-My-Header": "1", "Host": "h"}}))
                ["config"]["headers"],
            "cannot contain 'Host' header"
        );
        assert_eq!(
            err(json!({"http_endpoint": url, "headers": {"coNTEnt-Length": "123"}}))["config"]
                ["headers"],
            "cannot contain 'Content-Length' header"
        );
        assert_eq!(
            err(json!({"http_endpoint": url, "headers": {"coNTEnt-Type": "bad"}}))["config"]
                ["headers"],
            "cannot contain 'Content-Type' header"
        );
        assert_eq!(
            err(json!({"http_endpoint": "http://hi:there@myservice.test/path",
                       "headers": {"AuthoRIZATion": "bad"}}))["config"],
            "specifying both an 'Authorization' header and user info in 'http_endpoint' is not allowed"
        );
        assert_eq!(
            err(json!({"http_endpoint": "myservice.test"}))["config"]["http_endpoint"],
            "missing scheme in url"
        );
        assert_eq!(
            err(json!({"http_endpoint": url, "method": "GET"}))["config"]["method"]
                .as_str()
                .map(|s| s.starts_with("expected one of")),
            Some(true)
        );
    }

    #[test]
    fn legacy_queue_parameters_convert() {
        // "converts legacy queue parameters" in the same spec.
        let v = validate(
            "http-log",
            Some(&json!({"http_endpoint": "http://hi:there@myservice.test/path",
                         "retry_count": 23, "queue_size": 46, "flush_timeout": 92})),
        )
        .unwrap();
        let c = HttpLogConfig::parse(&v).unwrap();
        let q = c.queue_params();
        assert_eq!(q.max_batch_size, 46);
        assert_eq!(q.max_coalescing_delay, 92.0);
    }

    #[test]
    fn endpoints_parse() {
        let e = parse_endpoint("https://u:p@[::1]:8443/a/b?x=1").unwrap();
        assert_eq!(
            e,
            Endpoint {
                https: true,
                host: "::1".into(),
                port: 8443,
                path: "/a/b".into(),
                userinfo: Some("u:p".into())
            }
        );
        let e = parse_endpoint("http://h.test").unwrap();
        assert_eq!((e.port, e.path.as_str()), (80, "/"));
        assert!(parse_endpoint("http:///x").is_err());
    }
}
