//! Process-mode control: nodes as local processes on loopback ports, with the faults a process
//! can suffer (SIGKILL then restart from its data dir, SIGSTOP/SIGCONT), and the client calls
//! the workloads make.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::history::Kind;

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("TOLLGATE_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let release = root.join("target/release/tollgate");
    if release.exists() {
        release
    } else {
        root.join("target/debug/tollgate")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

struct NodeProc {
    args: Vec<String>,
    log: PathBuf,
    child: Mutex<Option<Child>>,
    faulted: AtomicBool,
    admin: String,
    proxy: String,
}

/// A cluster of local processes and an echo backend.
pub struct Cluster {
    nodes: Vec<NodeProc>,
    echo: Mutex<Option<Child>>,
    echo_url: String,
    client: reqwest::Client,
}

fn spawn(args: &[String], log: &Path) -> anyhow::Result<Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    Ok(Command::new(binary())
        .args(args)
        .env("TOLLGATE_LOG_LEVEL", "info,openraft=warn")
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()?)
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

impl Cluster {
    /// Starts `n` nodes that bootstrap one cluster, plus an echo backend; logs go to `out`.
    pub async fn start(n: usize, out: &Path) -> anyhow::Result<Cluster> {
        let ports: Vec<[u16; 4]> = (0..n)
            .map(|_| [free_port(), free_port(), free_port(), free_port()])
            .collect();
        let seeds = ports
            .iter()
            .map(|p| format!("127.0.0.1:{}", p[3]))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            let args: Vec<String> = [
                "node".to_string(),
                "--id".into(),
                (i + 1).to_string(),
                "--data-dir".into(),
                out.join(format!("node{}-data", i + 1))
                    .display()
                    .to_string(),
                "--proxy-listen".into(),
                format!("127.0.0.1:{}", p[0]),
                "--admin-listen".into(),
                format!("127.0.0.1:{}", p[1]),
                "--cluster-listen".into(),
                format!("127.0.0.1:{}", p[2]),
                "--gossip-listen".into(),
                format!("127.0.0.1:{}", p[3]),
                "--seeds".into(),
                seeds.clone(),
                "--bootstrap-expect".into(),
                n.to_string(),
            ]
            .to_vec();
            let log = out.join(format!("node{}.log", i + 1));
            let child = spawn(&args, &log)?;
            nodes.push(NodeProc {
                args,
                log,
                child: Mutex::new(Some(child)),
                faulted: AtomicBool::new(false),
                admin: format!("http://127.0.0.1:{}", p[1]),
                proxy: format!("http://127.0.0.1:{}", p[0]),
            });
        }
        let echo_port = free_port();
        let echo = spawn(
            &[
                "echo".into(),
                "--listen".into(),
                format!("127.0.0.1:{echo_port}"),
                "--name".into(),
                "echo".into(),
            ],
            &out.join("echo.log"),
        )?;
        let cluster = Cluster {
            nodes,
            echo: Mutex::new(Some(echo)),
            echo_url: format!("http://127.0.0.1:{echo_port}"),
            client: reqwest::Client::builder()
                .no_proxy()
                .pool_idle_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(10))
                .build()?,
        };
        cluster.wait_healthy().await?;
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Waits until every node answers and they agree on a leader with all nodes voting.
    pub async fn wait_healthy(&self) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let mut leaders = Vec::new();
            for n in &self.nodes {
                let v: Option<Value> =
                    match self.client.get(format!("{}/cluster", n.admin)).send().await {
                        Ok(r) => r.json().await.ok(),
                        Err(_) => None,
                    };
                leaders.push(v.and_then(|v| {
                    let voters = v["members"]
                        .as_array()?
                        .iter()
                        .filter(|m| m["role"] == "voter")
                        .count();
                    (voters == self.nodes.len())
                        .then(|| v["leader_id"].as_u64())
                        .flatten()
                }));
            }
            if leaders.iter().all(|l| l.is_some() && *l == leaders[0]) {
                return Ok(());
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(90),
                "cluster not healthy: {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A service and route for the data-plane workload, served by every node.
    pub async fn setup_route(&self) -> anyhow::Result<()> {
        let a = &self.nodes[0].admin;
        let r = self
            .client
            .post(format!("{a}/services"))
            .json(&json!({"name": "jepsen", "url": self.echo_url}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "service: {}", r.status());
        let r = self
            .client
            .post(format!("{a}/services/jepsen/routes"))
            .json(&json!({"paths": ["/jepsen"]}))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "route: {}", r.status());
        for n in 0..self.len() {
            let start = Instant::now();
            while !self.proxy_ok(n).await {
                anyhow::ensure!(
                    start.elapsed() < Duration::from_secs(30),
                    "route not served on node {}",
                    n + 1
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Writes `value` to register `key` through node `node`.
    pub async fn write(&self, node: usize, key: usize, value: u64) -> Kind {
        let url = format!("{}/consumers/reg-{key}", self.nodes[node].admin);
        match self
            .client
            .put(url)
            .json(&json!({"custom_id": value.to_string()}))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => Kind::Ok,
            // Refused by validation: certainly not applied.
            Ok(r) if r.status().is_client_error() => Kind::Fail,
            // 503/500 or no answer: it may still be committed later.
            _ => Kind::Info,
        }
    }

    /// Reads register `key` through node `node`.
    pub async fn read(&self, node: usize, key: usize, consistent: bool) -> (Kind, Option<u64>) {
        let q = if consistent { "?consistent=true" } else { "" };
        let url = format!("{}/consumers/reg-{key}{q}", self.nodes[node].admin);
        match self.client.get(url).send().await {
            Ok(r) if r.status() == 404 => (Kind::Ok, None),
            Ok(r) if r.status() == 200 => match r.json::<Value>().await {
                Ok(v) => (
                    Kind::Ok,
                    v["custom_id"].as_str().and_then(|s| s.parse().ok()),
                ),
                Err(_) => (Kind::Fail, None),
            },
            _ => (Kind::Fail, None),
        }
    }

    /// Whether node `node`'s proxy serves the data-plane route.
    pub async fn proxy_ok(&self, node: usize) -> bool {
        match self
            .client
            .get(format!("{}/jepsen", self.nodes[node].proxy))
            .send()
            .await
        {
            Ok(r) => r.status() == 200,
            Err(_) => false,
        }
    }

    pub fn faulted(&self, node: usize) -> bool {
        self.nodes[node].faulted.load(Ordering::Relaxed)
    }

    /// SIGKILL.
    pub fn kill(&self, node: usize) {
        let n = &self.nodes[node];
        n.faulted.store(true, Ordering::Relaxed);
        if let Some(mut c) = n.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts a killed node from its data dir and waits until it serves again.
    pub async fn restart(&self, node: usize) -> anyhow::Result<()> {
        let n = &self.nodes[node];
        let child = spawn(&n.args, &n.log)?;
        *n.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        let start = Instant::now();
        while !self.proxy_ok(node).await {
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(60),
                "node {} did not come back",
                node + 1
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        n.faulted.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// SIGSTOP: the process freezes with its sockets open.
    pub fn pause(&self, node: usize) {
        let n = &self.nodes[node];
        n.faulted.store(true, Ordering::Relaxed);
        if let Some(c) = n.child.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            signal(c, libc::SIGSTOP);
        }
    }

    /// SIGCONT.
    pub fn resume(&self, node: usize) {
        let n = &self.nodes[node];
        if let Some(c) = n.child.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            signal(c, libc::SIGCONT);
        }
        n.faulted.store(false, Ordering::Relaxed);
    }

    /// Stops every process.
    pub fn stop(&self) {
        for n in &self.nodes {
            if let Some(mut c) = n.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
                signal(&c, libc::SIGCONT);
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if let Some(mut c) = self.echo.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}
