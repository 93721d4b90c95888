//! The cluster secret (`--cluster-secret-file`): one or more shared secrets, the first of which
//! sends, and the keys each one gives.
//!
//! A secret is 32 random bytes written as base64 (`tollgate cluster secret` prints one). The
//! file holds one per line (`#` starts a comment). Rotation without downtime: add the new
//! secret as a second line on every node (rolling restart: every node still sends with the
//! old one and accepts both), then move it to the first line (rolling restart: nodes send with
//! the new one), then remove the old line.
//!
//! From each secret, HKDF-SHA256 derives independent keys: the gossip AEAD key, a short key id
//! that names the secret on the wire, and the seed of the Ed25519 key of a cluster CA that
//! signs every node's TLS certificate for cluster RPCs (see [`super::tls`]).

use std::path::Path;

use base64::Engine;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use hkdf::Hkdf;
use sha2::Sha256;

use super::AuthError;

/// Fewest bytes a secret must decode to.
pub const SECRET_BYTES: usize = 32;
const SALT: &[u8] = b"tollgate-cluster-v1";

/// The keys one secret gives.
pub struct Key {
    /// Names this secret in sealed gossip datagrams (not secret: derived one-way).
    pub id: [u8; 4],
    pub(crate) aead: XChaCha20Poly1305,
    /// Seed of the Ed25519 key of the CA derived from this secret.
    pub(crate) ca_seed: [u8; 32],
}

impl Key {
    fn derive(secret: &[u8]) -> Key {
        let hk = Hkdf::<Sha256>::new(Some(SALT), secret);
        let mut aead_key = [0u8; 32];
        let mut id = [0u8; 4];
        let mut ca_seed = [0u8; 32];
        // HKDF-SHA256 expands to up to 8160 bytes: these lengths cannot fail.
        hk.expand(b"gossip-aead", &mut aead_key)
            .expect("32 bytes is a valid HKDF length");
        hk.expand(b"key-id", &mut id)
            .expect("4 bytes is a valid HKDF length");
        hk.expand(b"rpc-ca-ed25519", &mut ca_seed)
            .expect("32 bytes is a valid HKDF length");
        Key {
            id,
            aead: XChaCha20Poly1305::new(&aead_key.into()),
            ca_seed,
        }
    }
}

/// Every secret this node accepts; the first one sends.
pub struct Keyring {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key ids only: never the secrets or what they derive.
        let ids: Vec<String> = self.keys.iter().map(|k| hex(&k.id)).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

pub(crate) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Keyring {
    /// Parses a secret file's text.
    pub fn parse(text: &str) -> Result<Keyring, AuthError> {
        let mut keys = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(line)
                .ok()
                .filter(|b| b.len() >= SECRET_BYTES)
                .ok_or(AuthError::BadSecret { line: n + 1 })?;
            keys.push(Key::derive(&bytes));
        }
        if keys.is_empty() {
            return Err(AuthError::NoSecret);
        }
        Ok(Keyring { keys })
    }

    /// Reads a secret file.
    pub fn load(path: &Path) -> Result<Keyring, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|e| AuthError::Read {
            path: path.display().to_string(),
            error: e.to_string(),
        })?;
        Keyring::parse(&text)
    }

    /// The key that seals what this node sends.
    pub fn primary(&self) -> &Key {
        &self.keys[0]
    }

    /// The key with this id, if this node accepts it.
    pub fn by_id(&self, id: &[u8; 4]) -> Option<&Key> {
        self.keys.iter().find(|k| &k.id == id)
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }
}

/// A new random secret, as a secret file line.
pub fn generate() -> String {
    let mut b = [0u8; SECRET_BYTES];
    rand::Rng::fill(&mut rand::rng(), &mut b[..]);
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_parse_with_comments_and_the_first_sends() {
        let (a, b) = (generate(), generate());
        let ring = Keyring::parse(&format!("# new\n{a}\n\n{b}  # old\n")).unwrap();
        assert_eq!(ring.keys().len(), 2);
        assert_eq!(ring.primary().id, Keyring::parse(&a).unwrap().primary().id);
        let old = Keyring::parse(&b).unwrap().primary().id;
        assert!(ring.by_id(&old).is_some());
        assert!(ring.by_id(&[0, 0, 0, 0]).is_none());
    }

    #[test]
    fn weak_or_missing_secrets_are_refused() {
        assert!(matches!(
            Keyring::parse("password"),
            Err(AuthError::BadSecret { line: 1 })
        ));
        // Valid base64, but 16 bytes.
        assert!(Keyring::parse("\nAAAAAAAAAAAAAAAAAAAAAA==").is_err());
        assert!(matches!(
            Keyring::parse("# only a comment\n"),
            Err(AuthError::NoSecret)
        ));
    }

    #[test]
    fn the_debug_form_shows_key_ids_only() {
        let s = generate();
        let shown = format!("{:?}", Keyring::parse(&s).unwrap());
        assert!(!shown.contains(&s));
        assert!(shown.contains("key_ids"));
    }
}
