//! Process mode: nodes as local processes on loopback ports, with the faults a process can
//! suffer (SIGKILL then restart from its data dir, SIGSTOP/SIGCONT).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use super::Endpoints;

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
    endpoints: Endpoints,
}

/// A balanced backend: an echo process on a fixed port, which the backend nemesis kills,
/// freezes or slows.
struct BackendProc {
    args: Vec<String>,
    log: PathBuf,
    child: Mutex<Option<Child>>,
    addr: String,
}

/// How many balanced backends process mode runs.
pub const BACKENDS: usize = 3;

/// Local node processes and echo backends (one for plain routes, [`BACKENDS`] balanced).
pub struct Processes {
    nodes: Vec<NodeProc>,
    echo: Mutex<Option<Child>>,
    backends: Vec<BackendProc>,
    /// Every node's gossip address, comma-separated.
    seeds: String,
    out: PathBuf,
    rogue: Mutex<Option<Child>>,
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

impl Processes {
    /// Starts `n` nodes that bootstrap one cluster with the cluster secret in `secret`, plus an
    /// echo backend; logs go to `out`. Returns the nodes' endpoints and the echo backend's URL.
    pub fn start(
        n: usize,
        out: &Path,
        secret: &Path,
    ) -> anyhow::Result<(Processes, Vec<Endpoints>, String)> {
        let ports: Vec<[u16; 5]> = (0..n)
            .map(|_| {
                [
                    free_port(),
                    free_port(),
                    free_port(),
                    free_port(),
                    free_port(),
                ]
            })
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
                "--proxy-listen-tls".into(),
                format!("127.0.0.1:{}", p[4]),
                "--admin-listen-tls".into(),
                "off".into(),
                "--seeds".into(),
                seeds.clone(),
                "--bootstrap-expect".into(),
                n.to_string(),
                "--cluster-secret-file".into(),
                secret.display().to_string(),
            ]
            .to_vec();
            let log = out.join(format!("node{}.log", i + 1));
            let child = spawn(&args, &log)?;
            nodes.push(NodeProc {
                args,
                log,
                child: Mutex::new(Some(child)),
                endpoints: Endpoints {
                    admin: format!("http://127.0.0.1:{}", p[1]),
                    proxy: format!("http://127.0.0.1:{}", p[0]),
                    proxy_tls: format!("https://127.0.0.1:{}", p[4]),
                    cluster: format!("127.0.0.1:{}", p[2]),
                    gossip: format!("127.0.0.1:{}", p[3]),
                },
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
        let mut backends = Vec::new();
        for i in 1..=BACKENDS {
            let addr = format!("127.0.0.1:{}", free_port());
            let args: Vec<String> = vec![
                "echo".into(),
                "--listen".into(),
                addr.clone(),
                "--name".into(),
                format!("backend-{i}"),
            ];
            let log = out.join(format!("backend-{i}.log"));
            let child = spawn(&args, &log)?;
            backends.push(BackendProc {
                args,
                log,
                child: Mutex::new(Some(child)),
                addr,
            });
        }
        let endpoints = nodes.iter().map(|n| n.endpoints.clone()).collect();
        Ok((
            Processes {
                seeds,
                out: out.to_path_buf(),
                rogue: Mutex::new(None),
                nodes,
                echo: Mutex::new(Some(echo)),
                backends,
            },
            endpoints,
            format!("http://127.0.0.1:{echo_port}"),
        ))
    }

    /// SIGKILL.
    pub fn kill(&self, node: usize) -> anyhow::Result<()> {
        let n = &self.nodes[node];
        if let Some(mut c) = n.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&self, node: usize) -> anyhow::Result<()> {
        let n = &self.nodes[node];
        if let Some(mut c) = n.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
            signal(&c, libc::SIGTERM);
            c.wait()?;
        }
        Ok(())
    }

    /// Starts a killed node again from its data dir.
    pub fn restart(&self, node: usize) -> anyhow::Result<Endpoints> {
        let n = &self.nodes[node];
        let child = spawn(&n.args, &n.log)?;
        *n.child.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        Ok(n.endpoints.clone())
    }

    /// SIGSTOP: the process freezes with its sockets open.
    pub fn pause(&self, node: usize) -> anyhow::Result<()> {
        let n = &self.nodes[node];
        if let Some(c) = n.child.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            signal(c, libc::SIGSTOP);
        }
        Ok(())
    }

    /// SIGCONT.
    pub fn resume(&self, node: usize) -> anyhow::Result<()> {
        let n = &self.nodes[node];
        if let Some(c) = n.child.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            signal(c, libc::SIGCONT);
        }
        Ok(())
    }

    /// Starts a node (id 99) that knows the seeds but holds `secret`, not the cluster's.
    pub fn start_rogue(&self, secret: &Path) -> anyhow::Result<()> {
        let args: Vec<String> = vec![
            "node".into(),
            "--id".into(),
            "99".into(),
            "--data-dir".into(),
            self.out.join("rogue-data").display().to_string(),
            "--proxy-listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--admin-listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--cluster-listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--gossip-listen".into(),
            format!("127.0.0.1:{}", free_port()),
            "--proxy-listen-tls".into(),
            "off".into(),
            "--admin-listen-tls".into(),
            "off".into(),
            "--seeds".into(),
            self.seeds.clone(),
            "--cluster-secret-file".into(),
            secret.display().to_string(),
        ];
        let child = spawn(&args, &self.out.join("rogue.log"))?;
        *self.rogue.lock().unwrap_or_else(|e| e.into_inner()) = Some(child);
        Ok(())
    }

    pub fn stop_rogue(&self) {
        if let Some(mut c) = self.rogue.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The balanced backends' `host:port`.
    pub fn backend_addrs(&self) -> Vec<String> {
        self.backends.iter().map(|b| b.addr.clone()).collect()
    }

    /// A backend fault: `kill` (SIGKILL; `heal` starts it again on its port), `pause`
    /// (SIGSTOP: connections are accepted by the kernel and never answered), `slow` (SIGUSR1
    /// toggles the echo's slow mode).
    pub fn backend(&self, i: usize, fault: &str, heal: bool) -> anyhow::Result<()> {
        let b = &self.backends[i];
        let mut child = b.child.lock().unwrap_or_else(|e| e.into_inner());
        match (fault, heal) {
            ("kill", false) => {
                if let Some(mut c) = child.take() {
                    c.kill()?;
                    c.wait()?;
                }
            }
            ("kill", true) => *child = Some(spawn(&b.args, &b.log)?),
            ("pause", _) => {
                if let Some(c) = child.as_ref() {
                    signal(c, if heal { libc::SIGCONT } else { libc::SIGSTOP });
                }
            }
            ("slow", _) => {
                if let Some(c) = child.as_ref() {
                    signal(c, libc::SIGUSR1);
                }
            }
            (other, _) => anyhow::bail!("unknown backend fault '{other}'"),
        }
        Ok(())
    }

    /// Per node, 1 when its process exited although the harness did not stop it.
    pub fn crashes(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| {
                let mut c = n.child.lock().unwrap_or_else(|e| e.into_inner());
                u64::from(
                    c.as_mut()
                        .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_)))),
                )
            })
            .collect()
    }

    /// Stops every process.
    pub fn stop(&self) {
        self.stop_rogue();
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
        for b in &self.backends {
            if let Some(mut c) = b.child.lock().unwrap_or_else(|e| e.into_inner()).take() {
                signal(&c, libc::SIGCONT);
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        self.stop();
    }
}
