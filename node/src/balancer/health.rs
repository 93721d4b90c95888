//! One address's health: Kong's circuit breaker (lua-resty-healthcheck's counters) for this
//! node's own observations, and the cluster's view of it.
//!
//! Counters: a success resets the failure counters and a failure resets the success counter;
//! when a counter reaches its configured limit (0 turns that counter off), the address turns
//! healthy or unhealthy. Passive observations come from proxied traffic; active ones from
//! probes. As in Kong, a passive check never brings an address back on its own when
//! `passive.healthy.successes` is 0 (it receives no traffic to observe): active probes or an
//! operator's `PUT …/healthy` do.
//!
//! Each transition is stamped (wall-clock milliseconds and what caused it) so that the
//! cluster view ([`super::cluster`]) can order one node's change against another's.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// What caused a node's last transition for an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Origin {
    /// Never changed: healthy since the address appeared.
    Initial = 0,
    /// This node's passive check (its own traffic).
    Passive = 1,
    /// An active probe by the address's owner node.
    Active = 2,
    /// An operator's `PUT …/healthy|unhealthy`.
    Manual = 3,
    /// Adopted from another node's active or manual transition.
    Adopted = 4,
}

impl Origin {
    pub fn from_u8(v: u8) -> Origin {
        match v {
            1 => Origin::Passive,
            2 => Origin::Active,
            3 => Origin::Manual,
            4 => Origin::Adopted,
            _ => Origin::Initial,
        }
    }

    pub fn letter(self) -> char {
        match self {
            Origin::Initial => 'i',
            Origin::Passive => 'p',
            Origin::Active => 'a',
            Origin::Manual => 'm',
            Origin::Adopted => 'o',
        }
    }

    pub fn from_letter(c: char) -> Option<Origin> {
        Some(match c {
            'i' => Origin::Initial,
            'p' => Origin::Passive,
            'a' => Origin::Active,
            'm' => Origin::Manual,
            'o' => Origin::Adopted,
            _ => return None,
        })
    }
}

/// An observation reported to the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    Success,
    HttpFailure,
    TcpFailure,
    Timeout,
}

/// The limits of one kind of check (active or passive): 0 turns a counter off.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Limits {
    pub successes: u32,
    pub http_failures: u32,
    pub tcp_failures: u32,
    pub timeouts: u32,
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One address's health on this node.
#[derive(Debug)]
pub struct Health {
    healthy: AtomicBool,
    /// Set by the cluster view: a majority of the live nodes that observed the address say
    /// it is down.
    cluster_down: AtomicBool,
    /// Set by the cluster view: some live node holds the address down.
    down_somewhere: AtomicBool,
    successes: AtomicU32,
    http_failures: AtomicU32,
    tcp_failures: AtomicU32,
    timeouts: AtomicU32,
    changed_ms: AtomicU64,
    origin: AtomicU8,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            healthy: AtomicBool::new(true),
            cluster_down: AtomicBool::new(false),
            down_somewhere: AtomicBool::new(false),
            successes: AtomicU32::new(0),
            http_failures: AtomicU32::new(0),
            tcp_failures: AtomicU32::new(0),
            timeouts: AtomicU32::new(0),
            changed_ms: AtomicU64::new(0),
            origin: AtomicU8::new(Origin::Initial as u8),
        }
    }
}

impl Health {
    /// Whether the balancer may send to the address: this node thinks it healthy and the
    /// cluster does not hold it down.
    pub fn available(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.cluster_down.load(Ordering::Relaxed)
    }

    /// This node's own view.
    pub fn locally_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub fn cluster_down(&self) -> bool {
        self.cluster_down.load(Ordering::Relaxed)
    }

    pub fn set_cluster_down(&self, down: bool) {
        self.cluster_down.store(down, Ordering::Relaxed);
    }

    pub fn set_down_somewhere(&self, down: bool) {
        self.down_somewhere.store(down, Ordering::Relaxed);
    }

    /// Healthy for every node: what a probing owner judges its probes against.
    pub fn healthy_everywhere(&self) -> bool {
        self.available() && !self.down_somewhere.load(Ordering::Relaxed)
    }

    /// When and why this node's view last changed.
    pub fn last_change(&self) -> (u64, Origin) {
        (
            self.changed_ms.load(Ordering::Acquire),
            Origin::from_u8(self.origin.load(Ordering::Acquire)),
        )
    }

    /// Sets this node's view, stamped; returns whether it changed. The counters restart.
    pub fn set(&self, healthy: bool, at_ms: u64, origin: Origin) -> bool {
        self.reset_counters();
        let was = self.healthy.swap(healthy, Ordering::AcqRel);
        // A probe's, an operator's or an adopted mark is stamped even when it confirms this
        // node's state: the cluster view orders it after what it overrides.
        if was != healthy || matches!(origin, Origin::Active | Origin::Manual | Origin::Adopted) {
            self.origin.store(origin as u8, Ordering::Release);
            self.changed_ms.store(at_ms, Ordering::Release);
        }
        was != healthy
    }

    fn reset_counters(&self) {
        self.successes.store(0, Ordering::Relaxed);
        self.http_failures.store(0, Ordering::Relaxed);
        self.tcp_failures.store(0, Ordering::Relaxed);
        self.timeouts.store(0, Ordering::Relaxed);
    }

    /// Counts one observation against `limits`; returns the new state when it changes.
    pub fn observe(&self, o: Observation, limits: &Limits, origin: Origin) -> Option<bool> {
        let (counter, limit, to_healthy) = match o {
            Observation::Success => (&self.successes, limits.successes, true),
            Observation::HttpFailure => (&self.http_failures, limits.http_failures, false),
            Observation::TcpFailure => (&self.tcp_failures, limits.tcp_failures, false),
            Observation::Timeout => (&self.timeouts, limits.timeouts, false),
        };
        if to_healthy {
            self.http_failures.store(0, Ordering::Relaxed);
            self.tcp_failures.store(0, Ordering::Relaxed);
            self.timeouts.store(0, Ordering::Relaxed);
        } else {
            self.successes.store(0, Ordering::Relaxed);
        }
        // Probes judge the state the balancer uses (the cluster's included): an owner's
        // successes bring back an address other nodes hold down. Traffic judges this node's.
        let current = match origin {
            Origin::Active => self.healthy_everywhere(),
            _ => self.locally_healthy(),
        };
        if limit == 0 || current == to_healthy {
            return None;
        }
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= limit {
            self.set(to_healthy, now_ms(), origin);
            return Some(to_healthy);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_trip_and_reset_as_kong() {
        let h = Health::default();
        let limits = Limits {
            successes: 2,
            http_failures: 3,
            tcp_failures: 1,
            timeouts: 0,
        };
        assert_eq!(
            h.observe(Observation::HttpFailure, &limits, Origin::Passive),
            None
        );
        assert_eq!(
            h.observe(Observation::HttpFailure, &limits, Origin::Passive),
            None
        );
        // A success in between starts the failures over.
        assert_eq!(
            h.observe(Observation::Success, &limits, Origin::Passive),
            None
        );
        for _ in 0..2 {
            assert_eq!(
                h.observe(Observation::HttpFailure, &limits, Origin::Passive),
                None
            );
        }
        assert_eq!(
            h.observe(Observation::HttpFailure, &limits, Origin::Passive),
            Some(false)
        );
        assert!(!h.available());
        // Timeouts are off (0): never counted.
        assert_eq!(
            h.observe(Observation::Timeout, &limits, Origin::Active),
            None
        );
        assert_eq!(
            h.observe(Observation::Success, &limits, Origin::Active),
            None
        );
        assert_eq!(
            h.observe(Observation::Success, &limits, Origin::Active),
            Some(true)
        );
        assert_eq!(h.last_change().1, Origin::Active);
        assert_eq!(
            h.observe(Observation::TcpFailure, &limits, Origin::Passive),
            Some(false)
        );
    }
}
