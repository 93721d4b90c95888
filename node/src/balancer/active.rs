//! Active health checks: probes sent to targets' addresses on a schedule, as Kong's
//! lua-resty-healthcheck sends them.
//!
//! A healthy address is probed every `active.unhealthy.interval` seconds (to find it failing)
//! and an unhealthy one every `active.healthy.interval` (to find it back); 0 turns that side
//! off. An `http` probe is `GET active.http_path` with the target's Host and
//! `active.headers`, within `active.timeout`; its status counts as a success when listed in
//! `active.healthy.http_statuses`, as a failure when listed in
//! `active.unhealthy.http_statuses`, and not at all otherwise. A `tcp` probe is a connect.
//! A refused or failed connect is a TCP failure; no answer within the timeout a timeout. At
//! most `active.concurrency` probes per upstream run at once.
//!
//! Which node probes: each address is probed by one node only, its owner
//! ([`super::cluster::Ownership`]), and the owner's transitions reach the others through the
//! cluster view; so probe load is one probe per address per interval for the whole cluster,
//! however many nodes there are. `https`, `grpc` and `grpcs` probes need upstream TLS and
//! HTTP/2 (a later issue); until then they probe as `tcp` does, and say so in the log once.

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
    let mut limits: HashMap<Uuid, Arc<Semaphore>> = HashMap::new();
    let mut warned_tls = false;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let mut live = Vec::new();
        for b in balancers.all() {
            let up = b.upstream.load_full();
            let active = &up.healthchecks.active;
            if active.healthy.interval <= 0.0 && active.unhealthy.interval <= 0.0 {
                continue;
            }
            if active.kind != "http" && active.kind != "tcp" && !warned_tls {
                warned_tls = true;
                tracing::warn!(upstream = %up.name, kind = %active.kind,
                    "active checks of this type probe with a TCP connect until upstream TLS exists");
            }
            let sem = limits
                .entry(b.id)
                .or_insert_with(|| Arc::new(Semaphore::new(active.concurrency.max(1) as usize)))
                .clone();
            let set = b.set.load_full();
            for peer in set.peers.iter().filter(|p| p.weight > 0) {
                let key = (b.id, peer.addr);
                live.push(key);
                if !owns(b.id, peer.addr) {
                    continue;
                }
                let healthy = peer.state.health.healthy_everywhere();
                let interval = if healthy {
                    active.unhealthy.interval
                } else {
                    active.healthy.interval
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
        limits.retain(|id, _| live.iter().any(|(u, _)| u == id));
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
    if check.kind != "http" {
        return Some(Observation::Success);
    }
    let exchange = async {
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
        let req = req
            .body(Empty::<Bytes>::new())
            .unwrap_or_else(|_| Request::new(Empty::new()));
        tx.send_request(req).await.map(|r| r.status())
    };
    match tokio::time::timeout_at(deadline, exchange).await {
        Err(_) => Some(Observation::Timeout),
        Ok(Err(_)) => Some(Observation::TcpFailure),
        Ok(Ok(status)) => classify(status, check),
    }
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
