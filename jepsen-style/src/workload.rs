//! Workloads: concurrent clients, each talking to a node chosen at random per operation.
//!
//! - register: writes (a value never written before) and reads (default and
//!   `?consistent=true`) of one consumer per key, through every node's Admin API;
//! - data plane: constant proxy traffic to every node;
//! - rate limit: constant traffic to every node's rate-limited route (cluster policy);
//! - balanced: constant traffic to every node's route over the balanced backends.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::task::JoinHandle;

use crate::control::Cluster;
use crate::history::{History, Kind, Op};
use crate::nemesis::unix_ms;

/// One proxy request of the data-plane workload.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub node: usize,
    /// Nanoseconds since the run started.
    pub time: u64,
    pub latency_ns: u64,
    pub ok: bool,
    /// The node was killed, frozen or restarting at some point of the request.
    pub faulted: bool,
}

/// One request to the rate-limited route.
#[derive(Debug, Clone, Serialize)]
pub struct RlSample {
    pub node: usize,
    pub invoke_unix_ms: u64,
    pub complete_unix_ms: u64,
    /// `Some(true)` 200, `Some(false)` 429, `None` no answer.
    pub admitted: Option<bool>,
}

/// One request to the balanced route.
#[derive(Debug, Clone, Serialize)]
pub struct BalancedSample {
    pub node: usize,
    pub invoke_unix_ms: u64,
    pub complete_unix_ms: u64,
    /// The status, none without an answer.
    pub status: Option<u16>,
    /// The backend that answered.
    pub backend: Option<String>,
    /// The node was killed, frozen or restarting at some point of the request.
    pub faulted: bool,
}

/// What the workload clients collect.
#[derive(Default)]
pub struct Collected {
    pub plane: Mutex<Vec<Sample>>,
    pub limited: Mutex<Vec<RlSample>>,
    pub balanced: Mutex<Vec<BalancedSample>>,
}

/// Starts every client; they run until `stop` flips.
pub fn start(
    cluster: Arc<Cluster>,
    history: Arc<History>,
    collected: Arc<Collected>,
    stop: Arc<AtomicBool>,
    keys: usize,
    rl_rate: f64,
    seed: u64,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    let seq = Arc::new(AtomicU64::new(1));
    // Register clients: `nodes` per key, each one operation at a time.
    for p in 0..keys * cluster.len() {
        let (cluster, history, stop, seq) =
            (cluster.clone(), history.clone(), stop.clone(), seq.clone());
        let mut rng = StdRng::seed_from_u64(seed.wrapping_mul(1000) + p as u64);
        let key = p % keys;
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let node = rng.random_range(0..cluster.len());
                let roll: f64 = rng.random();
                if roll < 0.4 {
                    let v = seq.fetch_add(1, Ordering::Relaxed);
                    history.record(p, Kind::Invoke, Op::Write, key, Some(v), node);
                    let kind = cluster.write(node, key, v).await;
                    history.record(p, kind, Op::Write, key, Some(v), node);
                } else {
                    let op = if roll < 0.7 {
                        Op::Read
                    } else {
                        Op::ConsistentRead
                    };
                    history.record(p, Kind::Invoke, op, key, None, node);
                    let (kind, v) = cluster.read(node, key, op == Op::ConsistentRead).await;
                    history.record(p, kind, op, key, v, node);
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(20..100))).await;
            }
        }));
    }

    for node in 0..cluster.len() {
        // Data plane: a request every 20 ms per node.
        let (c, h, stop2, col) = (
            cluster.clone(),
            history.clone(),
            stop.clone(),
            collected.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop2.load(Ordering::Relaxed) {
                let faulted_before = c.faulted(node);
                let time = h.now();
                let t = Instant::now();
                let ok = c.proxy_ok(node).await;
                let latency_ns = t.elapsed().as_nanos() as u64;
                let faulted = faulted_before || c.faulted(node);
                col.plane
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(Sample {
                        node,
                        time,
                        latency_ns,
                        ok,
                        faulted,
                    });
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));

        // Balanced route: one client per node, a request every 20 ms.
        let (c, stop2, col) = (cluster.clone(), stop.clone(), collected.clone());
        tasks.push(tokio::spawn(async move {
            while !stop2.load(Ordering::Relaxed) {
                let faulted_before = c.faulted(node);
                let invoke_unix_ms = unix_ms();
                let (status, backend) = c.balanced(node).await;
                let faulted = faulted_before || c.faulted(node);
                col.balanced
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(BalancedSample {
                        node,
                        invoke_unix_ms,
                        complete_unix_ms: unix_ms(),
                        status,
                        backend,
                        faulted,
                    });
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));

        // Rate limit: `rl_rate` requests per second in all, spread over the nodes.
        let (c, stop2, col) = (cluster.clone(), stop.clone(), collected.clone());
        let period = Duration::from_secs_f64(cluster.len() as f64 / rl_rate);
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop2.load(Ordering::Relaxed) {
                tick.tick().await;
                let invoke_unix_ms = unix_ms();
                let admitted = c.limited(node).await;
                col.limited
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(RlSample {
                        node,
                        invoke_unix_ms,
                        complete_unix_ms: unix_ms(),
                        admitted,
                    });
            }
        }));
    }
    tasks
}
