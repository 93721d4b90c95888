//! Kong's `upstreams`: a virtual host name that services point at (`service.host`), balanced
//! over its targets, with the balancing algorithm, hashing inputs and health checks. Fields,
//! defaults, entity checks and the `algorithm`/`hash_on` shorthands are Kong 3.9.3's
//! `kong/db/schema/entities/upstreams.lua`.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use uuid::Uuid;

use crate::address::{self, HostKind};
use crate::entity::{kong_number, ForeignKey, Timestamp};
use crate::error::FieldErrors;
use crate::registry::EntityKind;
use crate::schema::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upstream {
    pub id: Uuid,
    pub name: String,
    pub algorithm: String,
    pub hash_on: String,
    pub hash_fallback: String,
    pub hash_on_header: Option<String>,
    pub hash_fallback_header: Option<String>,
    pub hash_on_cookie: Option<String>,
    pub hash_on_cookie_path: String,
    pub hash_on_query_arg: Option<String>,
    pub hash_fallback_query_arg: Option<String>,
    pub hash_on_uri_capture: Option<String>,
    pub hash_fallback_uri_capture: Option<String>,
    pub slots: u32,
    pub healthchecks: Box<Healthchecks>,
    pub host_header: Option<String>,
    pub client_certificate: Option<ForeignKey>,
    pub use_srv_name: bool,
    pub tags: Option<Vec<String>>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Healthchecks {
    pub active: ActiveCheck,
    pub passive: PassiveCheck,
    #[serde(serialize_with = "kong_number")]
    pub threshold: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveCheck {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(serialize_with = "kong_number")]
    pub timeout: f64,
    pub concurrency: u32,
    pub http_path: String,
    pub https_sni: Option<String>,
    pub https_verify_certificate: bool,
    pub headers: Option<BTreeMap<String, Vec<String>>>,
    pub healthy: Healthy,
    pub unhealthy: Unhealthy,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassiveCheck {
    #[serde(rename = "type")]
    pub kind: String,
    pub healthy: PassiveHealthy,
    pub unhealthy: PassiveUnhealthy,
}

/// Active checks' healthy side: how often healthy targets are probed, and how many
/// successes bring an unhealthy one back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Healthy {
    #[serde(serialize_with = "kong_number")]
    pub interval: f64,
    pub http_statuses: Vec<u16>,
    pub successes: u8,
}

/// Active checks' unhealthy side: how often unhealthy targets are probed, and the failures
/// that take a healthy one out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unhealthy {
    #[serde(serialize_with = "kong_number")]
    pub interval: f64,
    pub http_statuses: Vec<u16>,
    pub tcp_failures: u8,
    pub timeouts: u8,
    pub http_failures: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassiveHealthy {
    pub http_statuses: Vec<u16>,
    pub successes: u8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassiveUnhealthy {
    pub http_statuses: Vec<u16>,
    pub tcp_failures: u8,
    pub timeouts: u8,
    pub http_failures: u8,
}

impl Healthchecks {
    /// Kong's rule (`healthcheckers.lua`): checking is on when some active interval or some
    /// passive failure counter is set.
    pub fn enabled(&self) -> bool {
        self.active.healthy.interval > 0.0
            || self.active.unhealthy.interval > 0.0
            || self.passive.unhealthy.tcp_failures > 0
            || self.passive.unhealthy.timeouts > 0
            || self.passive.unhealthy.http_failures > 0
    }
}

const HASH_ON: FieldType = FieldType::OneOf(&[
    "none",
    "consumer",
    "ip",
    "header",
    "cookie",
    "path",
    "query_arg",
    "uri_capture",
]);
const PARAM: FieldType = FieldType::String { min: 1, max: 4096 };

/// Kong's default `healthchecks`, as its Admin API prints it.
pub fn default_healthchecks() -> Value {
    json!({
        "active": {
            "type": "http", "timeout": 1, "concurrency": 10, "http_path": "/",
            "https_sni": null, "https_verify_certificate": true, "headers": null,
            "healthy": {"interval": 0, "http_statuses": [200, 302], "successes": 0},
            "unhealthy": {"interval": 0, "http_statuses": [429, 404, 500, 501, 502, 503, 504, 505],
                          "tcp_failures": 0, "timeouts": 0, "http_failures": 0},
        },
        "passive": {
            "type": "http",
            "healthy": {"http_statuses": [200, 201, 202, 203, 204, 205, 206, 207, 208, 226,
                                          300, 301, 302, 303, 304, 305, 306, 307, 308],
                        "successes": 0},
            "unhealthy": {"http_statuses": [429, 500, 503], "tcp_failures": 0, "timeouts": 0,
                          "http_failures": 0},
        },
        "threshold": 0,
    })
}

impl Declared for Upstream {
    const DECL: EntityDecl = EntityDecl {
        table: "upstreams",
        admin_path: "upstreams",
        endpoint_key: Some("name"),
        uniques: &[&["name"]],
        foreign: &[ForeignDecl {
            field: "client_certificate",
            target: EntityKind::Certificate,
            on_delete: OnDelete::Restrict,
            nested_path: None,
            nests: false,
        }],
        fields: &[
            ID,
            CREATED_AT,
            FieldDecl::new("name", FieldType::String { min: 1, max: 253 }).required(),
            UPDATED_AT,
            FieldDecl::new(
                "algorithm",
                FieldType::OneOf(&[
                    "consistent-hashing",
                    "least-connections",
                    "round-robin",
                    "latency",
                ]),
            )
            .default("\"round-robin\""),
            FieldDecl::new("hash_on", HASH_ON).default("\"none\""),
            FieldDecl::new("hash_fallback", HASH_ON).default("\"none\""),
            FieldDecl::new("hash_on_header", FieldType::String { min: 1, max: 4096 }),
            FieldDecl::new("hash_fallback_header", FieldType::String { min: 1, max: 4096 }),
            FieldDecl::new("hash_on_cookie", FieldType::String { min: 1, max: 4096 }),
            FieldDecl::new("hash_on_cookie_path", FieldType::String { min: 1, max: 4096 })
                .default("\"/\""),
            FieldDecl::new("hash_on_query_arg", PARAM),
            FieldDecl::new("hash_fallback_query_arg", PARAM),
            FieldDecl::new("hash_on_uri_capture", PARAM),
            FieldDecl::new("hash_fallback_uri_capture", PARAM),
            FieldDecl::new("slots", FieldType::Integer { min: 10, max: 65536 }).default("10000"),
            FieldDecl::new("healthchecks", FieldType::Record),
            TAGS,
            FieldDecl::new("host_header", FieldType::String { min: 1, max: 4096 }),
            FieldDecl::new("client_certificate", FieldType::Foreign(EntityKind::Certificate)),
            FieldDecl::new("use_srv_name", FieldType::Boolean).default("false"),
        ],
        entity_checks: r#"[{"conditional":{"if_field":"hash_on","if_match":{"match":"^header$"},"then_field":"hash_on_header","then_match":{"required":true}}},{"conditional":{"if_field":"hash_fallback","if_match":{"match":"^header$"},"then_field":"hash_fallback_header","then_match":{"required":true}}},{"conditional":{"if_field":"hash_on","if_match":{"match":"^cookie$"},"then_field":"hash_on_cookie","then_match":{"required":true}}},{"conditional":{"if_field":"hash_fallback","if_match":{"match":"^cookie$"},"then_field":"hash_on_cookie","then_match":{"required":true}}},{"conditional":{"if_field":"hash_on","if_match":{"match":"^none$"},"then_field":"hash_fallback","then_match":{"one_of":["none"]}}},{"conditional":{"if_field":"hash_on","if_match":{"match":"^cookie$"},"then_field":"hash_fallback","then_match":{"one_of":["none"]}}},{"distinct":["hash_on_header","hash_fallback_header"]},{"distinct":["hash_on_query_arg","hash_fallback_query_arg"]},{"distinct":["hash_on_uri_capture","hash_fallback_uri_capture"]}]"#,
        storage_tag: b'u',
        examples: [
            r#"{"name": "example-1.test"}"#,
            r#"{"name": "example-2.test", "algorithm": "least-connections"}"#,
        ],
        routing: Routing::Never,
    };

    fn field(&self, name: &str) -> FieldRef<'_> {
        match name {
            "name" => FieldRef::Str(&self.name),
            "client_certificate" => self
                .client_certificate
                .map_or(FieldRef::Null, |f| FieldRef::Id(f.id)),
            _ => FieldRef::Null,
        }
    }

    fn build(body: &Value, cx: &BuildCx<'_>) -> Result<Self, FieldErrors> {
        let mut body = body.clone();
        if let Some(o) = body.as_object_mut() {
            shorthands(o);
        }
        let mut record = match build_record(&Self::DECL, &body, cx) {
            Ok(r) => r,
            // Kong runs the entity checks on what it was given even when a field is bad; a
            // check's message on a field replaces the field's own.
            Err(mut e) => {
                if let Some(Err(checks)) = body.as_object().map(entity_checks) {
                    for (k, v) in checks.0 {
                        if k == "@entity" || e.0.contains_key(&k) {
                            e.0.insert(k, v);
                        }
                    }
                }
                return Err(e);
            }
        };
        let mut errs = FieldErrors::new();
        if let Some(Value::String(name)) = record.get("name") {
            if let Err(m) = check_upstream_name(name) {
                errs.add("name", m);
            }
        }
        for (field, check) in [
            ("hash_on_header", check_header_name as fn(&str) -> Result<(), String>),
            ("hash_fallback_header", check_header_name),
            ("hash_on_cookie", check_cookie_name),
            ("hash_on_cookie_path", check_path),
            ("host_header", check_host_with_port),
        ] {
            if let Some(Value::String(v)) = record.get(field) {
                if let Err(m) = check(v) {
                    errs.add(field, m);
                }
            }
        }
        // Targets resolve through A and AAAA records only: an SRV name would be ignored.
        if record.get("use_srv_name") == Some(&Value::Bool(true)) {
            errs.add(
                "use_srv_name",
                "SRV records are not resolved by Tollgate: only false is supported",
            );
        }
        let given = record.remove("healthchecks").unwrap_or(Value::Null);
        record.insert("healthchecks".into(), healthchecks(&given, &mut errs));
        errs.into_result()?;
        entity_checks(&record)?;
        serde_json::from_value(Value::Object(record))
            .map_err(|e| FieldErrors::single("@entity", e.to_string()))
    }
}

/// Kong's shorthand fields, in its order: `algorithm` least-connections or latency clears
/// `hash_on`; then a `hash_on` other than none switches to consistent hashing, and none to
/// round-robin.
fn shorthands(o: &mut Map<String, Value>) {
    if let Some(Value::String(a)) = o.get("algorithm") {
        if a == "least-connections" || a == "latency" {
            o.insert("hash_on".into(), Value::Null);
        }
    }
    match o.get("hash_on") {
        Some(Value::String(h)) if h == "none" => {
            o.insert("algorithm".into(), json!("round-robin"));
        }
        Some(Value::String(_)) => {
            o.insert("algorithm".into(), json!("consistent-hashing"));
        }
        _ => {}
    }
}

fn check_upstream_name(name: &str) -> Result<(), String> {
    let label = format!("Invalid name ('{name}')");
    match address::normalize(name) {
        Err(_) => Err(format!("{label}; must be a valid hostname")),
        Ok(h) if h.kind != HostKind::Name => Err(format!("{label}; no ip addresses allowed")),
        Ok(h) if h.port.is_some() => Err(format!("{label}; no port allowed")),
        Ok(_) => Ok(()),
    }
}

fn check_header_name(v: &str) -> Result<(), String> {
    if v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        Ok(())
    } else {
        Err(format!(
            "bad header name '{v}', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
        ))
    }
}

fn check_cookie_name(v: &str) -> Result<(), String> {
    let bad = |b: u8| b < 32 || b == 127 || b" \t()<>@,;:\\\"/?={}[]".contains(&b);
    if v.bytes().any(bad) {
        Err("contains one or more invalid characters. ASCII control characters (0-31;127), space, tab and the characters ()<>@,;:\\\"/?={}[] are not allowed.".into())
    } else {
        Ok(())
    }
}

/// Kong's `typedefs.path`: RFC 3986 characters, properly percent-encoded.
pub(crate) fn check_path(p: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_~/%:@!$&'()*+,;=".contains(c);
    if !p.starts_with('/') {
        return Err("should start with: /".into());
    }
    if !p.chars().all(allowed) {
        return Err(format!(
            "invalid path: '{p}' (characters outside of the reserved list of RFC 3986 found)"
        ));
    }
    let b = p.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok = b.len() > i + 2 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit();
            if !ok {
                let end = (i + 3).min(b.len());
                return Err(format!("invalid url-encoded value: '{}'", &p[i..end]));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

fn check_host_with_port(v: &str) -> Result<(), String> {
    address::normalize(v).map(|_| ())
}

/// What a `healthchecks` leaf holds, with Kong's ranges.
#[derive(Clone, Copy)]
enum Leaf {
    CheckType,
    Seconds,
    PositiveInt,
    Byte,
    Path,
    Sni,
    Bool,
    Headers,
    Statuses,
    Threshold,
}

fn leaf_of(name: &str) -> Option<Leaf> {
    Some(match name {
        "type" => Leaf::CheckType,
        "timeout" | "interval" => Leaf::Seconds,
        "concurrency" => Leaf::PositiveInt,
        "successes" | "tcp_failures" | "timeouts" | "http_failures" => Leaf::Byte,
        "http_path" => Leaf::Path,
        "https_sni" => Leaf::Sni,
        "https_verify_certificate" => Leaf::Bool,
        "headers" => Leaf::Headers,
        "http_statuses" => Leaf::Statuses,
        "threshold" => Leaf::Threshold,
        _ => return None,
    })
}

/// `healthchecks` from input: Kong's defaults filled in at every level a record is given, and
/// each field checked where Kong checks it (messages under `healthchecks.active.…`).
fn healthchecks(given: &Value, errs: &mut FieldErrors) -> Value {
    let mut out = default_healthchecks();
    let mut path = vec!["healthchecks".to_string()];
    fill(&mut out, given, &mut path, errs);
    out
}

fn fill(out: &mut Value, given: &Value, path: &mut Vec<String>, errs: &mut FieldErrors) {
    let given = match given {
        Value::Null => return,
        Value::Object(o) => o,
        _ => {
            errs.put(path, json!("expected a record"));
            return;
        }
    };
    let Some(slots) = out.as_object_mut() else {
        return;
    };
    for (k, v) in given {
        path.push(k.clone());
        match slots.get_mut(k) {
            None => errs.put(path, json!("unknown field")),
            Some(slot) if slot.is_object() && leaf_of(k).is_none() => fill(slot, v, path, errs),
            Some(slot) => match check_leaf(leaf_of(k).expect("a leaf"), v) {
                Ok(x) => *slot = x,
                Err(m) => errs.put(path, m),
            },
        }
        path.pop();
    }
}

fn check_leaf(leaf: Leaf, v: &Value) -> Result<Value, Value> {
    let between = |lo: f64, hi: f64, int: bool| -> Result<Value, Value> {
        let n = v.as_f64().ok_or_else(|| {
            json!(if int {
                "expected an integer"
            } else {
                "expected a number"
            })
        })?;
        if int && n.fract() != 0.0 {
            return Err(json!("expected an integer"));
        }
        if n < lo || n > hi {
            return Err(json!(format!("value should be between {lo} and {hi}")));
        }
        Ok(v.clone())
    };
    match leaf {
        Leaf::CheckType => match v.as_str() {
            Some(s) if ["tcp", "http", "https", "grpc", "grpcs"].contains(&s) => Ok(v.clone()),
            _ => Err(json!("expected one of: tcp, http, https, grpc, grpcs")),
        },
        Leaf::Seconds => between(0.0, 65535.0, false),
        Leaf::PositiveInt => between(1.0, 2_147_483_648.0, true),
        Leaf::Byte => between(0.0, 255.0, true),
        Leaf::Threshold => between(0.0, 100.0, false),
        Leaf::Bool => v
            .as_bool()
            .map(Value::Bool)
            .ok_or_else(|| json!("expected a boolean")),
        Leaf::Path => match v.as_str() {
            Some(p) => check_path(p).map(|_| v.clone()).map_err(Value::String),
            None => Err(json!("expected a string")),
        },
        Leaf::Sni => match v {
            Value::Null => Ok(Value::Null),
            Value::String(s) => match address::normalize(s) {
                Err(_) => Err(json!(format!("invalid value: {s}"))),
                Ok(h) if h.kind != HostKind::Name => Err(json!("must not be an IP")),
                Ok(h) if h.port.is_some() => Err(json!("must not have a port")),
                Ok(_) => Ok(v.clone()),
            },
            _ => Err(json!("expected a string")),
        },
        Leaf::Headers => match v {
            Value::Null => Ok(Value::Null),
            Value::Object(m) => {
                let mut bad = Map::new();
                for (k, vals) in m {
                    if let Err(e) = check_header_name(k) {
                        bad.insert(k.clone(), json!(e));
                    } else if !vals
                        .as_array()
                        .is_some_and(|a| a.iter().all(Value::is_string))
                    {
                        bad.insert(k.clone(), json!("expected an array"));
                    }
                }
                if bad.is_empty() {
                    Ok(v.clone())
                } else {
                    Err(Value::Object(bad))
                }
            }
            _ => Err(json!("expected a map")),
        },
        Leaf::Statuses => {
            let Some(a) = v.as_array() else {
                return Err(json!("expected an array"));
            };
            let mut bad = Map::new();
            for (i, s) in a.iter().enumerate() {
                let ok = s
                    .as_f64()
                    .filter(|n| n.fract() == 0.0)
                    .map(|n| (100.0..=999.0).contains(&n));
                match ok {
                    None => bad.insert((i + 1).to_string(), json!("expected an integer")),
                    Some(false) => bad.insert(
                        (i + 1).to_string(),
                        json!("value should be between 100 and 999"),
                    ),
                    Some(true) => None,
                };
            }
            if bad.is_empty() {
                Ok(v.clone())
            } else {
                Err(Value::Object(bad))
            }
        }
    }
}

/// Kong's entity checks, on a record whose fields are each valid.
fn entity_checks(r: &Map<String, Value>) -> Result<(), FieldErrors> {
    let s = |k: &str| r.get(k).and_then(Value::as_str);
    let mut errs = FieldErrors::new();
    let (on, fallback) = (s("hash_on").unwrap_or("none"), s("hash_fallback").unwrap_or("none"));
    let mut conditional = |if_field: &str, then_field: &str, msg: &str| {
        errs.add_entity(format!(
            "failed conditional validation given value of field '{if_field}'"
        ));
        errs.add(then_field, msg);
    };
    let requires = [
        ("header", "hash_on_header", "hash_fallback_header"),
        ("cookie", "hash_on_cookie", "hash_on_cookie"),
        ("query_arg", "hash_on_query_arg", "hash_fallback_query_arg"),
        ("uri_capture", "hash_on_uri_capture", "hash_fallback_uri_capture"),
    ];
    for (mode, on_field, fallback_field) in requires {
        if on == mode && s(on_field).is_none() {
            conditional("hash_on", on_field, "required field missing");
        }
        if fallback == mode && s(fallback_field).is_none() {
            conditional("hash_fallback", fallback_field, "required field missing");
        }
    }
    if (on == "none" || on == "cookie") && fallback != "none" {
        conditional("hash_on", "hash_fallback", "expected one of: none");
    }
    // The fallback must differ from hash_on (Kong's lists, in its order).
    let allowed: &[&str] = match on {
        "consumer" => &["none", "ip", "header", "cookie", "path", "query_arg", "uri_capture"],
        "ip" => &["none", "consumer", "header", "cookie", "path", "query_arg", "uri_capture"],
        "path" => &["none", "consumer", "header", "cookie", "query_arg", "ip", "uri_capture"],
        _ => &[],
    };
    if !allowed.is_empty() && !allowed.contains(&fallback) {
        let msg = format!("expected one of: {}", allowed.join(", "));
        conditional("hash_on", "hash_fallback", &msg);
    }
    for (a, b) in [
        ("hash_on_header", "hash_fallback_header"),
        ("hash_on_query_arg", "hash_fallback_query_arg"),
        ("hash_on_uri_capture", "hash_fallback_uri_capture"),
    ] {
        if let (Some(x), Some(y)) = (s(a), s(b)) {
            let same = if a == "hash_on_header" {
                x.eq_ignore_ascii_case(y)
            } else {
                x == y
            };
            if same {
                errs.add_entity(format!(
                    "values of these fields must be distinct: '{a}', '{b}'"
                ));
            }
        }
    }
    errs.into_result()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::Stamp;
    use crate::State;

    fn build(body: Value) -> Result<Upstream, FieldErrors> {
        let stamp = Stamp {
            id: Uuid::from_u128(1),
            now: 1,
            now_ms: 1000,
            created_at: None,
            generated_key: String::new(),
            generated_secret: String::new(),
        };
        let st = State::default();
        let cx = BuildCx {
            stamp: &stamp,
            state: &st,
            parent: None,
            transform: true,
        };
        Upstream::build(&body, &cx)
    }

    #[test]
    fn defaults_and_shorthands() {
        let u = build(json!({"name": "a.test"})).unwrap();
        assert_eq!(u.algorithm, "round-robin");
        assert_eq!(u.slots, 10000);
        assert_eq!(
            serde_json::to_value(&u.healthchecks).unwrap(),
            default_healthchecks()
        );
        assert!(!u.healthchecks.enabled());
        let u = build(json!({"name": "a.test", "hash_on": "ip"})).unwrap();
        assert_eq!(u.algorithm, "consistent-hashing");
        let u = build(json!({"name": "a.test", "algorithm": "latency", "hash_on": "ip"})).unwrap();
        assert_eq!((u.algorithm.as_str(), u.hash_on.as_str()), ("latency", "none"));
        let u = build(json!({"name": "a.test",
            "healthchecks": {"active": {"unhealthy": {"interval": 5}}}}))
        .unwrap();
        assert_eq!(u.healthchecks.active.unhealthy.interval, 5.0);
        assert_eq!(u.healthchecks.active.unhealthy.http_statuses.len(), 8);
        assert!(u.healthchecks.enabled());
    }

    #[test]
    fn kong_messages() {
        let e = build(json!({"name": "1.2.3.4"})).unwrap_err();
        assert_eq!(e.0["name"], "Invalid name ('1.2.3.4'); no ip addresses allowed");
        let e = build(json!({"name": "a.test:80"})).unwrap_err();
        assert_eq!(e.0["name"], "Invalid name ('a.test:80'); no port allowed");
        let e = build(json!({"name": "a.test", "hash_on": "header"})).unwrap_err();
        assert_eq!(e.0["hash_on_header"], "required field missing");
        let e = build(json!({"name": "a.test",
            "healthchecks": {"active": {"timeout": -1, "healthy": {"http_statuses": [99]}}}}))
        .unwrap_err();
        assert_eq!(
            e.to_json()["healthchecks"]["active"]["timeout"],
            "value should be between 0 and 65535"
        );
        assert_eq!(
            e.to_json()["healthchecks"]["active"]["healthy"]["http_statuses"][0],
            "value should be between 100 and 999"
        );
        let e = build(json!({"name": "a.test", "hash_on": "header",
            "hash_on_header": "X-A", "hash_fallback": "header", "hash_fallback_header": "x-a"}))
        .unwrap_err();
        assert!(e.message().contains("must be distinct"), "{}", e.message());
    }
}
