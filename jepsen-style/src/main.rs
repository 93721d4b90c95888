//! `jepsen-style`: runs a Tollgate cluster, injects faults while clients work against it, and
//! checks what the clients saw.
//!
//! The cluster is either the root `docker-compose.yml` (five containers on a private network;
//! faults: partitions, `kill -9`, `docker pause`, rolling restarts, membership changes) or
//! local processes on loopback (the same workloads and every fault but partitions). Output in
//! the run's folder: `history.jsonl`, `results.json`, `timeline.svg` and every node's log. The
//! exit code is 1 when a checker finds an anomaly, 2 when a check could not decide.

mod balanced;
mod checker;
mod control;
mod history;
mod hostile;
mod nemesis;
mod plot;
mod ratelimit;
mod wgl;
mod workload;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use control::Cluster;
use history::{History, Kind, Op};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Docker when an engine and a compose tool answer, processes otherwise.
    Auto,
    Docker,
    Process,
}

#[derive(Debug, Parser)]
#[command(about = "Fault injection against a Tollgate cluster")]
struct Args {
    /// Faults to inject, comma-separated: partition, kill, pause, restart (rolling),
    /// membership, hostile (a peer without credentials), backend (a balanced backend
    /// killed, frozen or slowed). Default: all the mode can do.
    #[arg(long)]
    nemesis: Option<String>,
    #[arg(long, value_enum, default_value_t = Mode::Auto)]
    mode: Mode,
    /// Seconds of workload with faults.
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// Cluster size in process mode (default 3); docker mode runs the compose file's five.
    #[arg(long)]
    nodes: Option<usize>,
    /// Random seed (fault schedule and client choices).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Register keys.
    #[arg(long, default_value_t = 4)]
    keys: usize,
    /// Rate-limit workload: the limit per minute (cluster policy).
    #[arg(long, default_value_t = 300)]
    rl_limit: u64,
    /// Rate-limit workload: requests per second in all.
    #[arg(long, default_value_t = 30.0)]
    rl_rate: f64,
    /// Seconds after the last fault before the clients stop.
    #[arg(long, default_value_t = 10)]
    recovery: u64,
    /// Docker mode: pack the debug build into the image instead of the release build.
    #[arg(long)]
    debug_image: bool,
    /// Leave the compose project running after the run.
    #[arg(long)]
    keep: bool,
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
            nemesis::unix_ms() / 1000,
            args.seed
        ))
    });
    let docker = match args.mode {
        Mode::Docker => true,
        Mode::Process => false,
        Mode::Auto => control::docker::available(),
    };
    let nemeses: Vec<String> = match &args.nemesis {
        Some(list) => list
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect(),
        None => nemesis::ALL
            .iter()
            .filter(|n| docker || **n != "partition")
            .map(|s| s.to_string())
            .collect(),
    };
    for n in &nemeses {
        anyhow::ensure!(
            nemesis::ALL.contains(&n.as_str()),
            "unknown nemesis '{n}' (known: {})",
            nemesis::ALL.join(", ")
        );
        anyhow::ensure!(
            docker || n != "partition",
            "process mode cannot partition the network: use --mode docker"
        );
    }

    anyhow::ensure!(
        !docker || args.nodes.is_none_or(|n| n == 5),
        "docker mode runs the compose file's five nodes: drop --nodes or use --mode process"
    );
    anyhow::ensure!(
        args.nodes.is_none_or(|n| n >= 1),
        "--nodes must be at least 1"
    );
    std::fs::create_dir_all(&out)?;
    eprintln!(
        "{} mode, nemeses {nemeses:?}, output in {}",
        if docker { "docker" } else { "process" },
        out.display()
    );
    let cluster = Arc::new(if docker {
        Cluster::docker(&out, args.debug_image).await?
    } else {
        Cluster::processes(args.nodes.unwrap_or(3), &out).await?
    });
    let result = run(&args, &nemeses, cluster.clone(), &out, docker).await;
    cluster.stop(&out, args.keep);
    let verdict = result?;
    std::process::exit(match verdict {
        Some(true) => 0,
        Some(false) => 1,
        None => 2,
    });
}

/// The run itself; `Some(valid)`, or `None` when a check could not decide.
async fn run(
    args: &Args,
    nemeses: &[String],
    cluster: Arc<Cluster>,
    out: &std::path::Path,
    docker: bool,
) -> anyhow::Result<Option<bool>> {
    cluster.setup_routes(args.rl_limit).await?;
    let history = Arc::new(History::new());
    let collected = Arc::new(workload::Collected::default());
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = workload::start(
        cluster.clone(),
        history.clone(),
        collected.clone(),
        stop.clone(),
        args.keys,
        args.rl_rate,
        args.seed,
    );

    // Nemesis: a fault every few seconds, each healed before the next.
    let mut rng = StdRng::seed_from_u64(args.seed);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.time_limit);
    let mut faults = Vec::new();
    while tokio::time::Instant::now() < deadline && !nemeses.is_empty() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(2000..5000))).await;
        let which = &nemeses[rng.random_range(0..nemeses.len())];
        for fault in nemesis::inject(which, &cluster, &history, &mut rng).await? {
            eprintln!(
                "fault {:>5.1}s–{:>5.1}s: {}",
                fault.start_ns as f64 / 1e9,
                fault.end_ns as f64 / 1e9,
                fault.detail
            );
            faults.push(fault);
        }
    }
    if nemeses.is_empty() {
        tokio::time::sleep(Duration::from_secs(args.time_limit)).await;
    }

    // Recovery, then stop the clients and read every key on every node.
    tokio::time::sleep(Duration::from_secs(args.recovery)).await;
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

    let observed: HashSet<u64> = ops
        .iter()
        .filter(|o| o.op != Op::Write && o.kind == Kind::Ok)
        .filter_map(|o| o.value)
        .chain(finals.iter().filter_map(|f| f.2))
        .collect();
    results["linearizable"] =
        wgl::check(&ops, &observed, args.keys, Duration::from_secs(120)).await;

    let plane = collected
        .plane
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut per_node = Vec::new();
    let mut plane_ok = true;
    for node in 0..cluster.len() {
        let healthy: Vec<bool> = plane
            .iter()
            .filter(|s| s.node == node && !s.faulted)
            .map(|s| s.ok)
            .collect();
        let ok = healthy.iter().filter(|x| **x).count();
        plane_ok &= ok == healthy.len();
        per_node.push(json!({"node": node + 1, "requests_while_healthy": healthy.len(), "ok": ok,
            "availability": if healthy.is_empty() { 1.0 } else { ok as f64 / healthy.len() as f64 }}));
    }
    results["data_plane_availability"] = json!({"valid": plane_ok, "nodes": per_node});

    let limited = collected
        .limited
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    results["rate_limit"] = ratelimit::check(
        &limited,
        &faults,
        &ratelimit::Params {
            limit: args.rl_limit,
            window_ms: 60_000,
            nodes: cluster.len(),
            rate: args.rl_rate,
        },
    );

    let balanced_samples = collected
        .balanced
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    results["balanced"] = balanced::check(
        &balanced_samples,
        &faults,
        &balanced::Params {
            nodes: cluster.len(),
            passive_timeouts: control::PASSIVE_TIMEOUTS,
            backends: cluster.backend_names(),
        },
    );

    let hostile_faults = faults.iter().filter(|f| f.nemesis == "hostile").count();
    results["hostile"] = hostile::check(&cluster, hostile_faults).await;
    let problems: Vec<&String> = faults.iter().filter_map(|f| f.problem.as_ref()).collect();
    results["nemesis"] = json!({"valid": problems.is_empty(), "problems": problems});
    let crashes = cluster.crashes();
    results["crashes"] =
        json!({"valid": crashes.iter().all(|c| *c == 0), "restarts_by_engine": crashes});
    let fault_secs: f64 = faults
        .iter()
        .map(|f| (f.end_ns - f.start_ns) as f64 / 1e9)
        .sum();
    results["faults"] = json!(faults);
    results["fault_seconds"] = json!(fault_secs);
    results["operations"] = json!(ops.len());
    // Every other data-plane request (balanced and rate-limited routes) went to the TLS
    // listener; the run is only valid if those were answered too.
    let (tls_sent, tls_answered) = (
        cluster
            .tls_requests
            .load(std::sync::atomic::Ordering::Relaxed),
        cluster
            .tls_answered
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    results["tls_data_plane"] = json!({
        "valid": tls_sent > 0 && tls_answered * 2 > tls_sent,
        "sent": tls_sent,
        "answered": tls_answered,
    });
    results["mode"] = json!(if docker { "docker" } else { "process" });
    results["seed"] = json!(args.seed);

    let checkers = [
        "lost_writes",
        "realtime_reads",
        "linearizable",
        "monotonic_default_reads",
        "data_plane_availability",
        "rate_limit",
        "balanced",
        "nemesis",
        "hostile",
        "crashes",
        "tls_data_plane",
    ];
    let invalid: Vec<&str> = checkers
        .iter()
        .copied()
        .filter(|k| results[*k]["valid"] == false)
        .collect();
    let unknown = checkers.iter().any(|k| results[*k]["valid"].is_null());
    let verdict = if !invalid.is_empty() {
        Some(false)
    } else if unknown {
        None
    } else {
        Some(true)
    };
    results["valid"] = verdict.map(Value::Bool).unwrap_or(Value::Null);
    results["invalid_checkers"] = json!(invalid);
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&results)?,
    )?;

    let title = format!(
        "Tollgate, {} nodes ({} mode), seed {}: {} faults ({:.0} s), {} operations — {}",
        cluster.len(),
        if docker { "docker" } else { "process" },
        args.seed,
        faults.len(),
        fault_secs,
        ops.len(),
        match verdict {
            Some(true) => "no anomalies".to_string(),
            Some(false) => format!("ANOMALIES: {}", invalid.join(", ")),
            None => "undecided".to_string(),
        }
    );
    if let Err(e) = plot::timeline(
        &out.join("timeline.svg"),
        cluster.len(),
        &plane,
        &ops,
        &faults,
        &title,
    ) {
        eprintln!("timeline not drawn: {e}");
    }

    let summary: Vec<String> = checkers
        .iter()
        .map(|k| format!("{k}: {}", results[*k]["valid"]))
        .collect();
    println!("{title}\n{}", summary.join("\n"));
    println!("results in {}", out.display());
    Ok(verdict)
}
