//! TLS benchmark against nginx with the same certificate, in one run: HTTPS keep-alive with
//! key-auth + rate-limiting (nginx: an API-key map + `limit_req`), a full handshake per
//! request (`Connection: close`), and HTTP/2 (h2load, 10 streams per connection); then the
//! idle memory of a node holding 1,000 certificates.
//!
//! Same fairness as `proxy`: each proxy has CPU 0 alone with one worker; the load generator
//! and the backend (nginx, fixed body, plain HTTP) share CPU 1. Each case is warmed up and
//! measured `REPS` times, interleaved; medians are shown. nginx, wrk and h2load are
//! installed from Debian packages when missing.

use std::process::Command;
use std::time::Duration;

use serde_json::json;
use tollgate_bench::load::{ensure_tools, have, median, nginx, wrk, Run, KEY, WRK_SCRIPT};
use tollgate_bench::{admin_post, free_port, spawn_on, wait_answer, Proc};

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

/// A self-signed ECDSA P-256 certificate for `name`: (cert PEM, key PEM).
fn cert(name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let c = rcgen::CertificateParams::new(vec![name.to_string()])
        .expect("params")
        .self_signed(&key)
        .expect("cert");
    (c.pem(), key.serialize_pem())
}

/// One h2load run: 64 connections, 10 concurrent streams each, for `seconds`.
fn h2load(url: &str, seconds: u64) -> anyhow::Result<Run> {
    let out = Command::new("taskset")
        .args(["-c", "1", "h2load", "-t1", "-c64", "-m10"])
        .arg(format!("-D{seconds}"))
        .args(["-H", &format!("apikey: {KEY}"), url])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|s| s.trim_end_matches(" req/s").parse::<f64>().ok())
        .ok_or_else(|| anyhow::anyhow!("h2load printed no rate: {text}"))?;
    let failed = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .and_then(|l| l.split(", ").find(|p| p.ends_with("failed")))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    // h2load's per-request latency line: "time for request: min max mean sd".
    let p = |i: usize| {
        text.lines()
            .find(|l| l.trim_start().starts_with("time for request:"))
            .and_then(|l| l.split_whitespace().nth(i))
            .map(|v| {
                if let Some(ms) = v.strip_suffix("ms") {
                    ms.parse::<f64>().unwrap_or(0.0) * 1000.0
                } else if let Some(us) = v.strip_suffix("us") {
                    us.parse::<f64>().unwrap_or(0.0)
                } else {
                    v.trim_end_matches('s').parse::<f64>().unwrap_or(0.0) * 1e6
                }
            })
            .unwrap_or(0.0)
    };
    Ok(Run {
        rps,
        // h2load gives no percentiles: mean and max in their place, labelled so below.
        p50_us: p(5),
        p99_us: p(4),
        p999_us: p(4),
        errors: failed,
    })
}

struct Case {
    name: &'static str,
    url: String,
    /// wrk with a new connection per request, or h2load, or wrk keep-alive.
    kind: Kind,
    peer: Option<&'static str>,
    runs: Vec<Run>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    KeepAlive,
    Handshake,
    H2,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ensure_tools()?;
    if !have("h2load") {
        eprintln!("installing nghttp2-client (h2load) from Debian packages");
        let ok = Command::new("apt-get")
            .args(["install", "-y", "-qq", "nghttp2-client"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?
            .success();
        anyhow::ensure!(ok, "could not install nghttp2-client");
    }
    let dir = tempfile::tempdir()?;
    let script = dir.path().join("report.lua");
    std::fs::write(&script, WRK_SCRIPT)?;
    let close_script = dir.path().join("close.lua");
    std::fs::write(
        &close_script,
        format!("wrk.headers[\"Connection\"] = \"close\"\n{WRK_SCRIPT}"),
    )?;
    let (crt, key) = cert("localhost");
    let (crt_path, key_path) = (dir.path().join("bench.crt"), dir.path().join("bench.key"));
    std::fs::write(&crt_path, &crt)?;
    std::fs::write(&key_path, &key)?;

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

    let np = free_port();
    let _proxy = nginx(
        dir.path(),
        "proxy",
        "0",
        &format!(
            " upstream backend {{ server 127.0.0.1:{bport}; keepalive 64; }}\n\
             map $http_apikey $apikey_ok {{ default 0; \"{KEY}\" 1; }}\n\
             limit_req_zone $binary_remote_addr zone=rl:1m rate=100000000r/s;\n\
             server {{ listen 127.0.0.1:{np} ssl http2; ssl_certificate {crt}; ssl_certificate_key {key};\n\
               ssl_protocols TLSv1.2 TLSv1.3;\n\
               location / {{ if ($apikey_ok = 0) {{ return 401; }} \
               limit_req zone=rl burst=100000 nodelay; proxy_pass http://backend; \
               proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}",
            crt = crt_path.display(),
            key = key_path.display(),
        ),
    )?;

    let (tp, ta, tt) = (free_port(), free_port(), free_port());
    let node: Proc = spawn_on(
        Some("0"),
        &[
            "node",
            "--data-dir",
            &dir.path().join("single").display().to_string(),
            "--proxy-listen",
            &format!("127.0.0.1:{tp}"),
            "--proxy-listen-tls",
            &format!("127.0.0.1:{tt}"),
            "--admin-listen-tls",
            "off",
            "--ssl-cert",
            &crt_path.display().to_string(),
            "--ssl-cert-key",
            &key_path.display().to_string(),
            "--admin-listen",
            &format!("127.0.0.1:{ta}"),
            "--cluster-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--gossip-listen",
            &format!("127.0.0.1:{}", free_port()),
            "--worker-threads",
            "1",
        ]
        .map(String::from),
    );
    let admin = format!("http://127.0.0.1:{ta}");
    wait_answer(&format!("{admin}/status")).await?;
    admin_post(
        &admin,
        "/services",
        json!({"name": "bench", "url": backend}),
    )
    .await?;
    admin_post(
        &admin,
        "/services/bench/routes",
        json!({"name": "local", "paths": ["/local"]}),
    )
    .await?;
    admin_post(&admin, "/consumers", json!({"username": "bench"})).await?;
    admin_post(&admin, "/consumers/bench/key-auth", json!({"key": KEY})).await?;
    admin_post(&admin, "/routes/local/plugins", json!({"name": "key-auth"})).await?;
    admin_post(
        &admin,
        "/routes/local/plugins",
        json!({"name": "rate-limiting", "config": {"second": 100_000_000, "hour": 1_000_000_000_i64, "policy": "local"}}),
    )
    .await?;

    let (n, t) = (
        format!("https://127.0.0.1:{np}/local"),
        format!("https://127.0.0.1:{tt}/local"),
    );
    let case = |name, url: &String, kind, peer| Case {
        name,
        url: url.clone(),
        kind,
        peer,
        runs: vec![],
    };
    let mut cases = vec![
        case(
            "nginx https keep-alive, apikey + limit_req",
            &n,
            Kind::KeepAlive,
            None,
        ),
        case(
            "tollgate https keep-alive, key-auth + rate-limiting",
            &t,
            Kind::KeepAlive,
            Some("nginx https keep-alive, apikey + limit_req"),
        ),
        case(
            "nginx full handshake per request",
            &n,
            Kind::Handshake,
            None,
        ),
        case(
            "tollgate full handshake per request",
            &t,
            Kind::Handshake,
            Some("nginx full handshake per request"),
        ),
        case(
            "nginx HTTP/2 (h2load, 64 conns x 10 streams)",
            &n,
            Kind::H2,
            None,
        ),
        case(
            "tollgate HTTP/2 (h2load, 64 conns x 10 streams)",
            &t,
            Kind::H2,
            Some("nginx HTTP/2 (h2load, 64 conns x 10 streams)"),
        ),
    ];
    for rep in 0..=REPS {
        for c in cases.iter_mut() {
            let seconds = if rep == 0 { WARMUP } else { SECONDS };
            let run = tokio::task::block_in_place(|| match c.kind {
                Kind::KeepAlive => wrk("1", &c.url, true, seconds, &script),
                Kind::Handshake => wrk("1", &c.url, true, seconds, &close_script),
                Kind::H2 => h2load(&c.url, seconds),
            })?;
            if rep > 0 {
                eprintln!("  {:<55} {:>9.0} req/s", c.name, run.rps);
                c.runs.push(run);
            }
        }
    }
    let med = |c: &Case, f: fn(&Run) -> f64| median(c.runs.iter().map(f).collect());
    println!(
        "\n{:<55} {:>9} {:>8} {:>8} {:>8} {:>9} {:>8}",
        "case (median of 3)", "req/s", "p50 ms", "p99 ms", "errors", "× nginx", "p99/nginx"
    );
    for c in &cases {
        let (rps, p99) = (med(c, |r| r.rps), med(c, |r| r.p99_us));
        let peer = c.peer.and_then(|p| cases.iter().find(|x| x.name == p));
        let (ratio, p99r) = peer
            .map(|p| {
                (
                    format!("{:.2}", rps / med(p, |r| r.rps)),
                    format!("{:.2}", p99 / med(p, |r| r.p99_us)),
                )
            })
            .unwrap_or_default();
        println!(
            "{:<55} {:>9.0} {:>8.2} {:>8.2} {:>8} {:>9} {:>8}",
            c.name,
            rps,
            med(c, |r| r.p50_us) / 1000.0,
            p99 / 1000.0,
            c.runs.iter().map(|r| r.errors).sum::<u64>(),
            ratio,
            p99r
        );
    }
    println!("(HTTP/2 rows: h2load reports no percentiles; 'p50' is its mean and 'p99' its max.)");

    // Idle memory with 1,000 certificates, each with its SNI, loaded in one declarative file
    // into a fresh node (no load has grown its buffers).
    drop(node);
    let (ma, mt) = (free_port(), free_port());
    let mem_args: Vec<String> = [
        "node",
        "--data-dir",
        &dir.path().join("mem").display().to_string(),
        "--proxy-listen",
        &format!("127.0.0.1:{}", free_port()),
        "--proxy-listen-tls",
        &format!("127.0.0.1:{mt}"),
        "--admin-listen-tls",
        "off",
        "--admin-listen",
        &format!("127.0.0.1:{ma}"),
        "--cluster-listen",
        &format!("127.0.0.1:{}", free_port()),
        "--gossip-listen",
        &format!("127.0.0.1:{}", free_port()),
        "--worker-threads",
        "1",
    ]
    .map(String::from)
    .to_vec();
    let mem: Proc = spawn_on(Some("0"), &mem_args);
    let admin = format!("http://127.0.0.1:{ma}");
    wait_answer(&format!("{admin}/status")).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kb(mem.pid());
    let certs: Vec<serde_json::Value> = (0..1000)
        .map(|i| {
            let name = format!("site-{i}.bench.test");
            let (c, k) = cert(&name);
            json!({"cert": c, "key": k, "snis": [{"name": name}]})
        })
        .collect();
    let doc = json!({
        "_format_version": "3.0",
        "services": [{"name": "bench", "url": backend, "routes": [{"name": "local", "paths": ["/local"]}]}],
        "certificates": certs,
    });
    let r = tollgate_bench::client()
        .post(format!("{admin}/config"))
        .json(&doc)
        .send()
        .await?;
    anyhow::ensure!(
        r.status() == 201,
        "loading 1,000 certificates: {}",
        r.status()
    );
    drop(r);
    let served = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--resolve"])
        .arg(format!("site-999.bench.test:{mt}:127.0.0.1"))
        .arg(format!("https://site-999.bench.test:{mt}/local"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kb(mem.pid());
    // The same node restarted on its data: the certificates loaded from disk, without the
    // memory the 1 MB declarative write left with the allocator.
    drop(mem);
    let mem: Proc = spawn_on(Some("0"), &mem_args);
    wait_answer(&format!("{admin}/status")).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let restarted = rss_kb(mem.pid());
    let served_after = Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "--resolve"])
        .arg(format!("site-500.bench.test:{mt}:127.0.0.1"))
        .arg(format!("https://site-500.bench.test:{mt}/local"))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    println!(
        "\nidle RSS of a fresh node: {:.1} MB empty; {:.1} MB right after loading 1,000 \
         certificates with their SNIs in one declarative file (site-999 answered {served}); \
         {:.1} MB once restarted on that data (site-500 answered {served_after}); goal < 30 MB",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        restarted as f64 / 1024.0,
    );
    Ok(())
}
