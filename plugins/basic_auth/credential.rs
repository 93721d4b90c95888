//! Kong's `basicauth_credentials`: a username and password owned by a consumer and deleted
//! with it (Kong 3.9.3's `kong/plugins/basic-auth/daos.lua`). The password is hashed when
//! written ([`crate::password`]): the Admin API and exports show the hash, never the clear
//! text, and a declarative file with `_transform: false` (Kong's export) brings hashes in as
//! they are.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::entity::{ForeignKey, Timestamp};
use crate::error::FieldErrors;
use crate::password;
use crate::registry::EntityKind;
use crate::schema::*;

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct BasicAuthCredential {
    pub id: Uuid,
    pub consumer: ForeignKey,
    pub username: String,
    /// A hash ([`password::stored`] reads its form), never the clear password.
    pub password: String,
    pub tags: Option<Vec<String>>,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for BasicAuthCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuthCredential")
            .field("id", &self.id)
            .field("consumer", &self.consumer)
            .field("username", &self.username)
            .field("password", &"<hash>")
            .finish_non_exhaustive()
    }
}

impl Declared for BasicAuthCredential {
    const DECL: EntityDecl = EntityDecl {
        table: "basicauth_credentials",
        admin_path: "basic-auths",
        endpoint_key: Some("username"),
        uniques: &[&["username"]],
        foreign: &[ForeignDecl::owned_by_consumer("basic-auth")],
        fields: &[
            ID,
            CREATED_AT,
            FieldDecl::new("consumer", FieldType::Foreign(EntityKind::Consumer)).required(),
            FieldDecl::new("username", FieldType::String { min: 1, max: 512 }).required(),
            FieldDecl::new("password", FieldType::String { min: 1, max: 512 }).required(),
            TAGS,
        ],
        entity_checks: "",
        storage_tag: b'b',
        examples: [
            r#"{"username": "example-1", "password": "pw-1"}"#,
            r#"{"username": "example-2", "password": "pw-2"}"#,
        ],
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
        let mut cred: BasicAuthCredential = build_typed(&Self::DECL, body, cx)?;
        // A PATCH sends back the stored hash with the other fields: it stays as it is.
        if let Some(old) = cx
            .state
            .one::<BasicAuthCredential>(cred.id)
            .filter(|old| old.password == cred.password)
        {
            // Kong's hash is salted with the consumer: moving the credential needs the
            // password again (Kong's message, from its transformation check).
            if old.consumer != cred.consumer {
                let mut e = FieldErrors::new();
                e.add_entity("all or none of these fields must be set: 'password', 'consumer.id'");
                return Err(e);
            }
            return Ok(cred);
        }
        if cx.transform {
            cred.password = password::hash(&cred.password, &cx.stamp.generated_secret, cred.id);
        } else if password::stored(&cred.password).is_none() {
            return Err(FieldErrors::single(
                "password",
                "with _transform: false, expected a hashed password (Kong's 40 hex digits or an argon2 PHC string)",
            ));
        }
        Ok(cred)
    }
}
