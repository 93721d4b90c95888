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

/// A well-formed argon2id hash of nothing in particular, standing in for a password where
/// one is only validated, never stored.
pub const PLACEHOLDER: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

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
    if phc.is_some_and(|h| sane_argon2(&h)) {
        Some(Stored::Argon2(s))
    } else if s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        Some(Stored::KongSha1(s))
    } else {
        None
    }
}

/// The most a stored hash may ask of a verification: a hash imported with `_transform:
/// false` names its own cost, and `m=4294967295` would have the node allocate terabytes.
const MAX_MEMORY_KIB: u32 = 64 * 1024;
const MAX_PASSES: u32 = 10;
const MAX_LANES: u32 = 4;

fn sane_argon2(h: &PasswordHash<'_>) -> bool {
    let param = |name: &str| h.params.get_decimal(name);
    h.algorithm.as_str() == "argon2id"
        && h.hash.is_some_and(|o| (16..=64).contains(&o.len()))
        && h.salt.is_some()
        && param("m").is_some_and(|m| (8..=MAX_MEMORY_KIB).contains(&m))
        && param("t").is_some_and(|t| (1..=MAX_PASSES).contains(&t))
        && param("p").is_some_and(|p| (1..=MAX_LANES).contains(&p))
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
pub fn kong_sha1(password: &[u8], consumer: Uuid) -> String {
    let mut h = Sha1::new();
    h.update(password);
    h.update(consumer.to_string().as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `given` is the password `stored` was made from (for Kong's form, salted with the
/// owning consumer's id). Comparisons are constant-time.
pub fn verify(stored_password: &str, given: &[u8], consumer: Uuid) -> bool {
    match stored(stored_password) {
        Some(Stored::Argon2(phc)) => PasswordHash::new(phc)
            .map(|h| hasher().verify_password(given, &h).is_ok())
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
        assert!(verify(&h, b"s3cret", Uuid::nil()));
        assert!(!verify(&h, b"s3cret ", Uuid::nil()));
        assert!(!verify(&h, b"", Uuid::nil()));
        // A stored hash that asks for more than the bounds is not one.
        let greedy = h.replace("m=19456", "m=4294967295");
        assert_eq!(stored(&greedy), None);
        assert!(!verify(&greedy, b"s3cret", Uuid::nil()));
        assert_eq!(stored(&h.replace("t=2", "t=99")), None);
        assert_eq!(stored(&h.replace("argon2id", "argon2i")), None);
        assert!(stored(PLACEHOLDER).is_some());
        // Another credential with the same password gets another salt.
        assert_ne!(h, hash("s3cret", "seed", Uuid::from_u128(8)));
    }

    #[test]
    fn kong_exported_hashes_verify_with_the_consumer_salt() {
        // spec/03-plugins/10-basic-auth/05-declarative_spec.lua: crypto.hash(consumer.id, "MI6").
        let consumer = Uuid::parse_str("e94f8b8e-0a7b-4f16-8eb0-f8f1a3b6d6a2").unwrap();
        let h = kong_sha1(b"MI6", consumer);
        assert_eq!(h.len(), 40);
        assert_eq!(stored(&h), Some(Stored::KongSha1(&h)));
        assert!(verify(&h, b"MI6", consumer));
        assert!(!verify(&h, b"MI6", Uuid::nil()));
        assert!(!verify(&h, b"mi6", consumer));
        assert_eq!(stored("clear text"), None);
        assert_eq!(stored("$argon2id$garbage"), None);
    }
}
