//! Kong's `routes`: the rules that select a service for a request.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use std::collections::BTreeMap;

use crate::entity::{ForeignKey, Protocol, Timestamp};
use crate::error::FieldErrors;
use crate::registry::EntityKind;
use crate::schema::*;

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

impl Declared for Route {
    const DECL: EntityDecl = EntityDecl {
        table: "routes",
        admin_path: "routes",
        endpoint_key: Some("name"),
        uniques: &[&["name"]],
        foreign: &[ForeignDecl {
            field: "service",
            target: EntityKind::Service,
            on_delete: OnDelete::Restrict,
            nested_path: Some("routes"),
            nests: true,
        }],
        // Kong's order (`kong/db/schema/entities/routes.lua`), which `/schemas/routes` shows.
        fields: &[
            ID,
            CREATED_AT,
            UPDATED_AT,
            FieldDecl::new("name", FieldType::Name),
            FieldDecl::new("protocols", FieldType::Set)
                .required()
                .default("[\"http\", \"https\"]"),
            FieldDecl::new(
                "https_redirect_status_code",
                FieldType::Integer { min: 301, max: 426 },
            )
            .required()
            .default("426"),
            FieldDecl::new("strip_path", FieldType::Boolean).default("true"),
            FieldDecl::new("preserve_host", FieldType::Boolean).default("false"),
            FieldDecl::new("request_buffering", FieldType::Boolean).default("true"),
            FieldDecl::new("response_buffering", FieldType::Boolean).default("true"),
            TAGS,
            FieldDecl::new("service", FieldType::Foreign(EntityKind::Service)),
            // Stream and TLS routing fields: only null until the TLS and stream listeners.
            FieldDecl::new("snis", FieldType::Set),
            FieldDecl::new("sources", FieldType::Set),
            FieldDecl::new("destinations", FieldType::Set),
            FieldDecl::new("methods", FieldType::Set),
            FieldDecl::new("hosts", FieldType::Array),
            FieldDecl::new("paths", FieldType::Array),
            FieldDecl::new("headers", FieldType::Map),
            FieldDecl::new(
                "regex_priority",
                FieldType::Integer {
                    min: i64::MIN,
                    max: i64::MAX,
                },
            )
            .default("0"),
            FieldDecl::new("path_handling", FieldType::OneOf(&["v0", "v1"])).default("\"v0\""),
        ],
        entity_checks: "",
        storage_tag: b'r',
        examples: [r#"{"name": "example-1", "paths": ["/example-1"]}"#, r#"{"name": "example-2", "hosts": ["example-2.test"]}"#],
        routing: Routing::Always,
    };

    fn field(&self, name: &str) -> FieldRef<'_> {
        match name {
            "name" => self.name.as_deref().map_or(FieldRef::Null, FieldRef::Str),
            "service" => self.service.map_or(FieldRef::Null, |f| FieldRef::Id(f.id)),
            _ => FieldRef::Null,
        }
    }

    fn build(body: &Value, cx: &BuildCx<'_>) -> Result<Self, FieldErrors> {
        crate::input::route(body, cx.stamp, cx.state, cx.parent_for("service"))
    }
}
