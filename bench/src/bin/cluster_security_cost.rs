//! What cluster-plane credentials cost: the same 3-node measurements with no credentials
//! (plain HTTP RPCs, plain gossip) and with a cluster secret (mutual TLS RPCs, sealed gossip),
//! alternated in one run.
//!
//! - Config propagation: 100 route creates through node 1, each timed from its 201 until
//!   every node's proxy serves it (p50/p99); then admin writes/s (400 creates, 16 in flight,
//!   through every node, so two thirds are forwarded to the leader).
//! - Rate-limit gossip: 30 times, 40 requests on node 1 under a fresh counter key, then node 2
//!   polled until its `X-RateLimit-Remaining-Hour` shows them (p50/p99 of that delay); and
//!   proxy req/s on a `policy: cluster` route (16 connections spread over the nodes, 5 s).
//!
//! Run: `cargo build --release -p tollgate && cargo run --release -p tollgate-bench --bin cluster_security_cost`

use std::time::{Duration, Instant};

use serde_json::json;
use tollgate_bench::{binary, client, cluster_with, pct, spawn_echo, Node};

struct Figures {
    propagation: Vec<Duration>,
    writes_per_sec: f64,
    gossip: Vec<Duration>,
    proxy_rps: f64,
}

async fn measure(nodes: &[Node], echo: u16) -> anyhow::Result<Figures> {
    let c = client();
    let a = &nodes[0].admin;
    let created = |r: reqwest::Response| {
        anyhow::ensure!(r.status() == 201, "{}", r.status());
        Ok(())
    };
    created(
        c.post(format!("{a}/services"))
            .json(&json!({"name": "s", "url": format!("http://127.0.0.1:{echo}")}))
            .send()
            .await?,
    )?;
    let mut propagation = Vec::new();
    for i in 0..100 {
        let path = format!("/w{i}");
        created(
            c.post(format!("{a}/services/s/routes"))
                .json(&json!({"paths": [path]}))
                .send()
                .await?,
        )?;
        let acked = Instant::now();
        for n in nodes {
            while c.get(format!("{}{path}", n.proxy)).send().await?.status() != 200 {
                anyhow::ensure!(acked.elapsed() < Duration::from_secs(10), "never served");
            }
        }
        propagation.push(acked.elapsed());
    }
    propagation.sort();

    let admins: Vec<String> = nodes.iter().map(|n| n.admin.clone()).collect();
    let writes_per_sec = tollgate_bench::admin_writes(&admins, 400, 16).await?;

    created(
        c.post(format!("{a}/services/s/routes"))
            .json(&json!({"name": "limited", "paths": ["/limited"]}))
            .send()
            .await?,
    )?;
    let limit = 1_000_000u64;
    created(
        c.post(format!("{a}/routes/limited/plugins"))
            .json(
                &json!({"name": "rate-limiting", "config": {"hour": limit, "policy": "cluster",
                "limit_by": "header", "header_name": "x-client"}}),
            )
            .send()
            .await?,
    )?;
    for n in nodes {
        while c
            .get(format!("{}/limited", n.proxy))
            .header("x-client", "warmup")
            .send()
            .await?
            .status()
            != 200
        {}
    }
    let remaining = |r: &reqwest::Response| {
        r.headers()
            .get("x-ratelimit-remaining-hour")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let mut gossip = Vec::new();
    for trial in 0..30 {
        let key = format!("trial-{trial}-{}", Instant::now().elapsed().as_nanos());
        for _ in 0..40 {
            c.get(format!("{}/limited", nodes[0].proxy))
                .header("x-client", &key)
                .send()
                .await?;
        }
        let sent = Instant::now();
        loop {
            let r = c
                .get(format!("{}/limited", nodes[1].proxy))
                .header("x-client", &key)
                .send()
                .await?;
            // Node 2's own requests count too; seeing node 1's 40 leaves at most limit - 41.
            if remaining(&r).is_some_and(|left| left <= limit - 41) {
                break;
            }
            anyhow::ensure!(
                sent.elapsed() < Duration::from_secs(10),
                "counts never arrived"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        gossip.push(sent.elapsed());
    }
    gossip.sort();

    let stop = Instant::now() + Duration::from_secs(5);
    let mut load = Vec::new();
    for i in 0..16 {
        let url = format!("{}/limited", nodes[i % nodes.len()].proxy);
        let c = c.clone();
        load.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < stop {
                if let Ok(r) = c
                    .get(&url)
                    .header("x-client", format!("load-{i}"))
                    .send()
                    .await
                {
                    let _ = r.bytes().await;
                    done += 1;
                }
            }
            done
        }));
    }
    let mut requests = 0;
    for t in load {
        requests += t.await?;
    }
    Ok(Figures {
        propagation,
        writes_per_sec,
        gossip,
        proxy_rps: requests as f64 / 5.0,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    println!("binary: {}", binary().display());
    let (_echo, echo_port) = spawn_echo();
    println!("| round | credentials | config write-to-served p50 / p99 | admin writes/s | rate-limit gossip seen p50 / p99 | cluster-policy proxy req/s |");
    println!("|---|---|---|---|---|---|");
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for round in 1..=2 {
        for secret in [false, true] {
            let dir = tempfile::tempdir()?;
            let file = dir.path().join("cluster.secret");
            let out = std::process::Command::new(binary())
                .args(["cluster", "secret"])
                .output()?;
            std::fs::write(&file, out.stdout)?;
            let file_arg = file.display().to_string();
            let extra: Vec<&str> = if secret {
                vec!["--cluster-secret-file", &file_arg]
            } else {
                vec![]
            };
            let nodes = cluster_with(3, dir.path(), &extra).await;
            let f = measure(&nodes, echo_port).await?;
            println!(
                "| {round} | {} | {:.2} / {:.2} ms | {:.0} | {:.1} / {:.1} ms | {:.0} |",
                if secret {
                    "secret (TLS + sealed gossip)"
                } else {
                    "none"
                },
                ms(pct(&f.propagation, 0.5)),
                ms(pct(&f.propagation, 0.99)),
                f.writes_per_sec,
                ms(pct(&f.gossip, 0.5)),
                ms(pct(&f.gossip, 0.99)),
                f.proxy_rps,
            );
        }
    }
    Ok(())
}
