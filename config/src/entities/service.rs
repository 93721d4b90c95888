//! Kong's `services`: an upstream the gateway forwards to.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::compat::{self, Versioned};
use crate::entity::{ForeignKey, Protocol, Timestamp};
use crate::registry::EntityKind;
use crate::error::FieldErrors;
use crate::schema::*;

/// An upstream service (Kong's `services` entity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
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
    /// The certificate presented to the upstream (mutual TLS), for https services.
    pub client_certificate: Option<ForeignKey>,
    /// Verify the upstream's certificate; unset is off, as Kong's `proxy_ssl_verify`.
    pub tls_verify: Option<bool>,
    pub tls_verify_depth: Option<u8>,
    /// CA certificates the upstream's certificate is verified against.
    pub ca_certificates: Option<Vec<Uuid>>,
}

/// A service as versions before upstream TLS stored it (after its id).
#[derive(Deserialize)]
pub struct ServiceV0 {
    name: Option<String>,
    protocol: Protocol,
    host: String,
    port: u16,
    path: Option<String>,
    retries: u32,
    connect_timeout: u32,
    write_timeout: u32,
    read_timeout: u32,
    enabled: bool,
    tags: Option<Vec<String>>,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl Versioned for Service {
    const VERSION: u8 = 1;
    type V0 = ServiceV0;
    fn from_v0(id: Uuid, o: ServiceV0) -> Service {
        Service {
            id,
            name: o.name,
            protocol: o.protocol,
            host: o.host,
            port: o.port,
            path: o.path,
            retries: o.retries,
            connect_timeout: o.connect_timeout,
            write_timeout: o.write_timeout,
            read_timeout: o.read_timeout,
            enabled: o.enabled,
            tags: o.tags,
            created_at: o.created_at,
            updated_at: o.updated_at,
            client_certificate: None,
            tls_verify: None,
            tls_verify_depth: None,
            ca_certificates: None,
        }
    }
    fn ser_plain<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Service::serialize(self, s)
    }
    fn de_plain<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Service::deserialize(d)
    }
}

impl Serialize for Service {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        compat::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for Service {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        compat::deserialize(d)
    }
}

impl Declared for Service {
    const DECL: EntityDecl = EntityDecl {
        table: "services",
        admin_path: "services",
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
            UPDATED_AT,
            FieldDecl::new("name", FieldType::Name),
            FieldDecl::new("retries", FieldType::Integer { min: 0, max: 32767 }).default("5"),
            FieldDecl::new(
                "protocol",
                FieldType::OneOf(&[
                    "grpc", "grpcs", "http", "https", "tcp", "tls", "tls_passthrough", "udp",
                ]),
            )
            .required()
            .default("\"http\""),
            FieldDecl::new("host", FieldType::String { min: 1, max: 253 }).required(),
            FieldDecl::new("port", FieldType::Integer { min: 0, max: 65535 }).default("80"),
            FieldDecl::new("path", FieldType::String { min: 1, max: 4096 }),
            FieldDecl::new("connect_timeout", TIMEOUT).default("60000"),
            FieldDecl::new("write_timeout", TIMEOUT).default("60000"),
            FieldDecl::new("read_timeout", TIMEOUT).default("60000"),
            TAGS,
            FieldDecl::new("client_certificate", FieldType::Foreign(EntityKind::Certificate)),
            FieldDecl::new("tls_verify", FieldType::Boolean),
            FieldDecl::new("tls_verify_depth", FieldType::Integer { min: 0, max: 64 }),
            FieldDecl::new("ca_certificates", FieldType::Array),
            FieldDecl::new("enabled", FieldType::Boolean).default("true"),
        ],
        entity_checks: "",
        storage_tag: b's',
        examples: [r#"{"name": "example-1", "url": "http://example-1.test:8080/p"}"#, r#"{"name": "example-2", "host": "example-2.test", "protocol": "https"}"#],
        routing: Routing::Fields(&["enabled"]),
    };

    fn field(&self, name: &str) -> FieldRef<'_> {
        match name {
            "name" => self.name.as_deref().map_or(FieldRef::Null, FieldRef::Str),
            "enabled" => FieldRef::Bool(self.enabled),
            "client_certificate" => self.client_certificate.map_or(FieldRef::Null, |f| FieldRef::Id(f.id)),
            _ => FieldRef::Null,
        }
    }

    fn build(body: &Value, cx: &BuildCx<'_>) -> Result<Self, FieldErrors> {
        crate::input::service(body, cx.stamp, cx.state)
    }
}

const TIMEOUT: FieldType = FieldType::Integer {
    min: 1,
    max: 2_147_483_646,
};
