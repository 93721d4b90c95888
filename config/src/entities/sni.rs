//! Kong's `snis`: a server name a certificate is served for. A name may hold one wildcard, as
//! its first or last character (`*.example.test`, `example.*`), or be `*` alone, the
//! catch-all before the default certificate. Deleted with its certificate; unique, and
//! addressed by name (`/snis/{name}`). Fields and messages are Kong 3.9.3's
//! `kong/db/schema/entities/snis.lua` and `typedefs.wildcard_host`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::address::{self, HostKind};
use crate::entity::{ForeignKey, Timestamp};
use crate::error::FieldErrors;
use crate::registry::EntityKind;
use crate::schema::*;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sni {
    pub id: Uuid,
    pub name: String,
    pub certificate: ForeignKey,
    pub tags: Option<Vec<String>>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Declared for Sni {
    const DECL: EntityDecl = EntityDecl {
        table: "snis",
        admin_path: "snis",
        endpoint_key: Some("name"),
        uniques: &[&["name"]],
        foreign: &[ForeignDecl {
            field: "certificate",
            target: EntityKind::Certificate,
            on_delete: OnDelete::Cascade,
            nested_path: Some("snis"),
            nests: true,
        }],
        fields: &[
            ID,
            FieldDecl::new("name", FieldType::String { min: 1, max: 253 }).required(),
            CREATED_AT,
            UPDATED_AT,
            TAGS,
            FieldDecl::new("certificate", FieldType::Foreign(EntityKind::Certificate)).required(),
        ],
        entity_checks: "",
        storage_tag: b'n',
        examples: [r#"{"name": "example-1.test"}"#, r#"{"name": "*.example-2.test"}"#],
        routing: Routing::Never,
    };

    fn field(&self, name: &str) -> FieldRef<'_> {
        match name {
            "name" => FieldRef::Str(&self.name),
            "certificate" => FieldRef::Id(self.certificate.id),
            _ => FieldRef::Null,
        }
    }

    fn build(body: &Value, cx: &BuildCx<'_>) -> Result<Self, FieldErrors> {
        let record = build_record(&Self::DECL, body, cx)?;
        if let Some(Value::String(n)) = record.get("name") {
            check_wildcard_host(n).map_err(|m| FieldErrors::single("name", m))?;
        }
        serde_json::from_value(Value::Object(record))
            .map_err(|e| FieldErrors::single("@entity", e.to_string()))
    }
}

/// Kong's `typedefs.wildcard_host`: one `*`, first or last, then a host name without a port.
pub fn check_wildcard_host(host: &str) -> Result<(), String> {
    let mut mock = host.to_string();
    if let Some(idx) = host.find('*') {
        if idx != 0 && idx + 1 != host.len() {
            return Err("wildcard must be leftmost or rightmost character".into());
        }
        if host.matches('*').count() > 1 {
            return Err("only one wildcard must be specified".into());
        }
        mock = host.replace('*', "wildcard");
    }
    match address::normalize(&mock) {
        Err(e) if e == "invalid port number" => Err("must not have a port".into()),
        Err(_) => Err(format!("invalid value: {mock}")),
        Ok(h) if h.kind != HostKind::Name => Err("must not be an IP".into()),
        Ok(h) if h.port.is_some() => Err("must not have a port".into()),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::check_wildcard_host as check;

    #[test]
    fn wildcards_and_hosts_as_kong() {
        assert!(check("example.test").is_ok());
        assert!(check("*.example.test").is_ok());
        assert!(check("example.*").is_ok());
        assert!(check("*").is_ok());
        assert_eq!(
            check("ex*ample.test").unwrap_err(),
            "wildcard must be leftmost or rightmost character"
        );
        assert_eq!(check("*.example.*").unwrap_err(), "only one wildcard must be specified");
        assert_eq!(check("1.2.3.4").unwrap_err(), "must not be an IP");
        assert_eq!(check("example.test:80").unwrap_err(), "must not have a port");
        assert_eq!(check("a b").unwrap_err(), "invalid value: a b");
    }
}
