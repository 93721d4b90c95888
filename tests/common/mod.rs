//! Test harness: starts real `tollgate` processes (nodes and echo backends) on loopback ports
//! and waits for them by polling, never by sleeping a fixed time.

#![allow(dead_code)]

pub mod backend;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_tollgate");
/// Generous: a loaded 2-core machine may be slow to start a debug binary.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A port that was free a moment ago, and never handed out before in this test process: the
/// kernel may offer a just-released port again, and two nodes of concurrent tests must not
/// both be given it.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Polls `f` until it returns `Some`, or panics after [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if start.elapsed() > DEADLINE {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Polls `url` until it answers 200.
pub async fn wait_ok(url: &str) {
    let c = client();
    eventually(url, || {
        let c = c.clone();
        async move {
            match c.get(url).send().await {
                Ok(r) if r.status() == 200 => Some(()),
                _ => None,
            }
        }
    })
    .await;
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        // The nodes close idle keep-alive connections after 10 s.
        .pool_idle_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    child: Option<Child>,
}

impl Proc {
    fn spawn(args: &[String], env: &[(&str, &str)]) -> Proc {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("TOLLGATE_LOG_LEVEL", "warn,openraft=error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Proc {
            child: Some(cmd.spawn().expect("spawn tollgate")),
        }
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends SIGTERM and waits for a clean exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if start.elapsed() > DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Gives the node a TLS proxy port of its own unless `extra` names one, and no Admin API TLS
/// listener unless `extra` asks for one.
fn tls_listen_arg(extra: &[&str], args: &mut Vec<String>) -> String {
    if !extra.contains(&"--admin-listen-tls") {
        args.push("--admin-listen-tls".into());
        args.push("off".into());
    }
    match extra.iter().position(|a| *a == "--proxy-listen-tls") {
        Some(i) => extra.get(i + 1).map(|s| s.to_string()).unwrap_or_default(),
        None => {
            let a = format!("127.0.0.1:{}", free_port());
            args.push("--proxy-listen-tls".into());
            args.push(a.clone());
            a
        }
    }
}

/// A running gateway node.
pub struct Node {
    pub proc: Proc,
    pub proxy: String,
    /// The TLS proxy listener, `127.0.0.1:port`.
    pub proxy_tls: String,
    pub admin: String,
    pub data_dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Node {
    /// Starts a node with a fresh data dir.
    pub async fn start() -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut n = Node::start_in(&dir, &[]).await;
        n._tmp = Some(tmp);
        n
    }

    /// Starts a node with a fresh data dir and extra arguments.
    pub async fn start_with(extra: &[&str]) -> Node {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut n = Node::start_in(&dir, extra).await;
        n._tmp = Some(tmp);
        n
    }

    /// Starts a node on `dir` with extra arguments.
    pub async fn start_in(dir: &Path, extra: &[&str]) -> Node {
        let (pp, ap) = (free_port(), free_port());
        let mut args: Vec<String> = vec![
            "node".into(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--proxy-listen".into(),
            format!("127.0.0.1:{pp}"),
            "--admin-listen".into(),
            format!("127.0.0.1:{ap}"),
            "--cluster-listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--gossip-listen".into(),
            format!("127.0.0.1:{}", free_port()),
        ];
        let tls = tls_listen_arg(extra, &mut args);
        args.extend(extra.iter().map(|s| s.to_string()));
        let node = Node {
            proc: Proc::spawn(&args, &[]),
            proxy: format!("http://127.0.0.1:{pp}"),
            proxy_tls: tls,
            admin: format!("http://127.0.0.1:{ap}"),
            data_dir: dir.to_path_buf(),
            _tmp: None,
        };
        wait_ok(&format!("{}/status", node.admin)).await;
        node
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("{}{}", self.admin, path)
    }

    pub fn proxy_url(&self, path: &str) -> String {
        format!("{}{}", self.proxy, path)
    }

    /// POSTs JSON to the Admin API and returns (status, body).
    pub async fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        let r = client()
            .post(self.admin_url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    /// Sends `method` with a JSON body to the Admin API and returns (status, body).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut rb = client().request(method, self.admin_url(path));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::GET, path, None).await
    }

    /// `GET /metrics`, as text.
    pub async fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Creates an entity and asserts 201.
    pub async fn create(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let (s, b) = self.post(path, body.clone()).await;
        assert_eq!(s, 201, "POST {path} {body} -> {b}");
        b
    }
}

/// A running `tollgate echo` backend.
pub struct Echo {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Echo {
    pub async fn start(name: &str) -> Echo {
        let port = free_port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let args = vec![
            "echo".into(),
            "--listen".into(),
            addr.to_string(),
            "--name".into(),
            name.to_string(),
        ];
        let echo = Echo {
            proc: Proc::spawn(&args, &[]),
            addr,
        };
        wait_ok(&format!("http://{addr}/health")).await;
        echo
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Ports and data dirs of a cluster's nodes, fixed up front so that nodes can name each other
/// as seeds and restart on the same addresses.
pub struct ClusterSpec {
    pub dir: tempfile::TempDir,
    /// Per node: (id, proxy, admin, cluster, gossip) ports.
    pub ports: Vec<(u64, u16, u16, u16, u16)>,
}

impl ClusterSpec {
    pub fn new(n: usize) -> ClusterSpec {
        let ports = (1..=n as u64)
            .map(|id| (id, free_port(), free_port(), free_port(), free_port()))
            .collect();
        ClusterSpec {
            dir: tempfile::tempdir().unwrap(),
            ports,
        }
    }

    /// Seeds: the gossip addresses of the first `k` nodes.
    pub fn seeds(&self, k: usize) -> String {
        self.ports[..k]
            .iter()
            .map(|p| format!("127.0.0.1:{}", p.4))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts the first `k` nodes as one new cluster (`--bootstrap-expect k`, seeded with
    /// each other) with `extra` arguments, and waits until node 1 sees a leader and `k` voters.
    pub async fn bootstrap(&self, k: usize, extra: &[&str]) -> Vec<Node> {
        let seeds = self.seeds(k);
        let expect = k.to_string();
        let mut args = vec![
            "--seeds",
            seeds.as_str(),
            "--bootstrap-expect",
            expect.as_str(),
        ];
        args.extend_from_slice(extra);
        let mut nodes = Vec::with_capacity(k);
        for i in 0..k {
            nodes.push(self.start(i, &args).await);
        }
        nodes[0].wait_for_cluster(k).await;
        nodes
    }

    /// Starts node `i` (0-based) with `extra` arguments.
    pub async fn start(&self, i: usize, extra: &[&str]) -> Node {
        let (id, pp, ap, cp, gp) = self.ports[i];
        let dir = self.dir.path().join(format!("node{id}"));
        let mut args: Vec<String> = vec![
            "node".into(),
            "--id".into(),
            id.to_string(),
            "--data-dir".into(),
            dir.display().to_string(),
            "--proxy-listen".into(),
            format!("127.0.0.1:{pp}"),
            "--admin-listen".into(),
            format!("127.0.0.1:{ap}"),
            "--cluster-listen".into(),
            format!("127.0.0.1:{cp}"),
            "--gossip-listen".into(),
            format!("127.0.0.1:{gp}"),
        ];
        let tls = tls_listen_arg(extra, &mut args);
        args.extend(extra.iter().map(|s| s.to_string()));
        let node = Node {
            proc: Proc::spawn(&args, &[]),
            proxy: format!("http://127.0.0.1:{pp}"),
            proxy_tls: tls,
            admin: format!("http://127.0.0.1:{ap}"),
            data_dir: dir,
            _tmp: None,
        };
        wait_ok(&format!("{}/status", node.admin)).await;
        node
    }
}

impl Node {
    /// This node's `GET /cluster`.
    pub async fn cluster(&self) -> serde_json::Value {
        self.get("/cluster").await.1
    }

    /// Waits until this node sees a leader and `voters` voters, and returns the leader id.
    pub async fn wait_for_cluster(&self, voters: usize) -> u64 {
        eventually("a leader and the expected voters", || async {
            let c = self.cluster().await;
            let n = c["members"]
                .as_array()?
                .iter()
                .filter(|m| m["role"] == "voter")
                .count();
            if n == voters {
                c["leader_id"].as_u64()
            } else {
                None
            }
        })
        .await
    }
}

/// Sends `bytes` on a new connection to `url`'s address (`http://host:port`) and returns all
/// the answer, read until the server closes (or 30 s): for requests no HTTP client would send.
pub async fn raw(url: &str, bytes: Vec<u8>) -> String {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://").to_string();
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = s.write_all(&bytes);
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).to_string()
    })
    .await
    .unwrap()
}
