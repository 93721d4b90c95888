//! Kong's `services`: an upstream the gateway forwards to.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::entity::{Protocol, Timestamp};
use crate::error::FieldErrors;
use crate::schema::*;

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

impl Declared for Service {
    const DECL: EntityDecl = EntityDecl {
        table: "services",
        admin_path: "services",
        endpoint_key: Some("name"),
        uniques: &[&["name"]],
        foreign: &[],
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
            FieldDecl::new("enabled", FieldType::Boolean).default("true"),
        ],
        entity_checks: "",
        storage_tag: b's',
        examples: [r#"{"name": "example-1", "url": "http://example-1.test:8080/p"}"#, r#"{"name": "example-2", "host": "example-2.test"}"#],
        routing: Routing::Fields(&["enabled"]),
    };

    fn field(&self, name: &str) -> FieldRef<'_> {
        match name {
            "name" => self.name.as_deref().map_or(FieldRef::Null, FieldRef::Str),
            "enabled" => FieldRef::Bool(self.enabled),
            _ => FieldRef::Null,
        }
    }

    fn build(body: &Value, cx: &BuildCx<'_>) -> Result<Self, FieldErrors> {
        crate::input::service(body, cx.stamp)
    }
}

const TIMEOUT: FieldType = FieldType::Integer {
    min: 1,
    max: 2_147_483_646,
};
