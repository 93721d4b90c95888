//! The certificates the TLS listeners present.
//!
//! [`CertStore`] is compiled from the configuration into each snapshot: every certificate
//! parsed once (a later snapshot reuses the parsed pair while the certificate's PEM text is
//! unchanged) and indexed by its SNIs. [`SniResolver`] picks a pair per handshake from the
//! snapshot current at that moment: a handshake never waits on configuration, and a
//! certificate written through any node is presented by every node as soon as its snapshot
//! has it.
//!
//! Selection is Kong's (`kong/runloop/certificate.lua`), first match wins:
//! 1. the exact SNI;
//! 2. `*.` and the SNI without its first label (one level: `*.example.test` serves
//!    `a.example.test`, not `b.a.example.test`);
//! 3. the SNI without its last label and `.*` (`example.*` serves `example.test`);
//! 4. an SNI named `*`;
//! 5. the default certificate (flags, or self-signed in the data dir).
//!
//! A client without SNI gets the default. Each certificate may hold an alternate pair of the
//! other key type: an ECDSA pair is served to clients that accept ECDSA signatures, the RSA
//! pair to the others.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use tollgate_config::entities::{Certificate, Sni};
use tollgate_config::{x509, State};
use uuid::Uuid;

use crate::snapshot::SnapshotHandle;

/// One certificate's pairs: the main one, and the alternate of the other key type.
#[derive(Debug)]
pub struct Pair {
    main: Arc<CertifiedKey>,
    main_is_ecdsa: bool,
    alt: Option<Arc<CertifiedKey>>,
}

impl Pair {
    /// Builds the pair from PEM texts; the message never quotes a key.
    pub fn from_pem(cert: &str, key: &str, alt: Option<(&str, &str)>) -> Result<Pair, String> {
        let one = |c: &str, k: &str| -> Result<(Arc<CertifiedKey>, bool), String> {
            let parsed = x509::certificate(c)?;
            let key = x509::key(k)?;
            if !key.matches(&parsed) {
                return Err("certificate does not match key".into());
            }
            let ecdsa = key.key_type() == x509::KeyType::Ecdsa;
            Ok((Arc::new(CertifiedKey::new(parsed.chain, key.signer)), ecdsa))
        };
        let (main, main_is_ecdsa) = one(cert, key)?;
        let alt = match alt {
            Some((c, k)) => Some(one(c, k)?.0),
            None => None,
        };
        Ok(Pair {
            main,
            main_is_ecdsa,
            alt,
        })
    }

    /// The pair for a client: ECDSA when it takes ECDSA signatures and can use them with a
    /// suite it offers (any TLS 1.3 suite, or a TLS 1.2 `ECDHE_ECDSA` one), else the other.
    fn choose(
        &self,
        schemes: &[SignatureScheme],
        suites: &[rustls::CipherSuite],
    ) -> Arc<CertifiedKey> {
        let Some(alt) = &self.alt else {
            return self.main.clone();
        };
        let ecdsa_signatures = schemes.iter().any(|s| {
            matches!(
                s,
                SignatureScheme::ECDSA_NISTP256_SHA256
                    | SignatureScheme::ECDSA_NISTP384_SHA384
                    | SignatureScheme::ECDSA_NISTP521_SHA512
            )
        });
        // TLS 1.3 suites (0x1301-0x1305), and TLS 1.2's ECDHE_ECDSA ones (AES-GCM, ChaCha20,
        // AES-CBC).
        let ecdsa_suite = suites.iter().any(|s| {
            matches!(
                u16::from(*s),
                0x1301..=0x1305 | 0xC02B | 0xC02C | 0xCCA9 | 0xC009 | 0xC00A | 0xC023 | 0xC024
            )
        });
        let takes_ecdsa = ecdsa_signatures && ecdsa_suite;
        if takes_ecdsa == self.main_is_ecdsa {
            self.main.clone()
        } else {
            alt.clone()
        }
    }
}

/// The configured certificates, indexed for Kong's SNI order.
#[derive(Default)]
pub struct CertStore {
    /// Parsed pairs by certificate id, with the PEM texts they came from (for reuse).
    parsed: HashMap<Uuid, (Certificate, Arc<Pair>)>,
    exact: HashMap<String, Arc<Pair>>,
    /// `*.rest`, keyed by `rest`.
    leading: HashMap<String, Arc<Pair>>,
    /// `name.*`, keyed by `name`.
    trailing: HashMap<String, Arc<Pair>>,
    star: Option<Arc<Pair>>,
    /// The SNIs it was built from, in the state's order, for [`CertStore::built_from`].
    snis: Vec<(String, Uuid)>,
}

impl CertStore {
    /// Compiles the store for `state`, reusing `prev`'s parsed pairs.
    pub fn build(state: &State, prev: &CertStore) -> CertStore {
        let mut store = CertStore::default();
        for c in state.all::<Certificate>() {
            let reused = prev
                .parsed
                .get(&c.id)
                .filter(|(from, _)| from == c)
                .map(|(_, p)| p.clone());
            let pair = match reused {
                Some(p) => p,
                None => {
                    let alt = c.cert_alt.as_deref().zip(c.key_alt.as_deref());
                    match Pair::from_pem(&c.cert, &c.key, alt) {
                        Ok(p) => Arc::new(p),
                        Err(e) => {
                            // Checked when written; this is a build that reads it otherwise.
                            tracing::error!(certificate = %c.id, error = %e, "certificate cannot be served");
                            continue;
                        }
                    }
                }
            };
            store.parsed.insert(c.id, (c.clone(), pair));
        }
        for s in state.all::<Sni>() {
            let Some((_, pair)) = store.parsed.get(&s.certificate.id) else {
                continue;
            };
            let pair = pair.clone();
            store.snis.push((s.name.clone(), s.certificate.id));
            let name = s.name.to_ascii_lowercase();
            if name == "*" {
                store.star = Some(pair);
            } else if let Some(rest) = name.strip_prefix("*.") {
                store.leading.insert(rest.to_string(), pair);
            } else if let Some(head) = name.strip_suffix(".*") {
                store.trailing.insert(head.to_string(), pair);
            } else {
                store.exact.insert(name, pair);
            }
        }
        store
    }

    /// The pair for a server name (lower-case), in Kong's order; `None` means the default.
    pub fn find(&self, sni: &str) -> Option<&Arc<Pair>> {
        self.exact
            .get(sni)
            .or_else(|| {
                let (_, rest) = sni.split_once('.')?;
                self.leading.get(rest)
            })
            .or_else(|| {
                let (head, _) = sni.rsplit_once('.')?;
                self.trailing.get(head)
            })
            .or(self.star.as_ref())
    }

    /// Whether the store holds exactly `state`'s certificates and SNIs (then a new snapshot
    /// keeps it as it is).
    pub fn built_from(&self, state: &State) -> bool {
        let certs_same = state.count(tollgate_config::EntityKind::Certificate) == self.parsed.len()
            && state
                .all::<Certificate>()
                .all(|c| self.parsed.get(&c.id).is_some_and(|(from, _)| from == c));
        let mut snis = self.snis.iter();
        certs_same
            && state.all::<Sni>().all(|s| {
                snis.next()
                    .is_some_and(|(n, c)| *n == s.name && *c == s.certificate.id)
            })
            && snis.next().is_none()
    }

    /// Number of certificates ready to serve.
    pub fn len(&self) -> usize {
        self.parsed.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parsed.is_empty()
    }
}

/// Picks the certificate for each handshake from the current snapshot.
#[derive(Debug)]
pub struct SniResolver {
    pub snapshots: Arc<SnapshotHandle>,
    pub default: Arc<Pair>,
}

impl std::fmt::Debug for SnapshotHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SnapshotHandle")
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let snap = self.snapshots.load();
        let found = hello.server_name().and_then(|n| {
            if n.bytes().any(|b| b.is_ascii_uppercase()) {
                snap.certs.find(&n.to_ascii_lowercase()).cloned()
            } else {
                snap.certs.find(n).cloned()
            }
        });
        let pair = found.unwrap_or_else(|| self.default.clone());
        Some(pair.choose(hello.signature_schemes(), hello.cipher_suites()))
    }
}

/// Where the default certificate lives in the data dir.
fn default_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("default.crt"), dir.join("default.key"))
}

/// Why the default certificate could not be had.
#[derive(Debug, thiserror::Error)]
pub enum DefaultCertError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Invalid(PathBuf, String),
    #[error("cannot generate a certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// The default certificate: the given files (Kong's `ssl_cert`/`ssl_cert_key`), or a
/// self-signed ECDSA certificate made on first start and kept in the data dir (its key
/// readable by the owner only).
pub fn default_pair(
    data_dir: &Path,
    given: Option<(&Path, &Path)>,
) -> Result<Pair, DefaultCertError> {
    let (cert_path, key_path) = match given {
        Some((c, k)) => (c.to_path_buf(), k.to_path_buf()),
        None => {
            let (c, k) = default_paths(data_dir);
            if !c.exists() || !k.exists() {
                generate(&c, &k)?;
            }
            (c, k)
        }
    };
    let read =
        |p: &Path| std::fs::read_to_string(p).map_err(|e| DefaultCertError::Read(p.into(), e));
    let (cert, key) = (read(&cert_path)?, read(&key_path)?);
    Pair::from_pem(&cert, &key, None).map_err(|e| DefaultCertError::Invalid(cert_path, e))
}

fn generate(cert_path: &Path, key_path: &Path) -> Result<(), DefaultCertError> {
    let dir = cert_path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| DefaultCertError::Write(dir.into(), e))?;
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2099, 12, 31);
    let key = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    write_private(key_path, key.serialize_pem().as_bytes())?;
    std::fs::write(cert_path, cert.pem())
        .map_err(|e| DefaultCertError::Write(cert_path.into(), e))?;
    tracing::info!(path = %cert_path.display(), "generated a self-signed default TLS certificate");
    Ok(())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), DefaultCertError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| DefaultCertError::Write(path.into(), e))?;
    // The mode given at open applies only to a new file: an existing one is tightened too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| DefaultCertError::Write(path.into(), e))?;
    }
    f.write_all(bytes)
        .map_err(|e| DefaultCertError::Write(path.into(), e))
}

/// A server config presenting certificates through `resolver`, TLS 1.2 and 1.3, with ALPN
/// `h2` then `http/1.1`.
pub fn server_config(resolver: Arc<SniResolver>, alpn_h2: bool) -> Arc<rustls::ServerConfig> {
    let mut config = rustls::ServerConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = if alpn_h2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Arc::new(config)
}
