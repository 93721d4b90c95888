//! Upstream balancing, three figures in one run:
//!
//! 1. **Cost**: req/s through a route balanced over 3 targets (round-robin, least-connections,
//!    consistent hashing on a header) against the same node's route to a single host, with the
//!    proxy pinned to CPU 0 (one worker thread) and wrk plus an nginx backend (three ports)
//!    on CPU 1; runs interleaved, medians of 3.
//! 2. **Failover at 1,000 req/s**: a client sends 1,000 GETs a second over 3 `tollgate echo`
//!    targets; one target is killed (connects refused), then, in a second run, frozen
//!    (SIGSTOP: connections accepted, never answered). Figures: failed requests, and the time
//!    from the fault to the target being out (its last request sent, and `/health` showing it
//!    UNHEALTHY).
//! 3. **Rebuild**: with 1,000 upstreams × 10 targets loaded, the time one target change takes
//!    to rebuild the data plane (`tollgate_config_rebuild_seconds` of that change), and the
//!    Admin API write's latency.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tollgate_bench::load::{ensure_tools, median, nginx, wrk, Run, WRK_SCRIPT};
use tollgate_bench::{
    admin_post as post, client, free_port, rebuild_seconds, spawn, spawn_echo_named, spawn_on,
    wait_answer as wait_ok, Proc,
};

const REPS: usize = 3;
const SECONDS: u64 = 8;
const WARMUP: u64 = 2;

fn node_args(dir: &std::path::Path, name: &str, proxy: u16, admin: u16) -> Vec<String> {
    [
        "node".to_string(),
        "--data-dir".into(),
        dir.join(name).display().to_string(),
        "--proxy-listen".into(),
        format!("127.0.0.1:{proxy}"),
        "--admin-listen".into(),
        format!("127.0.0.1:{admin}"),
        "--cluster-listen".into(),
        format!("127.0.0.1:{}", free_port()),
        "--gossip-listen".into(),
        format!("127.0.0.1:{}", free_port()),
        "--proxy-listen-tls".into(),
        "off".into(),
        "--admin-listen-tls".into(),
        "off".into(),
    ]
    .to_vec()
}

async fn cost(dir: &std::path::Path) -> anyhow::Result<()> {
    ensure_tools()?;
    let script = dir.join("report.lua");
    std::fs::write(&script, WRK_SCRIPT)?;
    let ports = [free_port(), free_port(), free_port()];
    let servers: String = ports
        .iter()
        .map(|p| {
            format!(
                " server {{ listen 127.0.0.1:{p} reuseport; location / {{ default_type application/json; \
                 return 200 '{{\"status\":\"ok\",\"service\":\"bench\"}}'; }} }}\n"
            )
        })
        .collect();
    let _backend = nginx(dir, "backend", "1", &servers)?;
    let (tp, ta) = (free_port(), free_port());
    let mut args = node_args(dir, "cost", tp, ta);
    args.extend(["--worker-threads".to_string(), "1".to_string()]);
    let _node: Proc = spawn_on(Some("0"), &args);
    let admin = format!("http://127.0.0.1:{ta}");
    wait_ok(&format!("{admin}/status")).await?;
    post(
        &admin,
        "/services",
        json!({"name": "single", "url": format!("http://127.0.0.1:{}", ports[0])}),
    )
    .await?;
    post(
        &admin,
        "/services/single/routes",
        json!({"paths": ["/single"]}),
    )
    .await?;
    for (name, settings) in [
        ("rr", json!({})),
        ("lc", json!({"algorithm": "least-connections"})),
        (
            "ch",
            json!({"hash_on": "header", "hash_on_header": "x-user"}),
        ),
    ] {
        let mut up = settings;
        up["name"] = json!(format!("{name}.bench"));
        post(&admin, "/upstreams", up).await?;
        for p in ports {
            post(
                &admin,
                &format!("/upstreams/{name}.bench/targets"),
                json!({"target": format!("127.0.0.1:{p}")}),
            )
            .await?;
        }
        post(
            &admin,
            "/services",
            json!({"name": name, "host": format!("{name}.bench")}),
        )
        .await?;
        post(
            &admin,
            &format!("/services/{name}/routes"),
            json!({"paths": [format!("/{name}")]}),
        )
        .await?;
    }
    let t = format!("http://127.0.0.1:{tp}");
    wait_ok(&format!("{t}/rr")).await?;
    let cases = [
        ("single host", "/single"),
        ("3 targets, round-robin", "/rr"),
        ("3 targets, least-connections", "/lc"),
        (
            "3 targets, consistent hashing (no key: one target, as Kong)",
            "/ch",
        ),
    ];
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); cases.len()];
    for rep in 0..=REPS {
        for (i, (name, path)) in cases.iter().enumerate() {
            let seconds = if rep == 0 { WARMUP } else { SECONDS };
            let url = format!("{t}{path}");
            let run = tokio::task::block_in_place(|| wrk("1", &url, false, seconds, &script))?;
            if rep > 0 {
                eprintln!("  {name:<50} {:>9.0} req/s", run.rps);
                runs[i].push(run);
            }
        }
    }
    let single = median(runs[0].iter().map(|r| r.rps).collect());
    println!(
        "\n{:<50} {:>9} {:>8} {:>8} {:>8}",
        "case (median of 3)", "req/s", "p50 ms", "p99 ms", "× single"
    );
    for (i, (name, _)) in cases.iter().enumerate() {
        let rps = median(runs[i].iter().map(|r| r.rps).collect());
        let p50 = median(runs[i].iter().map(|r| r.p50_us).collect()) / 1000.0;
        let p99 = median(runs[i].iter().map(|r| r.p99_us).collect()) / 1000.0;
        let errors: u64 = runs[i].iter().map(|r| r.errors).sum();
        println!(
            "{name:<50} {rps:>9.0} {p50:>8.2} {p99:>8.2} {:>8.3}{}",
            rps / single,
            if errors > 0 {
                format!("  ({errors} errors)")
            } else {
                String::new()
            }
        );
    }
    Ok(())
}

/// One request's outcome in the failover runs.
struct Sent {
    at: Duration,
    status: Option<u16>,
    backend: Option<String>,
}

async fn failover(dir: &std::path::Path, fault: &str) -> anyhow::Result<()> {
    let (tp, ta) = (free_port(), free_port());
    let _node = spawn(&node_args(dir, &format!("failover-{fault}"), tp, ta));
    let admin = format!("http://127.0.0.1:{ta}");
    wait_ok(&format!("{admin}/status")).await?;
    let mut backends = Vec::new();
    for i in 0..3 {
        backends.push(spawn_echo_named(&format!("b{i}")));
    }
    for (_, port) in &backends {
        wait_ok(&format!("http://127.0.0.1:{port}/health")).await?;
    }
    post(
        &admin,
        "/upstreams",
        json!({"name": "fo.bench", "healthchecks": {
        "passive": {"unhealthy": {"timeouts": 1, "tcp_failures": 1}},
        "active": {"http_path": "/health", "timeout": 0.25,
            "healthy": {"interval": 0.25, "successes": 1},
            "unhealthy": {"interval": 1, "timeouts": 1, "tcp_failures": 1}}}}),
    )
    .await?;
    for (_, port) in &backends {
        post(
            &admin,
            "/upstreams/fo.bench/targets",
            json!({"target": format!("127.0.0.1:{port}")}),
        )
        .await?;
    }
    post(
        &admin,
        "/services",
        json!({"name": "fo", "host": "fo.bench", "retries": 3,
        "read_timeout": 1000, "connect_timeout": 1000}),
    )
    .await?;
    post(&admin, "/services/fo/routes", json!({"paths": ["/fo"]})).await?;
    let url = format!("http://127.0.0.1:{tp}/fo");
    wait_ok(&url).await?;

    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let c = client();
    let start = Instant::now();
    let fault_at = Duration::from_secs(3);
    let total = Duration::from_secs(8);
    let victim = 1;
    let victim_name = format!("b{victim}");
    let target = format!("127.0.0.1:{}", backends[victim].1);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = tokio::task::JoinSet::new();
    let mut faulted = None;
    let mut out_in_health = None;
    let mut last_health = Instant::now();
    while start.elapsed() < total {
        tick.tick().await;
        if faulted.is_none() && start.elapsed() >= fault_at {
            let pid = backends[victim].0.pid() as i32;
            let sig = if fault == "kill" {
                libc::SIGKILL
            } else {
                libc::SIGSTOP
            };
            // SAFETY: signalling our own child.
            unsafe {
                libc::kill(pid, sig);
            }
            faulted = Some(start.elapsed());
        }
        if faulted.is_some()
            && out_in_health.is_none()
            && last_health.elapsed() > Duration::from_millis(20)
        {
            last_health = Instant::now();
            let (c, admin, target) = (c.clone(), admin.clone(), target.clone());
            let h: Value = c
                .get(format!("{admin}/upstreams/fo.bench/health"))
                .send()
                .await?
                .json()
                .await?;
            let down = h["data"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|t| t["target"] == target && t["health"] == "UNHEALTHY");
            if down {
                out_in_health = Some(start.elapsed());
            }
        }
        let (c, url, sent) = (c.clone(), url.clone(), sent.clone());
        let at = start.elapsed();
        tasks.spawn(async move {
            let r = c.get(url).timeout(Duration::from_secs(5)).send().await;
            let (status, backend) = match r {
                Ok(r) => {
                    let s = r.status().as_u16();
                    let name = r
                        .json::<Value>()
                        .await
                        .ok()
                        .and_then(|v| v["name"].as_str().map(str::to_string));
                    (Some(s), name)
                }
                Err(_) => (None, None),
            };
            sent.lock().unwrap().push(Sent {
                at,
                status,
                backend,
            });
        });
    }
    while tasks.join_next().await.is_some() {}
    let faulted = faulted.unwrap_or_default();
    let sent = sent.lock().unwrap();
    let failed = sent.iter().filter(|s| s.status != Some(200)).count();
    let last_to_victim = sent
        .iter()
        .filter(|s| s.backend.as_deref() == Some(victim_name.as_str()))
        .map(|s| s.at)
        .max()
        .unwrap_or_default();
    let last_failed = sent
        .iter()
        .filter(|s| s.status != Some(200))
        .map(|s| s.at)
        .max();
    println!(
        "{fault:<6} {:>6} requests in {:.0} s ({:.0}/s), {failed} failed; last request answered by the victim {:+.0} ms after the fault; last failed request sent {}; UNHEALTHY in /health {}",
        sent.len(),
        total.as_secs_f64(),
        sent.len() as f64 / total.as_secs_f64(),
        (last_to_victim.as_secs_f64() - faulted.as_secs_f64()) * 1000.0,
        last_failed.map(|t| format!("{:+.0} ms after the fault", (t.as_secs_f64() - faulted.as_secs_f64()) * 1000.0)).unwrap_or_else(|| "never".into()),
        out_in_health.map(|t| format!("{:+.0} ms after the fault", (t.as_secs_f64() - faulted.as_secs_f64()) * 1000.0)).unwrap_or_else(|| "never".into()),
    );
    if fault == "pause" {
        // SAFETY: signalling our own child, so that it can be stopped.
        unsafe {
            libc::kill(backends[victim].0.pid() as i32, libc::SIGCONT);
        }
    }
    Ok(())
}

async fn rebuild(dir: &std::path::Path) -> anyhow::Result<()> {
    let (tp, ta) = (free_port(), free_port());
    let _node = spawn(&node_args(dir, "rebuild", tp, ta));
    let admin = format!("http://127.0.0.1:{ta}");
    wait_ok(&format!("{admin}/status")).await?;
    let upstreams: Vec<Value> = (0..1000)
        .map(|u| {
            let targets: Vec<Value> = (0..10)
                .map(|t| json!({"target": format!("10.{}.{}.{}:80", u / 250, u % 250, t + 1)}))
                .collect();
            json!({"name": format!("up-{u}.bench"), "targets": targets})
        })
        .collect();
    let doc = json!({"_format_version": "3.0", "upstreams": upstreams});
    let started = Instant::now();
    let r = client()
        .post(format!("{admin}/config"))
        .json(&json!({"config": doc.to_string()}))
        .send()
        .await?;
    anyhow::ensure!(r.status() == 201, "POST /config: {}", r.status());
    println!(
        "loaded 1,000 upstreams × 10 targets with POST /config in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let mut rebuilds = Vec::new();
    let mut writes = Vec::new();
    for i in 0..20 {
        let (sum0, n0) = rebuild_seconds(&admin).await?;
        let t = Instant::now();
        let r = client()
            .patch(format!(
                "{admin}/upstreams/up-{}.bench/targets/10.0.{}.1:80",
                i * 7 % 250,
                i * 7 % 250
            ))
            .json(&json!({"weight": 50 + i}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 200, "PATCH: {}", r.status());
        writes.push(t.elapsed().as_secs_f64() * 1000.0);
        let (sum1, n1) = rebuild_seconds(&admin).await?;
        if n1 > n0 {
            rebuilds.push((sum1 - sum0) / (n1 - n0) * 1000.0);
        }
    }
    println!(
        "one target change with 1,000 upstreams × 10 targets: rebuild median {:.2} ms (max {:.2} ms over {}), Admin API PATCH median {:.1} ms",
        median(rebuilds.clone()),
        rebuilds.iter().cloned().fold(0.0, f64::max),
        rebuilds.len(),
        median(writes),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let only = std::env::args().nth(1);
    let want = |part: &str| only.as_deref().is_none_or(|o| o == part);
    if want("cost") {
        cost(dir.path()).await?;
    }
    if want("failover") {
        println!();
        failover(dir.path(), "kill").await?;
        failover(dir.path(), "pause").await?;
    }
    if want("rebuild") {
        println!();
        rebuild(dir.path()).await?;
    }
    Ok(())
}
