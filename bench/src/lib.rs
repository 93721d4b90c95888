//! Shared harness for the benchmarks: starts release `tollgate` processes on loopback ports and
//! stops them on drop. Benchmarks print figures; they never assert timings.

pub mod load;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The release binary (build it first: `cargo build --release -p tollgate`).
pub fn binary() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::var_os("TOLLGATE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/release/tollgate"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_idle_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A child process killed on drop.
pub struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.0.wait();
    }
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

pub fn spawn(args: &[String]) -> Proc {
    spawn_on(None, args)
}

/// Spawns the binary pinned to the CPU list `cpus` (taskset syntax, e.g. "0") when given.
pub fn spawn_on(cpus: Option<&str>, args: &[String]) -> Proc {
    let mut cmd = match cpus {
        Some(c) => {
            let mut cmd = Command::new("taskset");
            cmd.args(["-c", c]).arg(binary());
            cmd
        }
        None => Command::new(binary()),
    };
    Proc(
        cmd.args(args)
            .env("TOLLGATE_LOG_LEVEL", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run the release binary: cargo build --release -p tollgate"),
    )
}

/// A running node.
pub struct Node {
    pub _proc: Proc,
    pub admin: String,
    pub proxy: String,
}

/// Starts `n` nodes that bootstrap one cluster, and waits for a leader with `n` voters.
pub async fn cluster(n: usize, dir: &std::path::Path) -> Vec<Node> {
    cluster_with(n, dir, &[]).await
}

/// [`cluster`], with extra arguments for every node.
pub async fn cluster_with(n: usize, dir: &std::path::Path, extra: &[&str]) -> Vec<Node> {
    cluster_pinned(n, dir, extra, &[]).await
}

/// [`cluster_with`], node `i` pinned to the CPU list `cpus[i]` when given.
pub async fn cluster_pinned(
    n: usize,
    dir: &std::path::Path,
    extra: &[&str],
    cpus: &[&str],
) -> Vec<Node> {
    let ports: Vec<(u16, u16, u16, u16)> = (0..n)
        .map(|_| (free_port(), free_port(), free_port(), free_port()))
        .collect();
    let seeds = ports
        .iter()
        .map(|p| format!("127.0.0.1:{}", p.3))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::new();
    for (i, (pp, ap, cp, gp)) in ports.iter().enumerate() {
        let args: Vec<String> = [
            "node",
            "--id",
            &(i + 1).to_string(),
            "--data-dir",
            &dir.join(format!("n{i}")).display().to_string(),
            "--proxy-listen",
            &format!("127.0.0.1:{pp}"),
            "--admin-listen",
            &format!("127.0.0.1:{ap}"),
            "--cluster-listen",
            &format!("127.0.0.1:{cp}"),
            "--gossip-listen",
            &format!("127.0.0.1:{gp}"),
            "--proxy-listen-tls",
            "off",
            "--admin-listen-tls",
            "off",
        ]
        .iter()
        .map(|s| s.to_string())
        // One node forms its own cluster; seeds and an expectation are for several.
        .chain(
            (n > 1)
                .then(|| {
                    [
                        "--seeds".to_string(),
                        seeds.clone(),
                        "--bootstrap-expect".to_string(),
                        n.to_string(),
                    ]
                })
                .into_iter()
                .flatten(),
        )
        .chain(extra.iter().map(|s| s.to_string()))
        .collect();
        nodes.push(Node {
            _proc: spawn_on(cpus.get(i).copied(), &args),
            admin: format!("http://127.0.0.1:{ap}"),
            proxy: format!("http://127.0.0.1:{pp}"),
        });
    }
    let c = client();
    let start = Instant::now();
    loop {
        let mut ready = true;
        for node in &nodes {
            let ok = match c.get(format!("{}/cluster", node.admin)).send().await {
                Ok(r) => r.json::<serde_json::Value>().await.ok().is_some_and(|v| {
                    v["leader_id"].is_u64()
                        && v["members"]
                            .as_array()
                            .map(|m| m.iter().filter(|x| x["role"] == "voter").count())
                            == Some(n)
                }),
                Err(_) => false,
            };
            ready &= ok;
        }
        if ready {
            return nodes;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "cluster did not form"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Percentile of sorted samples.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// A `tollgate echo` backend on a free loopback port: the process and its port.
pub fn spawn_echo() -> (Proc, u16) {
    spawn_echo_named("e")
}

/// [`spawn_echo`], answering with `name`.
pub fn spawn_echo_named(name: &str) -> (Proc, u16) {
    let port = free_port();
    let p = spawn(&[
        "echo".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--name".into(),
        name.into(),
    ]);
    (p, port)
}

/// `POST base+path` with a JSON body, which must answer 201; the created entity.
pub async fn admin_post(
    base: &str,
    path: &str,
    body: serde_json::Value,
) -> anyhow::Result<serde_json::Value> {
    let r = client()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await?;
    anyhow::ensure!(r.status() == 201, "POST {path}: {}", r.status());
    Ok(r.json().await?)
}

/// Polls `url` until it answers below 500 (15 s at most).
pub async fn wait_answer(url: &str) -> anyhow::Result<()> {
    let c = client();
    for _ in 0..300 {
        if let Ok(r) = c.get(url).send().await {
            if r.status().as_u16() < 500 {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("{url} never answered")
}

/// The sum and count of the node's `tollgate_config_rebuild_seconds` histogram.
pub async fn rebuild_seconds(admin: &str) -> anyhow::Result<(f64, f64)> {
    let text = client()
        .get(format!("{admin}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let get = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((
        get("tollgate_config_rebuild_seconds_sum"),
        get("tollgate_config_rebuild_seconds_count"),
    ))
}

/// Creates `total` consumers through `admins` in turn, `in_flight` at a time; returns the
/// writes per second (every one must answer 201).
pub async fn admin_writes(
    admins: &[String],
    total: usize,
    in_flight: usize,
) -> anyhow::Result<f64> {
    let c = client();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..total {
        let url = format!("{}/consumers", admins[i % admins.len()]);
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            c.post(url)
                .json(&serde_json::json!({"username": format!("u{i}")}))
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
        if tasks.len() == in_flight {
            for t in tasks.drain(..) {
                anyhow::ensure!(t.await?? == 201);
            }
        }
    }
    for t in tasks {
        anyhow::ensure!(t.await?? == 201);
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}
