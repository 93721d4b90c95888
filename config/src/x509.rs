//! Reading PEM certificates and private keys as Kong's entity checks do (`typedefs.certificate`,
//! `typedefs.key`, and the checks of `certificates` and `ca_certificates`). Pure parsing: no
//! I/O. Messages never quote a key: an error names what is wrong, not the secret.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::SigningKey;
use rustls::SignatureAlgorithm;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The largest PEM text accepted for one certificate, key or chain.
pub const MAX_PEM_BYTES: usize = 64 * 1024;

/// A public key's algorithm, as the alternate-pair check compares them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Rsa,
    Ecdsa,
    Ed25519,
    Other,
}

/// What the checks need of a certificate chain's leaf.
#[derive(Debug, Clone)]
pub struct ParsedCert {
    /// The chain, leaf first, as DER.
    pub chain: Vec<CertificateDer<'static>>,
    pub key_type: KeyType,
    /// `notAfter`, Unix seconds.
    pub not_after: i64,
    /// `notBefore`, Unix seconds.
    pub not_before: i64,
    /// Whether the basic constraints say CA.
    pub is_ca: bool,
    /// The leaf's SubjectPublicKeyInfo, DER.
    pub spki: Vec<u8>,
}

/// Parses a PEM chain (leaf first). Kong's message on failure: `invalid certificate: …`.
pub fn certificate(pem: &str) -> Result<ParsedCert, String> {
    if pem.len() > MAX_PEM_BYTES {
        return Err(format!(
            "invalid certificate: longer than {MAX_PEM_BYTES} bytes"
        ));
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid certificate: {e}"))?;
    let Some(leaf) = chain.first() else {
        return Err("invalid certificate: no PEM certificate found".into());
    };
    let (_, x) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("invalid certificate: {e}"))?;
    let key_type = match x.public_key().parsed() {
        Ok(x509_parser::public_key::PublicKey::RSA(_)) => KeyType::Rsa,
        Ok(x509_parser::public_key::PublicKey::EC(_)) => KeyType::Ecdsa,
        _ if x.public_key().algorithm.algorithm.to_id_string() == "1.3.101.112" => KeyType::Ed25519,
        _ => KeyType::Other,
    };
    let is_ca = matches!(x.basic_constraints(), Ok(Some(bc)) if bc.value.ca);
    Ok(ParsedCert {
        key_type,
        not_after: x.validity().not_after.timestamp(),
        not_before: x.validity().not_before.timestamp(),
        is_ca,
        spki: x.public_key().raw.to_vec(),
        chain,
    })
}

/// A parsed private key, able to sign (rustls' view of it).
pub struct ParsedKey {
    pub der: PrivateKeyDer<'static>,
    pub signer: Arc<dyn SigningKey>,
}

impl std::fmt::Debug for ParsedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ParsedKey(…)")
    }
}

/// Parses a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC). Kong's message on failure:
/// `invalid key: …`; the key's text never appears in it.
pub fn key(pem: &str) -> Result<ParsedKey, String> {
    if pem.len() > MAX_PEM_BYTES {
        return Err(format!("invalid key: longer than {MAX_PEM_BYTES} bytes"));
    }
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| "invalid key: no PEM private key found".to_string())?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|_| "invalid key: unsupported or malformed private key".to_string())?;
    Ok(ParsedKey { der, signer })
}

impl ParsedKey {
    /// Whether this key is the private half of `cert`'s public key.
    pub fn matches(&self, cert: &ParsedCert) -> bool {
        self.signer
            .public_key()
            .is_some_and(|spki| spki.as_ref() == cert.spki.as_slice())
    }

    pub fn key_type(&self) -> KeyType {
        match self.signer.algorithm() {
            SignatureAlgorithm::RSA => KeyType::Rsa,
            SignatureAlgorithm::ECDSA => KeyType::Ecdsa,
            SignatureAlgorithm::ED25519 => KeyType::Ed25519,
            _ => KeyType::Other,
        }
    }
}

/// The number of PEM certificates in `pem`.
pub fn count_certificates(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

/// SHA-256 of the leaf's DER, lower-case hex (Kong's `cert_digest`).
pub fn digest(cert: &ParsedCert) -> String {
    let d = Sha256::digest(&cert.chain[0]);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
pub(crate) mod test_pems {
    //! Fixed PEMs for unit tests (made once with rcgen; the CA's validity ends in 4096).
    pub const RSA_CERT: &str = include_str!("../tests/pem/rsa.crt");
    pub const RSA_KEY: &str = include_str!("../tests/pem/rsa.key");
    pub const EC_CERT: &str = include_str!("../tests/pem/ec.crt");
    pub const EC_KEY: &str = include_str!("../tests/pem/ec.key");
    pub const CA_CERT: &str = include_str!("../tests/pem/ca.crt");
    pub const EXPIRED_CA: &str = include_str!("../tests/pem/expired-ca.crt");
}

#[cfg(test)]
mod tests {
    use super::test_pems::*;
    use super::*;

    #[test]
    fn keys_match_their_certificates_only() {
        let rsa = certificate(RSA_CERT).unwrap();
        let ec = certificate(EC_CERT).unwrap();
        assert_eq!(rsa.key_type, KeyType::Rsa);
        assert_eq!(ec.key_type, KeyType::Ecdsa);
        assert!(key(RSA_KEY).unwrap().matches(&rsa));
        assert!(key(EC_KEY).unwrap().matches(&ec));
        assert!(!key(EC_KEY).unwrap().matches(&rsa));
        assert!(!rsa.is_ca);
        assert!(certificate(CA_CERT).unwrap().is_ca);
        assert!(certificate(EXPIRED_CA).unwrap().not_after < 1_700_000_000);
    }

    #[test]
    fn garbage_is_a_clear_error_that_quotes_no_key() {
        assert!(certificate("hello")
            .unwrap_err()
            .starts_with("invalid certificate"));
        let broken = RSA_KEY.replace('A', "B");
        let e = key(&broken).unwrap_err();
        assert!(e.starts_with("invalid key"));
        assert!(!e.contains("MII"));
        assert_eq!(digest(&certificate(CA_CERT).unwrap()).len(), 64);
    }

    #[test]
    fn oversized_pem_is_refused_before_parsing() {
        let huge = RSA_CERT.repeat(MAX_PEM_BYTES / RSA_CERT.len() + 1);
        assert!(certificate(&huge).unwrap_err().contains("longer than"));
        let huge_key = RSA_KEY.repeat(MAX_PEM_BYTES / RSA_KEY.len() + 1);
        assert!(key(&huge_key).unwrap_err().contains("longer than"));
    }
}
