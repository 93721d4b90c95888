//! Kong's `targets`: one `host:port` behind an upstream, with its weight. Deleted with its
//! upstream; unique per upstream and addressed under it by `host:port`
//! (`/upstreams/{u}/targets/{host:port}`). A target without a port gets 8000, and addresses
//! are normalised (`kong/db/dao/targets.lua`), so `1.2.3.4` and `001.2.3.4:8000` clash.
//! Fields are Kong 3.9.3's `kong/db/schema/entities/targets.lua`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::address;
use crate::entity::{ForeignKey, Timestamp};
use crate::error::FieldErrors;
use crate::registry::EntityKind;
use crate::schema::*;

/// Kong's port for a target given without one.
pub const DEFAULT_TARGET_PORT: u16 = 8000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub id: Uuid,
    pub upstream: ForeignKey,
    pub target: String,
    pub weight: u32,
    pub tags: Option<Vec<String>>,
    /// Milliseconds (Kong's `auto_timestamp_ms`), printed as fractional seconds.
    #[serde(with = "crate::entity::millis")]
    pub created_at: Timestamp,
    #[serde(with = "crate::entity::millis")]
    pub updated_at: Timestamp,
}

impl Target {
    /// The target's host (an IPv6 address without brackets) and port.
    pub fn host_port(&self) -> (String, u16) {
        match address::normalize(&self.target) {
            Ok(h) => (h.host, h.port.unwrap_or(DEFAULT_TARGET_PORT)),
            Err(_) => (self.target.clone(), DEFAULT_TARGET_PORT),
        }
    }
}

impl Declared for Target {
    const DECL: EntityDecl = EntityDecl {
        table: "targets",
        admin_path: "targets",
        endpoint_key: Some("target"),
        uniques: &[&["upstream", "target"]],
        foreign: &[ForeignDecl {
            field: "upstream",
            target: EntityKind::Upstream,
            on_delete: OnDelete::Cascade,
            nested_path: Some("targets"),
            nests: true,
        }],
        fields: &[
            ID,
            CREATED_AT,
            UPDATED_AT,
            FieldDecl::new("upstream", FieldType::Foreign(EntityKind::Upstream)).required(),
            FieldDecl::new("target", FieldType::String { min: 1, max: 1024 }).required(),
            FieldDecl::new("weight", FieldType::Integer { min: 0, max: 65535 }).default("100"),
            TAGS,
        ],
        entity_checks: "",
        storage_tag: b't',
        examples: [
            r#"{"target": "example-1.test:80"}"#,
            r#"{"target": "10.0.0.2", "weight": 5}"#,
        ],
        routing: Routing::Never,
    };

    fn field(&self, name: &str) -> FieldRef<'_> {
        match name {
            "upstream" => FieldRef::Id(self.upstream.id),
            "target" => FieldRef::Str(&self.target),
            _ => FieldRef::Null,
        }
    }

    fn build(body: &Value, cx: &BuildCx<'_>) -> Result<Self, FieldErrors> {
        let mut record = build_record(&Self::DECL, body, cx)?;
        if let Some(Value::String(t)) = record.get("target") {
            let formatted = address::normalize(t)
                .map(|h| h.format(Some(DEFAULT_TARGET_PORT)))
                .map_err(|_| {
                    FieldErrors::single(
                        "target",
                        "Invalid target; not a valid hostname or ip address",
                    )
                })?;
            record.insert("target".into(), Value::String(formatted));
        }
        // Milliseconds: the replaced target's, or given (fractional seconds), or now.
        let created = cx
            .stamp
            .created_at
            .or_else(|| body.get("created_at").and_then(Value::as_f64).map(|s| (s * 1000.0).round() as i64))
            .unwrap_or(cx.stamp.now_ms);
        let secs = |ms: i64| Value::from(ms as f64 / 1000.0);
        record.insert("created_at".into(), secs(created));
        record.insert("updated_at".into(), secs(cx.stamp.now_ms));
        serde_json::from_value(Value::Object(record))
            .map_err(|e| FieldErrors::single("@entity", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use crate::declarative::{self, Sequence};
    use crate::entities::{Target, Upstream};
    use crate::{Command, EntityKind, State};

    const FILE: &str = r#"
_format_version: "3.0"
upstreams:
  - name: api.test
    targets:
      - target: 10.0.0.1
      - target: "[::1]:81"
        weight: 5
"#;

    #[test]
    fn targets_nest_under_upstreams_get_a_port_and_go_with_them() {
        let mut st = State::from_data(declarative::parse(FILE, &mut Sequence(0)).unwrap()).unwrap();
        let up = st.all::<Upstream>().next().unwrap().id;
        let mut names: Vec<&str> = st.all::<Target>().map(|t| t.target.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            ["10.0.0.1:8000", "[0000:0000:0000:0000:0000:0000:0000:0001]:81"]
        );
        let doc = declarative::export(&st);
        assert_eq!(doc["upstreams"][0]["targets"].as_array().unwrap().len(), 2);
        let again = declarative::parse(&doc.to_string(), &mut Sequence(100)).unwrap();
        assert_eq!(&again, st.data());
        let dup = "_format_version: \"3.0\"\nupstreams:\n  - name: a.test\n    targets: [{target: 1.2.3.4}, {target: '1.2.3.4:8000'}]\n";
        assert!(declarative::parse(dup, &mut Sequence(0)).is_err());
        st.apply(Command::Delete {
            kind: EntityKind::Upstream,
            id: up,
        })
        .unwrap();
        assert_eq!(st.all::<Target>().count(), 0);
    }
}
