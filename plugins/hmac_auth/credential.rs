//! Kong's `hmacauth_credentials`: a username and a shared secret owned by a consumer and
//! deleted with it (Kong 3.9.3's `kong/plugins/hmac-auth/daos.lua`). The secret is generated
//! when not given. It must be readable to verify signatures, so it is stored as given; it is
//! kept out of `Debug` and logs.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::entity::{ForeignKey, Timestamp};
use crate::error::FieldErrors;
use crate::registry::EntityKind;
use crate::schema::*;

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct HmacAuthCredential {
    pub id: Uuid,
    pub consumer: ForeignKey,
    pub username: String,
    pub secret: String,
    pub tags: Option<Vec<String>>,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for HmacAuthCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HmacAuthCredential")
            .field("id", &self.id)
            .field("consumer", &self.consumer)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Declared for HmacAuthCredential {
    const DECL: EntityDecl = EntityDecl {
        table: "hmacauth_credentials",
        admin_path: "hmac-auths",
        endpoint_key: Some("username"),
        uniques: &[&["username"]],
        foreign: &[ForeignDecl::owned_by_consumer("hmac-auth")],
        fields: &[
            ID,
            CREATED_AT,
            FieldDecl::new("consumer", FieldType::Foreign(EntityKind::Consumer)).required(),
            FieldDecl::new("username", FieldType::String { min: 1, max: 512 }).required(),
            FieldDecl::new("secret", FieldType::String { min: 1, max: 4096 }).auto(),
            TAGS,
        ],
        entity_checks: "",
        storage_tag: b'h',
        examples: [r#"{"username": "example-1"}"#, r#"{"username": "example-2"}"#],
        routing: Routing::Never,
    };

    fn field(&self, name: &str) -> FieldRef<'_> {
        match name {
            "consumer" => FieldRef::Id(self.consumer.id),
            "username" => FieldRef::Str(&self.username),
            _ => FieldRef::Null,
        }
    }

    fn build(body: &Value, cx: &BuildCx<'_>) -> Result<Self, FieldErrors> {
        let mut cred: HmacAuthCredential = build_typed(&Self::DECL, body, cx)?;
        if body.get("secret").is_none_or(Value::is_null) {
            cred.secret = cx.stamp.generated_secret.clone();
        }
        Ok(cred)
    }
}
