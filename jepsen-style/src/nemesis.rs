//! Nemeses: the faults, scheduled one at a time at random (seeded), each healed before the
//! next. Every fault is recorded with its interval, the nodes it touched and how many sides it
//! split the cluster into (the rate-limit bound depends on it).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;

use crate::control::Cluster;
use crate::history::History;

/// The nemeses a run can use.
pub const ALL: [&str; 7] = [
    "partition",
    "kill",
    "pause",
    "restart",
    "membership",
    "hostile",
    "backend",
];

/// What the backend nemesis does to a balanced backend.
pub const BACKEND_FAULTS: [&str; 3] = ["kill", "pause", "slow"];

/// A fault on a balanced backend, not on a node.
#[derive(Debug, Clone, Serialize)]
pub struct BackendFault {
    /// 0-based.
    pub backend: usize,
    /// One of [`BACKEND_FAULTS`].
    pub kind: String,
}

/// One injected fault.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    pub nemesis: String,
    /// What exactly was done (e.g. "majority/minority [1,2,3] | [4,5]").
    pub detail: String,
    /// Nodes (0-based) that were down, frozen or cut off.
    pub nodes: Vec<usize>,
    /// Nanoseconds since the run started.
    pub start_ns: u64,
    pub end_ns: u64,
    /// Wall-clock interval in Unix milliseconds (rate-limit windows are wall-clock aligned).
    pub start_unix_ms: u64,
    pub end_unix_ms: u64,
    /// Groups the cluster's gossip could be split into while it lasted: a killed, frozen or
    /// cut-off node counts as a side of its own, and each restart may forget what the
    /// restarted node had admitted.
    pub sides: usize,
    /// A problem the nemesis itself saw (a removed node never came back, …).
    pub problem: Option<String>,
    /// Set for the backend nemesis: no node is touched.
    pub backend: Option<BackendFault>,
}

pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn show(group: &[usize]) -> String {
    let ids: Vec<String> = group.iter().map(|n| (n + 1).to_string()).collect();
    format!("[{}]", ids.join(","))
}

async fn hold(rng: &mut StdRng) {
    tokio::time::sleep(Duration::from_millis(rng.random_range(3000..7000))).await;
}

/// Injects one fault of kind `which` and heals it (a rolling restart is one fault per node).
pub async fn inject(
    which: &str,
    cluster: &Cluster,
    history: &History,
    rng: &mut StdRng,
) -> anyhow::Result<Vec<Fault>> {
    let n = cluster.len();
    let start_ns = history.now();
    let start_unix_ms = unix_ms();
    let mut problem = None;
    let node = rng.random_range(0..n);
    let (detail, nodes, sides) = match which {
        "kill" => {
            cluster.kill(node)?;
            hold(rng).await;
            cluster.restart(node).await?;
            (format!("kill -9 node {}", node + 1), vec![node], 2)
        }
        "pause" => {
            cluster.pause(node)?;
            hold(rng).await;
            cluster.resume(node)?;
            (format!("pause node {}", node + 1), vec![node], 2)
        }
        "restart" => {
            // Rolling restart: every node in turn stopped gracefully, each back (serving)
            // before the next. A restarted node may forget what it admitted in the current
            // rate-limit window: a side of its own.
            let mut faults = Vec::new();
            for i in 0..n {
                let (start_ns, start_unix_ms) = (history.now(), unix_ms());
                cluster.terminate(i)?;
                tokio::time::sleep(Duration::from_millis(500)).await;
                cluster.restart(i).await?;
                faults.push(Fault {
                    nemesis: which.to_string(),
                    detail: format!("rolling restart: node {} of {n}", i + 1),
                    nodes: vec![i],
                    start_ns,
                    end_ns: history.now(),
                    start_unix_ms,
                    end_unix_ms: unix_ms(),
                    sides: 2,
                    problem: None,
                    backend: None,
                });
                tokio::time::sleep(Duration::from_millis(1500)).await;
            }
            return Ok(faults);
        }
        "membership" => {
            // Half the time the leader itself: removing it is the harder change.
            let node = if rng.random_bool(0.5) {
                cluster.leader().await.unwrap_or(node)
            } else {
                node
            };
            let status = cluster.remove_member(node).await?;
            if !cluster.wait_voter(node, Duration::from_secs(60)).await {
                problem = Some(format!(
                    "node {} removed (status {status}) was not a voter again after 60 s",
                    node + 1
                ));
            }
            (
                format!("remove node {} (status {status}), re-added", node + 1),
                vec![node],
                1,
            )
        }
        "partition" => {
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(rng);
            let (detail, groups, cut) = match rng.random_range(0..3) {
                0 => {
                    let (minority, majority) = order.split_at(n / 2);
                    (
                        format!("halves {} | {}", show(majority), show(minority)),
                        vec![majority.to_vec(), minority.to_vec()],
                        minority.to_vec(),
                    )
                }
                1 => {
                    let leader = cluster.leader().await.unwrap_or(node);
                    let rest: Vec<usize> = (0..n).filter(|i| *i != leader).collect();
                    (
                        format!("isolate leader {} | {}", leader + 1, show(&rest)),
                        vec![vec![leader], rest],
                        vec![leader],
                    )
                }
                _ => {
                    // Two halves that both see one bridge node.
                    let bridge = order[0];
                    let rest = &order[1..];
                    let (a, b) = rest.split_at(rest.len() / 2);
                    let mut ga = a.to_vec();
                    ga.push(bridge);
                    let mut gb = b.to_vec();
                    gb.push(bridge);
                    (
                        format!("bridge {} via {} to {}", show(a), bridge + 1, show(b)),
                        vec![ga, gb],
                        a.to_vec(),
                    )
                }
            };
            let sides = groups.len();
            cluster.partition(&groups)?;
            hold(rng).await;
            cluster.heal()?;
            (format!("partition: {detail}"), cut, sides)
        }
        "backend" => {
            // A backend, not a node: killed (refused connects), frozen (accepted, never
            // answered) or slow (answers late, within the read timeout).
            let b = rng.random_range(0..cluster.backend_count());
            let kind = BACKEND_FAULTS[rng.random_range(0..BACKEND_FAULTS.len())];
            cluster.backend_fault(b, kind, false)?;
            hold(rng).await;
            cluster.backend_fault(b, kind, true)?;
            return Ok(vec![Fault {
                nemesis: which.to_string(),
                detail: format!("{kind} backend {}", b + 1),
                nodes: Vec::new(),
                start_ns,
                end_ns: history.now(),
                start_unix_ms,
                end_unix_ms: unix_ms(),
                sides: 1,
                problem: None,
                backend: Some(BackendFault {
                    backend: b,
                    kind: kind.to_string(),
                }),
            }]);
        }
        "hostile" => {
            // No node is faulted: every one must keep serving, the attacked one included.
            let (detail, p) = crate::hostile::attack(cluster, node, rng).await?;
            problem = p;
            (detail, Vec::new(), 1)
        }
        other => anyhow::bail!("unknown nemesis '{other}'"),
    };
    Ok(vec![Fault {
        nemesis: which.to_string(),
        detail,
        nodes,
        start_ns,
        end_ns: history.now(),
        start_unix_ms,
        end_unix_ms: unix_ms(),
        sides,
        problem,
        backend: None,
    }])
}
