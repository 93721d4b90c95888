//! One cluster view of target health, over gossip. Kong keeps health per node (each node
//! probes every target, nodes may disagree, and a target can stay down on one node forever);
//! here the nodes share what they see.
//!
//! **What each node publishes**: under `hc/{upstream id}`, its own view of every address
//! whose state ever changed on it: healthy or not, when (wall-clock ms) and why (passive,
//! active probe, operator). Addresses never changed are healthy and not listed.
//!
//! **The rule** every node applies, each [`TICK`] (guarantees below hold once gossip has
//! carried the latest entries, typically within 2–3 gossip rounds of 100 ms):
//! 1. *Shared decisions*: the latest (by timestamp) active-probe or operator transition for an
//!    address, from any live node, is adopted by every node into its own view, with its
//!    origin and time, so every node republishes it and it outlives the node that made it. So a
//!    `PUT …/unhealthy` through any node, or probe failures seen by the address's owner (counted
//!    against the owner's own view, whatever other nodes hold), take the address out on every
//!    node; a `PUT …/healthy` or the owner's successful
//!    probes bring it back everywhere (no node stays stuck down on an old passive trip; a
//!    node whose own path to the target fails will trip again, and flap, by design: it is
//!    the owner's view that decides for all).
//! 2. *Passive trips stay local, unless shared by a majority*: a node's own passive check
//!    takes the address out of that node's balancer at once; the address is out on every
//!    node when a strict majority of live nodes hold it down.
//! 3. The balancer on a node sends to an address when that node's own view is healthy and
//!    the cluster does not hold it down by majority.
//!
//! **Probe ownership**: each address is probed by one live node, the highest-scoring by
//! rendezvous hashing of (node, upstream, address). When a node dies (gossip marks it dead,
//! within a few seconds), its addresses' scores fall to the next node: ownership moves with
//! no coordination, and only the dead node's addresses move. The owner probes according to
//! the shared view: an address held down anywhere is probed at the healthy interval, and its
//! successes bring it back for all.
//!
//! Eventually consistent: nodes can disagree for the time gossip takes; a partitioned node
//! keeps its own view and the shared decisions it last heard, and catches up when it rejoins
//! (latest timestamp wins, so clocks should be synchronised as for rate limiting).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tollgate_cluster::discovery::Discovery;
use uuid::Uuid;

use super::health::Origin;
use super::Balancers;

/// Gossip key prefix of health views.
pub const PREFIX: &str = "hc/";
/// How often the view is published and applied.
pub const TICK: Duration = Duration::from_millis(100);
/// Most addresses one node publishes per upstream (the most recently changed).
pub const MAX_ENTRIES: usize = 1000;

/// One node's published entry for one address.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    pub healthy: bool,
    pub at_ms: u64,
    pub origin: Origin,
}

/// What one node published, with the generation (run) that published it: upstream →
/// address → entry.
type Heard = (u64, HashMap<Uuid, HashMap<SocketAddr, Entry>>);

/// What the other nodes published, and which nodes are live.
pub struct ClusterHealth {
    pub node: u64,
    live: ArcSwap<Vec<u64>>,
    heard: Mutex<HashMap<u64, Heard>>,
    /// What this node last published, per upstream key.
    published: Mutex<HashMap<Uuid, String>>,
}

/// Encodes one upstream's entries: `addr=h,ms,o;…` in address order.
pub fn encode(entries: &BTreeMap<SocketAddr, Entry>) -> String {
    entries
        .iter()
        .map(|(a, e)| {
            format!(
                "{a}={},{},{}",
                if e.healthy { 1 } else { 0 },
                e.at_ms,
                e.origin.letter()
            )
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Decodes what [`encode`] wrote; malformed parts are skipped (a peer of another version).
pub fn decode(s: &str) -> HashMap<SocketAddr, Entry> {
    s.split(';')
        .filter_map(|part| {
            let (addr, rest) = part.split_once('=')?;
            let mut it = rest.split(',');
            let healthy = it.next()? == "1";
            let at_ms = it.next()?.parse().ok()?;
            let origin = Origin::from_letter(it.next()?.chars().next()?)?;
            Some((
                SocketAddr::from_str(addr).ok()?,
                Entry {
                    healthy,
                    at_ms,
                    origin,
                },
            ))
        })
        .collect()
}

/// Rendezvous score of a node for an address (no allocation: the scheduler asks for every
/// address and live node each tick).
fn score(node: u64, upstream: Uuid, addr: SocketAddr) -> u64 {
    let mut buf = [0u8; 42];
    buf[..8].copy_from_slice(&node.to_le_bytes());
    buf[8..24].copy_from_slice(upstream.as_bytes());
    let ip = match addr.ip() {
        std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        std::net::IpAddr::V6(v6) => v6.octets(),
    };
    buf[24..40].copy_from_slice(&ip);
    buf[40..].copy_from_slice(&addr.port().to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&buf)
}

impl ClusterHealth {
    pub fn new(node: u64) -> Arc<ClusterHealth> {
        Arc::new(ClusterHealth {
            node,
            live: ArcSwap::from_pointee(vec![node]),
            heard: Mutex::new(HashMap::new()),
            published: Mutex::new(HashMap::new()),
        })
    }

    /// Records a peer's published value (called from gossip's callback). A node restarted
    /// (a newer generation) starts with nothing: what its previous run published is dropped,
    /// since the new run republishes only what changed since it started.
    pub fn hear(&self, node: u64, generation: u64, key: &str, value: &str) {
        if node == self.node {
            return;
        }
        let Ok(upstream) = Uuid::parse_str(key) else {
            return;
        };
        let mut heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        let (seen, entries) = heard.entry(node).or_default();
        if generation < *seen {
            return;
        }
        if generation > *seen {
            *seen = generation;
            entries.clear();
        }
        entries.insert(upstream, decode(value));
    }

    pub fn set_live(&self, mut live: Vec<u64>) {
        if !live.contains(&self.node) {
            live.push(self.node);
        }
        live.sort_unstable();
        self.live.store(Arc::new(live));
    }

    pub fn live(&self) -> Arc<Vec<u64>> {
        self.live.load_full()
    }

    /// The live node that probes `addr` of `upstream`.
    pub fn owner(&self, upstream: Uuid, addr: SocketAddr) -> u64 {
        self.live
            .load()
            .iter()
            .copied()
            .max_by_key(|n| (score(*n, upstream, addr), *n))
            .unwrap_or(self.node)
    }

    pub fn owns(&self, upstream: Uuid, addr: SocketAddr) -> bool {
        self.owner(upstream, addr) == self.node
    }

    /// Every live node's entry for an address (this node's own included), by node.
    pub fn entries(
        &self,
        balancers: &Balancers,
        upstream: Uuid,
        addr: SocketAddr,
    ) -> BTreeMap<u64, Entry> {
        let mut out = BTreeMap::new();
        let live = self.live.load();
        let heard = self.heard.lock().unwrap_or_else(|p| p.into_inner());
        for n in live.iter().filter(|n| **n != self.node) {
            if let Some(e) = heard
                .get(n)
                .and_then(|(_, u)| u.get(&upstream))
                .and_then(|a| a.get(&addr))
            {
                out.insert(*n, *e);
            }
        }
        drop(heard);
        if let Some(b) = balancers.get(upstream) {
            if let Some(p) = b.set.load().peers.iter().find(|p| p.addr == addr) {
                let (at_ms, origin) = p.state.health.last_change();
                out.insert(
                    self.node,
                    Entry {
                        healthy: p.state.health.locally_healthy(),
                        at_ms,
                        origin,
                    },
                );
            }
        }
        out
    }

    /// This node's publication: the upstream keys whose value changed.
    pub fn publication(&self, balancers: &Balancers) -> Vec<(String, String)> {
        let mut now: HashMap<Uuid, String> = HashMap::new();
        for b in balancers.all() {
            let mut entries = BTreeMap::new();
            // One gossip value per upstream: the most recent changes, at most
            // `MAX_ENTRIES` (about 35 bytes each), so a value stays well within a datagram.
            let mut changed: Vec<_> = b
                .set
                .load()
                .peers
                .iter()
                .filter(|p| p.state.health.last_change().1 != Origin::Initial)
                .cloned()
                .collect();
            changed.sort_by_key(|p| std::cmp::Reverse(p.state.health.last_change().0));
            changed.truncate(MAX_ENTRIES);
            for p in changed.iter() {
                let (at_ms, origin) = p.state.health.last_change();
                if origin != Origin::Initial {
                    entries.insert(
                        p.addr,
                        Entry {
                            healthy: p.state.health.locally_healthy(),
                            at_ms,
                            origin,
                        },
                    );
                }
            }
            if !entries.is_empty() {
                now.insert(b.id, encode(&entries));
            }
        }
        let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (id, v) in &now {
            if published.get(id) != Some(v) {
                out.push((format!("{PREFIX}{id}"), v.clone()));
            }
        }
        // An upstream with nothing left to say (or gone) is cleared.
        for id in published.keys().filter(|id| !now.contains_key(id)) {
            out.push((format!("{PREFIX}{id}"), String::new()));
        }
        *published = now;
        out
    }

    /// Applies the rule (module doc) to every balancer's addresses.
    pub fn apply(&self, balancers: &Balancers) {
        let live = self.live.load_full();
        let heard = self.heard.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for b in balancers.all() {
            for p in b.set.load().peers.iter() {
                let others: Vec<Entry> = live
                    .iter()
                    .filter(|n| **n != self.node)
                    .filter_map(|n| heard.get(n)?.1.get(&b.id)?.get(&p.addr).copied())
                    .collect();
                let h = &p.state.health;
                // 1. Shared decisions: adopt a newer probe or operator transition.
                let (mine_at, _) = h.last_change();
                if let Some(latest) = others
                    .iter()
                    .filter(|e| matches!(e.origin, Origin::Active | Origin::Manual))
                    .max_by_key(|e| e.at_ms)
                {
                    if latest.at_ms > mine_at {
                        // Kept as the decision it is (origin and time), so that it outlives
                        // the node that made it: every node republishes it.
                        h.set(latest.healthy, latest.at_ms, latest.origin);
                    }
                }
                // 2. Majority of live nodes.
                let down = others.iter().filter(|e| !e.healthy).count()
                    + usize::from(!h.locally_healthy());
                h.set_cluster_down(down * 2 > live.len());
                h.set_down_somewhere(down > 0);
            }
        }
    }
}

/// Publishes and applies the cluster view for the life of the node.
pub async fn run(
    view: Arc<ClusterHealth>,
    balancers: Arc<Balancers>,
    disc: Arc<Discovery>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rounds = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if rounds.is_multiple_of(5) {
            let live: HashSet<u64> = disc
                .peers()
                .await
                .values()
                .filter(|p| p.live)
                .map(|p| p.id)
                .collect();
            view.set_live(live.into_iter().collect());
        }
        rounds += 1;
        view.apply(&balancers);
        let kvs = view.publication(&balancers);
        if !kvs.is_empty() {
            disc.publish_many(kvs).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// What peers gossip is decoded without a panic, whatever it holds.
        #[test]
        fn fuzz_gossiped_health_decodes_or_is_skipped(text in "[ -~]{0,200}") {
            let _ = decode(&text);
        }
    }

    #[test]
    fn entries_round_trip() {
        let mut m = BTreeMap::new();
        m.insert(
            "127.0.0.1:80".parse().unwrap(),
            Entry {
                healthy: false,
                at_ms: 12,
                origin: Origin::Manual,
            },
        );
        m.insert(
            "[::1]:8000".parse().unwrap(),
            Entry {
                healthy: true,
                at_ms: 13,
                origin: Origin::Active,
            },
        );
        let back = decode(&encode(&m));
        assert_eq!(back.len(), 2);
        assert_eq!(
            back[&"127.0.0.1:80".parse().unwrap()],
            m[&"127.0.0.1:80".parse().unwrap()]
        );
        assert!(decode("garbage;1.2.3.4:1=x").is_empty());
    }

    /// One upstream with one target (10.0.0.1:80) on a balancer store.
    fn one_target() -> (Arc<Balancers>, Uuid, SocketAddr) {
        use tollgate_config::declarative::{self, Sequence};
        let doc = "_format_version: \"3.0\"\nupstreams:\n  - name: u.test\n    targets: [{target: '10.0.0.1:80'}]\n";
        let st =
            tollgate_config::State::from_data(declarative::parse(doc, &mut Sequence(0)).unwrap())
                .unwrap();
        let balancers = Arc::new(Balancers::default());
        balancers.sync(&st);
        let b = balancers.all().pop().unwrap();
        (balancers, b.id, "10.0.0.1:80".parse().unwrap())
    }

    #[test]
    fn a_majority_holds_an_address_down_and_shared_decisions_are_adopted() {
        let (balancers, up, addr) = one_target();
        let peer = || balancers.get(up).unwrap().set.load().peers[0].clone();
        let v = ClusterHealth::new(1);
        v.set_live(vec![1, 2, 3]);
        let entry = |healthy: bool, at_ms: u64, o: char| {
            format!("{addr}={},{at_ms},{o}", if healthy { 1 } else { 0 })
        };
        // One other node's passive trip: not a majority of three.
        v.hear(2, 1, &up.to_string(), &entry(false, 10, 'p'));
        v.apply(&balancers);
        assert!(peer().state.health.available());
        assert!(!peer().state.health.healthy_everywhere());
        // Two of three: out here too, though this node saw nothing wrong.
        v.hear(3, 1, &up.to_string(), &entry(false, 11, 'p'));
        v.apply(&balancers);
        assert!(!peer().state.health.available());
        assert!(peer().state.health.locally_healthy());
        // Node 3 restarts (a newer generation): its old entry no longer counts.
        v.hear(3, 2, &up.to_string(), "");
        v.apply(&balancers);
        assert!(peer().state.health.available());
        // An operator's mark through node 2, newer than anything here: adopted.
        v.hear(2, 1, &up.to_string(), &entry(false, 20, 'm'));
        v.apply(&balancers);
        assert!(!peer().state.health.locally_healthy());
        assert_eq!(peer().state.health.last_change(), (20, Origin::Manual));
        // Its owner's probe brings it back for all; an older passive entry does not matter.
        v.hear(3, 2, &up.to_string(), &entry(true, 30, 'a'));
        v.hear(2, 1, &up.to_string(), &entry(false, 20, 'm'));
        v.apply(&balancers);
        assert!(peer().state.health.locally_healthy());
        // Dead nodes do not vote.
        v.hear(2, 1, &up.to_string(), &entry(false, 40, 'p'));
        v.hear(3, 2, &up.to_string(), &entry(false, 41, 'p'));
        v.set_live(vec![1, 2]);
        v.apply(&balancers);
        assert!(
            peer().state.health.available(),
            "one of two live nodes is no majority"
        );
    }

    #[test]
    fn rendezvous_moves_only_a_dead_nodes_addresses() {
        let v = ClusterHealth::new(1);
        v.set_live(vec![1, 2, 3]);
        let up = Uuid::from_u128(7);
        let addrs: Vec<SocketAddr> = (0..300)
            .map(|i| SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8], 80)))
            .collect();
        let before: Vec<u64> = addrs.iter().map(|a| v.owner(up, *a)).collect();
        for n in [1, 2, 3] {
            let share = before.iter().filter(|o| **o == n).count();
            assert!((60..=140).contains(&share), "node {n} owns {share} of 300");
        }
        v.set_live(vec![1, 3]);
        for (a, was) in addrs.iter().zip(&before) {
            let now = v.owner(up, *a);
            if *was != 2 {
                assert_eq!(now, *was);
            } else {
                assert_ne!(now, 2);
            }
        }
    }
}
