//! `response-ratelimiting`'s config (Kong 3.9.3, `kong/plugins/response-ratelimiting/schema.lua`):
//! named limits per period that the upstream's responses consume (`X-Kong-Limit: video=1`),
//! what is counted, where counters live, and Kong's `redis` fields (accepted and shown; the
//! cluster shares counters without Redis, as `rate-limiting` does).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::rate_limiting::{Policy, RedisConfig, PERIODS};
use super::{parse_typed, to_value, yes, PluginSchema};
use crate::error::FieldErrors;
use crate::lenient;
use crate::schema::{FieldDecl, FieldType};

pub const SCHEMA: PluginSchema = PluginSchema {
    name: "response-ratelimiting",
    // kong/plugins/response-ratelimiting/handler.lua: PRIORITY = 900.
    priority: 900,
    consumer_scope: true,
    // typedefs.protocols_http.
    protocols: &["grpc", "grpcs", "http", "https"],
    config: &[
        FieldDecl::new("header_name", FieldType::String { min: 1, max: 256 })
            .default(r#""x-kong-limit""#),
        FieldDecl::new("limit_by", FieldType::OneOf(&["consumer", "credential", "ip"]))
            .default(r#""consumer""#),
        // Kong 3.9.3 refuses `cluster` without a database; Tollgate's cluster policy needs
        // none (gossip counters), so all three are accepted, as for rate-limiting.
        FieldDecl::new("policy", FieldType::OneOf(&["local", "cluster", "redis"]))
            .default(r#""local""#),
        FieldDecl::new("fault_tolerant", FieldType::Boolean)
            .required()
            .default("true"),
        FieldDecl::new("redis", FieldType::Record).required(),
        FieldDecl::new("block_on_first_violation", FieldType::Boolean)
            .required()
            .default("false"),
        FieldDecl::new("hide_client_headers", FieldType::Boolean)
            .required()
            .default("false"),
        // Kong's type is a map of names to records of periods; declared as a record here
        // (the declarations know no map of records).
        FieldDecl::new("limits", FieldType::Record).required(),
    ],
    example: r#"{"limits": {"video": {"minute": 10}}}"#,
    validate,
    entity_checks: r#"[{"conditional": {"if_field": "config.policy", "if_match": {"eq": "redis"}, "then_field": "config.redis.host", "then_match": {"required": true}}}, {"conditional": {"if_field": "config.policy", "if_match": {"eq": "redis"}, "then_field": "config.redis.port", "then_match": {"required": true}}}, {"conditional": {"if_field": "config.policy", "if_match": {"eq": "redis"}, "then_field": "config.redis.timeout", "then_match": {"required": true}}}]"#,
};

/// Longest limit name: it becomes part of response header names.
pub const MAX_LIMIT_NAME: usize = 128;
/// Most limit names in one config (each costs counter lookups on every request).
pub const MAX_LIMITS: usize = 64;

/// What a response-ratelimiting counter is keyed by. `consumer` and `credential` fall back
/// to the client IP when the request has none (Kong's `get_identifier`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitBy {
    Consumer,
    Credential,
    Ip,
}

/// One named limit: at most one limit per period, at least one period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodLimits {
    #[serde(default)]
    pub second: Option<f64>,
    #[serde(default)]
    pub minute: Option<f64>,
    #[serde(default)]
    pub hour: Option<f64>,
    #[serde(default)]
    pub day: Option<f64>,
    #[serde(default)]
    pub month: Option<f64>,
    #[serde(default)]
    pub year: Option<f64>,
}

impl PeriodLimits {
    /// The configured limits as (period index into [`PERIODS`], limit), shortest first.
    pub fn limits(&self) -> Vec<(usize, f64)> {
        [
            self.second,
            self.minute,
            self.hour,
            self.day,
            self.month,
            self.year,
        ]
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.map(|l| (i, l)))
        .collect()
    }
}

/// The `response-ratelimiting` plugin's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResponseRateLimitingConfig {
    #[serde(default = "header_name")]
    pub header_name: String,
    #[serde(default = "limit_by_consumer")]
    pub limit_by: LimitBy,
    #[serde(default = "policy_local")]
    pub policy: Policy,
    #[serde(default = "yes")]
    pub fault_tolerant: bool,
    #[serde(default)]
    pub redis: RedisConfig,
    #[serde(default)]
    pub block_on_first_violation: bool,
    #[serde(default)]
    pub hide_client_headers: bool,
    /// Checked apart from the rest (see [`check_limits`]), so its errors read as Kong's.
    #[serde(default)]
    pub limits: BTreeMap<String, PeriodLimits>,
    // Kong's deprecated shorthands (removal in 4.0); folded into `redis`, never printed back.
    #[serde(default, skip_serializing, deserialize_with = "lenient::opt_string")]
    pub redis_host: Option<String>,
    #[serde(default, skip_serializing)]
    pub redis_port: Option<u16>,
    #[serde(default, skip_serializing, deserialize_with = "lenient::opt_string")]
    pub redis_password: Option<String>,
    #[serde(default, skip_serializing, deserialize_with = "lenient::opt_string")]
    pub redis_username: Option<String>,
    #[serde(default, skip_serializing)]
    pub redis_ssl: Option<bool>,
    #[serde(default, skip_serializing)]
    pub redis_ssl_verify: Option<bool>,
    #[serde(default, skip_serializing, deserialize_with = "lenient::opt_string")]
    pub redis_server_name: Option<String>,
    #[serde(default, skip_serializing)]
    pub redis_timeout: Option<u32>,
    #[serde(default, skip_serializing)]
    pub redis_database: Option<u32>,
}

fn header_name() -> String {
    "x-kong-limit".into()
}
fn limit_by_consumer() -> LimitBy {
    LimitBy::Consumer
}
fn policy_local() -> Policy {
    Policy::Local
}

fn validate(config: &Value) -> Result<Value, FieldErrors> {
    let mut rest = config.clone();
    let limits = rest.as_object_mut().and_then(|o| o.remove("limits"));
    let mut errors = FieldErrors::new();
    let limits = match check_limits(limits.as_ref()) {
        Ok(l) => Some(l),
        Err(e) => {
            errors.merge(e);
            None
        }
    };
    let parsed = parse_typed::<ResponseRateLimitingConfig>(&rest);
    let mut c = match (parsed, limits) {
        (Ok(c), Some(limits)) => ResponseRateLimitingConfig { limits, ..c },
        (Ok(_), None) => return Err(errors),
        (Err(e), _) => {
            errors.merge(e);
            return Err(errors);
        }
    };
    c.fold_redis_shorthands();
    c.check()?;
    Ok(to_value(&c))
}

/// Kong's checks on `limits`, with its messages and where it puts them: a map (`expected a
/// map`) of at least one entry (`length must be at least 1`); the first bad entry's errors
/// are reported flat under `config.limits` (Kong's map validation returns the value's errors
/// as they are): `config.limits.seco: unknown field`, `config.limits.second: value must be
/// greater than 0`, `config.limits.@entity: at least one of these fields must be non-empty`,
/// or the periods' order as one message at `config.limits`
/// (`kong/db/schema/init.lua` map and record validation; schema.lua `validate_periods_order`).
pub fn check_limits(v: Option<&Value>) -> Result<BTreeMap<String, PeriodLimits>, FieldErrors> {
    let at = |msg: String| FieldErrors::single("config.limits", msg);
    let map = match v {
        None | Some(Value::Null) => return Err(at("required field missing".into())),
        Some(Value::Object(m)) => m,
        Some(_) => return Err(at("expected a map".into())),
    };
    if map.is_empty() {
        return Err(at("length must be at least 1".into()));
    }
    if map.len() > MAX_LIMITS {
        return Err(at(format!("length must be at most {MAX_LIMITS}")));
    }
    let mut out = BTreeMap::new();
    for (name, value) in map {
        check_limit_name(name).map_err(at)?;
        let Value::Object(periods) = value else {
            return Err(at("expected a record".into()));
        };
        let mut field_errors = FieldErrors::new();
        for (k, p) in periods {
            // Put, not add: an unknown key may hold a dot.
            let path = ["config".to_string(), "limits".to_string(), k.clone()];
            let msg = if !PERIODS.iter().any(|(n, _)| *n == k.as_str()) {
                "unknown field"
            } else {
                match p {
                    Value::Null => continue,
                    Value::Number(n) if n.as_f64().is_some_and(|f| f.is_finite() && f > 0.0) => {
                        continue
                    }
                    Value::Number(_) => "value must be greater than 0",
                    _ => "expected a number",
                }
            };
            field_errors.put(&path, Value::String(msg.into()));
        }
        if !field_errors.is_empty() {
            return Err(field_errors);
        }
        let limits: PeriodLimits = serde_json::from_value(value.clone())
            .map_err(|_| at("expected a record".into()))?;
        let set = limits.limits();
        if set.is_empty() {
            let mut e = FieldErrors::new();
            e.put(
                &["config".into(), "limits".into(), "@entity".into()],
                json!(["at least one of these fields must be non-empty: 'second', 'minute', 'hour', 'day', 'month', 'year'"]),
            );
            return Err(e);
        }
        // A longer period may not allow less than a shorter one; Kong reports the first
        // shorter period (in order) that some longer one undercuts.
        for (i, (si, sl)) in set.iter().enumerate() {
            if let Some((li, ll)) = set[i + 1..].iter().find(|(_, ll)| ll < sl) {
                return Err(at(format!(
                    "the limit for {}({:.1}) cannot be lower than the limit for {}({:.1})",
                    PERIODS[*li].0, ll, PERIODS[*si].0, sl
                )));
            }
        }
        out.insert(name.clone(), limits);
    }
    Ok(out)
}

/// A limit name becomes part of header names (`X-RateLimit-Limit-<name>-<period>`), so it
/// must be a header token. Kong only asks for a non-empty string (and then fails at run time
/// on a name nginx cannot send).
fn check_limit_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("length must be at least 1".into());
    }
    if name.len() > MAX_LIMIT_NAME {
        return Err(format!(
            "limit name '{name:.32}…' is longer than {MAX_LIMIT_NAME} characters"
        ));
    }
    if !name.bytes().all(is_token_byte) {
        return Err(format!(
            "limit name '{name}' must be a header name token (letters, digits and !#$%&'*+-.^_`|~)"
        ));
    }
    Ok(())
}

/// RFC 9110 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl ResponseRateLimitingConfig {
    pub fn parse(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }

    fn fold_redis_shorthands(&mut self) {
        super::rate_limiting::fold_redis_shorthands!(*self);
    }

    fn check(&self) -> Result<(), FieldErrors> {
        let mut e = FieldErrors::new();
        if self.header_name.is_empty() {
            e.add("config.header_name", "length must be at least 1");
        } else if !self.header_name.bytes().all(is_token_byte) {
            e.add("config.header_name", "must be a header name token");
        }
        // Kong's conditional entity check; Tollgate needs no Redis but keeps it, so a file
        // valid here is valid on Kong.
        if self.policy == Policy::Redis && self.redis.host.as_deref().unwrap_or("").is_empty() {
            e.add("config.redis.host", "required field missing");
        }
        e.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::super::validate;
    use serde_json::{json, Value};

    fn err(config: Value) -> Value {
        validate("response-ratelimiting", Some(&config))
            .unwrap_err()
            .to_json()
    }

    // Cases from spec/03-plugins/24-response-rate-limiting/01-schema_spec.lua (Kong 3.9.3).
    #[test]
    fn proper_configs_validate_with_kongs_defaults() {
        let v = validate(
            "response-ratelimiting",
            Some(&json!({"limits": {"video": {"second": 1}}})),
        )
        .unwrap();
        assert_eq!(v["header_name"], "x-kong-limit");
        assert_eq!(v["limit_by"], "consumer");
        assert_eq!(v["policy"], "local");
        assert_eq!(v["fault_tolerant"], true);
        assert_eq!(v["block_on_first_violation"], false);
        assert_eq!(v["hide_client_headers"], false);
        assert_eq!(v["limits"]["video"]["second"], 1);
        assert_eq!(v["limits"]["video"]["minute"], Value::Null);
        assert_eq!(v["redis"]["port"], 6379);

        validate(
            "response-ratelimiting",
            Some(&json!({"limits": {"video": {"second": 1, "minute": 2, "hour": 3, "day": 4, "month": 5, "year": 6}}})),
        )
        .unwrap();
        // Issue #8314: a null period is no period.
        validate(
            "response-ratelimiting",
            Some(&json!({"limits": {"video": {"second": null, "minute": 1}}})),
        )
        .unwrap();
    }

    #[test]
    fn limits_errors_read_as_kongs() {
        assert_eq!(err(json!({}))["config"]["limits"], "required field missing");
        assert_eq!(
            err(json!({"limits": {}}))["config"]["limits"],
            "length must be at least 1"
        );
        assert_eq!(
            err(json!({"limits": {"video": {"seco": 1}}}))["config"]["limits"]["seco"],
            "unknown field"
        );
        assert_eq!(
            err(json!({"limits": {"video": {"second": 2, "minute": 1}}}))["config"]["limits"],
            "the limit for minute(1.0) cannot be lower than the limit for second(2.0)"
        );
        assert_eq!(
            err(json!({"limits": {"video": {"second": 1, "minute": 2, "hour": 3, "day": 4, "month": 6, "year": 5}}}))
                ["config"]["limits"],
            "the limit for year(5.0) cannot be lower than the limit for month(6.0)"
        );
        assert_eq!(
            err(json!({"limits": {"second": 10}}))["config"]["limits"],
            "expected a record"
        );
        assert_eq!(
            err(json!({"limits": {"video": {"second": 0}}}))["config"]["limits"]["second"],
            "value must be greater than 0"
        );
        assert_eq!(
            err(json!({"limits": {"video": {"second": "x"}}}))["config"]["limits"]["second"],
            "expected a number"
        );
        assert_eq!(
            err(json!({"limits": {"video": {}}}))["config"]["limits"]["@entity"][0],
            "at least one of these fields must be non-empty: 'second', 'minute', 'hour', 'day', 'month', 'year'"
        );
        assert_eq!(
            err(json!({"limits": [1]}))["config"]["limits"],
            "expected a map"
        );
        // A name that cannot be part of a header name is refused here, not at run time.
        assert!(err(json!({"limits": {"a b": {"second": 1}}}))["config"]["limits"]
            .as_str()
            .unwrap()
            .contains("header name token"));
    }

    #[test]
    fn other_fields_are_checked_with_limits() {
        let e = err(json!({"limits": {"video": {"second": 1}}, "limit_by": "service"}));
        assert!(e["config"]["limit_by"]
            .as_str()
            .unwrap()
            .starts_with("expected one of"));
        let e = err(json!({"limits": {}, "bogus": 1}));
        assert_eq!(e["config"]["limits"], "length must be at least 1");
        assert_eq!(e["config"]["bogus"], "unknown field");
    }

    #[test]
    fn redis_new_and_legacy_structures() {
        let v = validate(
            "response-ratelimiting",
            Some(&json!({
                "limits": {"video": {"second": 10}},
                "policy": "redis",
                "redis": {"host": "localhost", "port": 6379, "database": 0, "username": "test",
                          "password": "testXXX", "ssl": true, "ssl_verify": false,
                          "timeout": 1100, "server_name": "test-redis.example.com"}
            })),
        )
        .unwrap();
        assert_eq!(v["redis"]["timeout"], 1100);

        let v = validate(
            "response-ratelimiting",
            Some(&json!({
                "limits": {"video": {"second": 10}},
                "policy": "redis",
                "redis_host": "localhost", "redis_port": 6380, "redis_database": 0,
                "redis_username": "test", "redis_password": "testXXX", "redis_ssl": true,
                "redis_ssl_verify": false, "redis_timeout": 1100,
                "redis_server_name": "test-redis.example.com"
            })),
        )
        .unwrap();
        assert_eq!(v["redis"]["host"], "localhost");
        assert_eq!(v["redis"]["port"], 6380);
        assert!(v.get("redis_host").is_none());

        let e = err(json!({
            "limits": {"video": {"second": 10}},
            "policy": "redis",
            "redis": {"port": 6379, "timeout": 1100}
        }));
        assert_eq!(e["config"]["redis"]["host"], "required field missing");
    }
}
