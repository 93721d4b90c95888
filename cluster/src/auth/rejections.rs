//! A bounded record of who tried to talk to the cluster plane without valid credentials: TLS
//! handshakes refused on the cluster listener, gossip datagrams that failed authentication.
//! `GET /cluster` lists it, so an operator sees a misconfigured or hostile node at once.
//!
//! A gossip source is the address the datagram claims (UDP sources can be forged); a cluster
//! source is the TCP peer. Warnings are logged for new sources at most once a second, so a
//! flood from forged addresses cannot flood the log.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// Most sources remembered; past it the least recently seen is forgotten.
pub const MAX_SOURCES: usize = 64;

/// Which listener refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Plane {
    /// The cluster listener (Raft, forwarded writes, membership).
    Cluster,
    Gossip,
}

/// What was refused from one source on one plane.
#[derive(Debug, Clone, Serialize)]
pub struct Rejection {
    pub from: IpAddr,
    pub plane: Plane,
    /// The latest reason.
    pub reason: String,
    pub count: u64,
    pub first_seen: u64,
    pub last_seen: u64,
}

/// Rejected attempts by source address and plane.
#[derive(Default)]
pub struct Rejections {
    by_source: Mutex<HashMap<(IpAddr, Plane), Rejection>>,
    cluster_total: AtomicU64,
    gossip_total: AtomicU64,
    /// Unix second of the last warning logged.
    last_warned: AtomicU64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Rejections {
    /// Records one refused attempt. Logs the first from each source, not every datagram.
    pub fn record(&self, from: SocketAddr, plane: Plane, reason: &str) {
        match plane {
            Plane::Cluster => self.cluster_total.fetch_add(1, Ordering::Relaxed),
            Plane::Gossip => self.gossip_total.fetch_add(1, Ordering::Relaxed),
        };
        let now = unix_now();
        let mut map = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        let key = (from.ip(), plane);
        if let Some(r) = map.get_mut(&key) {
            r.count += 1;
            r.last_seen = now;
            if r.reason != reason {
                r.reason = reason.to_string();
            }
            return;
        }
        if self.last_warned.swap(now, Ordering::Relaxed) != now {
            tracing::warn!(%from, ?plane, reason, "refused a peer without valid cluster credentials");
        }
        if map.len() >= MAX_SOURCES {
            if let Some(oldest) = map.iter().min_by_key(|(_, r)| r.last_seen).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(
            key,
            Rejection {
                from: from.ip(),
                plane,
                reason: reason.to_string(),
                count: 1,
                first_seen: now,
                last_seen: now,
            },
        );
    }

    /// Every remembered source, most recent first.
    pub fn list(&self) -> Vec<Rejection> {
        let map = self.by_source.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<Rejection> = map.values().cloned().collect();
        v.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.from.cmp(&b.from)));
        v
    }

    /// Refusals since start, per plane (remembered or not).
    pub fn totals(&self) -> (u64, u64) {
        (
            self.cluster_total.load(Ordering::Relaxed),
            self.gossip_total.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_counted_and_bounded() {
        let r = Rejections::default();
        let a: SocketAddr = "10.0.0.1:7946".parse().unwrap();
        r.record(a, Plane::Gossip, "bad key");
        r.record("10.0.0.1:5000".parse().unwrap(), Plane::Gossip, "bad tag");
        r.record(a, Plane::Cluster, "unknown CA");
        let l = r.list();
        assert_eq!(l.len(), 2);
        let g = l.iter().find(|x| x.plane == Plane::Gossip).unwrap();
        assert_eq!((g.count, g.reason.as_str()), (2, "bad tag"));
        for i in 0..200u32 {
            let ip = std::net::Ipv4Addr::from(0x0a01_0000 + i);
            r.record(SocketAddr::new(ip.into(), 1), Plane::Gossip, "x");
        }
        assert_eq!(r.list().len(), MAX_SOURCES);
        assert_eq!(r.totals(), (1, 202));
    }
}
