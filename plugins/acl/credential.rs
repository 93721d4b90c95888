//! Kong's `acls`: a consumer's membership of a group, which the acl plugin checks. Deleted
//! with its consumer; a group is unique per consumer and addresses the entity under it
//! (`/consumers/{c}/acls/{group}`). Fields, the cascade and the per-consumer uniqueness (its
//! `cache_key`) are Kong 3.9.3's `kong/plugins/acl/daos.lua`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::entity::{ForeignKey, Timestamp};
use crate::error::FieldErrors;
use crate::registry::EntityKind;
use crate::schema::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Acl {
    pub id: Uuid,
    pub consumer: ForeignKey,
    pub group: String,
    pub tags: Option<Vec<String>>,
    pub created_at: Timestamp,
}

impl Declared for Acl {
    const DECL: EntityDecl = EntityDecl {
        table: "acls",
        admin_path: "acls",
        endpoint_key: Some("group"),
        uniques: &[&["consumer", "group"]],
        foreign: &[ForeignDecl::owned_by_consumer("acls")],
        fields: &[
            ID,
            CREATED_AT,
            FieldDecl::new("consumer", FieldType::Foreign(EntityKind::Consumer)).required(),
            FieldDecl::new("group", FieldType::String { min: 1, max: 512 }).required(),
            TAGS,
        ],
        entity_checks: "",
        storage_tag: b'a',
        examples: [r#"{"group": "example-1"}"#, r#"{"group": "example-2"}"#],
        routing: Routing::Never,
    };

    fn field(&self, name: &str) -> FieldRef<'_> {
        match name {
            "consumer" => FieldRef::Id(self.consumer.id),
            "group" => FieldRef::Str(&self.group),
            _ => FieldRef::Null,
        }
    }

    fn build(body: &Value, cx: &BuildCx<'_>) -> Result<Self, FieldErrors> {
        build_typed(&Self::DECL, body, cx)
    }
}

#[cfg(test)]
mod tests {
    use crate::declarative::{self, Sequence};
    use crate::entities::{Acl, Consumer};
    use crate::{Command, EntityKind, State};

    const FILE: &str = r#"
_format_version: "3.0"
consumers:
  - username: alice
    acls:
      - group: admins
      - group: ops
acls:
  - consumer: alice
    group: auditors
"#;

    #[test]
    fn groups_nest_under_consumers_and_go_with_them() {
        let mut st = State::from_data(declarative::parse(FILE, &mut Sequence(0)).unwrap()).unwrap();
        let alice = st.all::<Consumer>().next().unwrap().id;
        let mut groups: Vec<&str> = st.all::<Acl>().map(|a| a.group.as_str()).collect();
        groups.sort();
        assert_eq!(groups, ["admins", "auditors", "ops"]);
        assert!(st.all::<Acl>().all(|a| a.consumer.id == alice));
        // Exported nested under the consumer, and the export loads back the same.
        let doc = declarative::export(&st);
        assert_eq!(doc["consumers"][0]["acls"].as_array().unwrap().len(), 3);
        let again = declarative::parse(&doc.to_string(), &mut Sequence(100)).unwrap();
        assert_eq!(&again, st.data());
        // A group is unique per consumer, and is found under it.
        let dup = "_format_version: \"3.0\"\nconsumers:\n  - username: a\n    acls: [{group: g}, {group: g}]\n";
        assert!(declarative::parse(dup, &mut Sequence(0)).is_err());
        let ops = st.resolve_in(EntityKind::Acl, "ops", Some(("consumer", alice)));
        assert!(ops.is_some());
        assert_eq!(st.resolve(EntityKind::Acl, "ops"), None);
        st.apply(Command::Delete {
            kind: EntityKind::Consumer,
            id: alice,
        })
        .unwrap();
        assert_eq!(st.all::<Acl>().count(), 0);
    }
}
