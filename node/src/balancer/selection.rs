//! Choosing a peer: Kong's four algorithms over one upstream's resolved addresses.
//!
//! Each is built once per address set ([`Selector::build`]) and picks without a lock: health
//! is read from each peer's atomics at pick time, so a health change needs no rebuild.
//!
//! - **round-robin**: nginx's smooth weighted round-robin, run once at build time for a whole
//!   cycle into a sequence of peer positions; a pick takes the next position from an atomic
//!   counter and skips unavailable peers. Weights 5:1:1 give `a a b a c a a`, never a burst
//!   of five. The cycle is `sum(w) / gcd(w)` long, scaled down past [`MAX_CYCLE`].
//! - **least-connections**: the available peer with the fewest requests in flight per unit of
//!   weight; ties go round-robin.
//! - **consistent-hashing**: a table of `slots` entries; a key goes to entry
//!   `hash(key) mod slots`, whose owner is the peer with the highest weighted rendezvous score
//!   for that entry (`weight / -ln(u)`, `u` a hash of the entry and the peer's address). The
//!   score makes each peer's share follow its weight, and removing a peer changes the owner
//!   of its own entries only: removing one of ten equal targets moves its keys (a tenth) and
//!   no others. When an entry's owner is unavailable, the key goes to the available peer
//!   with the next best score for that entry, so it comes back when the owner does.
//! - **latency**: the available peer with the lowest EWMA of response time, scaled by what
//!   it has in flight and divided by its weight.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use super::Peer;

/// Longest round-robin cycle kept (positions, 4 bytes each).
pub const MAX_CYCLE: usize = 1 << 16;

/// The balancing algorithm of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
    LeastConnections,
    ConsistentHashing,
    Latency,
}

impl Algorithm {
    pub fn parse(s: &str) -> Algorithm {
        match s {
            "least-connections" => Algorithm::LeastConnections,
            "consistent-hashing" => Algorithm::ConsistentHashing,
            "latency" => Algorithm::Latency,
            _ => Algorithm::RoundRobin,
        }
    }
}

/// A built selector for one address set.
pub enum Selector {
    RoundRobin {
        cycle: Vec<u32>,
    },
    LeastConnections,
    /// The table is built on the first pick (a few ms for 10,000 slots and 10 targets), not
    /// when the configuration is applied: a file of many upstreams loads fast.
    Ring {
        table: std::sync::OnceLock<Vec<u32>>,
        seeds: Vec<u64>,
        weights: Vec<u32>,
        slots: u32,
    },
    Latency,
}

impl Selector {
    pub fn build(algorithm: Algorithm, peers: &[Arc<Peer>], slots: u32) -> Selector {
        match algorithm {
            Algorithm::RoundRobin => Selector::RoundRobin {
                cycle: smooth_cycle(&peers.iter().map(|p| p.weight).collect::<Vec<_>>()),
            },
            Algorithm::LeastConnections => Selector::LeastConnections,
            Algorithm::ConsistentHashing => {
                let seeds: Vec<u64> = peers
                    .iter()
                    .map(|p| xxhash_rust::xxh3::xxh3_64(p.addr.to_string().as_bytes()))
                    .collect();
                Selector::Ring {
                    table: std::sync::OnceLock::new(),
                    seeds,
                    weights: peers.iter().map(|p| p.weight).collect(),
                    slots,
                }
            }
            Algorithm::Latency => Selector::Latency,
        }
    }

    /// The peer for this request, or none when no peer is available. `key` is the hash input
    /// (consistent hashing only); `turn` spreads ties.
    pub fn pick<'p>(
        &self,
        peers: &'p [Arc<Peer>],
        key: Option<&[u8]>,
        turn: &AtomicUsize,
        available: &dyn Fn(&Peer) -> bool,
    ) -> Option<&'p Arc<Peer>> {
        match self {
            Selector::RoundRobin { cycle } => {
                if cycle.is_empty() {
                    return None;
                }
                // During an outage, answer at once rather than walk the whole cycle.
                if !peers.iter().any(|p| p.weight > 0 && available(p)) {
                    return None;
                }
                let start = turn.fetch_add(1, Ordering::Relaxed);
                (0..cycle.len())
                    .map(|i| &peers[cycle[(start + i) % cycle.len()] as usize])
                    .find(|p| available(p))
            }
            Selector::LeastConnections => {
                let start = turn.fetch_add(1, Ordering::Relaxed);
                least_by(peers, start, available, |p| {
                    p.in_flight() as f64 / p.weight as f64
                })
            }
            Selector::Latency => {
                let start = turn.fetch_add(1, Ordering::Relaxed);
                least_by(peers, start, available, |p| {
                    // A peer with no measurement yet is tried first.
                    p.ewma_micros() as f64 * (p.in_flight() + 1) as f64 / p.weight as f64
                })
            }
            Selector::Ring {
                table,
                seeds,
                weights,
                slots,
            } => {
                let table = table.get_or_init(|| self::table(seeds, weights, *slots));
                if table.is_empty() {
                    return None;
                }
                // No key hashes as the empty string, as Kong's.
                let slot = hash32(key.unwrap_or_default()) as usize % table.len();
                let owner = &peers[table[slot] as usize];
                if available(owner) {
                    return Some(owner);
                }
                best_for(slot as u64, seeds, peers, available)
            }
        }
    }
}

/// The weighted rendezvous score of a peer for a table entry.
fn score(slot: u64, seed: u64, weight: u32) -> f64 {
    if weight == 0 {
        return 0.0;
    }
    let h = xxhash_rust::xxh3::xxh3_64_with_seed(&slot.to_le_bytes(), seed);
    // u in (0, 1): never 0 (ln 0) nor 1 (division by zero).
    let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    weight as f64 / -u.ln()
}

/// The available peer with the best score for an entry.
fn best_for<'p>(
    slot: u64,
    seeds: &[u64],
    peers: &'p [Arc<Peer>],
    available: &dyn Fn(&Peer) -> bool,
) -> Option<&'p Arc<Peer>> {
    peers
        .iter()
        .zip(seeds)
        .filter(|(p, _)| p.weight > 0 && available(p))
        .map(|(p, seed)| (p, score(slot, *seed, p.weight)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(p, _)| p)
}

/// The owner of each of `slots` entries.
fn table(seeds: &[u64], weights: &[u32], slots: u32) -> Vec<u32> {
    if weights.iter().all(|w| *w == 0) {
        return Vec::new();
    }
    (0..slots as u64)
        .map(|slot| {
            let mut best = (0u32, f64::MIN);
            for (i, (seed, w)) in seeds.iter().zip(weights).enumerate() {
                let s = score(slot, *seed, *w);
                if s > best.1 {
                    best = (i as u32, s);
                }
            }
            best.0
        })
        .collect()
}

fn least_by<'p>(
    peers: &'p [Arc<Peer>],
    start: usize,
    available: &dyn Fn(&Peer) -> bool,
    cost: impl Fn(&Peer) -> f64,
) -> Option<&'p Arc<Peer>> {
    let n = peers.len();
    let mut best: Option<(&Arc<Peer>, f64)> = None;
    for i in 0..n {
        let p = &peers[(start + i) % n];
        if p.weight == 0 || !available(p) {
            continue;
        }
        let c = cost(p);
        if best.is_none_or(|(_, b)| c < b) {
            best = Some((p, c));
        }
    }
    best.map(|(p, _)| p)
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// nginx's smooth weighted round-robin over one whole cycle: each step adds every weight to
/// its peer's current value, picks the largest, and takes the total off it.
pub fn smooth_cycle(weights: &[u32]) -> Vec<u32> {
    let g = weights
        .iter()
        .filter(|w| **w > 0)
        .fold(0u64, |g, w| gcd(g, *w as u64));
    if g == 0 {
        return Vec::new();
    }
    let mut w: Vec<u64> = weights.iter().map(|x| *x as u64 / g).collect();
    let total: u64 = w.iter().sum();
    if total as usize > MAX_CYCLE {
        // Scale down, keeping every non-zero weight at least 1.
        for x in w.iter_mut().filter(|x| **x > 0) {
            *x = (*x * MAX_CYCLE as u64 / total).max(1);
        }
    }
    let total: i64 = w.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; w.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best: Option<usize> = None;
        for i in (0..w.len()).filter(|i| w[*i] > 0) {
            current[i] += w[i] as i64;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let Some(b) = best else { break };
        current[b] -= total;
        out.push(b as u32);
    }
    out
}

/// A stable 32-bit hash: the same on every node and every run, so every node sends a key to
/// the same target.
pub fn hash32(b: &[u8]) -> u32 {
    xxhash_rust::xxh3::xxh3_64(b) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_table_follows_weights_and_moves_only_a_removed_peers_entries() {
        let seeds: Vec<u64> = (0..10u64).map(|i| i * 7919 + 1).collect();
        let t = table(&seeds, &[100; 10], 10000);
        for i in 0..10 {
            let share = t.iter().filter(|o| **o == i).count();
            assert!((850..=1150).contains(&share), "{i}: {share}");
        }
        // Without peer 3: every entry not owned by 3 keeps its owner.
        let mut w = vec![100; 10];
        w[3] = 0;
        let t2 = table(&seeds, &w, 10000);
        for (a, b) in t.iter().zip(&t2) {
            assert!(*a == 3 || a == b);
            assert_ne!(*b, 3);
        }
        let heavy = table(&seeds[..2], &[100, 300], 10000);
        let ones = heavy.iter().filter(|o| **o == 1).count();
        assert!((7200..=7800).contains(&ones), "{ones}");
    }

    #[test]
    fn smooth_round_robin_has_no_bursts() {
        assert_eq!(smooth_cycle(&[5, 1, 1]), [0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_cycle(&[100, 100, 100]), [0, 1, 2]);
        assert_eq!(smooth_cycle(&[0, 10]), [1]);
        assert!(smooth_cycle(&[0, 0]).is_empty());
        let big = smooth_cycle(&[65535, 65534, 65533]);
        assert!(big.len() <= MAX_CYCLE + 3);
        let ones = big.iter().filter(|i| **i == 1).count() as f64;
        assert!((ones / big.len() as f64 - 1.0 / 3.0).abs() < 0.01);
    }
}
