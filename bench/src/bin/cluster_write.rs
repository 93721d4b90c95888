//! Write-to-served latency and admin write throughput of a Raft cluster on loopback.
//!
//! For 3 and 5 nodes: 100 times, create a route through node 1's Admin API and measure from the
//! 201 until the route answers on every node's proxy (p50/p99). Then admin write throughput:
//! 1,000 creates with 16 in flight, spread over the nodes (every write fsynced on a quorum).
//!
//! Run: `cargo build --release -p tollgate && cargo run --release -p tollgate-bench --bin cluster_write`

use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_bench::{client, cluster, pct, spawn_echo};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (_echo, echo_port) = spawn_echo();
    for n in [3usize, 5] {
        let dir = tempfile::tempdir()?;
        let nodes = cluster(n, dir.path()).await;
        let c = client();
        let a = &nodes[0];
        let r = c
            .post(format!("{}/services", a.admin))
            .json(&json!({"name": "s", "url": format!("http://127.0.0.1:{echo_port}")}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "service: {}", r.status());

        let mut lat = Vec::new();
        for i in 0..100 {
            let path = format!("/w{i}");
            let r = c
                .post(format!("{}/services/s/routes", a.admin))
                .json(&json!({"paths": [path]}))
                .send()
                .await?;
            anyhow::ensure!(r.status() == 201, "route: {}", r.status());
            let acked = Instant::now();
            for node in &nodes {
                loop {
                    let s = c
                        .get(format!("{}{path}", node.proxy))
                        .send()
                        .await?
                        .status();
                    if s == 200 {
                        break;
                    }
                    anyhow::ensure!(
                        acked.elapsed() < Duration::from_secs(10),
                        "route never served"
                    );
                }
            }
            lat.push(acked.elapsed());
        }
        lat.sort();
        println!(
            "{n} nodes: write-to-served on every proxy over 100 writes: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            pct(&lat, 0.5).as_secs_f64() * 1e3,
            pct(&lat, 0.99).as_secs_f64() * 1e3,
            lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
        );

        let admins: Vec<String> = nodes.iter().map(|n| n.admin.clone()).collect();
        let writes_per_sec = tollgate_bench::admin_writes(&admins, 1000, 16).await?;
        println!(
            "{n} nodes: admin writes (fsync on, 16 in flight, via every node): {:.0} writes/s",
            writes_per_sec
        );
    }
    Ok(())
}
