//! Scale: router match time and configuration apply time with many routes.
//!
//! 1. In process (the `config` crate): build the router for N routes (prefix paths, a third
//!    with hosts, some regex paths) and time `find` on a mix of matching and unmatched paths.
//! 2. Through a release node: `POST /config` of a declarative file with N routes (Kong's
//!    format), then one incremental route, timing the Admin API answer (parse, Raft commit,
//!    apply, data-plane rebuild) and the node's own rebuild-time metric.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tollgate_bench::{client, cluster, rebuild_seconds};
use tollgate_config::declarative;
use tollgate_config::router::{RequestView, Router};
use tollgate_config::state::State;

fn doc(n: usize) -> String {
    let mut routes = Vec::with_capacity(n);
    for i in 0..n {
        let mut r =
            serde_json::json!({"name": format!("r{i}"), "paths": [format!("/svc-{i}/api")]});
        if i % 3 == 0 {
            r["hosts"] = serde_json::json!([format!("h{}.example.com", i % 100)]);
        }
        if i % 50 == 0 {
            r["paths"] = serde_json::json!([format!("~/re-{i}/v[0-9]+")]);
        }
        routes.push(r);
    }
    serde_json::json!({
        "_format_version": "3.0",
        "services": [{"name": "s", "url": "http://127.0.0.1:9", "routes": routes}],
    })
    .to_string()
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

fn in_process(n: usize) -> anyhow::Result<()> {
    let text = doc(n);
    let t = Instant::now();
    let data = declarative::parse(&text, &mut declarative::Sequence(1))?;
    let parse = t.elapsed();
    let t = Instant::now();
    let state = State::from_data(data).map_err(|e| anyhow::anyhow!("{e}"))?;
    let load = t.elapsed();
    let t = Instant::now();
    let router = Router::build(&state);
    let build = t.elapsed();
    let headers: HashMap<String, Vec<String>> = HashMap::new();
    let paths: Vec<String> = (0..1000)
        .map(|i| match i % 4 {
            0 => format!("/svc-{}/api/users/{i}", (i * 7919) % n),
            1 => format!("/re-{}/v2/x", ((i * 31) % (n / 50)) * 50),
            2 => "/nothing/here".to_string(),
            _ => format!("/svc-{}/api", (i * 104729) % n),
        })
        .collect();
    let mut times = Vec::with_capacity(200_000);
    let mut found = 0;
    for round in 0..200 {
        for (i, p) in paths.iter().enumerate() {
            let host = if i % 3 == 0 {
                "h3.example.com"
            } else {
                "other.test"
            };
            let t = Instant::now();
            let m = router.find(&RequestView {
                method: "GET",
                host,
                port: None,
                path: p,
                headers: &headers,
                sni: None,
                tls: false,
            });
            times.push(t.elapsed());
            if round == 0 && m.is_some() {
                found += 1;
            }
        }
    }
    println!(
        "{n:>6} routes: file {:.1} MB, parse {:?}, state {:?}, router build {:?}; match p50 {:?} p99 {:?} ({found}/1000 matched)",
        text.len() as f64 / 1e6,
        parse,
        load,
        build,
        pct(&mut times, 0.5),
        pct(&mut times, 0.99),
    );
    Ok(())
}

/// Times one Admin API create, which returns once the change is applied on the node.
async fn created(url: &str, body: serde_json::Value) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let r = client().post(url).json(&body).send().await?;
    let took = t.elapsed();
    anyhow::ensure!(r.status() == 201, "POST {url}: {}", r.status());
    Ok(took)
}

async fn through_node(n: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let nodes = cluster(1, dir.path()).await;
    let admin = &nodes[0].admin;
    let text = doc(n);
    let before = rebuild_seconds(admin).await?;
    let t = Instant::now();
    let r = client()
        .post(format!("{admin}/config"))
        .header("content-type", "application/json")
        .body(text.clone())
        .send()
        .await?;
    let full = t.elapsed();
    anyhow::ensure!(r.status() == 201, "POST /config: {}", r.status());
    let after = rebuild_seconds(admin).await?;
    let one = created(
        &format!("{admin}/services/s/routes"),
        serde_json::json!({"name": "one-more", "paths": ["/one-more"]}),
    )
    .await?;
    let last = rebuild_seconds(admin).await?;
    // A change routing does not read (a consumer) reuses the router.
    let consumer = created(
        &format!("{admin}/consumers"),
        serde_json::json!({"username": "one-more"}),
    )
    .await?;
    let end = rebuild_seconds(admin).await?;
    println!(
        "{n:>6} routes through a node: POST /config {:?} (data-plane rebuild {:.0} ms); one more route {:?} (rebuild {:.1} ms); one more consumer {:?} (rebuild {:.1} ms)",
        full,
        (after.0 - before.0) * 1e3,
        one,
        (last.0 - after.0) * 1e3,
        consumer,
        (end.0 - last.0) * 1e3,
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    for n in [10_000, 30_000] {
        in_process(n)?;
    }
    for n in [10_000, 30_000] {
        through_node(n).await?;
    }
    Ok(())
}
