//! The value types entities are made of: references, protocols, timestamps and free-form
//! configs. The entities themselves are declared one per file in [`crate::entities`].
//!
//! Every entity struct serializes to JSON exactly as Kong 3.x prints it (unset optional fields are
//! `null`, foreign keys are `{"id": ...}`), and to bincode for commands and snapshots. Because
//! bincode is not self-describing, no field uses `skip_serializing_if`, `flatten` or untagged
//! enums; the one free-form value (a plugin's `config`) goes through [`ConfigValue`].

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// Unix time in seconds, as Kong's `created_at` / `updated_at`.
pub type Timestamp = i64;

/// A reference to another entity, printed as Kong does: `{"id": "..."}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ForeignKey {
    pub id: Uuid,
}

impl From<Uuid> for ForeignKey {
    fn from(id: Uuid) -> Self {
        ForeignKey { id }
    }
}

/// Protocols a service speaks to its upstream, or a route accepts from clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Https,
    Grpc,
    Grpcs,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Grpc => "grpc",
            Protocol::Grpcs => "grpcs",
        }
    }

    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "http" => Some(Protocol::Http),
            "https" => Some(Protocol::Https),
            "grpc" => Some(Protocol::Grpc),
            "grpcs" => Some(Protocol::Grpcs),
            _ => None,
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Http | Protocol::Grpc => 80,
            Protocol::Https | Protocol::Grpcs => 443,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A JSON value that survives non-self-describing formats: plain JSON in JSON, a JSON string
/// in bincode (which cannot carry `serde_json::Value` directly).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfigValue(pub serde_json::Value);

impl Serialize for ConfigValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            self.0.serialize(s)
        } else {
            s.serialize_str(&self.0.to_string())
        }
    }
}

impl<'de> Deserialize<'de> for ConfigValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            serde_json::Value::deserialize(d).map(ConfigValue)
        } else {
            let s = String::deserialize(d)?;
            serde_json::from_str(&s)
                .map(ConfigValue)
                .map_err(serde::de::Error::custom)
        }
    }
}

pub use crate::entities::*;
pub use crate::registry::{Entity, EntityKind};

/// Serializes a Kong `number` as cjson prints it: an integral value without a fraction
/// (`1`, not `1.0`). Binary formats keep the `f64`.
pub fn kong_number<S: Serializer>(n: &f64, s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() && n.fract() == 0.0 && n.abs() < 9.0e15 {
        s.serialize_i64(*n as i64)
    } else {
        s.serialize_f64(*n)
    }
}

/// Kong's millisecond timestamps (`typedefs.auto_timestamp_ms`, on targets): kept as integer
/// milliseconds, printed as seconds with a fraction (`1700000000.123`).
pub mod millis {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_f64(*ms as f64 / 1000.0)
        } else {
            s.serialize_i64(*ms)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        if d.is_human_readable() {
            f64::deserialize(d).map(|secs| (secs * 1000.0).round() as i64)
        } else {
            i64::deserialize(d)
        }
    }
}
