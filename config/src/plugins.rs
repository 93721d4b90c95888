//! Plugin schemas: the config each bundled plugin accepts, with Kong's field names, defaults
//! and checks. A config is validated once, when written; what is stored is the normalised form
//! with every default filled in, which the data plane parses back with [`KeyAuthConfig::parse`]
//! / [`RateLimitingConfig::parse`] without any chance of failure.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::FieldErrors;
use crate::lenient;

/// Bundled plugins and their static priorities (Kong's values: higher runs first).
pub const BUNDLED: &[(&str, u32)] = &[("key-auth", 1250), ("rate-limiting", 910)];

/// The priority of a bundled plugin, or `None` for an unknown name.
pub fn priority(name: &str) -> Option<u32> {
    BUNDLED.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}

/// Authentication plugins identify the consumer, so they cannot themselves be scoped to one.
pub fn allows_consumer_scope(name: &str) -> bool {
    name != "key-auth"
}

/// Validates a plugin's `config` (absent means all defaults) and returns its normalised form.
/// Errors are keyed under `config.`.
pub fn validate(name: &str, config: Option<&Value>) -> Result<Value, FieldErrors> {
    let empty = Value::Object(Default::default());
    let config = match config {
        None | Some(Value::Null) => &empty,
        Some(v) => v,
    };
    match name {
        "key-auth" => {
            let c: KeyAuthConfig = parse_typed(config)?;
            c.check()?;
            Ok(to_value(&c))
        }
        "rate-limiting" => {
            let c: RateLimitingConfig = parse_typed(config)?;
            let c = c.fold_redis_shorthands();
            c.check()?;
            Ok(to_value(&c))
        }
        other => Err(FieldErrors::single(
            "name",
            format!("plugin '{other}' not enabled; add it to the 'plugins' configuration property"),
        )),
    }
}

/// Serializes a config, printing whole numbers without a fraction (`5`, not `5.0`) as Kong does.
fn to_value<T: Serialize>(t: &T) -> Value {
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
fn parse_typed<T: DeserializeOwned>(v: &Value) -> Result<T, FieldErrors> {
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
        } else if expected.contains("f64")
            || expected.contains("u16")
            || expected.contains("u32")
            || expected.contains("i64")
            || expected.contains("integer")
        {
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

/// The `key-auth` plugin's config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyAuthConfig {
    #[serde(default = "default_key_names", deserialize_with = "de_key_names")]
    pub key_names: Vec<String>,
    #[serde(default)]
    pub hide_credentials: bool,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub anonymous: Option<String>,
    #[serde(default = "yes")]
    pub key_in_header: bool,
    #[serde(default = "yes")]
    pub key_in_query: bool,
    #[serde(default)]
    pub key_in_body: bool,
    #[serde(default = "yes")]
    pub run_on_preflight: bool,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub realm: Option<String>,
}

fn yes() -> bool {
    true
}

fn default_key_names() -> Vec<String> {
    vec!["apikey".to_string()]
}

fn de_key_names<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(lenient::opt_string_list(d)?.unwrap_or_else(default_key_names))
}

impl KeyAuthConfig {
    pub fn parse(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }

    fn check(&self) -> Result<(), FieldErrors> {
        let mut e = FieldErrors::new();
        if self.key_names.is_empty() {
            e.add("config.key_names", "length must be at least 1");
        }
        for k in &self.key_names {
            if k.is_empty() || !k.bytes().all(is_header_token_byte) {
                e.add(
                    "config.key_names",
                    format!(
                        "bad header name '{k}', allowed characters are A-Z, a-z, 0-9, '_', and '-'"
                    ),
                );
            }
        }
        if !(self.key_in_header || self.key_in_query || self.key_in_body) {
            e.add_entity("at least one of 'config.key_in_header', 'config.key_in_query', 'config.key_in_body' must be true");
        }
        e.into_result()
    }
}

fn is_header_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
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
        let r = &mut self.redis;
        if let Some(v) = self.redis_host.take() {
            r.host = Some(v);
        }
        if let Some(v) = self.redis_port.take() {
            r.port = v;
        }
        if let Some(v) = self.redis_password.take() {
            r.password = Some(v);
        }
        if let Some(v) = self.redis_username.take() {
            r.username = Some(v);
        }
        if let Some(v) = self.redis_ssl.take() {
            r.ssl = v;
        }
        if let Some(v) = self.redis_ssl_verify.take() {
            r.ssl_verify = v;
        }
        if let Some(v) = self.redis_server_name.take() {
            r.server_name = Some(v);
        }
        if let Some(v) = self.redis_timeout.take() {
            r.timeout = v;
        }
        if let Some(v) = self.redis_database.take() {
            r.database = v;
        }
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
            if ll < sl {
                e.add_entity(format!(
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
    use super::*;
    use serde_json::json;

    #[test]
    fn key_auth_defaults_are_kongs() {
        let v = validate("key-auth", None).unwrap();
        assert_eq!(
            v,
            json!({"key_names": ["apikey"], "hide_credentials": false, "anonymous": null,
                   "key_in_header": true, "key_in_query": true, "key_in_body": false,
                   "run_on_preflight": true, "realm": null})
        );
    }

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

    #[test]
    fn unknown_plugin_is_named() {
        let e = validate("nope", None).unwrap_err();
        assert_eq!(
            e.to_json()["name"],
            "plugin 'nope' not enabled; add it to the 'plugins' configuration property"
        );
    }

    #[test]
    fn key_auth_rejects_bad_key_names() {
        let e = validate("key-auth", Some(&json!({"key_names": ["bad name"]}))).unwrap_err();
        assert!(e.to_json()["config"]["key_names"].is_string());
        let e = validate("key-auth", Some(&json!({"key_names": []}))).unwrap_err();
        assert!(e.to_json()["config"]["key_names"].is_string());
    }
}
