//! Load balancing over Kong's upstreams and targets: a service whose `host` is an upstream's
//! name is sent to one of the upstream's targets, chosen by the upstream's algorithm among the
//! addresses that are healthy.
//!
//! Split as pingora-load-balancing splits it: [`selection`] (the algorithms), [`health`] (one
//! address's circuit breaker), [`active`] (probes), [`discovery`] (targets to addresses, DNS
//! included), [`hash_key`] (what consistent hashing hashes) and [`cluster`] (the cluster's
//! shared view of health).
//!
//! The [`Balancers`] store lives as long as the node and is synchronised with each new
//! configuration ([`Balancers::sync`]): an upstream or target that did not change keeps its
//! [`PeerState`] (connection pool, health, in-flight count, latency), so a change to one
//! target never resets the others. A pick reads an atomic snapshot of the address set
//! ([`PeerSet`]) and atomics: no lock on the request path.

pub mod active;
pub mod cluster;
pub mod discovery;
pub mod hash_key;
pub mod health;
pub mod metrics;
pub mod selection;

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use tollgate_config::entities::{Healthchecks, Target, Upstream};
use tollgate_config::State;
use uuid::Uuid;

use crate::proxy::upstream::Pool;
use health::{Health, Limits, Observation, Origin};
use selection::{Algorithm, Selector};

/// What one address has seen, kept across configuration changes while its target stays.
pub struct PeerState {
    pub health: Health,
    pub pool: Arc<Pool>,
    in_flight: AtomicU32,
    /// Exponentially weighted moving average of response-head latency, microseconds.
    ewma: AtomicU64,
    /// When the average last changed (ms since the Unix epoch): it halves every
    /// [`LATENCY_HALF_LIFE_MS`] without news, so a penalised peer is tried again.
    ewma_at: AtomicU64,
    pub requests: AtomicU64,
    pub failures: AtomicU64,
}

impl PeerState {
    fn new(addr: SocketAddr) -> Arc<PeerState> {
        Arc::new(PeerState {
            health: Health::default(),
            pool: Pool::new(&addr.ip().to_string(), addr.port(), Duration::from_secs(60)),
            in_flight: AtomicU32::new(0),
            ewma: AtomicU64::new(0),
            ewma_at: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }
}

/// One address of one target, as the balancer picks it.
pub struct Peer {
    pub addr: SocketAddr,
    pub target_id: Uuid,
    /// The target as configured (`host:port`), which `/health` and metrics name.
    pub target: Arc<str>,
    pub weight: u32,
    /// The Host header sent when the route does not preserve the client's.
    pub host_header: HeaderValue,
    pub state: Arc<PeerState>,
}

impl Peer {
    pub fn in_flight(&self) -> u32 {
        self.state.in_flight.load(Ordering::Relaxed)
    }

    /// The latency average, halved for every [`LATENCY_HALF_LIFE_MS`] since it last changed.
    pub fn ewma_micros(&self) -> u64 {
        self.ewma_at(health::now_ms())
    }

    fn ewma_at(&self, now_ms: u64) -> u64 {
        let v = self.state.ewma.load(Ordering::Relaxed);
        if v == 0 {
            return 0;
        }
        let age = now_ms.saturating_sub(self.state.ewma_at.load(Ordering::Relaxed));
        v >> (age / LATENCY_HALF_LIFE_MS).min(63)
    }

    /// Counts a request as in flight until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.state.in_flight.fetch_add(1, Ordering::Relaxed);
        self.state.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(self.state.clone())
    }

    /// Folds one response-head latency into the average (weight 1/8 for the new sample).
    pub fn record_latency(&self, d: Duration) {
        let now = health::now_ms();
        let sample = d.as_micros().min(u64::MAX as u128) as u64;
        let old = self.ewma_at(now);
        let new = if old == 0 {
            sample.max(1)
        } else {
            (old * 7 + sample) / 8
        };
        self.state.ewma.store(new.max(1), Ordering::Relaxed);
        // The clock is written only when a second has passed: the decay counts in tens of
        // seconds, and most responses then cost one clock read.
        if now.saturating_sub(self.state.ewma_at.load(Ordering::Relaxed)) >= 1000 {
            self.state.ewma_at.store(now, Ordering::Relaxed);
        }
    }

    /// A failed try (refused, reset, timed out): the latency algorithm avoids the peer, as if
    /// it took [`LATENCY_PENALTY`] or twice its average, whichever is more.
    pub fn record_failure(&self) {
        let now = health::now_ms();
        let penalty = LATENCY_PENALTY.as_micros() as u64;
        let old = self.ewma_at(now);
        self.state
            .ewma
            .store(old.saturating_mul(2).max(penalty), Ordering::Relaxed);
        self.state.ewma_at.store(now, Ordering::Relaxed);
    }
}

/// A failed try counts, for the latency algorithm, as at least this long.
pub const LATENCY_PENALTY: Duration = Duration::from_secs(1);
/// How fast a latency average fades without news.
pub const LATENCY_HALF_LIFE_MS: u64 = 10_000;

/// A request in flight to a peer (least-connections and latency count these).
pub struct InFlight(Arc<PeerState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A set of HTTP statuses (100–999), tested in one step.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusSet([u64; 16]);

impl StatusSet {
    pub fn of(statuses: &[u16]) -> StatusSet {
        let mut set = StatusSet::default();
        for s in statuses.iter().filter(|s| **s < 1024) {
            set.0[(*s / 64) as usize] |= 1 << (s % 64);
        }
        set
    }

    pub fn contains(&self, s: u16) -> bool {
        s < 1024 && self.0[(s / 64) as usize] & (1 << (s % 64)) != 0
    }
}

/// What a proxied response tells the passive checks, prepared when the upstream changes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PassiveRules {
    pub healthy: StatusSet,
    pub unhealthy: StatusSet,
    pub limits: Limits,
    /// Kong's `healthchecks.threshold`: below this share of available weight, no peer.
    pub threshold: f64,
    /// Whether health checking is on (Kong's rule): off, every target with weight is
    /// available whatever its counters said before.
    pub enabled: bool,
}

impl PassiveRules {
    fn of(up: &Upstream) -> PassiveRules {
        let p = &up.healthchecks.passive;
        PassiveRules {
            healthy: StatusSet::of(&p.healthy.http_statuses),
            unhealthy: StatusSet::of(&p.unhealthy.http_statuses),
            limits: passive_limits(&up.healthchecks),
            threshold: up.healthchecks.threshold,
            enabled: up.healthchecks.enabled(),
        }
    }
}

/// The addresses of an upstream at one moment, with the selector built for them.
pub struct PeerSet {
    pub peers: Vec<Arc<Peer>>,
    selector: Selector,
}

/// One target's resolution: its addresses, or why it has none.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    Addresses(Vec<IpAddr>),
    Failed(String),
    /// A name not resolved yet.
    Pending,
}

/// A target as the balancer keeps it: configuration plus its resolution.
#[derive(Debug, Clone)]
pub struct TargetEntry {
    pub target: Target,
    pub host: String,
    pub port: u16,
    pub resolved: Resolved,
}

/// An upstream's balancer.
pub struct Balancer {
    pub id: Uuid,
    pub upstream: ArcSwap<Upstream>,
    pub set: ArcSwap<PeerSet>,
    /// What consistent hashing hashes (Kong's `hash_on`, `hash_fallback`).
    pub hash: ArcSwap<hash_key::HashSpec>,
    /// The passive checks' statuses and limits, and the threshold.
    rules: ArcSwap<PassiveRules>,
    /// Targets in creation order (oldest first), with their resolution.
    targets: Mutex<Vec<TargetEntry>>,
    /// Peer states by (target, address), reused across rebuilds.
    states: Mutex<HashMap<(Uuid, SocketAddr), Arc<PeerState>>>,
    turn: AtomicUsize,
    /// Set while some name target has never been resolved.
    pub resolving: tokio::sync::watch::Sender<bool>,
    /// Wakes the discovery task when the targets change.
    pub(crate) wake: Arc<tokio::sync::Notify>,
}

impl Balancer {
    fn new(upstream: Upstream) -> Arc<Balancer> {
        Arc::new(Balancer {
            id: upstream.id,
            hash: ArcSwap::from_pointee(hash_key::HashSpec::of(&upstream)),
            rules: ArcSwap::from_pointee(PassiveRules::of(&upstream)),
            upstream: ArcSwap::from_pointee(upstream),
            set: ArcSwap::from_pointee(PeerSet {
                peers: Vec::new(),
                selector: Selector::LeastConnections,
            }),
            targets: Mutex::new(Vec::new()),
            states: Mutex::new(HashMap::new()),
            turn: AtomicUsize::new(0),
            resolving: tokio::sync::watch::channel(false).0,
            wake: Arc::new(tokio::sync::Notify::new()),
        })
    }

    pub fn name(&self) -> String {
        self.upstream.load().name.clone()
    }

    pub fn targets(&self) -> Vec<TargetEntry> {
        self.targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether health checking is on (Kong's rule), so that `/health` says HEALTHCHECKS_OFF.
    pub fn checks_enabled(&self) -> bool {
        self.upstream.load().healthchecks.enabled()
    }

    /// Picks a peer for a request; `key` is the consistent-hashing input. None when no peer
    /// is available, or when the available weight is at or below Kong's `threshold` (the
    /// balancer is unhealthy).
    pub fn pick(&self, key: Option<&[u8]>) -> Option<Arc<Peer>> {
        let set = self.set.load();
        let rules = self.rules.load();
        if !rules.enabled {
            return set
                .selector
                .pick(&set.peers, key, &self.turn, &|p: &Peer| p.weight > 0)
                .cloned();
        }
        if rules.threshold > 0.0 && !self.balancer_health().0 {
            return None;
        }
        set.selector
            .pick(&set.peers, key, &self.turn, &|p: &Peer| {
                p.weight > 0 && p.state.health.available()
            })
            .cloned()
    }

    /// Kong's balancer health: the share of weight on available addresses is above the
    /// threshold (false when the total weight is 0).
    pub fn balancer_health(&self) -> (bool, u64, u64) {
        let set = self.set.load();
        let total: u64 = set.peers.iter().map(|p| p.weight as u64).sum();
        let available: u64 = set
            .peers
            .iter()
            .filter(|p| p.state.health.available())
            .map(|p| p.weight as u64)
            .sum();
        let threshold = self.rules.load().threshold;
        let healthy = total > 0 && (available as f64 / total as f64 * 100.0) > threshold;
        (healthy, total, available)
    }

    /// Reports a failed try (connect refused or timed out, reset, no answer in time): the
    /// target's failure count, the latency penalty and the passive checks.
    pub fn report_failure(&self, peer: &Peer, o: Observation) {
        peer.state.failures.fetch_add(1, Ordering::Relaxed);
        peer.record_failure();
        self.observe(peer, o);
    }

    /// Reports a response's status: Kong's passive checks look the status up in the healthy
    /// list first, then the unhealthy one.
    pub fn report_status(&self, peer: &Peer, status: u16) {
        let rules = self.rules.load();
        let o = if rules.healthy.contains(status) {
            Observation::Success
        } else if rules.unhealthy.contains(status) {
            peer.state.failures.fetch_add(1, Ordering::Relaxed);
            Observation::HttpFailure
        } else {
            return;
        };
        if rules.limits != Limits::default() {
            self.observe(peer, o);
        }
    }

    fn observe(&self, peer: &Peer, o: Observation) {
        let limits = self.rules.load().limits;
        if let Some(now) = peer.state.health.observe(o, &limits, Origin::Passive) {
            tracing::warn!(upstream = %self.upstream.load().name, target = %peer.target,
                addr = %peer.addr, healthy = now, "passive health check changed a target's health");
        }
    }

    /// Sets the health of a target's addresses (all, or one address) by hand.
    pub fn set_health(
        &self,
        target: Uuid,
        addr: Option<SocketAddr>,
        healthy: bool,
        at_ms: u64,
        origin: Origin,
    ) -> usize {
        let set = self.set.load();
        let mut n = 0;
        for p in set
            .peers
            .iter()
            .filter(|p| p.target_id == target && addr.is_none_or(|a| a == p.addr))
        {
            p.state.health.set(healthy, at_ms, origin);
            n += 1;
        }
        n
    }

    /// Rebuilds the address set from the targets and their resolution, keeping the states
    /// of addresses that remain.
    pub fn rebuild(&self) {
        // The states lock serialises rebuilds; the targets and settings are read under it,
        // so the last rebuild to finish saw the latest of both.
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let up = self.upstream.load();
        let targets = self.targets();
        let mut keep: HashMap<(Uuid, SocketAddr), Arc<PeerState>> = HashMap::new();
        let mut peers = Vec::new();
        for t in &targets {
            let Resolved::Addresses(ips) = &t.resolved else {
                continue;
            };
            let host_header = host_header(&up, t);
            for ip in ips {
                let addr = SocketAddr::new(*ip, t.port);
                let key = (t.target.id, addr);
                let state = states
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| PeerState::new(addr));
                keep.insert(key, state.clone());
                peers.push(Arc::new(Peer {
                    addr,
                    target_id: t.target.id,
                    target: Arc::from(t.target.target.as_str()),
                    weight: t.target.weight,
                    host_header: host_header.clone(),
                    state,
                }));
            }
        }
        *states = keep;
        let selector = Selector::build(Algorithm::parse(&up.algorithm), &peers, up.slots);
        self.set.store(Arc::new(PeerSet { peers, selector }));
    }

    /// Whether some target is a name not resolved yet.
    fn has_pending(&self) -> bool {
        self.targets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|t| t.resolved == Resolved::Pending)
    }

    /// Waits (up to `limit`) until no target is pending its first resolution.
    pub async fn resolved(&self, limit: Duration) {
        if !*self.resolving.borrow() {
            return;
        }
        let mut rx = self.resolving.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|pending| !pending)).await;
    }

    /// Stores a target's new resolution; rebuilds when its addresses changed.
    pub fn resolve_result(&self, target: Uuid, resolved: Resolved) {
        let changed = {
            let mut targets = self.targets.lock().unwrap_or_else(|p| p.into_inner());
            match targets.iter_mut().find(|t| t.target.id == target) {
                Some(t) if t.resolved != resolved => {
                    // A failed re-resolution keeps the last good addresses (Kong keeps its
                    // records until a new answer comes).
                    if matches!(resolved, Resolved::Failed(_))
                        && matches!(t.resolved, Resolved::Addresses(_))
                    {
                        false
                    } else {
                        t.resolved = resolved;
                        true
                    }
                }
                _ => false,
            }
        };
        if changed {
            self.rebuild();
        }
        self.resolving.send_replace(self.has_pending());
    }
}

/// Kong's Host for a balanced request (`set_host_header`): `host_header`, else the target's
/// host, then `:port` unless it is 80.
fn host_header(up: &Upstream, t: &TargetEntry) -> HeaderValue {
    let host = match &up.host_header {
        Some(h) => h.clone(),
        None if t.host.contains(':') => format!("[{}]", t.host),
        None => t.host.clone(),
    };
    let text = if t.port == 80 {
        host
    } else {
        format!("{host}:{}", t.port)
    };
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(""))
}

pub fn passive_limits(h: &Healthchecks) -> Limits {
    Limits {
        successes: h.passive.healthy.successes as u32,
        http_failures: h.passive.unhealthy.http_failures as u32,
        tcp_failures: h.passive.unhealthy.tcp_failures as u32,
        timeouts: h.passive.unhealthy.timeouts as u32,
    }
}

pub fn active_limits(h: &Healthchecks) -> Limits {
    Limits {
        successes: h.active.healthy.successes as u32,
        http_failures: h.active.unhealthy.http_failures as u32,
        tcp_failures: h.active.unhealthy.tcp_failures as u32,
        timeouts: h.active.unhealthy.timeouts as u32,
    }
}

/// Every upstream's balancer, for the life of the node.
#[derive(Default)]
pub struct Balancers {
    by_id: Mutex<BTreeMap<Uuid, Arc<Balancer>>>,
    pub discovery: Arc<discovery::Discovery>,
}

impl Balancers {
    pub fn get(&self, id: Uuid) -> Option<Arc<Balancer>> {
        self.lock().get(&id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Balancer>> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Uuid, Arc<Balancer>>> {
        self.by_id.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings the balancers in line with a configuration: new upstreams get one, deleted
    /// ones lose theirs, and a changed upstream or target set is rebuilt in place. Returns
    /// the balancers by upstream name, for services to find.
    pub fn sync(self: &Arc<Self>, state: &State) -> HashMap<String, Arc<Balancer>> {
        let mut targets: HashMap<Uuid, Vec<&Target>> = HashMap::new();
        for t in state.all::<Target>() {
            targets.entry(t.upstream.id).or_default().push(t);
        }
        let mut map = self.lock();
        let mut by_name = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        let mut changed = Vec::new();
        for up in state.all::<Upstream>() {
            seen.insert(up.id);
            let b = map
                .entry(up.id)
                .or_insert_with(|| Balancer::new(up.clone()))
                .clone();
            let mut ts: Vec<&Target> = targets.remove(&up.id).unwrap_or_default();
            ts.sort_by_key(|t| (t.created_at, t.id));
            let changed_settings = **b.upstream.load() != *up;
            if changed_settings {
                b.hash.store(Arc::new(hash_key::HashSpec::of(up)));
                b.rules.store(Arc::new(PassiveRules::of(up)));
                b.upstream.store(Arc::new(up.clone()));
            }
            let changed_targets = {
                let mut have = b.targets.lock().unwrap_or_else(|p| p.into_inner());
                let same =
                    have.len() == ts.len() && have.iter().zip(&ts).all(|(h, t)| h.target == **t);
                if !same {
                    let old: HashMap<Uuid, TargetEntry> =
                        have.drain(..).map(|e| (e.target.id, e)).collect();
                    for t in &ts {
                        let (host, port) = t.host_port();
                        // A target whose address did not change keeps its resolution.
                        let resolved = old
                            .get(&t.id)
                            .filter(|o| o.host == host)
                            .map(|o| o.resolved.clone())
                            .unwrap_or_else(|| match host.parse::<IpAddr>() {
                                Ok(ip) => Resolved::Addresses(vec![ip]),
                                Err(_) => Resolved::Pending,
                            });
                        have.push(TargetEntry {
                            target: (*t).clone(),
                            host,
                            port,
                            resolved,
                        });
                    }
                }
                !same
            };
            if changed_settings || changed_targets {
                changed.push(b.clone());
            }
            by_name.insert(up.name.clone(), b);
        }
        map.retain(|id, _| seen.contains(id));
        // Rebuilt without the map's lock: the probes and the cluster view read it meanwhile.
        drop(map);
        for b in changed {
            b.rebuild();
            let pending = b.has_pending();
            b.resolving.send_replace(pending);
            self.discovery.watch(&b);
        }
        by_name
    }
}
