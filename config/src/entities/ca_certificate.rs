//! Kong's `ca_certificates`: a trusted CA that services list to verify their upstream's
//! certificate (`services.ca_certificates`). One PEM certificate, a CA, not expired; its
//! SHA-256 digest is derived and unique. Deleting one that a service still lists is refused.
//! Fields, checks and messages are Kong 3.9.3's `kong/db/schema/entities/ca_certificates.lua`.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::entity::Timestamp;
use crate::error::FieldErrors;
use crate::schema::*;
use crate::x509;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaCertificate {
    pub id: Uuid,
    pub cert: String,
    pub cert_digest: String,
    pub tags: Option<Vec<String>>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Declared for CaCertificate {
    const DECL: EntityDecl = EntityDecl {
        table: "ca_certificates",
        admin_path: "ca_certificates",
        endpoint_key: None,
        uniques: &[&["cert_digest"]],
        foreign: &[],
        fields: &[
            ID,
            CREATED_AT,
            UPDATED_AT,
            FieldDecl::new("cert", FieldType::String { min: 1, max: x509::MAX_PEM_BYTES })
                .required(),
            FieldDecl::new("cert_digest", FieldType::String { min: 1, max: 128 }),
            TAGS,
        ],
        entity_checks: r#"[{"custom_entity_check":{"field_sources":["cert"]}}]"#,
        storage_tag: b'C',
        examples: [
            include_str!("../../tests/pem/example-ca.json"),
            include_str!("../../tests/pem/example-ca2.json"),
        ],
        routing: Routing::Never,
    };

    fn field(&self, name: &str) -> FieldRef<'_> {
        match name {
            "cert_digest" => FieldRef::Str(&self.cert_digest),
            _ => FieldRef::Null,
        }
    }

    fn build(body: &Value, cx: &BuildCx<'_>) -> Result<Self, FieldErrors> {
        let mut record = build_record(&Self::DECL, body, cx)?;
        let pem = record.get("cert").and_then(Value::as_str).unwrap_or_default();
        let parsed = x509::certificate(pem).map_err(|e| FieldErrors::single("cert", e))?;
        let mut checks = FieldErrors::new();
        if x509::count_certificates(pem) > 1 {
            checks.add_entity("please submit only one certificate at a time");
        } else if parsed.not_after < cx.stamp.now_ms / 1000 {
            checks.add_entity("certificate expired, \"Not After\" time is in the past");
        } else if !parsed.is_ca {
            checks.add_entity("certificate does not appear to be a CA because it is missing the \"CA\" basic constraint");
        }
        checks.into_result()?;
        record.insert("cert_digest".into(), Value::String(x509::digest(&parsed)));
        serde_json::from_value(Value::Object(record))
            .map_err(|e| FieldErrors::single("@entity", e.to_string()))
    }
}
