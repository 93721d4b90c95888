//! Sealing gossip datagrams, and opening what peers send.
//!
//! Two kinds, named by the datagram's header:
//! - **AEAD** (secret mode): XChaCha20-Poly1305 under the sending secret's gossip key, random
//!   192-bit nonces (no nonce state to lose on restart), the key id and header as associated
//!   data. Authenticated and encrypted: without a secret of the keyring nothing is read or
//!   accepted.
//! - **Signed** (PKI mode without a secret): the plaintext, the sender's certificate and its
//!   signature over both. Authenticated, not encrypted. Certificates are checked against the
//!   cluster CA once and remembered by fingerprint.
//!
//! Both carry the sender's clock (ms), and a datagram more than [`MAX_SKEW`] away from ours is
//! refused: a recorded datagram cannot be replayed later. Within the window, [`Replays`]
//! remembers every datagram accepted (by nonce or signature) and refuses a second copy, from
//! whatever source address it comes: a captured datagram cannot be reflected off the cluster.
//!
//! A sealed datagram can exceed the largest UDP payload (chitchat fills datagrams up to it):
//! such a datagram is sent as [`fragment`]s, which [`Reassembler`] puts back together within
//! bounds of count, size and time. Fragments are not authenticated one by one; the whole is,
//! once reassembled, so a forged fragment only wastes a bounded buffer.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::XNonce;
use rustls::pki_types::CertificateDer;
use rustls::SignatureScheme;
use sha2::{Digest, Sha256};

use super::keyring::Keyring;
use super::tls::RpcTls;
use super::AuthError;

/// Largest UDP payload over IPv4.
pub const MAX_DATAGRAM: usize = 65_507;
/// Farthest a datagram's clock may be from ours.
pub const MAX_SKEW: Duration = Duration::from_secs(120);

const MAGIC: [u8; 2] = *b"TG";
const VERSION: u8 = 1;
const KIND_AEAD: u8 = 1;
const KIND_SIGNED: u8 = 2;
const KIND_FRAGMENT: u8 = 3;
const AEAD_HEADER: usize = 2 + 1 + 1 + 4;
const NONCE: usize = 24;
const SIGNED_CONTEXT: &[u8] = b"tollgate gossip v1\0";
/// Largest certificate chain a signed datagram may carry.
const MAX_CHAIN: usize = 16 * 1024;

/// Why a datagram was refused (recorded as the reason in [`super::rejections`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("not a sealed Tollgate datagram (no credentials, or another protocol)")]
    NotSealed,
    #[error("sealed with a secret this node does not hold")]
    UnknownKey,
    #[error("failed authentication (wrong secret or altered)")]
    BadTag,
    #[error("truncated or malformed")]
    Malformed,
    #[error("certificate not signed by the cluster CA")]
    UntrustedCertificate,
    #[error("bad signature")]
    BadSignature,
    #[error("clock {0} ms away from ours: replayed, or clocks out of step")]
    Stale(i64),
    #[error("sealed in the other mode (AEAD vs signed): the nodes' credentials differ")]
    WrongMode,
    #[error("already received (a replay)")]
    Replayed,
}

/// What opening a datagram gives: the plaintext, and what names this datagram among all
/// others (its nonce, or its signature's digest) for [`Replays`].
#[derive(Debug, PartialEq, Eq)]
pub struct Opened {
    pub plain: Vec<u8>,
    pub id: [u8; 16],
}

/// The datagrams accepted within the clock window, to refuse copies of them.
#[derive(Default)]
pub struct Replays {
    seen: HashSet<[u8; 16]>,
    order: std::collections::VecDeque<(u64, [u8; 16])>,
}

impl Replays {
    /// Most datagrams remembered: far above what a cluster gossips in the window (tens per
    /// second per node); past it the oldest are forgotten.
    pub const MAX: usize = 65_536;

    /// Records `o`, or refuses it as a copy of one already accepted.
    pub fn check(&mut self, o: &Opened, now_ms: u64) -> Result<(), OpenError> {
        let horizon = now_ms.saturating_sub(2 * MAX_SKEW.as_millis() as u64);
        while let Some((t, id)) = self.order.front().copied() {
            if t >= horizon && self.order.len() < Self::MAX {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&id);
        }
        if !self.seen.insert(o.id) {
            return Err(OpenError::Replayed);
        }
        self.order.push_back((now_ms, o.id));
        Ok(())
    }
}

/// How this node seals and opens gossip.
pub enum Sealer {
    Aead(Arc<Keyring>),
    Signed(Signed),
}

/// PKI-mode signing: this node's certificate and key, and the CA check for peers'.
pub struct Signed {
    tls: Arc<RpcTls>,
    key: Arc<dyn rustls::sign::SigningKey>,
    /// Certificate chains already found to lead to the CA, by fingerprint, with when: they
    /// are checked again after [`Signed::RECHECK`] (expiry).
    trusted: Mutex<HashMap<[u8; 32], Instant>>,
    /// This node's chain as sent: each certificate (end entity first) with its length.
    chain: Vec<u8>,
}

const SCHEMES: [SignatureScheme; 4] = [
    SignatureScheme::ED25519,
    SignatureScheme::ECDSA_NISTP256_SHA256,
    SignatureScheme::ECDSA_NISTP384_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
];

fn verification_alg(
    s: u16,
) -> Option<&'static dyn rustls::pki_types::SignatureVerificationAlgorithm> {
    Some(match SignatureScheme::from(s) {
        SignatureScheme::ED25519 => webpki::ring::ED25519,
        SignatureScheme::ECDSA_NISTP256_SHA256 => webpki::ring::ECDSA_P256_SHA256,
        SignatureScheme::ECDSA_NISTP384_SHA384 => webpki::ring::ECDSA_P384_SHA384,
        SignatureScheme::RSA_PSS_SHA256 => webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        _ => return None,
    })
}

impl Signed {
    pub fn new(tls: Arc<RpcTls>) -> Result<Signed, AuthError> {
        let key = tls.identity.signing_key()?;
        if key.choose_scheme(&SCHEMES).is_none() {
            return Err(AuthError::Tls(
                "the node key cannot sign gossip (use an Ed25519, ECDSA P-256/P-384 or RSA key)"
                    .into(),
            ));
        }
        let mut chain = Vec::new();
        for c in &tls.identity.chain {
            chain.extend_from_slice(&(c.len() as u16).to_be_bytes());
            chain.extend_from_slice(c);
        }
        if chain.len() > MAX_CHAIN {
            return Err(AuthError::Tls(format!(
                "the certificate chain is {} bytes; gossip carries at most {MAX_CHAIN}",
                chain.len()
            )));
        }
        Ok(Signed {
            tls,
            key,
            trusted: Mutex::new(HashMap::new()),
            chain,
        })
    }

    /// How long a verified chain is trusted before it is checked again.
    pub const RECHECK: Duration = Duration::from_secs(600);
}

/// A reader over a datagram that fails with [`OpenError::Malformed`] instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], OpenError> {
        if self.0.len() < n {
            return Err(OpenError::Malformed);
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, OpenError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, OpenError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

fn check_clock(sent_ms: u64, now_ms: u64) -> Result<(), OpenError> {
    let off = now_ms.abs_diff(sent_ms);
    if off > MAX_SKEW.as_millis() as u64 {
        let off = i64::try_from(off).unwrap_or(i64::MAX);
        return Err(OpenError::Stale(if now_ms >= sent_ms { off } else { -off }));
    }
    Ok(())
}

impl Sealer {
    /// Seals `plain` as sent at `now_ms`.
    pub fn seal(&self, plain: &[u8], now_ms: u64) -> Vec<u8> {
        match self {
            Sealer::Aead(ring) => {
                let key = ring.primary();
                let mut out = Vec::with_capacity(AEAD_HEADER + NONCE + 8 + plain.len() + 16);
                out.extend_from_slice(&MAGIC);
                out.extend_from_slice(&[VERSION, KIND_AEAD]);
                out.extend_from_slice(&key.id);
                let mut nonce = [0u8; NONCE];
                rand::Rng::fill(&mut rand::rng(), &mut nonce[..]);
                let mut msg = Vec::with_capacity(8 + plain.len());
                msg.extend_from_slice(&now_ms.to_be_bytes());
                msg.extend_from_slice(plain);
                // Encryption with a valid key and nonce cannot fail for a buffer this size.
                let ct = key
                    .aead
                    .encrypt(
                        XNonce::from_slice(&nonce),
                        Payload {
                            msg: &msg,
                            aad: &out[..AEAD_HEADER],
                        },
                    )
                    .unwrap_or_default();
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&ct);
                out
            }
            Sealer::Signed(s) => {
                let cert = s.chain.as_slice();
                let mut signed =
                    Vec::with_capacity(SIGNED_CONTEXT.len() + cert.len() + 8 + plain.len());
                signed.extend_from_slice(SIGNED_CONTEXT);
                signed.extend_from_slice(cert);
                signed.extend_from_slice(&now_ms.to_be_bytes());
                signed.extend_from_slice(plain);
                let signer = s.key.choose_scheme(&SCHEMES).expect("checked at start");
                let sig = signer.sign(&signed).unwrap_or_default();
                let mut out = Vec::with_capacity(12 + cert.len() + sig.len() + 8 + plain.len());
                out.extend_from_slice(&MAGIC);
                out.extend_from_slice(&[VERSION, KIND_SIGNED]);
                out.extend_from_slice(&(cert.len() as u16).to_be_bytes());
                out.extend_from_slice(cert);
                out.extend_from_slice(&u16::from(signer.scheme()).to_be_bytes());
                out.extend_from_slice(&(sig.len() as u16).to_be_bytes());
                out.extend_from_slice(&sig);
                out.extend_from_slice(&now_ms.to_be_bytes());
                out.extend_from_slice(plain);
                out
            }
        }
    }

    /// Opens a whole (reassembled) datagram received at `now_ms`: the plaintext, or why not.
    /// Copies are caught by [`Replays`], which the caller keeps.
    pub fn open(&self, datagram: &[u8], now_ms: u64) -> Result<Opened, OpenError> {
        let mut r = Reader(datagram);
        let head = r.take(4).map_err(|_| OpenError::NotSealed)?;
        if head[..2] != MAGIC || head[2] != VERSION {
            return Err(OpenError::NotSealed);
        }
        match (self, head[3]) {
            (Sealer::Aead(ring), KIND_AEAD) => {
                let id: [u8; 4] = r.take(4)?.try_into().expect("4 bytes");
                let key = ring.by_id(&id).ok_or(OpenError::UnknownKey)?;
                let nonce = r.take(NONCE)?;
                let tag: [u8; 16] = nonce[..16].try_into().expect("24-byte nonce");
                let msg = key
                    .aead
                    .decrypt(
                        XNonce::from_slice(nonce),
                        Payload {
                            msg: r.0,
                            aad: &datagram[..AEAD_HEADER],
                        },
                    )
                    .map_err(|_| OpenError::BadTag)?;
                let mut m = Reader(&msg);
                check_clock(m.u64()?, now_ms)?;
                Ok(Opened {
                    plain: m.0.to_vec(),
                    id: tag,
                })
            }
            (Sealer::Signed(s), KIND_SIGNED) => {
                let cert_len = r.u16()? as usize;
                if cert_len > MAX_CHAIN {
                    return Err(OpenError::Malformed);
                }
                // The sender's chain: certificates, end entity first, each with its length.
                let cert = r.take(cert_len)?;
                let mut certs = Vec::new();
                let mut c = Reader(cert);
                while !c.0.is_empty() {
                    let n = c.u16()? as usize;
                    certs.push(CertificateDer::from(c.take(n)?));
                }
                let end_der = certs.first().cloned().ok_or(OpenError::Malformed)?;
                let scheme = r.u16()?;
                let sig_len = r.u16()? as usize;
                let sig = r.take(sig_len)?;
                let sent = r.u64()?;
                let plain = r.0;
                let fingerprint: [u8; 32] = Sha256::digest(cert).into();
                let now = Instant::now();
                let known = s
                    .trusted
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&fingerprint)
                    .is_some_and(|at| now.duration_since(*at) < Signed::RECHECK);
                if !known {
                    s.tls
                        .verify_chain(&certs)
                        .map_err(|_| OpenError::UntrustedCertificate)?;
                    let mut t = s.trusted.lock().unwrap_or_else(|e| e.into_inner());
                    if t.len() >= 1024 {
                        t.clear();
                    }
                    t.insert(fingerprint, now);
                }
                let alg = verification_alg(scheme).ok_or(OpenError::BadSignature)?;
                let end = webpki::EndEntityCert::try_from(&end_der)
                    .map_err(|_| OpenError::UntrustedCertificate)?;
                let mut signed =
                    Vec::with_capacity(SIGNED_CONTEXT.len() + cert.len() + 8 + plain.len());
                signed.extend_from_slice(SIGNED_CONTEXT);
                signed.extend_from_slice(cert);
                signed.extend_from_slice(&sent.to_be_bytes());
                signed.extend_from_slice(plain);
                end.verify_signature(alg, &signed, sig)
                    .map_err(|_| OpenError::BadSignature)?;
                check_clock(sent, now_ms)?;
                let id: [u8; 32] = Sha256::digest(sig).into();
                Ok(Opened {
                    plain: plain.to_vec(),
                    id: id[..16].try_into().expect("32-byte digest"),
                })
            }
            (_, KIND_AEAD | KIND_SIGNED) => Err(OpenError::WrongMode),
            _ => Err(OpenError::NotSealed),
        }
    }
}

/// Most fragments one datagram is split into (4 × 64 KiB covers any sealed datagram).
pub const MAX_FRAGMENTS: usize = 4;
const FRAGMENT_HEADER: usize = 2 + 1 + 1 + 8 + 1 + 1;

/// Splits a sealed datagram that exceeds [`MAX_DATAGRAM`]; a smaller one goes as it is.
pub fn fragment(sealed: Vec<u8>) -> Vec<Vec<u8>> {
    if sealed.len() <= MAX_DATAGRAM {
        return vec![sealed];
    }
    let chunk = MAX_DATAGRAM - FRAGMENT_HEADER;
    let count = sealed.len().div_ceil(chunk);
    if count > MAX_FRAGMENTS {
        // Cannot happen: chitchat's datagrams are at most MAX_DATAGRAM before sealing.
        return Vec::new();
    }
    let id: u64 = rand::random();
    sealed
        .chunks(chunk)
        .enumerate()
        .map(|(i, part)| {
            let mut f = Vec::with_capacity(FRAGMENT_HEADER + part.len());
            f.extend_from_slice(&MAGIC);
            f.extend_from_slice(&[VERSION, KIND_FRAGMENT]);
            f.extend_from_slice(&id.to_be_bytes());
            f.extend_from_slice(&[i as u8, count as u8]);
            f.extend_from_slice(part);
            f
        })
        .collect()
}

/// Puts fragments back together: at most [`Reassembler::MAX_PENDING`] datagrams in progress,
/// each dropped if not complete within [`Reassembler::TIMEOUT`].
#[derive(Default)]
pub struct Reassembler {
    pending: HashMap<(SocketAddr, u64), Partial>,
}

/// The datagram in progress that started first, among all or among one source IP's.
fn oldest(
    pending: &HashMap<(SocketAddr, u64), Partial>,
    from: Option<std::net::IpAddr>,
) -> Option<(SocketAddr, u64)> {
    pending
        .iter()
        .filter(|((a, _), _)| from.is_none_or(|ip| a.ip() == ip))
        .min_by_key(|(_, (t, _))| *t)
        .map(|(k, _)| *k)
}

/// When the first fragment came, and the fragments so far by index.
type Partial = (Instant, Vec<Option<Vec<u8>>>);

impl Reassembler {
    /// Datagrams in progress in all, and from one source IP (forged first fragments from one
    /// address cannot push out everyone else's).
    pub const MAX_PENDING: usize = 64;
    pub const MAX_PENDING_PER_SOURCE: usize = 4;
    pub const TIMEOUT: Duration = Duration::from_secs(5);

    /// Takes one received datagram: a whole one back at once, a fragment held until its
    /// datagram is complete.
    pub fn push(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Result<Option<Vec<u8>>, OpenError> {
        if datagram.len() < 4 || datagram[..2] != MAGIC || datagram[3] != KIND_FRAGMENT {
            return Ok(Some(datagram.to_vec()));
        }
        let mut r = Reader(&datagram[4..]);
        let id = r.u64()?;
        let idx = r.take(1)?[0] as usize;
        let count = r.take(1)?[0] as usize;
        if !(2..=MAX_FRAGMENTS).contains(&count) || idx >= count {
            return Err(OpenError::Malformed);
        }
        self.pending
            .retain(|_, (started, _)| now.duration_since(*started) < Self::TIMEOUT);
        let key = (from, id);
        if !self.pending.contains_key(&key) {
            let from_here = self
                .pending
                .keys()
                .filter(|(a, _)| a.ip() == from.ip())
                .count();
            let evict = if from_here >= Self::MAX_PENDING_PER_SOURCE {
                oldest(&self.pending, Some(from.ip()))
            } else if self.pending.len() >= Self::MAX_PENDING {
                oldest(&self.pending, None)
            } else {
                None
            };
            if let Some(k) = evict {
                self.pending.remove(&k);
            }
        }
        let entry = self
            .pending
            .entry(key)
            .or_insert_with(|| (now, vec![None; count]));
        if entry.1.len() != count {
            self.pending.remove(&key);
            return Err(OpenError::Malformed);
        }
        entry.1[idx] = Some(r.0.to_vec());
        if entry.1.iter().all(Option::is_some) {
            let (_, parts) = self.pending.remove(&key).expect("present");
            return Ok(Some(parts.into_iter().flatten().flatten().collect()));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::auth::keyring;
    use proptest::prelude::*;

    proptest! {
        /// Any datagram is opened or refused with a reason, and any run of datagrams keeps the
        /// reassembly buffers within their bounds.
        #[test]
        fn fuzz_datagrams_open_or_are_refused(
            datagrams in proptest::collection::vec(
                prop_oneof![
                    proptest::collection::vec(any::<u8>(), 0..200),
                    (proptest::collection::vec(any::<u8>(), 0..200), 1u8..4)
                        .prop_map(|(mut v, kind)| { let mut d = b"TG\x01".to_vec(); d.push(kind); d.append(&mut v); d }),
                ],
                0..30,
            )
        ) {
            let sealer = Sealer::Aead(Arc::new(Keyring::parse(&keyring::generate()).unwrap()));
            let mut r = Reassembler::default();
            let from: SocketAddr = "10.0.0.1:1".parse().unwrap();
            for d in &datagrams {
                prop_assert!(sealer.open(d, 1_800_000_000_000).is_err());
                let _ = r.push(from, d, Instant::now());
                prop_assert!(r.pending.len() <= Reassembler::MAX_PENDING);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keyring;
    use crate::auth::tls::{make_pki, DEFAULT_SERVER_NAME};

    const NOW: u64 = 1_800_000_000_000;

    fn aead(secrets: &str) -> Sealer {
        Sealer::Aead(Arc::new(Keyring::parse(secrets).unwrap()))
    }

    #[test]
    fn aead_round_trips_and_refuses_strangers_tampering_and_replays() {
        let s = keyring::generate();
        let (a, b) = (aead(&s), aead(&s));
        let sealed = a.seal(b"hello gossip", NOW);
        assert!(!sealed.windows(5).any(|w| w == b"hello"), "encrypted");
        assert_eq!(b.open(&sealed, NOW + 1000).unwrap().plain, b"hello gossip");
        assert_eq!(
            aead(&keyring::generate()).open(&sealed, NOW),
            Err(OpenError::UnknownKey)
        );
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x40;
            assert!(b.open(&bad, NOW).is_err(), "flip at byte {i} accepted");
        }
        let late = NOW + MAX_SKEW.as_millis() as u64 + 1;
        assert!(matches!(b.open(&sealed, late), Err(OpenError::Stale(_))));
        assert_eq!(
            b.open(b"\x33\xb0\x00\x00garbage", NOW),
            Err(OpenError::NotSealed)
        );
        assert_eq!(b.open(&sealed[..20], NOW), Err(OpenError::Malformed));
    }

    #[test]
    fn a_copy_of_an_accepted_datagram_is_refused_from_any_source() {
        let s = keyring::generate();
        let (a, b) = (aead(&s), aead(&s));
        let mut replays = Replays::default();
        let sealed = a.seal(b"syn", NOW);
        let opened = b.open(&sealed, NOW).unwrap();
        assert_eq!(replays.check(&opened, NOW), Ok(()));
        let again = b.open(&sealed, NOW + 5).unwrap();
        assert_eq!(replays.check(&again, NOW + 5), Err(OpenError::Replayed));
        // Another datagram with the same content is a new one.
        let fresh = b.open(&a.seal(b"syn", NOW), NOW).unwrap();
        assert_eq!(replays.check(&fresh, NOW), Ok(()));
        // Remembered past the clock window, then forgotten (refused as stale by then).
        let later = NOW + 2 * MAX_SKEW.as_millis() as u64 + 1;
        assert_eq!(replays.check(&again, later), Ok(()));
        // A datagram claiming the farthest future does not overflow the clock check.
        assert!(matches!(
            check_clock(u64::MAX, NOW),
            Err(OpenError::Stale(_))
        ));
        assert!(matches!(check_clock(0, u64::MAX), Err(OpenError::Stale(_))));
    }

    #[test]
    fn a_rotating_node_reads_both_secrets() {
        let (old, new) = (keyring::generate(), keyring::generate());
        let rotating = aead(&format!("{new}\n{old}"));
        assert!(rotating.open(&aead(&old).seal(b"x", NOW), NOW).is_ok());
        let sent_new = rotating.seal(b"y", NOW);
        assert!(aead(&format!("{old}\n{new}")).open(&sent_new, NOW).is_ok());
        assert_eq!(aead(&old).open(&sent_new, NOW), Err(OpenError::UnknownKey));
    }

    #[test]
    fn signed_datagrams_need_the_cluster_ca() {
        let dir = tempfile::tempdir().unwrap();
        let pki = make_pki(2, dir.path(), DEFAULT_SERVER_NAME).unwrap();
        let node = |i: usize| {
            let tls = RpcTls::from_pem_files(
                &pki.nodes[i].0,
                &pki.nodes[i].1,
                &pki.ca,
                DEFAULT_SERVER_NAME,
            )
            .unwrap();
            Sealer::Signed(Signed::new(Arc::new(tls)).unwrap())
        };
        let (a, b) = (node(0), node(1));
        let sealed = a.seal(b"counts", NOW);
        assert_eq!(b.open(&sealed, NOW).unwrap().plain, b"counts");
        assert_eq!(
            b.open(&sealed, NOW).unwrap().plain,
            b"counts",
            "cached certificate"
        );
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(b.open(&tampered, NOW), Err(OpenError::BadSignature));
        let other_dir = tempfile::tempdir().unwrap();
        let other = make_pki(1, other_dir.path(), DEFAULT_SERVER_NAME).unwrap();
        let stranger = Sealer::Signed(
            Signed::new(Arc::new(
                RpcTls::from_pem_files(
                    &other.nodes[0].0,
                    &other.nodes[0].1,
                    &other.ca,
                    DEFAULT_SERVER_NAME,
                )
                .unwrap(),
            ))
            .unwrap(),
        );
        assert_eq!(
            b.open(&stranger.seal(b"x", NOW), NOW),
            Err(OpenError::UntrustedCertificate)
        );
        assert_eq!(
            b.open(&aead(&keyring::generate()).seal(b"x", NOW), NOW),
            Err(OpenError::WrongMode)
        );
    }

    #[test]
    fn large_datagrams_are_fragmented_and_reassembled_within_bounds() {
        let from: SocketAddr = "10.0.0.1:7946".parse().unwrap();
        let now = Instant::now();
        let big: Vec<u8> = (0..MAX_DATAGRAM + 100).map(|i| i as u8).collect();
        let frags = fragment(big.clone());
        assert_eq!(frags.len(), 2);
        assert!(frags.iter().all(|f| f.len() <= MAX_DATAGRAM));
        let mut r = Reassembler::default();
        // Out of order.
        assert_eq!(r.push(from, &frags[1], now).unwrap(), None);
        assert_eq!(r.push(from, &frags[0], now).unwrap(), Some(big));
        // Small ones pass through; half a datagram expires.
        assert_eq!(
            r.push(from, b"small", now).unwrap(),
            Some(b"small".to_vec())
        );
        let f2 = fragment(vec![7u8; MAX_DATAGRAM * 2]);
        assert_eq!(r.push(from, &f2[0], now).unwrap(), None);
        let later = now + Reassembler::TIMEOUT + Duration::from_millis(1);
        assert_eq!(r.push(from, &f2[1], later).unwrap(), None);
        // A flood of first fragments holds at most MAX_PENDING buffers.
        for _ in 0..100 {
            let f = fragment(vec![1u8; MAX_DATAGRAM + 1]);
            r.push(from, &f[0], now).unwrap();
        }
        assert!(r.pending.len() <= Reassembler::MAX_PENDING_PER_SOURCE);
        // Another source still gets its datagram through.
        let other: SocketAddr = "10.0.0.2:7946".parse().unwrap();
        let f3 = fragment(vec![3u8; MAX_DATAGRAM + 5]);
        assert_eq!(r.push(other, &f3[0], now).unwrap(), None);
        assert!(r.push(other, &f3[1], now).unwrap().is_some());
        let mut bad = f2[0].clone();
        bad[13] = 9; // count above the bound
        assert_eq!(r.push(from, &bad, now), Err(OpenError::Malformed));
    }
}
