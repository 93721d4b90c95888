//! `rate-limiting`'s config: limits per period, what is counted, where counters live, and
//! Kong's `redis` fields (accepted and shown; the cluster shares counters without Redis).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{parse_typed, to_value, yes, PluginSchema};
use crate::error::FieldErrors;
use crate::lenient;
use crate::schema::{FieldDecl, FieldType};

pub const SCHEMA: PluginSchema = PluginSchema {
    name: "rate-limiting",
    priority: 910,
    consumer_scope: true,
    protocols: &["grpc", "grpcs", "http", "https"],
    config: &[
        FieldDecl::new("second", FieldType::Number),
        FieldDecl::new("minute", FieldType::Number),
        FieldDecl::new("hour", FieldType::Number),
        FieldDecl::new("day", FieldType::Number),
        FieldDecl::new("month", FieldType::Number),
        FieldDecl::new("year", FieldType::Number),
        FieldDecl::new(
            "limit_by",
            FieldType::OneOf(&["consumer", "credential", "ip", "service", "header", "path"]),
        )
        .default(r#""consumer""#),
        FieldDecl::new("header_name", FieldType::String { min: 1, max: 512 }),
        FieldDecl::new("path", FieldType::String { min: 1, max: 4096 }),
        FieldDecl::new("policy", FieldType::OneOf(&["local", "cluster", "redis"]))
            .default(r#""local""#),
        FieldDecl::new("fault_tolerant", FieldType::Boolean)
            .required()
            .default("true"),
        FieldDecl::new("hide_client_headers", FieldType::Boolean)
            .required()
            .default("false"),
        FieldDecl::new("error_code", FieldType::Number).default("429"),
        FieldDecl::new("error_message", FieldType::String { min: 0, max: 4096 })
            .default(r#""API rate limit exceeded""#),
        FieldDecl::new("sync_rate", FieldType::Number)
            .required()
            .default("-1"),
        FieldDecl::new("window_type", FieldType::OneOf(&["sliding", "fixed"]))
            .default(r#""sliding""#),
        FieldDecl::new("redis", FieldType::Record).required(),
    ],
    example: r#"{"minute": 5}"#,
    validate,
    entity_checks: r#"[{"at_least_one_of": ["config.second", "config.minute", "config.hour", "config.day", "config.month", "config.year"]}, {"conditional": {"if_field": "config.policy", "if_match": {"eq": "redis"}, "then_field": "config.redis.host", "then_match": {"required": true}}}, {"conditional": {"if_field": "config.policy", "if_match": {"eq": "redis"}, "then_field": "config.redis.port", "then_match": {"required": true}}}, {"conditional": {"if_field": "config.limit_by", "if_match": {"eq": "header"}, "then_field": "config.header_name", "then_match": {"required": true}}}, {"conditional": {"if_field": "config.limit_by", "if_match": {"eq": "path"}, "then_field": "config.path", "then_match": {"required": true}}}]"#,
};

fn validate(config: &Value) -> Result<Value, FieldErrors> {
    let c: RateLimitingConfig = parse_typed(config)?;
    let c = c.fold_redis_shorthands();
    c.check()?;
    Ok(to_value(&c))
}

/// What a rate-limiting counter is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitBy {
    Consumer,
    Credential,
    Ip,
    Service,
    Header,
    Path,
}

/// Where counters live. `cluster` and `redis` share counters across nodes through gossip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    Local,
    Cluster,
    Redis,
}

/// `sliding` weighs the previous window by how much of it still overlaps the last period
/// (Kong's advanced plugin); `fixed` counts per calendar-aligned window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowType {
    Sliding,
    Fixed,
}

/// Folds Kong's pre-3.6 `redis_*` shorthand fields of a config (`$c`) into its `redis`
/// record; shared by the plugins that keep them (rate-limiting, response-ratelimiting).
macro_rules! fold_redis_shorthands {
    ($c:expr) => {{
        let c = &mut $c;
        let r = &mut c.redis;
        if let Some(v) = c.redis_host.take() {
            r.host = Some(v);
        }
        if let Some(v) = c.redis_port.take() {
            r.port = v;
        }
        if let Some(v) = c.redis_password.take() {
            r.password = Some(v);
        }
        if let Some(v) = c.redis_username.take() {
            r.username = Some(v);
        }
        if let Some(v) = c.redis_ssl.take() {
            r.ssl = v;
        }
        if let Some(v) = c.redis_ssl_verify.take() {
            r.ssl_verify = v;
        }
        if let Some(v) = c.redis_server_name.take() {
            r.server_name = Some(v);
        }
        if let Some(v) = c.redis_timeout.take() {
            r.timeout = v;
        }
        if let Some(v) = c.redis_database.take() {
            r.database = v;
        }
    }};
}
pub(crate) use fold_redis_shorthands;

/// Kong's `redis` record. Accepted so Kong files load unchanged; Tollgate needs no Redis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub host: Option<String>,
    #[serde(default = "redis_port")]
    pub port: u16,
    #[serde(default = "redis_timeout")]
    pub timeout: u32,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub username: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub password: Option<String>,
    #[serde(default)]
    pub database: u32,
    #[serde(default)]
    pub ssl: bool,
    #[serde(default)]
    pub ssl_verify: bool,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub server_name: Option<String>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            host: None,
            port: redis_port(),
            timeout: redis_timeout(),
            username: None,
            password: None,
            database: 0,
            ssl: false,
            ssl_verify: false,
            server_name: None,
        }
    }
}

fn redis_port() -> u16 {
    6379
}
fn redis_timeout() -> u32 {
    2000
}

/// The `rate-limiting` plugin's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitingConfig {
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
    #[serde(default = "limit_by_consumer")]
    pub limit_by: LimitBy,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub header_name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub path: Option<String>,
    #[serde(default = "policy_local")]
    pub policy: Policy,
    #[serde(default = "yes")]
    pub fault_tolerant: bool,
    #[serde(default)]
    pub hide_client_headers: bool,
    #[serde(default = "error_code")]
    pub error_code: u16,
    #[serde(default = "error_message")]
    pub error_message: String,
    #[serde(default = "sync_rate")]
    pub sync_rate: f64,
    #[serde(default = "window_sliding")]
    pub window_type: WindowType,
    #[serde(default)]
    pub redis: RedisConfig,
    // Kong's pre-3.6 shorthands; folded into `redis` and never printed back.
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

fn limit_by_consumer() -> LimitBy {
    LimitBy::Consumer
}
fn policy_local() -> Policy {
    Policy::Local
}
fn error_code() -> u16 {
    429
}
fn error_message() -> String {
    "API rate limit exceeded".into()
}
fn sync_rate() -> f64 {
    -1.0
}
fn window_sliding() -> WindowType {
    WindowType::Sliding
}

/// The periods, shortest first, with their length in seconds.
pub const PERIODS: [(&str, u64); 6] = [
    ("second", 1),
    ("minute", 60),
    ("hour", 3600),
    ("day", 86_400),
    ("month", 2_592_000),
    ("year", 31_536_000),
];

impl RateLimitingConfig {
    pub fn parse(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }

    /// The configured limits as (period index into [`PERIODS`], limit), shortest period first.
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

    fn fold_redis_shorthands(mut self) -> Self {
        fold_redis_shorthands!(self);
        self
    }

    fn check(&self) -> Result<(), FieldErrors> {
        let mut e = FieldErrors::new();
        let limits = self.limits();
        if limits.is_empty() {
            e.add_entity("at least one of these fields must be non-empty: 'config.second', 'config.minute', 'config.hour', 'config.day', 'config.month', 'config.year'");
        }
        for (i, l) in &limits {
            if !l.is_finite() || *l <= 0.0 {
                e.add(
                    &format!("config.{}", PERIODS[*i].0),
                    "value must be greater than 0",
                );
            }
        }
        // A longer period may not allow fewer requests than a shorter one.
        for w in limits.windows(2) {
            let ((si, sl), (li, ll)) = (w[0], w[1]);
            // Kong's `custom_entity_check` on `config`: the message is the field's.
            if ll < sl && !e.0.contains_key("config") {
                e.add("config", format!(
                    "The limit for {}({:.1}) cannot be lower than the limit for {}({:.1})",
                    PERIODS[li].0, ll, PERIODS[si].0, sl
                ));
            }
        }
        if self.limit_by == LimitBy::Header && self.header_name.as_deref().unwrap_or("").is_empty()
        {
            e.add("config.header_name", "required field missing");
        }
        if self.limit_by == LimitBy::Path {
            match self.path.as_deref() {
                None | Some("") => e.add("config.path", "required field missing"),
                Some(p) if !p.starts_with('/') => e.add("config.path", "should start with: /"),
                _ => {}
            }
        }
        // Kong requires a Redis host for `policy: redis`; Tollgate shares counters without
        // Redis but keeps Kong's check, so a file valid here is valid on Kong.
        if self.policy == Policy::Redis && self.redis.host.as_deref().unwrap_or("").is_empty() {
            e.add("config.redis.host", "required field missing");
        }
        if !(100..=599).contains(&self.error_code) {
            e.add("config.error_code", "value should be between 100 and 599");
        }
        if self.sync_rate != -1.0 {
            e.add(
                "config.sync_rate",
                "not used: cluster counters are published every --ratelimit-sync-ms (100 ms by default); leave it at -1",
            );
        }
        e.into_result()
    }
}


#[cfg(test)]
mod tests {
    use super::super::validate;
    use serde_json::json;

    #[test]
    fn rate_limiting_defaults_and_redis_shorthands() {
        let v = validate(
            "rate-limiting",
            Some(&json!({"minute": 5, "redis_host": "r", "redis_port": 6380})),
        )
        .unwrap();
        assert_eq!(v["minute"], json!(5));
        assert_eq!(v["sync_rate"], json!(-1));
        assert_eq!(v["limit_by"], "consumer");
        assert_eq!(v["policy"], "local");
        assert_eq!(v["window_type"], "sliding");
        assert_eq!(v["error_message"], "API rate limit exceeded");
        assert_eq!(v["redis"]["host"], "r");
        assert_eq!(v["redis"]["port"], 6380);
        assert!(v.get("redis_host").is_none());
    }

    #[test]
    fn rate_limiting_rejects_bad_configs_naming_the_field() {
        let e = validate("rate-limiting", Some(&json!({"minute": -1}))).unwrap_err();
        assert_eq!(
            e.to_json()["config"]["minute"],
            "value must be greater than 0"
        );

        let e = validate("rate-limiting", Some(&json!({"minute": 5, "bogus": 1}))).unwrap_err();
        assert_eq!(e.to_json()["config"]["bogus"], "unknown field");

        let e = validate("rate-limiting", Some(&json!({}))).unwrap_err();
        assert!(e.to_json()["@entity"][0]
            .as_str()
            .unwrap()
            .starts_with("at least one"));

        let e = validate("rate-limiting", Some(&json!({"minute": "x"}))).unwrap_err();
        assert_eq!(e.to_json()["config"]["minute"], "expected a number");

        let e = validate("rate-limiting", Some(&json!({"minute": 5, "hour": 2}))).unwrap_err();
        assert!(e.message().contains("cannot be lower than"));

        let e = validate(
            "rate-limiting",
            Some(&json!({"minute": 5, "limit_by": "header"})),
        )
        .unwrap_err();
        assert_eq!(
            e.to_json()["config"]["header_name"],
            "required field missing"
        );

        let e = validate("rate-limiting", Some(&json!({"minute": 5, "sync_rate": 1}))).unwrap_err();
        assert!(e.to_json()["config"]["sync_rate"].is_string());

        // The cluster policies need no Redis: accepted, with Kong's redis fields kept.
        let v = validate(
            "rate-limiting",
            Some(&json!({"minute": 5, "policy": "redis", "redis": {"host": "r"}})),
        )
        .unwrap();
        assert_eq!(v["policy"], "redis");
        assert_eq!(v["redis"]["host"], "r");

        let e = validate(
            "rate-limiting",
            Some(&json!({"minute": 5, "policy": "memcached"})),
        )
        .unwrap_err();
        assert!(e.to_json()["config"]["policy"]
            .as_str()
            .unwrap()
            .starts_with("expected one of"));
    }
}
