//! Chitchat's transport hook, sealing every gossip datagram ([`crate::auth::seal`]).
//!
//! Chitchat hands a transport whole messages, not bytes, and keeps its wire encoding
//! private. So this transport lets chitchat's own UDP socket (its "codec") encode and decode,
//! on loopback, and carries the bytes between it and the network itself:
//!
//! ```text
//! send:  chitchat ─envelope→ codec ─bytes→ `encoded` socket → seal → network
//! recv:  network → reassemble → open → relay socket for that peer ─bytes→ codec ─envelope→ chitchat
//! ```
//!
//! Each peer's plaintext reaches the codec from a loopback socket of its own (a "relay"), so
//! the codec's answer names the relay and the relay names the peer: a datagram can never be
//! attributed to the wrong sender, even when chitchat cancels a receive half-way or drops a
//! datagram it cannot decode. The codec accepts only what comes from a relay: a local process
//! sending plaintext to it is ignored. The loopback hops cost two system calls per message
//! each way, at gossip's tens of messages per second.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use chitchat::transport::{RecvOutcome, SendOutcome, Socket, Transport, UdpSocket as Codec};
use chitchat::ChitchatEnvelope;
use tokio::net::UdpSocket;

use crate::auth::seal::{fragment, Reassembler, Replays, Sealer, MAX_DATAGRAM};
use crate::auth::{Plane, Rejections};

/// Most peers with a relay socket at once; the least recently heard is closed past it.
const MAX_RELAYS: usize = 256;
/// How long `send` waits for the codec's bytes on loopback before giving the message up.
const LOOPBACK_WAIT: Duration = Duration::from_secs(1);
/// How long a closed relay's socket is kept open: its port must not pass to a new relay
/// while the codec may still read a datagram it sent.
const RELAY_RETIREMENT: Duration = Duration::from_secs(2);

/// The sealing transport (give it to `spawn_chitchat`).
pub struct SealedUdpTransport {
    pub sealer: Arc<Sealer>,
    pub rejections: Arc<Rejections>,
}

#[async_trait]
impl Transport for SealedUdpTransport {
    async fn open(&self, listen_addr: SocketAddr) -> anyhow::Result<Box<dyn Socket>> {
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let real = UdpSocket::bind(listen_addr)
            .await
            .map_err(|e| anyhow::anyhow!("failed to bind to {listen_addr}/UDP for gossip: {e}"))?;
        let codec = Codec::open(loopback).await?;
        let codec_addr = codec.local_addr()?;
        let encoded = UdpSocket::bind(loopback).await?;
        Ok(Box::new(SealedSocket {
            real,
            codec,
            codec_addr,
            encoded,
            relays: HashMap::new(),
            peer_of_relay: HashMap::new(),
            retired: std::collections::VecDeque::new(),
            reassembler: Reassembler::default(),
            replays: Replays::default(),
            sealer: self.sealer.clone(),
            rejections: self.rejections.clone(),
            buf: vec![0u8; 65_536].into_boxed_slice(),
            tick: 0,
        }))
    }
}

struct Relay {
    socket: UdpSocket,
    last_used: u64,
}

struct SealedSocket {
    real: UdpSocket,
    codec: Codec,
    codec_addr: SocketAddr,
    /// Receives what the codec encodes.
    encoded: UdpSocket,
    relays: HashMap<SocketAddr, Relay>,
    peer_of_relay: HashMap<SocketAddr, SocketAddr>,
    /// Evicted relays, kept open (and still mapped) for [`RELAY_RETIREMENT`].
    retired: std::collections::VecDeque<(Instant, SocketAddr, UdpSocket)>,
    reassembler: Reassembler,
    replays: Replays,
    sealer: Arc<Sealer>,
    rejections: Arc<Rejections>,
    buf: Box<[u8]>,
    tick: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

enum Event {
    Decoded(anyhow::Result<RecvOutcome>),
    Datagram(std::io::Result<(usize, SocketAddr)>),
}

impl SealedSocket {
    /// The relay socket for `peer`, made on first use.
    async fn relay(&mut self, peer: SocketAddr) -> std::io::Result<&UdpSocket> {
        self.tick += 1;
        while let Some((at, _, _)) = self.retired.front() {
            if at.elapsed() < RELAY_RETIREMENT {
                break;
            }
            if let Some((_, addr, _socket)) = self.retired.pop_front() {
                self.peer_of_relay.remove(&addr);
            }
        }
        if !self.relays.contains_key(&peer) {
            if self.relays.len() >= MAX_RELAYS {
                if let Some(oldest) = self
                    .relays
                    .iter()
                    .min_by_key(|(_, r)| r.last_used)
                    .map(|(p, _)| *p)
                {
                    if let Some(r) = self.relays.remove(&oldest) {
                        if let Ok(a) = r.socket.local_addr() {
                            self.retired.push_back((Instant::now(), a, r.socket));
                        }
                    }
                }
            }
            let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            self.peer_of_relay.insert(socket.local_addr()?, peer);
            self.relays.insert(
                peer,
                Relay {
                    socket,
                    last_used: self.tick,
                },
            );
        }
        let r = self.relays.get_mut(&peer).expect("just inserted");
        r.last_used = self.tick;
        Ok(&r.socket)
    }

    /// Opens one datagram from the network and hands its plaintext to the codec.
    async fn take_datagram(&mut self, n: usize, from: SocketAddr) {
        let whole = match self.reassembler.push(from, &self.buf[..n], Instant::now()) {
            Ok(Some(w)) => w,
            Ok(None) => return,
            Err(e) => {
                self.rejections.record(from, Plane::Gossip, &e.to_string());
                return;
            }
        };
        let now = now_ms();
        let plain = match self
            .sealer
            .open(&whole, now)
            .and_then(|o| self.replays.check(&o, now).map(|()| o.plain))
        {
            Ok(p) => p,
            Err(e) => {
                self.rejections.record(from, Plane::Gossip, &e.to_string());
                return;
            }
        };
        let codec_addr = self.codec_addr;
        match self.relay(from).await {
            Ok(relay) => {
                if let Err(e) = relay.send_to(&plain, codec_addr).await {
                    tracing::debug!(error = %e, "gossip relay to codec failed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot open a gossip relay socket"),
        }
    }
}

#[async_trait]
impl Socket for SealedSocket {
    fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        Ok(self.real.local_addr()?)
    }

    async fn send(
        &mut self,
        to: SocketAddr,
        envelope: ChitchatEnvelope,
    ) -> anyhow::Result<SendOutcome> {
        // Bytes a cancelled send left behind belong to another message: drop them.
        while self.encoded.try_recv_from(&mut self.buf).is_ok() {}
        let encoded_addr = self.encoded.local_addr()?;
        self.codec.send(encoded_addr, envelope).await?;
        let wait = async {
            loop {
                let (n, from) = self.encoded.recv_from(&mut self.buf).await?;
                if from == self.codec_addr {
                    return Ok::<usize, std::io::Error>(n);
                }
            }
        };
        let n = match tokio::time::timeout(LOOPBACK_WAIT, wait).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => {
                tracing::warn!(%to, "gossip message lost on loopback; chitchat will resend");
                return Ok(SendOutcome { num_bytes_sent: 0 });
            }
        };
        let sealed = self.sealer.seal(&self.buf[..n], now_ms());
        let mut sent = 0;
        for f in fragment(sealed) {
            debug_assert!(f.len() <= MAX_DATAGRAM);
            match self.real.send_to(&f, to).await {
                Ok(k) => sent += k,
                // The network refusing one datagram (unreachable peer) is not a broken
                // transport: gossip tries again next round.
                Err(e) => tracing::debug!(%to, error = %e, "gossip send failed"),
            }
        }
        Ok(SendOutcome {
            num_bytes_sent: sent,
        })
    }

    async fn recv(&mut self) -> anyhow::Result<RecvOutcome> {
        loop {
            let event = tokio::select! {
                decoded = self.codec.recv() => Event::Decoded(decoded),
                got = self.real.recv_from(&mut self.buf) => Event::Datagram(got),
            };
            match event {
                Event::Decoded(outcome) => {
                    let outcome = outcome?;
                    // Only a relay's datagram is a peer's; anything else reached the codec
                    // from some local process, unauthenticated.
                    if let Some(peer) = self.peer_of_relay.get(&outcome.from_addr) {
                        return Ok(RecvOutcome {
                            from_addr: *peer,
                            ..outcome
                        });
                    }
                }
                Event::Datagram(Ok((n, from))) => self.take_datagram(n, from).await,
                Event::Datagram(Err(e)) => match e.kind() {
                    std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::OutOfMemory => {
                        tracing::debug!(error = %e, "transient gossip receive error")
                    }
                    _ => return Err(e.into()),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{keyring, Keyring};
    use chitchat::transport::UdpTransport;
    use chitchat::{ChitchatMessage, ProtocolVersion};

    fn syn(cluster_id: &str) -> ChitchatEnvelope {
        ChitchatEnvelope {
            version: ProtocolVersion::V0,
            message: ChitchatMessage::Syn {
                cluster_id: cluster_id.to_string(),
                digest: Default::default(),
            },
        }
    }

    async fn open(secret: &str) -> (Box<dyn Socket>, Arc<Rejections>) {
        let rejections = Arc::new(Rejections::default());
        let t = SealedUdpTransport {
            sealer: Arc::new(Sealer::Aead(Arc::new(Keyring::parse(secret).unwrap()))),
            rejections: rejections.clone(),
        };
        (
            t.open("127.0.0.1:0".parse().unwrap()).await.unwrap(),
            rejections,
        )
    }

    #[tokio::test]
    async fn peers_with_the_secret_gossip_and_strangers_are_refused() {
        let s = keyring::generate();
        let (mut a, _) = open(&s).await;
        let (mut b, b_rejected) = open(&s).await;
        let b_addr = b.local_addr().unwrap();
        a.send(b_addr, syn("tollgate")).await.unwrap();
        let got = b.recv().await.unwrap();
        assert_eq!(got.envelope, syn("tollgate"));
        assert_eq!(got.from_addr, a.local_addr().unwrap());

        // Larger than one UDP datagram once sealed: fragmented and put back together.
        let big = "x".repeat(65_300);
        a.send(b_addr, syn(&big)).await.unwrap();
        assert_eq!(b.recv().await.unwrap().envelope, syn(&big));

        // Another secret, then plain chitchat: nothing reaches chitchat, both are recorded
        // (by source address: the latest reason is kept).
        let reason = |r: &Rejections| {
            r.list()
                .first()
                .map(|x| x.reason.clone())
                .unwrap_or_default()
        };
        let (mut stranger, _) = open(&keyring::generate()).await;
        stranger.send(b_addr, syn("tollgate")).await.unwrap();
        a.send(b_addr, syn("after stranger")).await.unwrap();
        assert_eq!(b.recv().await.unwrap().envelope, syn("after stranger"));
        assert!(
            reason(&b_rejected).contains("does not hold"),
            "{:?}",
            b_rejected.list()
        );
        let mut plain = UdpTransport
            .open("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        plain.send(b_addr, syn("tollgate")).await.unwrap();
        a.send(b_addr, syn("after plain")).await.unwrap();
        assert_eq!(b.recv().await.unwrap().envelope, syn("after plain"));
        assert!(
            reason(&b_rejected).contains("not a sealed"),
            "{:?}",
            b_rejected.list()
        );
        assert_eq!(b_rejected.totals(), (0, 2));
    }
}
