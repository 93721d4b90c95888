//! The entities, in the shape Kong's Admin API shows them.
//!
//! Every struct serializes to JSON exactly as Kong 3.x prints it (unset optional fields are
//! `null`, foreign keys are `{"id": ...}`), and to bincode for commands and snapshots. Because
//! bincode is not self-describing, no field uses `skip_serializing_if`, `flatten` or untagged
//! enums; the one free-form value (a plugin's `config`) goes through [`ConfigValue`].

use std::collections::BTreeMap;
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

/// An upstream service (Kong's `services` entity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub id: Uuid,
    pub name: Option<String>,
    pub protocol: Protocol,
    pub host: String,
    pub port: u16,
    pub path: Option<String>,
    pub retries: u32,
    pub connect_timeout: u32,
    pub write_timeout: u32,
    pub read_timeout: u32,
    pub enabled: bool,
    pub tags: Option<Vec<String>>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A route: the rules that select a service for a request (Kong's `routes` entity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Route {
    pub id: Uuid,
    pub name: Option<String>,
    pub protocols: Vec<Protocol>,
    pub methods: Option<Vec<String>>,
    pub hosts: Option<Vec<String>>,
    pub paths: Option<Vec<String>>,
    pub headers: Option<BTreeMap<String, Vec<String>>>,
    pub https_redirect_status_code: u16,
    pub regex_priority: i64,
    pub strip_path: bool,
    pub path_handling: String,
    pub preserve_host: bool,
    pub request_buffering: bool,
    pub response_buffering: bool,
    pub service: Option<ForeignKey>,
    pub tags: Option<Vec<String>>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A consumer: who is calling (Kong's `consumers` entity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Consumer {
    pub id: Uuid,
    pub username: Option<String>,
    pub custom_id: Option<String>,
    pub tags: Option<Vec<String>>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A key-auth credential (Kong's `keyauth_credentials` entity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyAuthCredential {
    pub id: Uuid,
    pub consumer: ForeignKey,
    pub key: String,
    pub ttl: Option<u32>,
    pub tags: Option<Vec<String>>,
    pub created_at: Timestamp,
}

/// A plugin instance, global or scoped to a route, service and/or consumer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plugin {
    pub id: Uuid,
    pub name: String,
    pub instance_name: Option<String>,
    /// The validated config with every default filled in (what Kong prints back).
    pub config: ConfigValue,
    pub enabled: bool,
    pub protocols: Vec<Protocol>,
    pub route: Option<ForeignKey>,
    pub service: Option<ForeignKey>,
    pub consumer: Option<ForeignKey>,
    pub tags: Option<Vec<String>>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
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

/// The kinds of entity, named as Kong names them in URLs and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntityKind {
    Service,
    Route,
    Consumer,
    KeyAuth,
    Plugin,
}

impl EntityKind {
    /// Kong's table name, used in error messages (`'services' entity`).
    pub fn table(self) -> &'static str {
        match self {
            EntityKind::Service => "services",
            EntityKind::Route => "routes",
            EntityKind::Consumer => "consumers",
            EntityKind::KeyAuth => "keyauth_credentials",
            EntityKind::Plugin => "plugins",
        }
    }
}

/// Any entity, as carried by a [`crate::Command`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Entity {
    Service(Service),
    Route(Route),
    Consumer(Consumer),
    KeyAuth(KeyAuthCredential),
    Plugin(Plugin),
}

impl Entity {
    pub fn kind(&self) -> EntityKind {
        match self {
            Entity::Service(_) => EntityKind::Service,
            Entity::Route(_) => EntityKind::Route,
            Entity::Consumer(_) => EntityKind::Consumer,
            Entity::KeyAuth(_) => EntityKind::KeyAuth,
            Entity::Plugin(_) => EntityKind::Plugin,
        }
    }

    pub fn id(&self) -> Uuid {
        match self {
            Entity::Service(e) => e.id,
            Entity::Route(e) => e.id,
            Entity::Consumer(e) => e.id,
            Entity::KeyAuth(e) => e.id,
            Entity::Plugin(e) => e.id,
        }
    }

    /// The entity as Kong's Admin API prints it.
    pub fn to_json(&self) -> serde_json::Value {
        let v = match self {
            Entity::Service(e) => serde_json::to_value(e),
            Entity::Route(e) => serde_json::to_value(e),
            Entity::Consumer(e) => serde_json::to_value(e),
            Entity::KeyAuth(e) => serde_json::to_value(e),
            Entity::Plugin(e) => serde_json::to_value(e),
        };
        // Serializing plain structs of strings, numbers and maps with string keys cannot fail.
        v.unwrap_or(serde_json::Value::Null)
    }
}
