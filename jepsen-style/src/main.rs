//! `jepsen-style`: runs a Tollgate cluster, injects faults while clients work against it, and
//! checks the history.
//!
//! This first version runs in *process mode*: nodes are local processes on loopback, and the
//! nemeses are the faults a process can suffer (`kill -9` then restart, SIGSTOP/SIGCONT). The
//! workloads are the config register (writes and default/consistent reads through every
//! node's Admin API) and the data plane (constant proxy traffic to every node). Output:
//! `history.jsonl` and `results.json` in the run's folder; the exit code is non-zero when a
//! checker finds an anomaly.

mod checker;
mod control;
mod history;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use control::Cluster;
use history::{History, Kind, Op};

#[derive(Debug, Parser)]
#[command(about = "Fault injection against a Tollgate cluster (process mode)")]
struct Args {
    /// Faults to inject, comma-separated: kill, pause.
    #[arg(long, default_value = "kill,pause")]
    nemesis: String,
    /// Seconds of workload with faults.
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Random seed (fault schedule and client choices).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Register keys.
    #[arg(long, default_value_t = 4)]
    keys: usize,
    /// Where to write the run's files (default: a new folder under ./jepsen-runs).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from("jepsen-runs").join(format!(
            "{}-seed{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            args.seed
        ))
    });
    std::fs::create_dir_all(&out)?;
    let nemeses: Vec<String> = args
        .nemesis
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    for n in &nemeses {
        anyhow::ensure!(
            matches!(n.as_str(), "kill" | "pause"),
            "unknown nemesis '{n}' (process mode has: kill, pause)"
        );
    }

    eprintln!(
        "starting {} nodes (output in {})",
        args.nodes,
        out.display()
    );
    let cluster = Arc::new(Cluster::start(args.nodes, &out).await?);
    cluster.setup_route().await?;
    let history = Arc::new(History::new());
    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU64::new(1));

    // Register clients: one per key and node pair, each one operation at a time.
    let mut tasks = Vec::new();
    let clients = args.keys * args.nodes;
    for p in 0..clients {
        let (cluster, history, stop, seq) =
            (cluster.clone(), history.clone(), stop.clone(), seq.clone());
        let mut rng = StdRng::seed_from_u64(args.seed.wrapping_mul(1000) + p as u64);
        let key = p % args.keys;
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
                tokio::time::sleep(Duration::from_millis(rng.random_range(5..40))).await;
            }
        }));
    }

    // Data plane: constant proxy load on every node; (node, ok, faulted) per request.
    let plane = Arc::new(std::sync::Mutex::new(Vec::<(usize, bool, bool)>::new()));
    for node in 0..cluster.len() {
        let (cluster, stop, plane) = (cluster.clone(), stop.clone(), plane.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let faulted_before = cluster.faulted(node);
                let ok = cluster.proxy_ok(node).await;
                let faulted = faulted_before || cluster.faulted(node);
                plane
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((node, ok, faulted));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }

    // Nemesis: a fault every few seconds, healed before the next.
    let mut rng = StdRng::seed_from_u64(args.seed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.time_limit);
    let mut faults = Vec::new();
    while tokio::time::Instant::now() < deadline && !nemeses.is_empty() {
        tokio::time::sleep(Duration::from_secs(rng.random_range(2..5))).await;
        let node = rng.random_range(0..cluster.len());
        let which = nemeses[rng.random_range(0..nemeses.len())].clone();
        let start = history.now();
        match which.as_str() {
            "kill" => {
                cluster.kill(node);
                tokio::time::sleep(Duration::from_secs(rng.random_range(2..6))).await;
                cluster.restart(node).await?;
            }
            _ => {
                cluster.pause(node);
                tokio::time::sleep(Duration::from_secs(rng.random_range(2..6))).await;
                cluster.resume(node);
            }
        }
        faults.push(
            json!({"nemesis": which, "node": node + 1, "start_ns": start, "end_ns": history.now()}),
        );
        eprintln!("fault: {which} node {} healed", node + 1);
    }
    if nemeses.is_empty() {
        tokio::time::sleep(Duration::from_secs(args.time_limit)).await;
    }

    // Recovery, then stop the clients and read every key on every node.
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    cluster.wait_healthy().await?;
    let mut finals = Vec::new();
    for key in 0..args.keys {
        for node in 0..cluster.len() {
            let (kind, v) = cluster.read(node, key, true).await;
            anyhow::ensure!(
                kind == Kind::Ok,
                "final read of key {key} on node {} failed",
                node + 1
            );
            finals.push((node, key, v));
        }
    }

    let events = history.events();
    let mut lines = String::new();
    for e in &events {
        lines.push_str(&serde_json::to_string(e)?);
        lines.push('\n');
    }
    std::fs::write(out.join("history.jsonl"), lines)?;
    let ops = checker::pair(&events);
    let mut results = checker::check(&ops, &finals);
    let plane = plane.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut per_node = Vec::new();
    let mut plane_ok = true;
    for node in 0..cluster.len() {
        let healthy: Vec<bool> = plane
            .iter()
            .filter(|(n, _, f)| *n == node && !*f)
            .map(|(_, ok, _)| *ok)
            .collect();
        let ok = healthy.iter().filter(|x| **x).count();
        plane_ok &= ok == healthy.len();
        per_node.push(json!({"node": node + 1, "requests_while_healthy": healthy.len(), "ok": ok,
            "availability": if healthy.is_empty() { 1.0 } else { ok as f64 / healthy.len() as f64 }}));
    }
    results["data_plane_availability"] = json!({"valid": plane_ok, "nodes": per_node});
    results["faults"] = json!(faults);
    results["operations"] = json!(ops.len());
    let valid = [
        "lost_writes",
        "linearizable_reads",
        "monotonic_default_reads",
        "data_plane_availability",
    ]
    .iter()
    .all(|k| results[*k]["valid"] == true);
    results["valid"] = json!(valid);
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    println!("{}", serde_json::to_string_pretty(&results)?);
    cluster.stop();
    if !valid {
        std::process::exit(1);
    }
    Ok(())
}
