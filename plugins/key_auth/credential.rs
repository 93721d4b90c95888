//! Kong's `keyauth_credentials`: the keys the key-auth plugin accepts, each owned by a
//! consumer and deleted with it.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::entity::{ForeignKey, Timestamp};
use crate::error::FieldErrors;
use crate::registry::EntityKind;
use crate::schema::*;

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

impl Declared for KeyAuthCredential {
    const DECL: EntityDecl = EntityDecl {
        table: "keyauth_credentials",
        admin_path: "key-auths",
        endpoint_key: Some("key"),
        uniques: &[&["key"]],
        foreign: &[CONSUMER],
        fields: &[
            ID,
            CREATED_AT,
            FieldDecl::new("consumer", FieldType::Foreign(EntityKind::Consumer)).required(),
            FieldDecl::new("key", FieldType::String { min: 1, max: 512 }).auto(),
            FieldDecl::new(
                "ttl",
                FieldType::Integer {
                    min: 0,
                    max: 100_000_000,
                },
            ),
            TAGS,
        ],
        entity_checks: "",
        storage_tag: b'k',
        examples: [r#"{"key": "example-key-1"}"#, r#"{"key": "example-key-2"}"#],
        routing: Routing::Never,
    };

    fn field(&self, name: &str) -> FieldRef<'_> {
        match name {
            "key" => FieldRef::Str(&self.key),
            "consumer" => FieldRef::Id(self.consumer.id),
            _ => FieldRef::Null,
        }
    }

    fn build(body: &Value, cx: &BuildCx<'_>) -> Result<Self, FieldErrors> {
        let mut errs = FieldErrors::new();
        let consumer = match cx.parent_for("consumer") {
            Some(id) => Some(id),
            None => body.get("consumer").and_then(|v| {
                FkInput::resolve(cx.state, "consumer", EntityKind::Consumer, v, &mut errs)
            }),
        };
        errs.into_result()?;
        let consumer =
            consumer.ok_or_else(|| FieldErrors::single("consumer", "required field missing"))?;
        crate::input::key_auth(body, cx.stamp, consumer)
    }
}

/// A credential's owner: deleting the consumer deletes its credentials.
pub const CONSUMER: ForeignDecl = ForeignDecl::owned_by_consumer("key-auth");
