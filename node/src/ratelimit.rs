//! Where rate-limiting plugins count ([`Counters`]): `policy: local` in a store this node keeps
//! to itself, `cluster`/`redis` in the gossip-shared store ([`tollgate_cluster::gcounter`]).
//!
//! One counter per (plugin instance, limit key, period), keyed by a 64-bit hash of the limit
//! key so a lookup allocates nothing. A counter remembers the current and the previous window,
//! which is all the sliding estimate needs:
//! `estimate = current + previous × (1 − elapsed / period)`.
//! A request is admitted only if `estimate + 1 ≤ limit`, so the estimate never exceeds the
//! limit. Check and increment happen under the counter's shard lock: concurrent requests cannot
//! both take the last unit.
//!
//! response-ratelimiting counts differently (Kong's semantics): it reads a fixed window's count
//! before proxying ([`Counters::usage`]) and adds what the upstream's response says it cost
//! afterwards ([`Counters::add`]), so its counts may overshoot a limit by one response's cost.

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
    /// The count in the fixed window of `period` seconds holding `now` (checked before,
    /// counted after: response-ratelimiting).
    fn usage(&self, key: CounterKey, period: u64, now: f64) -> u64;
    /// Counts `n` more in the fixed window of `period` seconds holding `now`.
    fn add(&self, key: CounterKey, period: u64, now: f64, n: u64);
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
    fn usage(&self, key: CounterKey, period: u64, now: f64) -> u64 {
        GCounters::usage(self, key, period, now)
    }
    fn add(&self, key: CounterKey, period: u64, now: f64, n: u64) {
        GCounters::add(self, key, period, now, n)
    }
}

/// `policy: local`: a counter store this node never publishes and never hears peers in, so
/// its view is this node's counts alone (N nodes admit up to N × limit, as Kong's local
/// policy). Same windows, headers and memory cap as the cluster store.
pub type LocalCounters = GCounters;

/// A store for `policy: local`, holding at most about `cap` keys.
pub fn local_counters(cap: usize) -> LocalCounters {
    GCounters::new(0, cap)
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
        let c = local_counters(1000);
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
        let c = local_counters(1000);
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
    fn usage_counts_what_was_added_in_the_fixed_window() {
        let c = local_counters(1000);
        let t = 6000.0;
        assert_eq!(c.usage(K, 60, t), 0);
        Counters::add(&c, K, 60, t + 1.0, 3);
        Counters::add(&c, K, 60, t + 59.0, 2);
        assert_eq!(Counters::usage(&c, K, 60, t + 30.0), 5);
        // Fixed windows: the next one starts at zero.
        assert_eq!(Counters::usage(&c, K, 60, t + 60.0), 0);
        Counters::add(&c, K, 60, t + 61.0, 1);
        assert_eq!(Counters::usage(&c, K, 60, t + 61.0), 1);
    }

    #[test]
    fn usage_includes_what_peers_published() {
        let a = GCounters::new(1, 1000);
        let b = GCounters::new(2, 1000);
        let t = 6000.0;
        a.add(K, 60, t, 4);
        for (_, v) in a.take_publication(t) {
            b.merge(1, &v);
        }
        b.add(K, 60, t, 1);
        assert_eq!(b.usage(K, 60, t + 1.0), 5);
        assert_eq!(a.usage(K, 60, t + 1.0), 4);
    }

    #[test]
    fn gc_drops_stale_windows() {
        let c = local_counters(1000);
        c.try_acquire(K, 60, 5.0, 6000.0, true);
        c.gc(6061.0);
        assert_eq!(c.tracked().0, 1);
        c.gc(6200.0);
        assert_eq!(c.tracked().0, 0);
    }
}

/// What a limit counts by, among the kinds both rate-limiting plugins have.
#[derive(Debug, Clone, Copy)]
pub enum KeyBy {
    Ip,
    /// The consumer, else its credential, else the client IP (Kong's fallback).
    Consumer,
    /// The credential, else the client IP.
    Credential,
}

/// Kong's `get_identifier` for `by`, hashed without allocating; the seed keeps addresses and
/// ids apart.
pub fn identity_key(ctx: &crate::plugins::Ctx<'_>, by: KeyBy) -> u64 {
    use xxhash_rust::xxh3::xxh3_64_with_seed;
    let ip = || match ctx.client_ip {
        std::net::IpAddr::V4(a) => xxh3_64_with_seed(&a.octets(), 1),
        std::net::IpAddr::V6(a) => xxh3_64_with_seed(&a.octets(), 1),
    };
    let id = |u: uuid::Uuid| xxh3_64_with_seed(u.as_bytes(), 2);
    match by {
        KeyBy::Ip => ip(),
        KeyBy::Consumer => match (&ctx.consumer, &ctx.credential) {
            (Some(c), _) => id(c.id),
            (None, Some(cr)) => id(cr.id),
            _ => ip(),
        },
        KeyBy::Credential => ctx.credential.map(|c| id(c.id)).unwrap_or_else(ip),
    }
}
