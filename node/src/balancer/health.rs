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
}

impl Origin {
    pub fn from_u8(v: u8) -> Origin {
        match v {
            1 => Origin::Passive,
            2 => Origin::Active,
            3 => Origin::Manual,
            _ => Origin::Initial,
        }
    }

    pub fn letter(self) -> char {
        match self {
            Origin::Initial => 'i',
            Origin::Passive => 'p',
            Origin::Active => 'a',
            Origin::Manual => 'm',
        }
    }

    pub fn from_letter(c: char) -> Option<Origin> {
        Some(match c {
            'i' => Origin::Initial,
            'p' => Origin::Passive,
            'a' => Origin::Active,
            'm' => Origin::Manual,
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
    /// Set by the cluster view: a strict majority of the live nodes hold the address down.
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
        // A probe's or an operator's mark is stamped even when it confirms this node's state:
        // the cluster view orders it after what it overrides.
        if was != healthy || matches!(origin, Origin::Active | Origin::Manual) {
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

    /// Counts one observation against `limits`, as lua-resty-healthcheck's `incr_counter`:
    /// a counter whose limit is 0 is off (nothing counted, nothing reset); an address fully
    /// in the reported state (healthy with no failure counted, or unhealthy with no success
    /// counted) ignores it; otherwise the counter grows and the opposite ones restart, and
    /// reaching the limit sets the state. Returns the new state when it changes.
    ///
    /// Probes (`Origin::Active`) judge successes against the state the cluster uses (an
    /// owner's successes bring back an address any node holds down) and failures against the
    /// owner's own view (so an address another node holds down is still taken out by the
    /// owner's failures, for every node). Traffic judges this node's own view.
    pub fn observe(&self, o: Observation, limits: &Limits, origin: Origin) -> Option<bool> {
        let (counter, limit, to_healthy) = match o {
            Observation::Success => (&self.successes, limits.successes, true),
            Observation::HttpFailure => (&self.http_failures, limits.http_failures, false),
            Observation::TcpFailure => (&self.tcp_failures, limits.tcp_failures, false),
            Observation::Timeout => (&self.timeouts, limits.timeouts, false),
        };
        if limit == 0 {
            return None;
        }
        let healthy = match (origin, to_healthy) {
            (Origin::Active, true) => self.healthy_everywhere(),
            _ => self.locally_healthy(),
        };
        let failures = self.http_failures.load(Ordering::Relaxed)
            + self.tcp_failures.load(Ordering::Relaxed)
            + self.timeouts.load(Ordering::Relaxed);
        let successes = self.successes.load(Ordering::Relaxed);
        if (to_healthy && healthy && failures == 0) || (!to_healthy && !healthy && successes == 0) {
            return None;
        }
        let n = counter.fetch_add(1, Ordering::Relaxed) + 1;
        if to_healthy {
            if failures > 0 {
                self.http_failures.store(0, Ordering::Relaxed);
                self.tcp_failures.store(0, Ordering::Relaxed);
                self.timeouts.store(0, Ordering::Relaxed);
            }
        } else if successes > 0 {
            self.successes.store(0, Ordering::Relaxed);
        }
        if n >= limit {
            if healthy != to_healthy {
                self.set(to_healthy, now_ms(), origin);
                return Some(to_healthy);
            }
            // Fully in that state again: its counters start over.
            self.reset_counters();
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
        let p = Origin::Passive;
        assert_eq!(h.observe(Observation::HttpFailure, &limits, p), None);
        assert_eq!(h.observe(Observation::HttpFailure, &limits, p), None);
        // A success while failures are counted restarts them.
        assert_eq!(h.observe(Observation::Success, &limits, p), None);
        for _ in 0..2 {
            assert_eq!(h.observe(Observation::HttpFailure, &limits, p), None);
        }
        assert_eq!(h.observe(Observation::HttpFailure, &limits, p), Some(false));
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
        assert_eq!(h.observe(Observation::TcpFailure, &limits, p), Some(false));
    }

    #[test]
    fn with_successes_off_failures_add_up_across_successes() {
        // Kong's default passive `healthy.successes` is 0: successes reset nothing, so a
        // backend failing every other request still trips.
        let h = Health::default();
        let limits = Limits {
            successes: 0,
            http_failures: 3,
            ..Limits::default()
        };
        let p = Origin::Passive;
        for _ in 0..2 {
            assert_eq!(h.observe(Observation::HttpFailure, &limits, p), None);
            assert_eq!(h.observe(Observation::Success, &limits, p), None);
        }
        assert_eq!(h.observe(Observation::HttpFailure, &limits, p), Some(false));
    }
}
