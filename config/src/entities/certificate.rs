//! Kong's `certificates`: a certificate chain and its key (and an alternate pair of the other
//! key type, so RSA and ECDSA clients are both served), which the TLS listeners present for
//! the SNIs that name it. Fields and checks are Kong 3.9.3's
//! `kong/db/schema/entities/certificates.lua`; `snis` is transient input, turned into `snis`
//! entities by the Admin API and the declarative loader, and deleting a certificate deletes
//! its SNIs (`kong/db/dao/certificates.lua`).
//!
//! The key is a secret: `Debug` does not print it and no message quotes it.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::entity::Timestamp;
use crate::error::FieldErrors;
use crate::schema::*;
use crate::x509;

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Certificate {
    pub id: Uuid,
    pub cert: String,
    pub key: String,
    pub cert_alt: Option<String>,
    pub key_alt: Option<String>,
    pub tags: Option<Vec<String>>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("id", &self.id)
            .field("alt", &self.cert_alt.is_some())
            .field("tags", &self.tags)
            .finish_non_exhaustive()
    }
}

impl Declared for Certificate {
    const DECL: EntityDecl = EntityDecl {
        table: "certificates",
        admin_path: "certificates",
        endpoint_key: None,
        uniques: &[],
        foreign: &[],
        fields: &[
            ID,
            CREATED_AT,
            UPDATED_AT,
            FieldDecl::new("cert", FieldType::String { min: 1, max: x509::MAX_PEM_BYTES })
                .required(),
            FieldDecl::new("key", FieldType::String { min: 1, max: x509::MAX_PEM_BYTES })
                .required(),
            FieldDecl::new("cert_alt", FieldType::String { min: 1, max: x509::MAX_PEM_BYTES }),
            FieldDecl::new("key_alt", FieldType::String { min: 1, max: x509::MAX_PEM_BYTES }),
            TAGS,
            FieldDecl::new("snis", FieldType::Array),
        ],
        entity_checks: r#"[{"mutually_required":["cert_alt","key_alt"]},{"custom_entity_check":{"field_sources":["cert","key"]}},{"custom_entity_check":{"field_sources":["cert_alt","key_alt"]}},{"custom_entity_check":{"field_sources":["cert","cert_alt"]}}]"#,
        storage_tag: b'x',
        examples: [
            include_str!("../../tests/pem/example-rsa.json"),
            include_str!("../../tests/pem/example-ec.json"),
        ],
        routing: Routing::Never,
    };

    fn field(&self, _name: &str) -> FieldRef<'_> {
        FieldRef::Null
    }

    fn build(body: &Value, cx: &BuildCx<'_>) -> Result<Self, FieldErrors> {
        let mut record = build_record(&Self::DECL, body, cx)?;
        // The transient SNI names: checked here (Kong's schema types them), written by the
        // caller as `snis` entities.
        if let Some(Value::Array(names)) = record.remove("snis") {
            let mut errs = FieldErrors::new();
            for (i, n) in names.iter().enumerate() {
                let checked = match n {
                    Value::String(s) => crate::entities::check_wildcard_host(s),
                    _ => Err("expected a string".into()),
                };
                if let Err(m) = checked {
                    errs.add(&format!("snis.{}", i + 1), m);
                }
            }
            errs.into_result()?;
        }
        let text = |f: &str| record.get(f).and_then(Value::as_str);
        let mut errs = FieldErrors::new();
        let cert = text("cert").map(x509::certificate);
        let key = text("key").map(x509::key);
        let cert_alt = text("cert_alt").map(x509::certificate);
        let key_alt = text("key_alt").map(x509::key);
        for (field, r) in [("cert", cert.as_ref().map(|r| r.as_ref().err()))
            , ("cert_alt", cert_alt.as_ref().map(|r| r.as_ref().err()))]
        {
            if let Some(Some(e)) = r {
                errs.add(field, e.clone());
            }
        }
        for (field, r) in [("key", &key), ("key_alt", &key_alt)] {
            if let Some(Err(e)) = r {
                errs.add(field, e.clone());
            }
        }
        errs.into_result()?;
        if cert_alt.is_some() != key_alt.is_some() {
            let mut e = FieldErrors::new();
            e.add_entity("all or none of these fields must be set: 'cert_alt', 'key_alt'");
            return Err(e);
        }
        let mut checks = FieldErrors::new();
        if let (Some(Ok(c)), Some(Ok(k))) = (&cert, &key) {
            if !k.matches(c) {
                checks.add_entity("certificate does not match key");
            }
        }
        if let (Some(Ok(c)), Some(Ok(k))) = (&cert_alt, &key_alt) {
            if !k.matches(c) {
                checks.add_entity("alternative certificate does not match key");
            }
        }
        if let (Some(Ok(c)), Some(Ok(a))) = (&cert, &cert_alt) {
            if c.key_type == a.key_type {
                checks.add_entity("certificate and alternative certificate need to have different type (e.g. RSA and ECDSA), the provided certificates were both of the same type");
            }
        }
        checks.into_result()?;
        serde_json::from_value(Value::Object(record))
            .map_err(|e| FieldErrors::single("@entity", e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::entities::{CaCertificate, Certificate, Service, Sni};
    use crate::x509::test_pems::*;
    use crate::{Command, Entity, EntityKind, PutMode, State};

    fn build<T: crate::schema::Declared>(st: &State, body: serde_json::Value) -> Result<T, crate::FieldErrors> {
        let stamp = crate::input::Stamp {
            id: uuid::Uuid::new_v4(),
            created_at: None,
            now: 1_800_000_000,
            now_ms: 1_800_000_000_000,
            generated_key: String::new(),
            generated_secret: String::new(),
        };
        let cx = crate::schema::BuildCx { stamp: &stamp, state: st, parent: None, transform: true };
        T::build(&body, &cx)
    }

    #[test]
    fn pairs_must_match_and_differ_in_type() {
        let st = State::default();
        assert!(build::<Certificate>(&st, json!({"cert": RSA_CERT, "key": RSA_KEY})).is_ok());
        let e = build::<Certificate>(&st, json!({"cert": RSA_CERT, "key": EC_KEY})).unwrap_err();
        assert_eq!(e.to_json()["@entity"][0], "certificate does not match key");
        let both = json!({"cert": RSA_CERT, "key": RSA_KEY, "cert_alt": EC_CERT, "key_alt": EC_KEY});
        assert!(build::<Certificate>(&st, both).is_ok());
        let same = json!({"cert": RSA_CERT, "key": RSA_KEY, "cert_alt": RSA_CERT, "key_alt": RSA_KEY});
        let e = build::<Certificate>(&st, same).unwrap_err();
        assert!(e.to_json()["@entity"][0].as_str().unwrap().contains("different type"));
        let half = json!({"cert": RSA_CERT, "key": RSA_KEY, "cert_alt": EC_CERT});
        assert!(build::<Certificate>(&st, half).is_err());
        let e = build::<Certificate>(&st, json!({"cert": "nope", "key": RSA_KEY})).unwrap_err();
        assert!(e.to_json()["cert"].as_str().unwrap().starts_with("invalid certificate"));
        // The key never shows in Debug output.
        let c = build::<Certificate>(&st, json!({"cert": RSA_CERT, "key": RSA_KEY})).unwrap();
        assert!(!format!("{c:?}").contains("PRIVATE"));
    }

    #[test]
    fn ca_certificates_are_single_unexpired_cas() {
        let st = State::default();
        let ca = build::<CaCertificate>(&st, json!({"cert": CA_CERT})).unwrap();
        assert_eq!(ca.cert_digest.len(), 64);
        let msg = |body| build::<CaCertificate>(&st, body).unwrap_err().to_json()["@entity"][0].clone();
        assert_eq!(msg(json!({"cert": EXPIRED_CA})), "certificate expired, \"Not After\" time is in the past");
        assert!(msg(json!({"cert": RSA_CERT})).as_str().unwrap().contains("\"CA\" basic constraint"));
        let two = format!("{CA_CERT}{EXPIRED_CA}");
        assert_eq!(msg(json!({"cert": two})), "please submit only one certificate at a time");
    }

    #[test]
    fn a_listed_ca_cannot_be_deleted_and_a_failed_batch_changes_nothing() {
        let mut st = State::default();
        let ca = build::<CaCertificate>(&st, json!({"cert": CA_CERT})).unwrap();
        st.apply(Command::Put { entity: ca.clone().into(), mode: PutMode::Create }).unwrap();
        let svc = build::<Service>(&st, json!({"url": "https://a.test", "ca_certificates": [ca.id], "tls_verify": true})).unwrap();
        st.apply(Command::Put { entity: svc.clone().into(), mode: PutMode::Create }).unwrap();
        let e = st.apply(Command::Delete { kind: EntityKind::CaCertificate, id: ca.id }).unwrap_err();
        assert_eq!(e.status(), 400);
        assert_eq!(e.to_string(), format!("ca certificate {} is still referenced by services (id = {})", ca.id, svc.id));
        let plain = build::<Service>(&st, json!({"url": "http://a.test", "tls_verify": true})).unwrap_err();
        assert_eq!(plain.to_json()["tls_verify"], "value must be null");

        let cert = build::<Certificate>(&st, json!({"cert": RSA_CERT, "key": RSA_KEY})).unwrap();
        let mut with_cert = st.clone();
        with_cert.apply(Command::Put { entity: cert.clone().into(), mode: PutMode::Create }).unwrap();
        let sni = |name: &str| -> Entity {
            // The builder resolves references against the state: give it the id afterwards.
            let mut s = build::<Sni>(&with_cert, json!({"name": name, "certificate": {"id": cert.id}})).unwrap();
            s.id = uuid::Uuid::new_v4();
            s.into()
        };
        let put = |e: Entity| Command::Put { entity: e, mode: PutMode::Create };
        let before = st.data().clone();
        // The second SNI clashes with the first: nothing of the batch stays.
        let bad = Command::Batch(vec![put(cert.clone().into()), put(sni("a.test")), put(sni("a.test"))]);
        assert!(st.apply(bad).is_err());
        assert_eq!(st.data(), &before);
        let good = Command::Batch(vec![put(cert.clone().into()), put(sni("a.test")), put(sni("*.a.test"))]);
        st.apply(good).unwrap();
        assert_eq!(st.all::<Sni>().count(), 2);
        st.apply(Command::Delete { kind: EntityKind::Certificate, id: cert.id }).unwrap();
        assert_eq!(st.all::<Sni>().count(), 0);
    }

    #[test]
    fn services_and_routes_written_before_tls_still_load() {
        #[derive(serde::Serialize)]
        struct OldService<'a> {
            id: uuid::Uuid, name: Option<&'a str>, protocol: crate::Protocol, host: &'a str, port: u16,
            path: Option<&'a str>, retries: u32, connect_timeout: u32, write_timeout: u32,
            read_timeout: u32, enabled: bool, tags: Option<Vec<String>>, created_at: i64, updated_at: i64,
        }
        #[derive(serde::Serialize)]
        enum OldEntity<'a> { Service(OldService<'a>) }
        let id = uuid::Uuid::new_v4();
        let old = OldEntity::Service(OldService {
            id, name: Some("s"), protocol: crate::Protocol::Http, host: "h.test", port: 80, path: None,
            retries: 5, connect_timeout: 1, write_timeout: 2, read_timeout: 3, enabled: true,
            tags: Some(vec!["t".into()]), created_at: 7, updated_at: 8,
        });
        let cfg = bincode::config::standard();
        // An old command: the entity, then the put mode after it.
        let mut bytes = bincode::serde::encode_to_vec(&old, cfg).unwrap();
        bytes.push(0);
        let (e, used): (Entity, usize) = bincode::serde::decode_from_slice(&bytes, cfg).unwrap();
        assert_eq!(used, bytes.len() - 1);
        let Entity::Service(s) = &e else { panic!() };
        assert_eq!((s.id, s.host.as_str(), s.read_timeout, s.updated_at, s.tls_verify), (id, "h.test", 3, 8, None));
        // New bytes round-trip, and JSON is the plain struct.
        let again = bincode::serde::encode_to_vec(&e, cfg).unwrap();
        assert_eq!(bincode::serde::decode_from_slice::<Entity, _>(&again, cfg).unwrap().0, e);
        assert_eq!(e.to_json()["host"], "h.test");
        assert!(e.to_json()["tls_verify"].is_null());
    }
}
