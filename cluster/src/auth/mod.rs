//! Who may take part in the cluster.
//!
//! Two listeners face other nodes: the cluster listener (TCP: Raft, forwarded writes, read
//! indexes, membership) and gossip (UDP: discovery, joining, rate-limit counters). Anyone who
//! can talk to them unauthenticated can change configuration or become a voter, so a node
//! whose cluster or gossip listener is not on loopback refuses to start without credentials:
//!
//! - **A shared secret** (`--cluster-secret-file`, see [`keyring`]): gossip is sealed with
//!   AEAD ([`seal`]) and RPCs run over mutually authenticated TLS with certificates from a CA
//!   the secret derives ([`tls`]).
//! - **PKI** (`--cluster-tls-cert`, `--cluster-tls-key`, `--cluster-tls-ca`): RPCs over mutual
//!   TLS with the operator's certificates; gossip is signed with the node's key (authenticated,
//!   not encrypted) unless a secret is given too, which then seals gossip.
//!
//! Guarantees (with credentials): a peer without them cannot read gossip (secret mode), cannot
//! make gossip accepted, cannot complete a TLS handshake, and therefore is never seen as a
//! live node, never added as a learner or voter, and never has an RPC served. Refusals are
//! recorded ([`rejections`]) and shown by `GET /cluster`. A recorded TLS session cannot be
//! replayed (TLS 1.3); a recorded gossip datagram is refused after [`seal::MAX_SKEW`], and
//! within it changes nothing (versioned state).

pub mod keyring;
pub mod rejections;
pub mod seal;
pub mod tls;

use std::path::PathBuf;
use std::sync::Arc;

pub use keyring::Keyring;
pub use rejections::{Plane, Rejection, Rejections};
pub use seal::Sealer;
pub use tls::{RpcTls, DEFAULT_SERVER_NAME};

/// Credentials that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read {path}: {error}")]
    Read { path: String, error: String },
    #[error("cluster secret file, line {line}: not a secret (base64 of at least 32 random bytes; `tollgate cluster secret` makes one)")]
    BadSecret { line: usize },
    #[error("cluster secret file holds no secret")]
    NoSecret,
    #[error("cluster TLS: {0}")]
    Tls(String),
    #[error("--cluster-tls-cert, --cluster-tls-key and --cluster-tls-ca go together")]
    IncompletePki,
}

/// The credential flags, as given.
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub secret_file: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    pub server_name: String,
}

/// How this node authenticates the cluster plane.
pub struct ClusterAuth {
    /// TLS on the cluster listener and for calls to peers; `None`: plain HTTP (loopback only).
    pub rpc: Option<Arc<RpcTls>>,
    /// Gossip sealing; `None`: plain chitchat datagrams (loopback only).
    pub gossip: Option<Arc<Sealer>>,
    pub rejections: Arc<Rejections>,
    /// `none`, `secret`, `pki` or `pki+secret`, for logs and `GET /cluster`.
    pub mode: &'static str,
}

impl ClusterAuth {
    /// Builds the credentials from the flags; no flags, no credentials.
    pub fn from_flags(f: &Flags) -> Result<ClusterAuth, AuthError> {
        let name = if f.server_name.is_empty() {
            DEFAULT_SERVER_NAME
        } else {
            f.server_name.as_str()
        };
        let ring = f
            .secret_file
            .as_deref()
            .map(Keyring::load)
            .transpose()?
            .map(Arc::new);
        let pki = match (&f.tls_cert, &f.tls_key, &f.tls_ca) {
            (None, None, None) => None,
            (Some(c), Some(k), Some(ca)) => Some(Arc::new(RpcTls::from_pem_files(c, k, ca, name)?)),
            _ => return Err(AuthError::IncompletePki),
        };
        let (rpc, gossip, mode) = match (pki, ring) {
            (None, None) => (None, None, "none"),
            (None, Some(ring)) => (
                Some(Arc::new(RpcTls::from_keyring(&ring, name)?)),
                Some(Arc::new(Sealer::Aead(ring))),
                "secret",
            ),
            (Some(tls), Some(ring)) => {
                (Some(tls), Some(Arc::new(Sealer::Aead(ring))), "pki+secret")
            }
            (Some(tls), None) => {
                let signed = seal::Signed::new(tls.clone())?;
                (Some(tls), Some(Arc::new(Sealer::Signed(signed))), "pki")
            }
        };
        Ok(ClusterAuth {
            rpc,
            gossip,
            rejections: Arc::default(),
            mode,
        })
    }

    /// Whether peers must prove who they are.
    pub fn is_enabled(&self) -> bool {
        self.rpc.is_some()
    }
}

impl Default for ClusterAuth {
    fn default() -> ClusterAuth {
        ClusterAuth {
            rpc: None,
            gossip: None,
            rejections: Arc::default(),
            mode: "none",
        }
    }
}
