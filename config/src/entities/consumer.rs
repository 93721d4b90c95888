//! Kong's `consumers`: who is calling.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::entity::Timestamp;
use crate::error::FieldErrors;
use crate::schema::*;

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

impl Declared for Consumer {
    const DECL: EntityDecl = EntityDecl {
        table: "consumers",
        admin_path: "consumers",
        endpoint_key: Some("username"),
        uniques: &[&["username"], &["custom_id"]],
        foreign: &[],
        fields: &[
            ID,
            CREATED_AT,
            UPDATED_AT,
            FieldDecl::new("username", FieldType::String { min: 1, max: 512 }),
            FieldDecl::new("custom_id", FieldType::String { min: 1, max: 512 }),
            TAGS,
        ],
        entity_checks: r#"[{"at_least_one_of": ["custom_id", "username"]}]"#,
        storage_tag: b'c',
        examples: [r#"{"username": "example-1"}"#, r#"{"custom_id": "example-2"}"#],
        routing: Routing::Never,
    };

    fn field(&self, name: &str) -> FieldRef<'_> {
        let v = match name {
            "username" => &self.username,
            "custom_id" => &self.custom_id,
            _ => return FieldRef::Null,
        };
        match v.as_deref() {
            Some(s) => FieldRef::Str(s),
            None => FieldRef::Null,
        }
    }

    fn build(body: &Value, cx: &BuildCx<'_>) -> Result<Self, FieldErrors> {
        crate::input::consumer(body, cx.stamp)
    }
}
