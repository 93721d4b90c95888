//! Cluster-wide rate limiting through gossip, on three real nodes: `policy: cluster` and
//! `policy: redis` (no Redis anywhere) admit about the limit across the cluster.

mod common;

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{client, eventually, ClusterSpec, Echo, Node};
use serde_json::json;

// Each test owns its runtime and thread; blocking it while another test runs is the point.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

async fn served_everywhere(nodes: &[Node], path: &str) {
    for n in nodes {
        eventually("route served", || async {
            let r = client()
                .get(n.proxy_url(path))
                .header("x-client", "probe")
                .send()
                .await
                .ok()?;
            (r.status() != 404).then_some(())
        })
        .await;
    }
}

/// Sends `count` requests round-robin over `nodes` at about `rate` per second; returns how
/// many were admitted (200).
async fn drive(nodes: &[&Node], path: &str, client_key: &str, count: usize, rate: f64) -> usize {
    let c = client();
    let gap = Duration::from_secs_f64(1.0 / rate);
    let mut tick = tokio::time::interval(gap);
    let mut admitted = 0;
    for i in 0..count {
        tick.tick().await;
        let r = c
            .get(nodes[i % nodes.len()].proxy_url(path))
            .header("x-client", client_key)
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => admitted += 1,
            429 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    admitted
}

#[tokio::test]
#[allow(clippy::await_holding_lock)]
async fn cluster_and_redis_policies_admit_about_the_limit_across_nodes() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let echo = Echo::start("e").await;
    let spec = ClusterSpec::new(3);
    let nodes = spec.bootstrap(3, &[]).await;
    nodes[0]
        .create("/services", json!({"name": "s", "url": echo.url()}))
        .await;
    for (route, policy) in [
        ("cluster", "cluster"),
        ("redis", "redis"),
        ("local", "local"),
    ] {
        nodes[0]
            .create(
                "/services/s/routes",
                json!({"name": route, "paths": [format!("/{route}")]}),
            )
            .await;
        let mut config =
            json!({"hour": 200, "policy": policy, "limit_by": "header", "header_name": "x-client"});
        if policy == "redis" {
            // A Kong file's Redis settings are accepted and shown, and no Redis is needed.
            config["redis"] = json!({"host": "redis.example", "port": 6379});
        }
        // Read-your-writes holds on the node written through, so the plugin goes there too.
        let p = nodes[0]
            .create(
                &format!("/routes/{route}/plugins"),
                json!({"name": "rate-limiting", "config": config}),
            )
            .await;
        assert_eq!(p["config"]["policy"], policy);
        if policy == "redis" {
            assert_eq!(p["config"]["redis"]["host"], "redis.example");
        }
        served_everywhere(&nodes, &format!("/{route}")).await;
    }
    let all: Vec<&Node> = nodes.iter().collect();

    let admitted = drive(&all, "/cluster", "k1", 600, 150.0).await;
    eprintln!("figure: policy cluster admitted {admitted} of limit 200 (600 requests, 150 req/s, 3 nodes)");
    assert!(
        (190..=220).contains(&admitted),
        "policy cluster admitted {admitted} of limit 200"
    );
    let admitted = drive(&all, "/redis", "k1", 600, 150.0).await;
    eprintln!("figure: policy redis admitted {admitted} of limit 200");
    assert!(
        (190..=220).contains(&admitted),
        "policy redis admitted {admitted} of limit 200"
    );
    // The contrast users know from Kong: local counters admit about N × limit.
    let admitted = drive(&all, "/local", "k1", 700, 300.0).await;
    eprintln!("figure: policy local admitted {admitted} of limit 200");
    assert!(admitted >= 550, "policy local admitted {admitted}");

    // Headers report the cluster's view.
    let r = client()
        .get(nodes[2].proxy_url("/cluster"))
        .header("x-client", "k1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["x-ratelimit-remaining-hour"], "0");
    let m = client()
        .get(nodes[0].admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("tollgate_rate_limit_rejections_total{policy=\"cluster\",route=\"cluster\"}"),
        "{m}"
    );
}

#[tokio::test]
#[allow(clippy::await_holding_lock)]
async fn a_dead_nodes_counts_are_honoured_and_new_windows_reset() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let echo = Echo::start("e").await;
    let spec = ClusterSpec::new(3);
    let mut nodes = spec.bootstrap(3, &[]).await;
    nodes[0]
        .create("/services", json!({"name": "s", "url": echo.url()}))
        .await;
    nodes[0]
        .create("/services/s/routes", json!({"name": "h", "paths": ["/h"]}))
        .await;
    nodes[0]
        .create(
            "/routes/h/plugins",
            json!({"name": "rate-limiting", "config": {"hour": 100, "policy": "cluster", "limit_by": "header", "header_name": "x-client"}}),
        )
        .await;
    nodes[0]
        .create(
            "/services/s/routes",
            json!({"name": "sec", "paths": ["/sec"]}),
        )
        .await;
    nodes[0]
        .create(
            "/routes/sec/plugins",
            json!({"name": "rate-limiting", "config": {"second": 5, "policy": "cluster", "window_type": "fixed", "limit_by": "header", "header_name": "x-client"}}),
        )
        .await;
    served_everywhere(&nodes, "/h").await;
    served_everywhere(&nodes, "/sec").await;

    // Node 3 admits 60, its counts reach the others, then it dies.
    let admitted = drive(&[&nodes[2]], "/h", "k", 60, 200.0).await;
    assert_eq!(admitted, 60);
    // Probe node 1 until it sees node 3's 60 (each probe is a request too, and counts).
    // Probe both survivors until each has heard node 3's 60 (probes are requests and count).
    let probes_admitted = std::sync::atomic::AtomicUsize::new(0);
    for n in &nodes[..2] {
        eventually("node 3's counts gossiped", || async {
            let r = client()
                .get(n.proxy_url("/h"))
                .header("x-client", "k")
                .send()
                .await
                .ok()?;
            if r.status() == 200 {
                probes_admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let remaining: u64 = r
                .headers()
                .get("x-ratelimit-remaining-hour")?
                .to_str()
                .ok()?
                .parse()
                .ok()?;
            (remaining <= 40).then_some(())
        })
        .await;
    }
    let probes_admitted = probes_admitted.into_inner();
    nodes[2].proc.kill();
    let survivors = [&nodes[0], &nodes[1]];
    let mut admitted = drive(&survivors, "/h", "k", 120, 150.0).await;
    // A node whose share of a key is not settled answers 429 with `Retry-After: 1` (it holds
    // back until its view of the others is new, at most REBASE_SECS once gossip arrives): a
    // client that retries then gets the rest. On a loaded machine gossip, and so the
    // survivors' new views, can lag the burst; retry as a client would until a round
    // admits nothing, so the total measures what the cluster admits, not how fast it told.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let more = drive(&survivors, "/h", "k", 10, 50.0).await;
        admitted += more;
        if more == 0 {
            break;
        }
    }
    let total = 60 + probes_admitted + admitted;
    eprintln!("figure: node death mid-window: admitted {total} of limit 100");
    // The documented bound is limit + N − 1 plus what peers admitted while their counts were
    // in flight; on a loaded 2-core machine gossip is slow, so allow the issue's ±10 %.
    assert!(
        (95..=110).contains(&total),
        "admitted {total} in all (limit 100; node 3 took 60 before dying)"
    );

    // A new window starts afresh (fixed one-second windows, limit 5).
    let mut last_window = None;
    for _ in 0..2 {
        // Start just after a second begins so ten requests fit in one window.
        loop {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs_f64();
            if now.fract() < 0.05 && Some(now.floor()) != last_window {
                last_window = Some(now.floor());
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Sixteen requests in ~0.16 s: the window must have reset (at least 4 admitted), and
        // neither node may exceed the limit on its own counts, however late gossip is (at most
        // N × limit = 10; the tighter limit + N − 1 needs gossip within 0.5 s, which a loaded
        // 2-core machine does not promise within one second).
        let admitted = drive(&survivors, "/sec", "w", 16, 100.0).await;
        assert!(
            (4..=10).contains(&admitted),
            "one-second window admitted {admitted} of 5 (2 nodes)"
        );
    }
    nodes.truncate(2);
}

#[tokio::test]
#[allow(clippy::await_holding_lock)]
async fn many_distinct_keys_stay_within_the_memory_cap() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let echo = Echo::start("e").await;
    let spec = ClusterSpec::new(3);
    let nodes = spec.bootstrap(3, &["--ratelimit-max-keys", "5000"]).await;
    nodes[0]
        .create("/services", json!({"name": "s", "url": echo.url()}))
        .await;
    nodes[0]
        .create("/services/s/routes", json!({"name": "m", "paths": ["/m"]}))
        .await;
    nodes[0]
        .create(
            "/routes/m/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 1000, "policy": "cluster", "limit_by": "header", "header_name": "x-client"}}),
        )
        .await;
    served_everywhere(&nodes, "/m").await;

    // 50,000 distinct clients, 16 in flight, spread over the nodes.
    const CLIENTS: usize = 50_000;
    let c = client();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let url = nodes[i % 3].proxy_url("/m");
        let c = c.clone();
        tasks.spawn(async move {
            c.get(url)
                .header("x-client", format!("client-{i}"))
                .send()
                .await
                .map(|r| r.status().as_u16())
        });
        if tasks.len() >= 16 {
            let r = tasks.join_next().await.unwrap().unwrap();
            assert!(matches!(r, Ok(200)), "{r:?}");
        }
    }
    while let Some(r) = tasks.join_next().await {
        let r = r.unwrap();
        assert!(matches!(r, Ok(200)), "{r:?}");
    }

    // Every node holds at most the cap of its own keys and the cap of its peers' keys.
    for n in &nodes {
        eventually("the cap enforced", || async {
            let m = client()
                .get(n.admin_url("/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let keys: f64 = m
                .lines()
                .find(|l| l.starts_with("tollgate_ratelimit_cluster_keys "))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (keys > 0.0 && keys <= 10_000.0).then_some(())
        })
        .await;
    }
    // Gossip stays healthy: a busy key is still limited cluster-wide. The overshoot bound
    // includes what peers admit while their latest counts are in flight, which grows with the
    // request rate times the gossip delay; at 300 requests/s a loaded machine's delay took it
    // to 1057. At 150/s the same delay costs half as much.
    let all: Vec<&Node> = nodes.iter().collect();
    let admitted = drive(&all, "/m", "steady", 1200, 150.0).await;
    eprintln!("figure: after 50k clients: admitted {admitted} of limit 1000");
    assert!(
        (990..=1050).contains(&admitted),
        "admitted {admitted} of 1000 after the flood"
    );
}
