//! Kong's `plugins`: a plugin instance, global or scoped to a route, a service and/or a
//! consumer.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::entity::{ConfigValue, ForeignKey, Protocol, Timestamp};
use crate::error::FieldErrors;
use crate::input::PluginScope;
use crate::registry::EntityKind;
use crate::schema::*;

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

const fn scope(field: &'static str, target: EntityKind) -> ForeignDecl {
    ForeignDecl {
        field,
        target,
        on_delete: OnDelete::Cascade,
        nested_path: Some("plugins"),
        nests: true,
    }
}

impl Declared for Plugin {
    const DECL: EntityDecl = EntityDecl {
        table: "plugins",
        admin_path: "plugins",
        endpoint_key: Some("instance_name"),
        uniques: &[
            &["instance_name"],
            &["name", "route", "service", "consumer"],
        ],
        foreign: &[
            scope("route", EntityKind::Route),
            scope("service", EntityKind::Service),
            scope("consumer", EntityKind::Consumer),
        ],
        fields: &[
            ID,
            FieldDecl::new("name", FieldType::String { min: 1, max: 512 }).required(),
            FieldDecl::new("instance_name", FieldType::Name),
            CREATED_AT,
            UPDATED_AT,
            FieldDecl::new("route", FieldType::Foreign(EntityKind::Route)),
            FieldDecl::new("service", FieldType::Foreign(EntityKind::Service)),
            FieldDecl::new("consumer", FieldType::Foreign(EntityKind::Consumer)),
            FieldDecl::new("config", FieldType::Record).required(),
            FieldDecl::new("protocols", FieldType::Set)
                .required()
                .default("[\"grpc\", \"grpcs\", \"http\", \"https\"]"),
            FieldDecl::new("enabled", FieldType::Boolean).default("true"),
            TAGS,
        ],
        entity_checks: "",
        storage_tag: b'p',
        examples: [r#"{"name": "key-auth"}"#, r#"{"name": "rate-limiting", "config": {"minute": 5}}"#],
        routing: Routing::Never,
    };

    fn field(&self, name: &str) -> FieldRef<'_> {
        let fk = |f: Option<ForeignKey>| f.map_or(FieldRef::Null, |f| FieldRef::Id(f.id));
        match name {
            "name" => FieldRef::Str(&self.name),
            "instance_name" => self
                .instance_name
                .as_deref()
                .map_or(FieldRef::Null, FieldRef::Str),
            "route" => fk(self.route),
            "service" => fk(self.service),
            "consumer" => fk(self.consumer),
            _ => FieldRef::Null,
        }
    }

    fn build(body: &Value, cx: &BuildCx<'_>) -> Result<Self, FieldErrors> {
        let scope = PluginScope {
            route: cx.parent_for("route"),
            service: cx.parent_for("service"),
            consumer: cx.parent_for("consumer"),
        };
        crate::input::plugin(body, cx.stamp, cx.state, scope)
    }
}
