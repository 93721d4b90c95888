//! TLS for cluster RPCs (Raft, forwarded writes, read indexes, membership): both ends present
//! a certificate that chains to a cluster CA, over TLS 1.3 (fresh keys per connection, so a
//! recorded exchange cannot be replayed).
//!
//! - **Secret mode**: each secret of the keyring derives the Ed25519 key of a CA; the CA
//!   certificate is made the same way on every node, so nodes share a CA without sharing a
//!   file. At start a node makes a fresh key and a certificate signed by the first secret's
//!   CA, and trusts the CAs of every secret it holds. Signing such a certificate needs the
//!   secret: a peer that completes the handshake proved it knows one.
//! - **PKI mode** (`--cluster-tls-cert/-key/-ca`): the operator's node certificates, signed by
//!   the operator's CA (`tollgate cluster certs` makes a set).
//!
//! Either way every certificate names [`DEFAULT_SERVER_NAME`] (or `--cluster-tls-server-name`),
//! which clients check: membership is decided by the CA, not by host names.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::keyring::{hex, Key, Keyring};
use super::AuthError;

/// The name every node certificate carries and every client expects.
pub const DEFAULT_SERVER_NAME: &str = "tollgate-cluster";

/// This node's certificate chain and key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Identity {
    pub(crate) fn signing_key(&self) -> Result<Arc<dyn rustls::sign::SigningKey>, AuthError> {
        rustls::crypto::ring::sign::any_supported_type(&self.key)
            .map_err(|e| AuthError::Tls(format!("unusable private key: {e}")))
    }
}

/// Everything TLS needs on the cluster plane.
pub struct RpcTls {
    pub server: Arc<ServerConfig>,
    pub client: Arc<ClientConfig>,
    pub server_name: rustls::pki_types::ServerName<'static>,
    pub identity: Identity,
    /// Checks that a certificate chains to a trusted cluster CA (for gossip signatures too).
    pub verifier: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for RpcTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl std::fmt::Display) -> AuthError {
    AuthError::Tls(e.to_string())
}

/// PKCS#8 v1 wrapping of an Ed25519 seed (RFC 8410): the fixed ASN.1 prefix, then the seed.
fn ed25519_pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(seed);
    der
}

/// The CA a secret derives: the same key and certificate on every node that holds it.
fn derived_ca(key: &Key) -> Result<(rcgen::Certificate, KeyPair), AuthError> {
    let pkcs8 = PrivatePkcs8KeyDer::from(ed25519_pkcs8(&key.ca_seed));
    let ca_key =
        KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &rcgen::PKCS_ED25519).map_err(tls_err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("Tollgate cluster CA {}", hex(&key.id)),
    );
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.serial_number = Some(SerialNumber::from_slice(&key.id));
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2200, 1, 1);
    let cert = params.self_signed(&ca_key).map_err(tls_err)?;
    Ok((cert, ca_key))
}

fn node_params(names: Vec<String>, years: (i32, i32)) -> Result<CertificateParams, AuthError> {
    let mut params = CertificateParams::new(names).map_err(tls_err)?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.not_before = rcgen::date_time_ymd(years.0, 1, 1);
    params.not_after = rcgen::date_time_ymd(years.1, 1, 1);
    Ok(params)
}

fn this_year() -> i32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    1970 + (secs / 31_556_952) as i32
}

impl RpcTls {
    /// Secret mode: a fresh node certificate signed by the first secret's CA; every secret's
    /// CA is trusted.
    pub fn from_keyring(ring: &Keyring, server_name: &str) -> Result<RpcTls, AuthError> {
        let mut roots = RootCertStore::empty();
        for k in ring.keys() {
            let (ca, _) = derived_ca(k)?;
            roots.add(ca.der().clone()).map_err(tls_err)?;
        }
        let (ca, ca_key) = derived_ca(ring.primary())?;
        let leaf_key = KeyPair::generate().map_err(tls_err)?;
        // An ephemeral certificate (remade at every start): a wide validity spares clock-skew
        // trouble, and what it proves is only that its issuer holds the secret.
        let leaf = node_params(vec![server_name.to_string()], (2020, 2200))?
            .signed_by(&leaf_key, &ca, &ca_key)
            .map_err(tls_err)?;
        let identity = Identity {
            chain: vec![leaf.der().clone()],
            key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        };
        RpcTls::build(roots, identity, server_name)
    }

    /// PKI mode: the operator's certificate, key and CA, as PEM files.
    pub fn from_pem_files(
        cert: &Path,
        key: &Path,
        ca: &Path,
        server_name: &str,
    ) -> Result<RpcTls, AuthError> {
        use rustls::pki_types::pem::PemObject;
        let read = |p: &Path| {
            std::fs::read(p).map_err(|e| AuthError::Read {
                path: p.display().to_string(),
                error: e.to_string(),
            })
        };
        let bad = |p: &Path, what: &str| AuthError::Tls(format!("{}: {what}", p.display()));
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
            .collect::<Result<_, _>>()
            .map_err(|_| bad(cert, "not a PEM certificate chain"))?;
        if chain.is_empty() {
            return Err(bad(cert, "no certificate in it"));
        }
        let key_der = PrivateKeyDer::from_pem_slice(&read(key)?)
            .map_err(|_| bad(key, "not a PEM private key"))?;
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&read(ca)?) {
            let c = c.map_err(|_| bad(ca, "not a PEM certificate"))?;
            roots.add(c).map_err(|e| bad(ca, &e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad(ca, "no CA certificate in it"));
        }
        let identity = Identity {
            chain,
            key: key_der,
        };
        // Refuse to start with a certificate peers would refuse, rather than fail every call.
        RpcTls::build(roots, identity, server_name).map_err(|e| match e {
            AuthError::Tls(m) => AuthError::Tls(format!(
                "{} (with the CA in {}): {m}",
                cert.display(),
                ca.display()
            )),
            other => other,
        })
    }

    fn build(
        roots: RootCertStore,
        identity: Identity,
        server_name: &str,
    ) -> Result<RpcTls, AuthError> {
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|_| AuthError::Tls(format!("'{server_name}' is not a valid server name")))?;
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(tls_err)?;
        // Peers check our certificate as a server (the name, server authentication) and as a
        // client: one that would fail either is refused now, not at every call.
        let (end, rest) = identity
            .chain
            .split_first()
            .ok_or_else(|| AuthError::Tls("empty certificate chain".into()))?;
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(tls_err)?
            .verify_server_cert(end, rest, &name, &[], UnixTime::now())
            .map_err(|e| {
                AuthError::Tls(format!(
                    "the node certificate does not serve as '{server_name}' (name and server authentication): {e}"
                ))
            })?;
        verifier
            .verify_client_cert(end, rest, UnixTime::now())
            .map_err(|e| {
                AuthError::Tls(format!(
                    "the node certificate cannot authenticate as a client: {e}"
                ))
            })?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_client_cert_verifier(verifier.clone())
            .with_single_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(tls_err)?;
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_root_certificates(roots)
            .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
            .map_err(tls_err)?;
        Ok(RpcTls {
            server: Arc::new(server),
            client: Arc::new(client),
            server_name: name,
            identity,
            verifier,
        })
    }

    /// Whether `chain` (end entity first) leads to a trusted cluster CA.
    pub fn verify_chain(&self, chain: &[CertificateDer<'_>]) -> Result<(), AuthError> {
        let (end, rest) = chain
            .split_first()
            .ok_or_else(|| AuthError::Tls("empty certificate chain".into()))?;
        self.verifier
            .verify_client_cert(end, rest, UnixTime::now())
            .map(|_| ())
            .map_err(tls_err)
    }
}

/// What `tollgate cluster certs` writes.
pub struct PkiFiles {
    pub ca: std::path::PathBuf,
    pub ca_key: std::path::PathBuf,
    pub nodes: Vec<(std::path::PathBuf, std::path::PathBuf)>,
}

/// Makes a CA and `nodes` node certificates (10 years) in `out`: `ca.pem`, `ca-key.pem`,
/// `node-N.pem`, `node-N-key.pem`. Keys are written readable by their owner only.
pub fn make_pki(nodes: u32, out: &Path, server_name: &str) -> Result<PkiFiles, AuthError> {
    let write = |name: &str, text: &str, secret: bool| -> Result<std::path::PathBuf, AuthError> {
        let p = out.join(name);
        let io = |e: std::io::Error| AuthError::Read {
            path: p.display().to_string(),
            error: e.to_string(),
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        if secret {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = secret;
        let mut f = opts.open(&p).map_err(io)?;
        std::io::Write::write_all(&mut f, text.as_bytes()).map_err(io)?;
        Ok(p)
    };
    std::fs::create_dir_all(out).map_err(|e| AuthError::Read {
        path: out.display().to_string(),
        error: e.to_string(),
    })?;
    let year = this_year();
    let ca_key = KeyPair::generate().map_err(tls_err)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Tollgate cluster CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 10, 1, 1);
    let ca = params.self_signed(&ca_key).map_err(tls_err)?;
    let files = PkiFiles {
        ca: write("ca.pem", &ca.pem(), false)?,
        ca_key: write("ca-key.pem", &ca_key.serialize_pem(), true)?,
        nodes: (1..=nodes)
            .map(|n| {
                let key = KeyPair::generate().map_err(tls_err)?;
                let names = vec![server_name.to_string(), format!("node-{n}")];
                let cert = node_params(names, (year - 1, year + 10))?
                    .signed_by(&key, &ca, &ca_key)
                    .map_err(tls_err)?;
                Ok((
                    write(&format!("node-{n}.pem"), &cert.pem(), false)?,
                    write(&format!("node-{n}-key.pem"), &key.serialize_pem(), true)?,
                ))
            })
            .collect::<Result<_, AuthError>>()?,
    };
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keyring;

    #[test]
    fn nodes_with_one_secret_trust_each_other_and_no_one_else() {
        let s = keyring::generate();
        let a = RpcTls::from_keyring(&Keyring::parse(&s).unwrap(), DEFAULT_SERVER_NAME).unwrap();
        let b = RpcTls::from_keyring(&Keyring::parse(&s).unwrap(), DEFAULT_SERVER_NAME).unwrap();
        assert!(a.verify_chain(&b.identity.chain).is_ok());
        let other = RpcTls::from_keyring(
            &Keyring::parse(&keyring::generate()).unwrap(),
            DEFAULT_SERVER_NAME,
        )
        .unwrap();
        assert!(a.verify_chain(&other.identity.chain).is_err());
        // During a rotation a node holding both secrets trusts both sides.
        let both = Keyring::parse(&format!("{}\n{s}", keyring::generate())).unwrap();
        let rotating = RpcTls::from_keyring(&both, DEFAULT_SERVER_NAME).unwrap();
        assert!(rotating.verify_chain(&a.identity.chain).is_ok());
        assert!(a.verify_chain(&rotating.identity.chain).is_err());
    }

    #[test]
    fn generated_pki_loads_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let files = make_pki(2, dir.path(), DEFAULT_SERVER_NAME).unwrap();
        let load = |i: usize| {
            RpcTls::from_pem_files(
                &files.nodes[i].0,
                &files.nodes[i].1,
                &files.ca,
                DEFAULT_SERVER_NAME,
            )
            .unwrap()
        };
        let (n1, n2) = (load(0), load(1));
        assert!(n1.verify_chain(&n2.identity.chain).is_ok());
        // A certificate from another CA is refused at start.
        let other = tempfile::tempdir().unwrap();
        let o = make_pki(1, other.path(), DEFAULT_SERVER_NAME).unwrap();
        let e = RpcTls::from_pem_files(&o.nodes[0].0, &o.nodes[0].1, &files.ca, "tollgate-cluster")
            .unwrap_err();
        assert!(e.to_string().contains("invalid peer certificate"), "{e}");
        // A certificate without the cluster's name is refused at start too.
        let e = RpcTls::from_pem_files(
            &files.nodes[0].0,
            &files.nodes[0].1,
            &files.ca,
            "other-name",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("does not serve as 'other-name'"),
            "{e}"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.ca_key)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "keys are private to their owner");
        }
    }
}
