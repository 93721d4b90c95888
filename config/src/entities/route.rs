//! Kong's `routes`: the rules that select a service for a request.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use std::collections::BTreeMap;

use crate::compat::{self, Versioned};
use crate::entity::{ForeignKey, Protocol, Timestamp};
use crate::error::FieldErrors;
use crate::registry::EntityKind;
use crate::schema::*;

/// A route: the rules that select a service for a request (Kong's `routes` entity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(remote = "Self")]
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
    /// Server names (TLS SNI) the route matches, for https routes.
    pub snis: Option<Vec<String>>,
}

/// A route as versions before TLS routing stored it (after its id).
#[derive(Deserialize)]
pub struct RouteV0 {
    name: Option<String>,
    protocols: Vec<Protocol>,
    methods: Option<Vec<String>>,
    hosts: Option<Vec<String>>,
    paths: Option<Vec<String>>,
    headers: Option<BTreeMap<String, Vec<String>>>,
    https_redirect_status_code: u16,
    regex_priority: i64,
    strip_path: bool,
    path_handling: String,
    preserve_host: bool,
    request_buffering: bool,
    response_buffering: bool,
    service: Option<ForeignKey>,
    tags: Option<Vec<String>>,
    created_at: Timestamp,
    updated_at: Timestamp,
}

impl Versioned for Route {
    const VERSION: u8 = 1;
    type V0 = RouteV0;
    fn from_v0(id: Uuid, o: RouteV0) -> Route {
        Route {
            id,
            name: o.name,
            protocols: o.protocols,
            methods: o.methods,
            hosts: o.hosts,
            paths: o.paths,
            headers: o.headers,
            https_redirect_status_code: o.https_redirect_status_code,
            regex_priority: o.regex_priority,
            strip_path: o.strip_path,
            path_handling: o.path_handling,
            preserve_host: o.preserve_host,
            request_buffering: o.request_buffering,
            response_buffering: o.response_buffering,
            service: o.service,
            tags: o.tags,
            created_at: o.created_at,
            updated_at: o.updated_at,
            snis: None,
        }
    }
    fn ser_plain<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Route::serialize(self, s)
    }
    fn de_plain<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Route::deserialize(d)
    }
}

impl Serialize for Route {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        compat::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for Route {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        compat::deserialize(d)
    }
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
            // Stream routing fields: only null until stream listeners.
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
