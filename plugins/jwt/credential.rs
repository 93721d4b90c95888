//! Kong's `jwt_secrets`: a key (the token's `iss`, or whichever claim the plugin names), the
//! algorithm it signs with, and its HMAC secret or public key, owned by a consumer and
//! deleted with it (Kong 3.9.3's `kong/plugins/jwt/daos.lua`). RS*, PS* and EdDSA need a
//! public key in PEM (`rsa_public_key`, Kong's name for any public key) that parses.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::entity::{ForeignKey, Timestamp};
use crate::error::FieldErrors;
use crate::registry::EntityKind;
use crate::schema::*;

/// Kong's algorithms, in its order.
pub const ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256",
    "PS384", "PS512", "EdDSA",
];

/// The algorithms whose credentials must carry a public key.
const NEED_PUBLIC_KEY: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA",
];

/// A public key PEM is bounded before it is parsed.
pub const MAX_PUBLIC_KEY: usize = 16 * 1024;

#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct JwtSecret {
    pub id: Uuid,
    pub consumer: ForeignKey,
    pub key: String,
    pub secret: String,
    pub rsa_public_key: Option<String>,
    pub algorithm: String,
    pub tags: Option<Vec<String>>,
    pub created_at: Timestamp,
}

impl JwtSecret {
    /// Kong's algorithms, in its order.
    pub const ALGORITHMS: &'static [&'static str] = ALGORITHMS;

    /// The public key bits of a `PUBLIC KEY` PEM (for an EC key, its SEC1 point).
    pub fn public_key_bits(pem: &str) -> Option<Vec<u8>> {
        use x509_parser::prelude::FromDer;
        if pem.len() > MAX_PUBLIC_KEY {
            return None;
        }
        let pem = pem.replace('\r', "");
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.trim().as_bytes()).ok()?;
        if block.label != "PUBLIC KEY" {
            return None;
        }
        let (_, spki) = x509_parser::x509::SubjectPublicKeyInfo::from_der(&block.contents).ok()?;
        Some(spki.subject_public_key.data.to_vec())
    }
}

impl std::fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtSecret")
            .field("id", &self.id)
            .field("consumer", &self.consumer)
            .field("key", &self.key)
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

impl Declared for JwtSecret {
    const DECL: EntityDecl = EntityDecl {
        table: "jwt_secrets",
        admin_path: "jwts",
        endpoint_key: Some("key"),
        uniques: &[&["key"]],
        foreign: &[ForeignDecl::owned_by_consumer("jwt")],
        fields: &[
            ID,
            CREATED_AT,
            FieldDecl::new("consumer", FieldType::Foreign(EntityKind::Consumer)).required(),
            FieldDecl::new("key", FieldType::String { min: 1, max: 512 }).auto(),
            FieldDecl::new("secret", FieldType::String { min: 1, max: 4096 }).auto(),
            FieldDecl::new(
                "rsa_public_key",
                FieldType::String {
                    min: 1,
                    max: MAX_PUBLIC_KEY,
                },
            ),
            FieldDecl::new("algorithm", FieldType::OneOf(ALGORITHMS)).default(r#""HS256""#),
            TAGS,
        ],
        entity_checks: r#"[{"conditional": {"if_field": "algorithm", "if_match": {"match_any": {"patterns": ["^RS256$", "^RS384$", "^RS512$", "^PS256$", "^PS384$", "^PS512$", "^EdDSA$"]}}, "then_field": "rsa_public_key", "then_match": {"required": true}}}]"#,
        storage_tag: b'j',
        examples: [r#"{"key": "example-1"}"#, r#"{"key": "example-2"}"#],
        routing: Routing::Never,
    };

    fn field(&self, name: &str) -> FieldRef<'_> {
        match name {
            "consumer" => FieldRef::Id(self.consumer.id),
            "key" => FieldRef::Str(&self.key),
            _ => FieldRef::Null,
        }
    }

    fn build(body: &Value, cx: &BuildCx<'_>) -> Result<Self, FieldErrors> {
        let mut cred: JwtSecret = build_typed(&Self::DECL, body, cx)?;
        if body.get("secret").is_none_or(Value::is_null) {
            cred.secret = cx.stamp.generated_secret.clone();
        }
        if NEED_PUBLIC_KEY.contains(&cred.algorithm.as_str()) {
            let problem = match &cred.rsa_public_key {
                None => Some("required field missing"),
                Some(pem) if !is_public_key(pem) => Some("invalid key"),
                Some(_) => None,
            };
            if let Some(problem) = problem {
                // Kong reports the conditional check and the field it failed on.
                let mut e = FieldErrors::new();
                e.add_entity("failed conditional validation given value of field 'algorithm'");
                e.add("rsa_public_key", problem);
                return Err(e);
            }
        }
        Ok(cred)
    }
}

/// Whether `pem` holds a public key OpenSSL would load: an X.509 SubjectPublicKeyInfo
/// (`PUBLIC KEY`), a PKCS#1 `RSA PUBLIC KEY`, or a certificate.
pub fn is_public_key(pem: &str) -> bool {
    use x509_parser::prelude::FromDer;
    if pem.len() > MAX_PUBLIC_KEY {
        return false;
    }
    let pem = pem.replace('\r', "");
    let Ok((_, block)) = x509_parser::pem::parse_x509_pem(pem.trim().as_bytes()) else {
        return false;
    };
    match block.label.as_str() {
        "PUBLIC KEY" => x509_parser::x509::SubjectPublicKeyInfo::from_der(&block.contents)
            .is_ok_and(|(rest, _)| rest.is_empty()),
        "RSA PUBLIC KEY" => x509_parser::public_key::RSAPublicKey::from_der(&block.contents)
            .is_ok_and(|(rest, _)| rest.is_empty()),
        "CERTIFICATE" => block.parse_x509().is_ok(),
        _ => false,
    }
}
