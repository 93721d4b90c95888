//! Rate-limit counters held by this node (`policy: local`).
//!
//! One counter per (plugin instance, limit key, period), keyed by a 64-bit hash of the limit
//! key so a lookup allocates nothing. A counter remembers the current and the previous window,
//! which is all the sliding estimate needs:
//! `estimate = current + previous × (1 − elapsed / period)`.
//! A request is admitted only if `estimate + 1 ≤ limit`, so the estimate never exceeds the
//! limit. Check and increment happen under the counter's shard lock: concurrent requests cannot
//! both take the last unit.

use dashmap::DashMap;

pub use tollgate_cluster::gcounter::{CounterKey, Decision, GCounters};

/// Where a rate-limiting plugin counts: this node only (`local`) or the cluster (`cluster`,
/// `redis`). Both admit with check-and-count under one lock per counter.
pub trait Counters: Send + Sync {
    /// Admits one request against `limit` per `period` seconds at `now`, counting it if
    /// admitted.
    fn try_acquire(
        &self,
        key: CounterKey,
        period: u64,
        limit: f64,
        now: f64,
        sliding: bool,
    ) -> Decision;
    /// Takes back one admitted request.
    fn release(&self, key: CounterKey, now: f64);
}

impl Counters for GCounters {
    fn try_acquire(
        &self,
        key: CounterKey,
        period: u64,
        limit: f64,
        now: f64,
        sliding: bool,
    ) -> Decision {
        GCounters::try_acquire(self, key, period, limit, now, sliding)
    }
    fn release(&self, key: CounterKey, now: f64) {
        GCounters::release(self, key, now)
    }
}

impl Counters for LocalCounters {
    fn try_acquire(
        &self,
        key: CounterKey,
        period: u64,
        limit: f64,
        now: f64,
        sliding: bool,
    ) -> Decision {
        LocalCounters::try_acquire(self, key, period, limit, now, sliding)
    }
    fn release(&self, key: CounterKey, now: f64) {
        LocalCounters::release(self, key, now)
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    index: u64,
    current: u64,
    previous: u64,
    period: u64,
}

/// The counters of this node.
#[derive(Default)]
pub struct LocalCounters {
    map: DashMap<CounterKey, Window>,
}

impl LocalCounters {
    pub fn new() -> Self {
        Self::default()
    }

    /// Admits one request against `limit` per `period` seconds at time `now` (unix seconds),
    /// counting it when admitted.
    pub fn try_acquire(
        &self,
        key: CounterKey,
        period: u64,
        limit: f64,
        now: f64,
        sliding: bool,
    ) -> Decision {
        let index = (now / period as f64).floor() as u64;
        let elapsed = now - (index * period) as f64;
        let mut entry = self.map.entry(key).or_insert(Window {
            index,
            current: 0,
            previous: 0,
            period,
        });
        let w = entry.value_mut();
        if w.index != index {
            w.previous = if w.index + 1 == index { w.current } else { 0 };
            w.current = 0;
            w.index = index;
        }
        let weight = if sliding {
            1.0 - elapsed / period as f64
        } else {
            0.0
        };
        let estimate = w.current as f64 + w.previous as f64 * weight;
        let reset = ((period as f64 - elapsed).ceil() as u64).max(1);
        if estimate + 1.0 <= limit {
            w.current += 1;
            let remaining = (limit - estimate - 1.0).max(0.0).floor() as u64;
            return Decision {
                admitted: true,
                remaining,
                reset,
                retry_after: 0,
            };
        }
        let p = period as f64;
        let retry = if !sliding {
            reset as f64
        } else if w.current as f64 + 1.0 > limit {
            // Wait for the next window, then for this window's weight to decay enough.
            let decay = if w.current == 0 {
                0.0
            } else {
                p * (1.0 - (limit - 1.0) / w.current as f64)
            };
            (p - elapsed) + decay.max(0.0)
        } else if w.previous > 0 {
            let needed = p * (1.0 - (limit - 1.0 - w.current as f64) / w.previous as f64);
            needed - elapsed
        } else {
            1.0
        };
        Decision {
            admitted: false,
            remaining: 0,
            reset,
            // The epsilon absorbs float noise (18.000000000000004 must read as 18).
            retry_after: ((retry - 1e-9).ceil() as u64).max(1),
        }
    }

    /// Takes back one admitted request (another period of the same plugin rejected it).
    pub fn release(&self, key: CounterKey, now: f64) {
        if let Some(mut w) = self.map.get_mut(&key) {
            let index = (now / w.period as f64).floor() as u64;
            if w.index == index && w.current > 0 {
                w.current -= 1;
            }
        }
    }

    /// Drops counters whose windows can no longer affect any decision.
    pub fn gc(&self, now: f64) {
        self.map.retain(|_, w| {
            let index = (now / w.period as f64).floor() as u64;
            w.index + 1 >= index
        });
    }

    /// Number of counters held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: CounterKey = CounterKey {
        plugin: 1,
        period: 1,
        ident: 7,
    };

    #[test]
    fn fixed_window_admits_exactly_the_limit() {
        let c = LocalCounters::new();
        let t = 6000.0; // start of a minute window
        let rem: Vec<u64> = (0..5)
            .map(|_| c.try_acquire(K, 60, 5.0, t + 1.0, false))
            .map(|d| {
                assert!(d.admitted);
                d.remaining
            })
            .collect();
        assert_eq!(rem, vec![4, 3, 2, 1, 0]);
        let d = c.try_acquire(K, 60, 5.0, t + 1.0, false);
        assert!(!d.admitted);
        assert_eq!(d.retry_after, 59);
        // The next window starts afresh.
        assert!(c.try_acquire(K, 60, 5.0, t + 60.0, false).admitted);
    }

    #[test]
    fn sliding_window_weighs_the_previous_window() {
        let c = LocalCounters::new();
        for _ in 0..10 {
            assert!(c.try_acquire(K, 60, 10.0, 6030.0, true).admitted);
        }
        // 15 s into the next window, the previous 10 still weigh 7.5.
        let d = c.try_acquire(K, 60, 10.0, 6075.0, true);
        assert!(d.admitted);
        assert_eq!(d.remaining, 1);
        let d = c.try_acquire(K, 60, 10.0, 6075.0, true);
        assert!(d.admitted);
        assert_eq!(d.remaining, 0);
        let d = c.try_acquire(K, 60, 10.0, 6075.0, true);
        assert!(!d.admitted);
        // With 2 counted now, admission needs the previous 10 to weigh at most 7:
        // 10 × (1 − t/60) ≤ 7 → t ≥ 18 s, 3 s from now.
        assert_eq!(d.retry_after, 3);
    }

    #[test]
    fn gc_drops_stale_windows() {
        let c = LocalCounters::new();
        c.try_acquire(K, 60, 5.0, 6000.0, true);
        c.gc(6061.0);
        assert_eq!(c.len(), 1);
        c.gc(6200.0);
        assert_eq!(c.len(), 0);
    }
}
