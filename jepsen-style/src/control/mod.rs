//! Control of the cluster under test: where its nodes are, the faults that can be done to them,
//! and the HTTP calls the workloads and nemeses make.
//!
//! Two backends give the same interface: local processes on loopback (`process`), and the
//! root `docker-compose.yml` (`docker`). Only the Docker backend can cut the network: its
//! partitions are iptables rules inside the containers' network namespaces.

pub mod docker;
pub mod process;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::history::Kind;

/// The upstream the backend nemesis harms.
pub const BALANCED: &str = "balanced.jepsen";
/// Its passive breaker: timeouts before a backend is taken out.
pub const PASSIVE_TIMEOUTS: u64 = 1;
/// The balanced service's read timeout (a slow backend answers well within it).
pub const BALANCED_READ_TIMEOUT_MS: u64 = 1500;

/// How a node is reached from the harness.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub admin: String,
    pub proxy: String,
    /// The TLS proxy listener (`https://…`): every other data-plane request goes there.
    pub proxy_tls: String,
    /// The cluster listener (`host:port`), for the hostile nemesis.
    pub cluster: String,
    /// The gossip socket (`ip:port`), for the hostile nemesis.
    pub gossip: String,
}

enum Backend {
    Process(process::Processes),
    Docker(docker::Compose),
}

struct NodeState {
    endpoints: RwLock<Endpoints>,
    /// Killed or paused: excluded from the data-plane availability target.
    faulted: AtomicBool,
}

/// The cluster under test.
pub struct Cluster {
    /// The cluster secret every node holds (the hostile nemesis seals replays with it).
    pub secret: String,
    /// Where the run's files go.
    pub out: std::path::PathBuf,
    backend: Backend,
    nodes: Vec<NodeState>,
    client: reqwest::Client,
    /// For the TLS listener: the nodes present their self-signed default certificate.
    tls_client: reqwest::Client,
    /// Data-plane requests made, to send every other one over TLS.
    sent: std::sync::atomic::AtomicU64,
    /// Data-plane requests sent over TLS, and those of them answered.
    pub tls_requests: std::sync::atomic::AtomicU64,
    pub tls_answered: std::sync::atomic::AtomicU64,
    /// The echo backend's URL as the nodes see it.
    upstream: String,
    /// The balanced backends' `host:port` as the nodes see them.
    backends: Vec<String>,
}

fn client(token: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(t) = token {
        headers.insert("Kong-Admin-Token", t.parse()?);
    }
    Ok(reqwest::Client::builder()
        .no_proxy()
        .default_headers(headers)
        .pool_idle_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .build()?)
}

/// Writes a fresh cluster secret into `out/cluster.secret`.
fn new_secret(out: &Path) -> anyhow::Result<(String, std::path::PathBuf)> {
    let secret = tollgate_cluster::auth::keyring::generate();
    let path = out.join("cluster.secret");
    std::fs::write(&path, format!("{secret}\n"))?;
    Ok((secret, path))
}

impl Cluster {
    /// `n` local processes and an echo backend; logs go to `out`.
    pub async fn processes(n: usize, out: &Path) -> anyhow::Result<Cluster> {
        let (secret, file) = new_secret(out)?;
        let (backend, endpoints, upstream) = process::Processes::start(n, out, &file)?;
        let backends = backend.backend_addrs();
        Cluster::ready(
            Backend::Process(backend),
            endpoints,
            upstream,
            backends,
            None,
            secret,
            out,
        )
        .await
    }

    /// The compose project's five nodes and three echo backends, started fresh from an image
    /// of the current build (`debug`: the debug build).
    pub async fn docker(out: &Path, debug: bool) -> anyhow::Result<Cluster> {
        let (secret, file) = new_secret(out)?;
        let (backend, endpoints) = docker::Compose::up(out, debug, &file)?;
        let token = backend.token().to_string();
        Cluster::ready(
            Backend::Docker(backend),
            endpoints,
            "http://echo-1:8080".into(),
            docker::BACKENDS
                .iter()
                .map(|b| format!("{b}:8080"))
                .collect(),
            Some(&token),
            secret,
            out,
        )
        .await
    }

    async fn ready(
        backend: Backend,
        endpoints: Vec<Endpoints>,
        upstream: String,
        backends: Vec<String>,
        token: Option<&str>,
        secret: String,
        out: &Path,
    ) -> anyhow::Result<Cluster> {
        let cluster = Cluster {
            secret,
            out: out.to_path_buf(),
            backend,
            nodes: endpoints
                .into_iter()
                .map(|e| NodeState {
                    endpoints: RwLock::new(e),
                    faulted: AtomicBool::new(false),
                })
                .collect(),
            client: client(token)?,
            tls_client: reqwest::Client::builder()
                .no_proxy()
                .danger_accept_invalid_certs(true)
                .pool_idle_timeout(Duration::from_secs(5))
                .connect_timeout(Duration::from_secs(2))
                .timeout(Duration::from_secs(10))
                .build()?,
            sent: std::sync::atomic::AtomicU64::new(0),
            tls_requests: std::sync::atomic::AtomicU64::new(0),
            tls_answered: std::sync::atomic::AtomicU64::new(0),
            upstream,
            backends,
        };
        cluster.wait_healthy().await?;
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    fn endpoints(&self, node: usize) -> Endpoints {
        self.nodes[node]
            .endpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn admin(&self, node: usize) -> String {
        self.endpoints(node).admin
    }

    fn proxy(&self, node: usize) -> String {
        self.endpoints(node).proxy
    }

    /// The client and base URL for the next data-plane request: every other one over TLS.
    fn data_plane(&self, node: usize) -> (&reqwest::Client, String, bool) {
        let n = self.sent.fetch_add(1, Ordering::Relaxed);
        if n % 2 == 1 {
            self.tls_requests.fetch_add(1, Ordering::Relaxed);
            (&self.tls_client, self.endpoints(node).proxy_tls, true)
        } else {
            (&self.client, self.proxy(node), false)
        }
    }

    /// Node `node`'s cluster listener and gossip socket.
    pub fn cluster_plane(&self, node: usize) -> (String, String) {
        let e = self.endpoints(node);
        (e.cluster, e.gossip)
    }

    /// Starts a node that gossips to the cluster with `secret` instead of the cluster's.
    pub fn start_rogue(&self, secret: &Path) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Process(p) => p.start_rogue(secret),
            Backend::Docker(_) => tokio::task::block_in_place(|| docker::start_rogue(secret)),
        }
    }

    pub fn stop_rogue(&self) {
        match &self.backend {
            Backend::Process(p) => p.stop_rogue(),
            Backend::Docker(_) => tokio::task::block_in_place(docker::stop_rogue),
        }
    }

    /// `GET /cluster` of one node, if it answers.
    pub async fn cluster_view(&self, node: usize) -> Option<Value> {
        let r = self
            .client
            .get(format!("{}/cluster", self.admin(node)))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// Waits until every node answers and all agree on a leader with every node a voter.
    pub async fn wait_healthy(&self) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let mut leaders = Vec::new();
            for n in 0..self.len() {
                leaders.push(self.cluster_view(n).await.and_then(|v| {
                    let voters = v["members"]
                        .as_array()?
                        .iter()
                        .filter(|m| m["role"] == "voter")
                        .count();
                    (voters == self.len())
                        .then(|| v["leader_id"].as_u64())
                        .flatten()
                }));
            }
            if leaders.iter().all(|l| l.is_some() && *l == leaders[0]) {
                return Ok(());
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(120),
                "cluster not healthy after 120 s: leaders seen {leaders:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The current leader's index, as the first answering node reports it.
    pub async fn leader(&self) -> Option<usize> {
        for n in 0..self.len() {
            if let Some(id) = self
                .cluster_view(n)
                .await
                .and_then(|v| v["leader_id"].as_u64())
            {
                return Some(id as usize - 1);
            }
        }
        None
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<()> {
        let r = self
            .client
            .post(format!("{}{path}", self.admin(0)))
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(r.status() == 201, "POST {path}: {}", r.status());
        Ok(())
    }

    /// The data-plane route and the rate-limited route, served by every node.
    pub async fn setup_routes(&self, rl_limit: u64) -> anyhow::Result<()> {
        self.post("/services", json!({"name": "jepsen", "url": self.upstream}))
            .await?;
        self.post("/services/jepsen/routes", json!({"paths": ["/jepsen"]}))
            .await?;
        self.post(
            "/services",
            json!({"name": "limited", "url": self.upstream}),
        )
        .await?;
        self.post(
            "/services/limited/routes",
            json!({"name": "limited", "paths": ["/limited"]}),
        )
        .await?;
        self.post(
            "/services/limited/plugins",
            json!({"name": "rate-limiting", "config": {"minute": rl_limit, "policy": "cluster",
                "limit_by": "service", "window_type": "fixed"}}),
        )
        .await?;
        // Balanced over the backends the backend nemesis harms: retries for refused
        // connects, a passive breaker on the first timeout or refused connect, and active
        // probes that find a backend back (and find it down when no traffic does).
        self.post(
            "/upstreams",
            json!({"name": BALANCED, "healthchecks": {
                "passive": {"unhealthy": {"timeouts": PASSIVE_TIMEOUTS, "tcp_failures": 1}},
                "active": {"http_path": "/health", "timeout": 1,
                    "healthy": {"interval": 0.5, "successes": 1},
                    "unhealthy": {"interval": 0.5, "timeouts": 2, "tcp_failures": 1}}}}),
        )
        .await?;
        for b in &self.backends {
            self.post(
                &format!("/upstreams/{BALANCED}/targets"),
                json!({"target": b}),
            )
            .await?;
        }
        self.post(
            "/services",
            json!({"name": "balanced", "host": BALANCED, "retries": 3,
                "connect_timeout": 1000, "read_timeout": BALANCED_READ_TIMEOUT_MS}),
        )
        .await?;
        self.post("/services/balanced/routes", json!({"paths": ["/balanced"]}))
            .await?;
        for n in 0..self.len() {
            let start = Instant::now();
            while !(self.proxy_ok(n).await
                && self.limited(n).await.is_some()
                && self.balanced(n).await.0 == Some(200))
            {
                anyhow::ensure!(
                    start.elapsed() < Duration::from_secs(30),
                    "routes not served on node {}",
                    n + 1
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }

    /// Writes `value` to register `key` through node `node`.
    pub async fn write(&self, node: usize, key: usize, value: u64) -> Kind {
        let url = format!("{}/consumers/reg-{key}", self.admin(node));
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
        let url = format!("{}/consumers/reg-{key}{q}", self.admin(node));
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

    /// Every consumer's username on node `node` (first 1000).
    pub async fn consumer_names(&self, node: usize) -> Vec<String> {
        let url = format!("{}/consumers?size=1000", self.admin(node));
        let Ok(r) = self.client.get(url).send().await else {
            return Vec::new();
        };
        let v: Value = r.json().await.unwrap_or_default();
        v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["username"].as_str().map(str::to_string))
            .collect()
    }

    /// Whether node `node`'s proxy serves the data-plane route.
    pub async fn proxy_ok(&self, node: usize) -> bool {
        match self
            .client
            .get(format!("{}/jepsen", self.proxy(node)))
            .timeout(Duration::from_secs(3))
            .send()
            .await
        {
            Ok(r) => r.status() == 200,
            Err(_) => false,
        }
    }

    /// The balanced backends' names, as they answer.
    pub fn backend_names(&self) -> Vec<String> {
        match &self.backend {
            Backend::Process(_) => (1..=self.backends.len())
                .map(|i| format!("backend-{i}"))
                .collect(),
            Backend::Docker(_) => docker::BACKENDS.iter().map(|b| b.to_string()).collect(),
        }
    }

    /// How many balanced backends there are.
    pub fn backend_count(&self) -> usize {
        self.backends.len()
    }

    /// Injects (`heal` false) or heals a fault on balanced backend `i`.
    pub fn backend_fault(&self, i: usize, fault: &str, heal: bool) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Process(p) => p.backend(i, fault, heal),
            Backend::Docker(d) => tokio::task::block_in_place(|| d.backend(i, fault, heal)),
        }
    }

    /// One request to the balanced route: its status (none without an answer) and the
    /// backend that answered.
    pub async fn balanced(&self, node: usize) -> (Option<u16>, Option<String>) {
        let (client, base, tls) = self.data_plane(node);
        let Ok(r) = client
            .get(format!("{base}/balanced"))
            .timeout(Duration::from_secs(5))
            .send()
            .await
        else {
            return (None, None);
        };
        if tls {
            self.tls_answered.fetch_add(1, Ordering::Relaxed);
        }
        let status = r.status().as_u16();
        let name = r
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v["name"].as_str().map(str::to_string));
        (Some(status), name)
    }

    /// One request to the rate-limited route: `Some(true)` admitted, `Some(false)` refused
    /// with 429, `None` no answer or another status.
    pub async fn limited(&self, node: usize) -> Option<bool> {
        let (client, base, tls) = self.data_plane(node);
        let r = client
            .get(format!("{base}/limited"))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .ok()?;
        if tls {
            self.tls_answered.fetch_add(1, Ordering::Relaxed);
        }
        match r.status().as_u16() {
            200 => Some(true),
            429 => Some(false),
            _ => None,
        }
    }

    pub fn faulted(&self, node: usize) -> bool {
        self.nodes[node].faulted.load(Ordering::Relaxed)
    }

    /// `kill -9`.
    pub fn kill(&self, node: usize) -> anyhow::Result<()> {
        self.nodes[node].faulted.store(true, Ordering::Relaxed);
        match &self.backend {
            Backend::Process(p) => p.kill(node),
            Backend::Docker(d) => tokio::task::block_in_place(|| d.kill(node)),
        }
    }

    /// Graceful stop (SIGTERM: the node drains and exits), as in a rolling restart.
    pub fn terminate(&self, node: usize) -> anyhow::Result<()> {
        self.nodes[node].faulted.store(true, Ordering::Relaxed);
        match &self.backend {
            Backend::Process(p) => tokio::task::block_in_place(|| p.terminate(node)),
            Backend::Docker(d) => tokio::task::block_in_place(|| d.terminate(node)),
        }
    }

    /// Starts a killed node from its data and waits until its proxy serves again.
    pub async fn restart(&self, node: usize) -> anyhow::Result<()> {
        let endpoints = match &self.backend {
            Backend::Process(p) => p.restart(node)?,
            Backend::Docker(d) => tokio::task::block_in_place(|| d.restart(node))?,
        };
        *self.nodes[node]
            .endpoints
            .write()
            .unwrap_or_else(|e| e.into_inner()) = endpoints;
        let start = Instant::now();
        while !self.proxy_ok(node).await {
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(60),
                "node {} did not come back within 60 s",
                node + 1
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.nodes[node].faulted.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// Freezes a node with its sockets open (SIGSTOP, or `docker pause`).
    pub fn pause(&self, node: usize) -> anyhow::Result<()> {
        self.nodes[node].faulted.store(true, Ordering::Relaxed);
        match &self.backend {
            Backend::Process(p) => p.pause(node),
            Backend::Docker(d) => tokio::task::block_in_place(|| d.pause(node)),
        }
    }

    pub fn resume(&self, node: usize) -> anyhow::Result<()> {
        let r = match &self.backend {
            Backend::Process(p) => p.resume(node),
            Backend::Docker(d) => tokio::task::block_in_place(|| d.resume(node)),
        };
        self.nodes[node].faulted.store(false, Ordering::Relaxed);
        r
    }

    /// Cuts every link between nodes of different groups (a node may sit in several groups:
    /// a bridge). Nodes stay reachable from the harness and the backends.
    pub fn partition(&self, groups: &[Vec<usize>]) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Docker(d) => tokio::task::block_in_place(|| d.partition(groups)),
            Backend::Process(_) => anyhow::bail!("process mode cannot partition the network"),
        }
    }

    /// Removes every cut link.
    pub fn heal(&self) -> anyhow::Result<()> {
        match &self.backend {
            Backend::Docker(d) => tokio::task::block_in_place(|| d.heal()),
            Backend::Process(_) => Ok(()),
        }
    }

    /// Removes `node` from the Raft membership through another node's Admin API. The leader
    /// adds it back once it sees it alive in gossip (learner, caught up, voter).
    pub async fn remove_member(&self, node: usize) -> anyhow::Result<u16> {
        let via = (node + 1) % self.len();
        let r = self
            .client
            .delete(format!("{}/cluster/members/{}", self.admin(via), node + 1))
            .send()
            .await?;
        Ok(r.status().as_u16())
    }

    /// Waits (up to `limit`) until every node reports `node` as a voter again.
    pub async fn wait_voter(&self, node: usize, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            let mut all = true;
            for n in 0..self.len() {
                let voter = self.cluster_view(n).await.is_some_and(|v| {
                    v["members"].as_array().is_some_and(|ms| {
                        ms.iter()
                            .any(|m| m["id"] == json!(node + 1) && m["role"] == "voter")
                    })
                });
                all &= voter;
            }
            if all {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        false
    }

    /// Per node: how many times it died without the harness killing it.
    pub fn crashes(&self) -> Vec<u64> {
        match &self.backend {
            Backend::Docker(d) => d.crashes(),
            Backend::Process(p) => p.crashes(),
        }
    }

    /// Heals everything, stops the cluster and copies every node's log into `out`.
    pub fn stop(&self, out: &Path, keep: bool) {
        self.stop_rogue();
        match &self.backend {
            Backend::Process(p) => p.stop(),
            Backend::Docker(d) => d.down(out, keep),
        }
    }
}
