//! Basic-auth passwords at rest. A password is never stored in clear: it is written as an
//! argon2id hash (PHC string, `$argon2id$v=19$…`), or kept in the form a Kong declarative
//! export holds it (`sha1_hex(password .. consumer_id)`, Kong 3.9.3's
//! `kong/plugins/basic-auth/crypto.lua`) so a Kong user's exported credentials keep working.
//!
//! Verifying an argon2id hash is slow on purpose (tens of milliseconds); the data plane
//! caches what it verified (`plugins/basic_auth/handler.rs`), so only the first request of a
//! credential, and wrong passwords before the first success, pay it.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use sha1::{Digest, Sha1};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// OWASP's argon2id baseline: 19 MiB, 2 passes, 1 lane.
fn hasher() -> Argon2<'static> {
    let params = Params::new(19 * 1024, 2, 1, None).expect("static argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// How a stored password is to be checked.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored<'a> {
    /// A PHC argon2 string.
    Argon2(&'a str),
    /// Kong's salted SHA-1, 40 hex digits.
    KongSha1(&'a str),
}

/// Reads a stored password's form; `None` for anything that is not a hash.
pub fn stored(s: &str) -> Option<Stored<'_>> {
    let phc = PasswordHash::new(s).ok();
    if s.starts_with("$argon2") && phc.is_some_and(|h| h.hash.is_some() && h.salt.is_some()) {
        Some(Stored::Argon2(s))
    } else if s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Some(Stored::KongSha1(s))
    } else {
        None
    }
}

/// Hashes `password` with argon2id. The salt is derived from `seed` (a fresh random string
/// when written through the Admin API) and the credential's id, so two credentials never
/// share one.
pub fn hash(password: &str, seed: &str, id: Uuid) -> String {
    let mut h = Sha256::new();
    h.update(seed.as_bytes());
    h.update(id.as_bytes());
    let digest = h.finalize();
    let salt = SaltString::encode_b64(&digest[..16]).expect("16 bytes make a valid salt");
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 accepts any password with static parameters")
        .to_string()
}

/// Kong 3.9.3's basic-auth hash: `sha1_hex(password .. consumer_id)`.
pub fn kong_sha1(password: &str, consumer: Uuid) -> String {
    let mut h = Sha1::new();
    h.update(password.as_bytes());
    h.update(consumer.to_string().as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `given` is the password `stored` was made from (for Kong's form, salted with the
/// owning consumer's id). Comparisons are constant-time.
pub fn verify(stored_password: &str, given: &str, consumer: Uuid) -> bool {
    match stored(stored_password) {
        Some(Stored::Argon2(phc)) => PasswordHash::new(phc)
            .map(|h| hasher().verify_password(given.as_bytes(), &h).is_ok())
            .unwrap_or(false),
        Some(Stored::KongSha1(hex)) => {
            let mine = kong_sha1(given, consumer);
            bool::from(mine.as_bytes().ct_eq(hex.to_ascii_lowercase().as_bytes()))
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_argon2_hash_verifies_only_its_password() {
        let id = Uuid::from_u128(7);
        let h = hash("s3cret", "seed", id);
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(!h.contains("s3cret"));
        assert!(verify(&h, "s3cret", Uuid::nil()));
        assert!(!verify(&h, "s3cret ", Uuid::nil()));
        assert!(!verify(&h, "", Uuid::nil()));
        // Another credential with the same password gets another salt.
        assert_ne!(h, hash("s3cret", "seed", Uuid::from_u128(8)));
    }

    #[test]
    fn kong_exported_hashes_verify_with_the_consumer_salt() {
        // spec/03-plugins/10-basic-auth/05-declarative_spec.lua: crypto.hash(consumer.id, "MI6").
        let consumer = Uuid::parse_str("e94f8b8e-0a7b-4f16-8eb0-f8f1a3b6d6a2").unwrap();
        let h = kong_sha1("MI6", consumer);
        assert_eq!(h.len(), 40);
        assert_eq!(stored(&h), Some(Stored::KongSha1(&h)));
        assert!(verify(&h, "MI6", consumer));
        assert!(!verify(&h, "MI6", Uuid::nil()));
        assert!(!verify(&h, "mi6", consumer));
        assert_eq!(stored("clear text"), None);
        assert_eq!(stored("$argon2id$garbage"), None);
    }
}
