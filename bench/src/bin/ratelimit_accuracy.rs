//! Cluster-wide rate-limit accuracy: admitted / limit for `policy: cluster` on 3 and 5 nodes,
//! at several aggregate rates and counter publish intervals, beside `policy: local` (which
//! admits about N × limit, as Kong's local policy does on N nodes).
//!
//! Each run: a fresh limit key, a limit of 2 s worth of traffic (per hour, so the window does
//! not roll), 4 s of requests paced round-robin over all nodes.
//!
//! Run: `cargo build --release -p tollgate && cargo run --release -p tollgate-bench --bin ratelimit_accuracy`

use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_bench::{client, cluster_with, spawn_echo, Node};

/// Sends `rate` requests per second for `secs` seconds round-robin over `nodes`; returns
/// (admitted, sent).
async fn drive(nodes: &[Node], path: &str, key: &str, rate: u64, secs: u64) -> (u64, u64) {
    let c = client();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let per_tick = (rate as f64 / 100.0).max(0.0);
    let mut budget = 0.0;
    let mut sent = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        tick.tick().await;
        budget += per_tick;
        while budget >= 1.0 {
            budget -= 1.0;
            let url = format!("{}{path}", nodes[sent as usize % nodes.len()].proxy);
            let c = c.clone();
            let key = key.to_string();
            tasks.spawn(async move {
                c.get(url)
                    .header("x-client", key)
                    .send()
                    .await
                    .map(|r| r.status().as_u16() == 200)
                    .unwrap_or(false)
            });
            sent += 1;
        }
    }
    let mut admitted = 0;
    while let Some(r) = tasks.join_next().await {
        admitted += u64::from(r.unwrap_or(false));
    }
    (admitted, sent)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (_echo, echo_port) = spawn_echo();
    println!("| nodes | publish interval | rate (req/s) | limit | sent | cluster: admitted / limit | local: admitted / limit |");
    println!("|---|---|---|---|---|---|---|");
    for n in [3usize, 5] {
        for sync_ms in [50u64, 100, 250] {
            let dir = tempfile::tempdir()?;
            let sync = sync_ms.to_string();
            let nodes = cluster_with(n, dir.path(), &["--ratelimit-sync-ms", &sync]).await;
            let c = client();
            let a = &nodes[0].admin;
            c.post(format!("{a}/services"))
                .json(&json!({"name": "s", "url": format!("http://127.0.0.1:{echo_port}")}))
                .send()
                .await?;
            for policy in ["cluster", "local"] {
                c.post(format!("{a}/services/s/routes"))
                    .json(&json!({"name": policy, "paths": [format!("/{policy}")]}))
                    .send()
                    .await?;
            }
            for rate in [50u64, 500, 5000] {
                let limit = rate * 2;
                // A plugin per rate, on fresh routes, so every run starts from zero.
                let mut ratios = Vec::new();
                let mut sent_total = 0;
                for policy in ["cluster", "local"] {
                    let route = format!("{policy}-{rate}");
                    c.post(format!("{a}/services/s/routes"))
                        .json(&json!({"name": route, "paths": [format!("/{route}")]}))
                        .send()
                        .await?;
                    let r = c
                        .post(format!("{a}/routes/{route}/plugins"))
                        .json(&json!({"name": "rate-limiting", "config": {"hour": limit, "policy": policy, "limit_by": "header", "header_name": "x-client"}}))
                        .send()
                        .await?;
                    anyhow::ensure!(r.status() == 201, "plugin: {}", r.status());
                    // Wait until every node serves the route.
                    for node in &nodes {
                        loop {
                            let s = c
                                .get(format!("{}/{route}", node.proxy))
                                .header("x-client", "warmup")
                                .send()
                                .await?
                                .status();
                            if s != 404 {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                    let (admitted, sent) =
                        drive(&nodes, &format!("/{route}"), "bench-key", rate, 4).await;
                    sent_total = sent;
                    ratios.push(format!(
                        "{admitted} / {limit} = {:.3}",
                        admitted as f64 / limit as f64
                    ));
                }
                println!(
                    "| {n} | {sync_ms} ms | {rate} | {limit} | {sent_total} | {} | {} |",
                    ratios[0], ratios[1]
                );
            }
        }
    }
    Ok(())
}
