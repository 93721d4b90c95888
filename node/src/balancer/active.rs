//! Active health checks: probes sent to targets' addresses on a schedule, as Kong's
//! lua-resty-healthcheck sends them.
//!
//! A healthy address is probed every `active.healthy.interval` seconds (to find it failing)
//! and an unhealthy one every `active.unhealthy.interval` (to find it back); 0 turns that
//! side off (Kong's recipe to bring back what passive checks took out: `healthy.interval` 0,
//! `unhealthy.interval` above 0). An `http` probe is `GET active.http_path` with the target's Host and
//! `active.headers`, within `active.timeout`; its status counts as a success when listed in
//! `active.healthy.http_statuses`, as a failure when listed in
//! `active.unhealthy.http_statuses`, and not at all otherwise. A `tcp` probe is a connect.
//! A refused or failed connect is a TCP failure; no answer within the timeout a timeout. At
//! most `active.concurrency` probes per upstream run at once.
//!
//! Which node probes: each address is probed by one node only, its owner
//! ([`super::cluster::ClusterHealth::owns`]), and the owner's transitions reach the others
//! through the cluster view; so probe load is one probe per address per interval for the
//! whole cluster, however many nodes there are.
//!
//! An `https` probe is the `http` one over TLS (rustls): SNI `active.https_sni`, else the
//! target's host name (none for an IP target); with `https_verify_certificate` the chain is
//! checked against the system's roots and the name, without it anything is accepted, as
//! Kong's. `grpc` and `grpcs` probes need HTTP/2 to upstreams (a later issue): until then
//! they probe as `tcp` does, and say so in the log once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::health::{Observation, Origin};
use super::{active_limits, Balancers, Peer};
use tollgate_config::entities::ActiveCheck;

/// How often the scheduler looks for due probes.
pub const TICK: Duration = Duration::from_millis(100);

/// Runs the probes of every balancer for the life of the node. `owns(upstream, addr)` says
/// whether this node probes that address.
pub async fn run(
    balancers: Arc<Balancers>,
    owns: Arc<dyn Fn(Uuid, SocketAddr) -> bool + Send + Sync>,
) {
    let mut last: HashMap<(Uuid, SocketAddr), Instant> = HashMap::new();
    let mut limits: HashMap<Uuid, (usize, Arc<Semaphore>)> = HashMap::new();
    let mut warned_grpc = false;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let mut live = std::collections::HashSet::new();
        for b in balancers.all() {
            let up = b.upstream.load_full();
            let active = &up.healthchecks.active;
            if active.healthy.interval <= 0.0 && active.unhealthy.interval <= 0.0 {
                continue;
            }
            if active.kind.starts_with("grpc") && !warned_grpc {
                warned_grpc = true;
                tracing::warn!(upstream = %up.name, kind = %active.kind,
                    "gRPC active checks probe with a TCP connect until gRPC upstreams exist");
            }
            // A changed `concurrency` gets a new limit (probes under the old one finish).
            let cap = active.concurrency.max(1) as usize;
            let sem = limits
                .entry(b.id)
                .and_modify(|(c, s)| {
                    if *c != cap {
                        *c = cap;
                        *s = Arc::new(Semaphore::new(cap));
                    }
                })
                .or_insert_with(|| (cap, Arc::new(Semaphore::new(cap))))
                .1
                .clone();
            let set = b.set.load_full();
            for peer in set.peers.iter().filter(|p| p.weight > 0) {
                let key = (b.id, peer.addr);
                live.insert(key);
                if !owns(b.id, peer.addr) {
                    continue;
                }
                // Kong's intervals: `healthy.interval` for addresses that are up,
                // `unhealthy.interval` for those that are down (anywhere in the cluster).
                let healthy = peer.state.health.healthy_everywhere();
                let interval = if healthy {
                    active.healthy.interval
                } else {
                    active.unhealthy.interval
                };
                if interval <= 0.0 {
                    continue;
                }
                let due = last
                    .get(&key)
                    .is_none_or(|t| now.duration_since(*t).as_secs_f64() >= interval);
                if !due {
                    continue;
                }
                let Ok(permit) = sem.clone().try_acquire_owned() else {
                    continue;
                };
                last.insert(key, now);
                let (b, peer, check) = (b.clone(), peer.clone(), active.clone());
                tokio::spawn(async move {
                    let seen = probe(&peer, &check).await;
                    drop(permit);
                    if let Some(o) = seen {
                        let limits = active_limits(&b.upstream.load().healthchecks);
                        if let Some(now) = peer.state.health.observe(o, &limits, Origin::Active) {
                            tracing::warn!(upstream = %b.name(), target = %peer.target,
                                addr = %peer.addr, healthy = now,
                                "active health check changed a target's health");
                        }
                    }
                });
            }
        }
        last.retain(|k, _| live.contains(k));
        let upstreams: std::collections::HashSet<Uuid> = live.iter().map(|(u, _)| *u).collect();
        limits.retain(|id, _| upstreams.contains(id));
    }
}

/// One probe; `None` when the answer counts neither way.
pub async fn probe(peer: &Peer, check: &ActiveCheck) -> Option<Observation> {
    let timeout = Duration::from_secs_f64(check.timeout.max(0.001));
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(peer.addr)).await {
        Err(_) => return Some(Observation::Timeout),
        Ok(Err(_)) => return Some(Observation::TcpFailure),
        Ok(Ok(s)) => s,
    };
    let tls = match check.kind.as_str() {
        "http" => None,
        "https" => Some(tls::connector(check.https_verify_certificate)),
        _ => return Some(Observation::Success),
    };
    let exchange = async {
        let status = match tls {
            None => request(stream, peer, check).await?,
            Some(connector) => {
                let name = tls::server_name(check.https_sni.as_deref(), peer);
                let stream = connector.connect(name, stream).await.map_err(|e| {
                    tracing::debug!(addr = %peer.addr, error = %e, "TLS probe handshake failed");
                    ProbeError
                })?;
                request(stream, peer, check).await?
            }
        };
        Ok::<_, ProbeError>(status)
    };
    match tokio::time::timeout_at(deadline, exchange).await {
        Err(_) => Some(Observation::Timeout),
        Ok(Err(_)) => Some(Observation::TcpFailure),
        Ok(Ok(status)) => classify(status, check),
    }
}

/// A probe that connected and then failed (handshake, request or answer).
struct ProbeError;

impl From<hyper::Error> for ProbeError {
    fn from(_: hyper::Error) -> ProbeError {
        ProbeError
    }
}

/// `GET http_path` on a connected stream; the answer's status.
async fn request<S>(stream: S, peer: &Peer, check: &ActiveCheck) -> Result<StatusCode, ProbeError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = Request::get(check.http_path.as_str())
        .header(http::header::HOST, peer.host_header.clone())
        .header(
            http::header::USER_AGENT,
            concat!("tollgate-healthcheck/", env!("CARGO_PKG_VERSION")),
        );
    for (name, values) in check.headers.iter().flatten() {
        for v in values {
            req = req.header(name.as_str(), v.as_str());
        }
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|_| ProbeError)?;
    Ok(tx.send_request(req).await?.status())
}

fn classify(status: StatusCode, check: &ActiveCheck) -> Option<Observation> {
    let s = status.as_u16();
    if check.unhealthy.http_statuses.contains(&s) {
        Some(Observation::HttpFailure)
    } else if check.healthy.http_statuses.contains(&s) {
        Some(Observation::Success)
    } else {
        None
    }
}

/// TLS for `https` probes.
mod tls {
    use rustls::pki_types::ServerName;

    use crate::balancer::Peer;

    pub use crate::tls::client::probe_connector as connector;

    /// The name sent in SNI and checked in the certificate: `https_sni`, else the target's
    /// host (its address when the target is an IP).
    pub fn server_name(sni: Option<&str>, peer: &Peer) -> ServerName<'static> {
        let host = match sni {
            Some(s) => s.to_string(),
            None => tollgate_config::address::normalize(&peer.target)
                .map(|h| h.host)
                .unwrap_or_else(|_| peer.addr.ip().to_string()),
        };
        ServerName::try_from(host).unwrap_or_else(|_| ServerName::IpAddress(peer.addr.ip().into()))
    }
}
