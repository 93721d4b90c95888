//! Side-by-side proxy benchmark: a fixed-body backend measured directly, through nginx (plain
//! reverse proxy; API-key check + `limit_req`) and through Tollgate (no plugins; key-auth +
//! rate-limiting local; the same with `policy: cluster` on a 3-node cluster), all in one run.
//!
//! Fairness on a 2-core machine: the proxy under test gets CPU 0 alone (nginx with one worker,
//! Tollgate with one runtime worker thread); the load generator (wrk, one thread) and the
//! backend (nginx, one worker) share CPU 1. The backend measured directly runs on CPU 0 with
//! wrk on CPU 1. Each case is warmed up, then measured `REPS` times, interleaved with the
//! others; the table shows medians. nginx and wrk are installed from Debian packages when
//! missing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tollgate_bench::load::{ensure_tools, median, nginx, wrk, Run, KEY, WRK_SCRIPT};
use tollgate_bench::{
    admin_post, cluster_pinned, free_port, spawn_on, wait_answer as wait_ok, Proc,
};

const REPS: usize = 3;
const SECONDS: u64 = 8;
const WARMUP: u64 = 2;

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Samples a process's RSS every 100 ms while `on`, keeping the peak.
fn watch_rss(pid: u32, on: Arc<AtomicBool>, peak: Arc<AtomicU64>) {
    std::thread::spawn(move || {
        while on.load(Ordering::Relaxed) {
            peak.fetch_max(rss_kb(pid), Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(100));
        }
    });
}

/// Routes on a Tollgate node: /plain (no plugins), /local and /cluster (key-auth +
/// rate-limiting with a limit never reached, by policy).
async fn configure(base: &str, backend: &str, policies: &[&str]) -> anyhow::Result<()> {
    admin_post(base, "/services", json!({"name": "bench", "url": backend})).await?;
    admin_post(
        base,
        "/services/bench/routes",
        json!({"name": "plain", "paths": ["/plain"]}),
    )
    .await?;
    admin_post(base, "/consumers", json!({"username": "bench"})).await?;
    admin_post(base, "/consumers/bench/key-auth", json!({"key": KEY})).await?;
    for p in policies {
        admin_post(
            base,
            "/services/bench/routes",
            json!({"name": p, "paths": [format!("/{p}")]}),
        )
        .await?;
        admin_post(
            base,
            &format!("/routes/{p}/plugins"),
            json!({"name": "key-auth"}),
        )
        .await?;
        admin_post(
        base,
            &format!("/routes/{p}/plugins"),
            json!({"name": "rate-limiting", "config": {"second": 100_000_000, "hour": 1_000_000_000_i64, "policy": p}}),
        )
        .await?;
    }
    Ok(())
}

struct Case {
    name: &'static str,
    url: String,
    key: bool,
    /// CPU of wrk.
    cpu: &'static str,
    /// Name of the case it is compared with.
    peer: Option<&'static str>,
    runs: Vec<Run>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ensure_tools()?;
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("report.lua");
    std::fs::write(&script, WRK_SCRIPT)?;

    // The backend: a fixed small JSON body.
    let bport = free_port();
    let _backend = nginx(
        dir.path(),
        "backend",
        "1",
        &format!(
            " server {{ listen 127.0.0.1:{bport} reuseport; location / {{ default_type application/json; \
             return 200 '{{\"status\":\"ok\",\"service\":\"bench\"}}'; }} }}"
        ),
    )?;
    let backend = format!("http://127.0.0.1:{bport}");

    // nginx as a reverse proxy: plain, and with an API-key check and limit_req.
    let (np, na) = (free_port(), free_port());
    let _proxy = nginx(
        dir.path(),
        "proxy",
        "0",
        &format!(
            " upstream backend {{ server 127.0.0.1:{bport}; keepalive 64; }}\n\
             map $http_apikey $apikey_ok {{ default 0; \"{KEY}\" 1; }}\n\
             limit_req_zone $binary_remote_addr zone=rl:1m rate=100000000r/s;\n\
             server {{ listen 127.0.0.1:{np}; location / {{ proxy_pass http://backend; \
               proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}\n\
             server {{ listen 127.0.0.1:{na}; location / {{ if ($apikey_ok = 0) {{ return 401; }} \
               limit_req zone=rl burst=100000 nodelay; proxy_pass http://backend; \
               proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}"
        ),
    )?;

    // Tollgate, one node, one worker thread.
    let (tp, ta) = (free_port(), free_port());
    let node: Proc = spawn_on(
        Some("0"),
        &[
            "node",
            "--data-dir",
            &dir.path().join("single").display().to_string(),
            "--proxy-listen",
            &format!("127.0.0.1:{tp}"),
            "--admin-listen",
            &format!("127.0.0.1:{ta}"),
            "--cluster-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--gossip-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--proxy-listen-tls",
            "off",
            "--admin-listen-tls",
            "off",
            "--worker-threads",
            "1",
        ]
        .map(String::from),
    );
    let admin_url = format!("http://127.0.0.1:{ta}");
    wait_ok(&format!("{admin_url}/status")).await?;
    configure(&admin_url, &backend, &["local"]).await?;
    let idle_rss = {
        tokio::time::sleep(Duration::from_secs(1)).await;
        rss_kb(node.pid())
    };

    // Tollgate, 3 nodes: node 1 on CPU 0 with one worker thread, the others on CPU 1.
    let cluster = cluster_pinned(
        3,
        &dir.path().join("cluster"),
        &["--worker-threads", "1"],
        &["0", "1", "1"],
    )
    .await;
    configure(&cluster[0].admin, &backend, &["local", "cluster"]).await?;
    for n in &cluster {
        wait_ok(&format!("{}/cluster", n.proxy)).await?;
    }
    // Tollgate answers 401 without a key; wait_ok above only proved the route exists.

    let t = format!("http://127.0.0.1:{tp}");
    let c = &cluster[0].proxy;
    let mut cases = vec![
        Case {
            name: "backend direct",
            url: format!("{backend}/"),
            key: false,
            cpu: "1",
            peer: None,
            runs: vec![],
        },
        Case {
            name: "nginx proxy",
            url: format!("http://127.0.0.1:{np}/"),
            key: false,
            cpu: "1",
            peer: None,
            runs: vec![],
        },
        Case {
            name: "nginx apikey + limit_req",
            url: format!("http://127.0.0.1:{na}/"),
            key: true,
            cpu: "1",
            peer: None,
            runs: vec![],
        },
        Case {
            name: "tollgate, no plugins",
            url: format!("{t}/plain"),
            key: false,
            cpu: "1",
            peer: Some("nginx proxy"),
            runs: vec![],
        },
        Case {
            name: "tollgate key-auth + rate-limiting (local)",
            url: format!("{t}/local"),
            key: true,
            cpu: "1",
            peer: Some("nginx apikey + limit_req"),
            runs: vec![],
        },
        Case {
            name: "tollgate 3 nodes, key-auth + rate-limiting (local)",
            url: format!("{c}/local"),
            key: true,
            cpu: "1",
            peer: Some("nginx apikey + limit_req"),
            runs: vec![],
        },
        Case {
            name: "tollgate 3 nodes, key-auth + rate-limiting (cluster)",
            url: format!("{c}/cluster"),
            key: true,
            cpu: "1",
            peer: Some("nginx apikey + limit_req"),
            runs: vec![],
        },
    ];
    // Direct: the backend has CPU 1, so wrk takes CPU 0.
    cases[0].cpu = "0";

    let peak = Arc::new(AtomicU64::new(0));
    for rep in 0..=REPS {
        for case in cases.iter_mut() {
            let seconds = if rep == 0 { WARMUP } else { SECONDS };
            let watching = Arc::new(AtomicBool::new(case.name.starts_with("tollgate key-auth")));
            if watching.load(Ordering::Relaxed) {
                watch_rss(node.pid(), watching.clone(), peak.clone());
            }
            let run = tokio::task::block_in_place(|| {
                wrk(case.cpu, &case.url, case.key, seconds, &script)
            })?;
            watching.store(false, Ordering::Relaxed);
            if rep > 0 {
                eprintln!("  {:<55} {:>9.0} req/s", case.name, run.rps);
                case.runs.push(run);
            }
        }
    }

    let med = |c: &Case, f: fn(&Run) -> f64| median(c.runs.iter().map(f).collect());
    println!(
        "\n{:<55} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8}",
        "case (median of 3)",
        "req/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "errors",
        "× peer",
        "p99/peer"
    );
    for c in &cases {
        let (rps, p99) = (med(c, |r| r.rps), med(c, |r| r.p99_us));
        let peer = c.peer.and_then(|p| cases.iter().find(|x| x.name == p));
        let (ratio, p99_ratio) = peer
            .map(|p| {
                (
                    format!("{:.2}", rps / med(p, |r| r.rps)),
                    format!("{:.2}", p99 / med(p, |r| r.p99_us)),
                )
            })
            .unwrap_or_default();
        println!(
            "{:<55} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8} {:>9} {:>8}",
            c.name,
            rps,
            med(c, |r| r.p50_us) / 1000.0,
            p99 / 1000.0,
            med(c, |r| r.p999_us) / 1000.0,
            c.runs.iter().map(|r| r.errors).sum::<u64>(),
            ratio,
            p99_ratio
        );
    }
    let local = cases
        .iter()
        .find(|c| c.name.ends_with("(local)") && c.name.contains("3 nodes"));
    let cluster_case = cases.iter().find(|c| c.name.ends_with("(cluster)"));
    if let (Some(l), Some(cl)) = (local, cluster_case) {
        println!(
            "\ncluster policy vs local on the same node: {:.3}× req/s",
            med(cl, |r| r.rps) / med(l, |r| r.rps)
        );
    }
    println!(
        "tollgate RSS: idle {:.1} MB, peak under key-auth + rate-limiting load {:.1} MB",
        idle_rss as f64 / 1024.0,
        peak.load(Ordering::Relaxed) as f64 / 1024.0
    );
    Ok(())
}
