//! Docker mode: the root `docker-compose.yml` (five nodes, three echo backends) as its own
//! compose project. Faults: `docker kill -s KILL` then `docker start`, `docker pause`, and
//! network partitions made by iptables rules inside the nodes' network namespaces (entered
//! from the host with `nsenter`, so the image needs no tools and no extra capabilities).
//! The harness reaches every node at its container address on the compose network.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::Endpoints;

const PROJECT: &str = "tollgate-jepsen";
const TOKEN: &str = "jepsen-admin-token";
const NODES: usize = 5;
const IMAGE: &str = "tollgate:latest";
/// The compose file's echo services balanced over by the backend nemesis's upstream (echo-1
/// serves the plain routes and is never harmed).
pub const BACKENDS: [&str; 2] = ["echo-2", "echo-3"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> anyhow::Result<Output> {
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "{:?} failed: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(out)
}

/// `docker pause`/`unpause` of `id`. The cgroup freezer refuses now and then ("unable to
/// freeze") while a task in the container is in a state it cannot freeze; that says nothing
/// about the system under test, so the call is tried again for a few seconds.
fn freeze(verb: &str, id: &str) -> anyhow::Result<()> {
    let mut last = None;
    for _ in 0..20 {
        match run(Command::new("docker").args([verb, id])) {
            Ok(_) => return Ok(()),
            Err(e) if e.to_string().contains("freeze") => {
                last = Some(e);
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("docker {verb} {id} failed")))
}

fn text(out: Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether a Docker engine answers, with a compose tool beside it.
pub fn available() -> bool {
    let engine = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    engine && compose_tool().is_some()
}

/// `docker compose` (v2) when present, else `docker-compose` (v1).
fn compose_tool() -> Option<Vec<&'static str>> {
    let ok = |c: &mut Command| c.output().is_ok_and(|o| o.status.success());
    if ok(Command::new("docker").args(["compose", "version"])) {
        Some(vec!["docker", "compose"])
    } else if ok(Command::new("docker-compose").arg("version")) {
        Some(vec!["docker-compose"])
    } else {
        None
    }
}

/// The compose project under test.
pub struct Compose {
    tool: Vec<&'static str>,
    /// The cluster secret file the nodes mount.
    secret: PathBuf,
    /// Container id of node1..node5.
    ids: Vec<String>,
    /// Container id of the balanced backends ([`BACKENDS`]).
    backend_ids: Vec<String>,
    /// Address of each node on the compose network (re-read after a restart).
    ips: std::sync::Mutex<Vec<String>>,
}

impl Compose {
    fn compose(&self) -> Command {
        compose_cmd(&self.tool, &self.secret)
    }

    pub fn token(&self) -> &str {
        TOKEN
    }

    /// (Re)builds the image from the current sources (`debug`: the debug build), starts the
    /// project from nothing (volumes removed) with the cluster secret in `secret`, and returns
    /// the nodes' endpoints.
    pub fn up(out: &Path, debug: bool, secret: &Path) -> anyhow::Result<(Compose, Vec<Endpoints>)> {
        let secret = std::fs::canonicalize(secret)?;
        let tool = compose_tool().ok_or_else(|| anyhow::anyhow!("no docker compose tool"))?;
        let mut build = Command::new("bash");
        build.arg(root().join("docker/build-image.sh"));
        if debug {
            build.arg("--debug");
        }
        eprintln!("building {IMAGE} with docker/build-image.sh");
        run(build.arg(IMAGE))?;
        let _ = compose_cmd(&tool, &secret).args(["down", "-v"]).output();
        run(compose_cmd(&tool, &secret).args(["up", "-d"]))?;
        std::fs::write(out.join("compose-project.txt"), PROJECT)?;
        let mut ids = Vec::new();
        for n in 1..=NODES {
            let id = text(run(compose_cmd(&tool, &secret).args([
                "ps",
                "-q",
                &format!("node{n}"),
            ]))?);
            anyhow::ensure!(!id.is_empty(), "node{n} has no container");
            ids.push(id);
        }
        let mut backend_ids = Vec::new();
        for name in BACKENDS {
            let id = text(run(compose_cmd(&tool, &secret).args(["ps", "-q", name]))?);
            anyhow::ensure!(!id.is_empty(), "{name} has no container");
            backend_ids.push(id);
        }
        let compose = Compose {
            tool,
            secret,
            ids,
            backend_ids,
            ips: std::sync::Mutex::new(Vec::new()),
        };
        let mut endpoints = Vec::new();
        let mut ips = Vec::new();
        for n in 0..NODES {
            let ip = compose.ip(n)?;
            endpoints.push(endpoints_of(&ip));
            ips.push(ip);
        }
        *compose.ips.lock().unwrap_or_else(|e| e.into_inner()) = ips;
        Ok((compose, endpoints))
    }

    /// `docker inspect -f format` of node `node`'s container.
    fn inspect(&self, node: usize, format: &str) -> anyhow::Result<String> {
        Ok(text(run(Command::new("docker").args([
            "inspect",
            "-f",
            format,
            &self.ids[node],
        ]))?))
    }

    fn ip(&self, node: usize) -> anyhow::Result<String> {
        let ip = self.inspect(
            node,
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
        )?;
        anyhow::ensure!(!ip.is_empty(), "node{} has no address", node + 1);
        Ok(ip)
    }

    fn pid(&self, node: usize) -> anyhow::Result<u32> {
        Ok(self.inspect(node, "{{.State.Pid}}")?.parse()?)
    }

    fn docker(&self, verb: &[&str], node: usize) -> anyhow::Result<()> {
        run(Command::new("docker").args(verb).arg(&self.ids[node]))?;
        Ok(())
    }

    pub fn kill(&self, node: usize) -> anyhow::Result<()> {
        self.docker(&["kill", "-s", "KILL"], node)
    }

    /// `docker stop`: SIGTERM, SIGKILL after 20 s.
    pub fn terminate(&self, node: usize) -> anyhow::Result<()> {
        self.docker(&["stop", "-t", "20"], node)
    }

    pub fn restart(&self, node: usize) -> anyhow::Result<Endpoints> {
        self.docker(&["start"], node)?;
        let ip = self.ip(node)?;
        self.ips.lock().unwrap_or_else(|e| e.into_inner())[node] = ip.clone();
        Ok(endpoints_of(&ip))
    }

    pub fn pause(&self, node: usize) -> anyhow::Result<()> {
        freeze("pause", &self.ids[node])
    }

    pub fn resume(&self, node: usize) -> anyhow::Result<()> {
        freeze("unpause", &self.ids[node])
    }

    /// A backend fault on echo container `i`: `kill` (`docker kill`, then `docker start`),
    /// `pause` (`docker pause`/`unpause`), `slow` (SIGUSR1 toggles the echo's slow mode).
    pub fn backend(&self, i: usize, fault: &str, heal: bool) -> anyhow::Result<()> {
        let id = &self.backend_ids[i];
        match (fault, heal) {
            ("pause", false) => return freeze("pause", id),
            ("pause", true) => return freeze("unpause", id),
            _ => {}
        }
        let verb: &[&str] = match (fault, heal) {
            ("kill", false) => &["kill", "-s", "KILL"],
            ("kill", true) => &["start"],
            ("slow", _) => &["kill", "-s", "USR1"],
            (other, _) => anyhow::bail!("unknown backend fault '{other}'"),
        };
        run(Command::new("docker").args(verb).arg(id))?;
        Ok(())
    }

    /// iptables in `node`'s network namespace.
    fn iptables(&self, node: usize, rule: &[&str]) -> anyhow::Result<()> {
        let pid = self.pid(node)?.to_string();
        run(Command::new("nsenter")
            .args(["-t", &pid, "-n", "iptables", "-w"])
            .args(rule))?;
        Ok(())
    }

    /// Drops every packet between nodes that share no group.
    pub fn partition(&self, groups: &[Vec<usize>]) -> anyhow::Result<()> {
        let ips = self.ips.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for a in 0..NODES {
            for (b, ip) in ips.iter().enumerate() {
                let together = groups.iter().any(|g| g.contains(&a) && g.contains(&b));
                if a != b && !together {
                    self.iptables(a, &["-A", "INPUT", "-s", ip, "-j", "DROP"])?;
                }
            }
        }
        Ok(())
    }

    pub fn heal(&self) -> anyhow::Result<()> {
        for n in 0..NODES {
            self.iptables(n, &["-F", "INPUT"])?;
        }
        Ok(())
    }

    /// How many times the engine restarted a node on its own (a crash, since the harness's
    /// kills are manual stops that the restart policy ignores).
    pub fn crashes(&self) -> Vec<u64> {
        (0..self.ids.len())
            .map(|n| {
                self.inspect(n, "{{.RestartCount}}")
                    .ok()
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Collects every container's log into `out`, then removes the project (unless `keep`).
    pub fn down(&self, out: &Path, keep: bool) {
        let _ = self.heal();
        for id in &self.backend_ids {
            let _ = Command::new("docker").args(["unpause", id]).output();
        }
        for (n, id) in self.ids.iter().enumerate() {
            let _ = Command::new("docker").args(["unpause", id]).output();
            if let Ok(o) = Command::new("docker").args(["logs", id]).output() {
                let mut log = o.stdout;
                log.extend_from_slice(&o.stderr);
                let _ = std::fs::write(out.join(format!("node{}.log", n + 1)), log);
            }
        }
        if !keep {
            let _ = self.compose().args(["down", "-v"]).output();
        }
    }
}

fn compose_cmd(tool: &[&str], secret: &Path) -> Command {
    let mut c = Command::new(tool[0]);
    c.args(&tool[1..])
        .arg("-f")
        .arg(root().join("docker-compose.yml"))
        .args(["-p", PROJECT])
        .env("TOLLGATE_ADMIN_TOKEN", TOKEN)
        .env("TOLLGATE_CLUSTER_SECRET_SOURCE", secret)
        // The harness reaches nodes at their container addresses: publish nothing fixed,
        // so a demo cluster on the default ports can run beside it.
        .env("TOLLGATE_PUBLISH_PROXY", "127.0.0.1:0")
        .env("TOLLGATE_PUBLISH_ADMIN", "127.0.0.1:0");
    c
}

fn endpoints_of(ip: &str) -> Endpoints {
    Endpoints {
        admin: format!("http://{ip}:8001"),
        proxy: format!("http://{ip}:8000"),
        proxy_tls: format!("https://{ip}:8443"),
        cluster: format!("{ip}:7000"),
        gossip: format!("{ip}:7946"),
    }
}

/// The rogue container: the image of the cluster, on its network, with `secret` (not the
/// cluster's), gossiping to every node.
pub fn start_rogue(secret: &Path) -> anyhow::Result<()> {
    let secret = std::fs::canonicalize(secret)?;
    let _ = Command::new("docker").args(["rm", "-f", ROGUE]).output();
    let seeds = (1..=NODES)
        .map(|n| format!("node{n}:7946"))
        .collect::<Vec<_>>()
        .join(",");
    run(Command::new("docker")
        .args(["run", "-d", "--rm", "--name", ROGUE, "--hostname", "rogue"])
        .args(["--network", &format!("{PROJECT}_tollgate")])
        .arg("-v")
        .arg(format!(
            "{}:/run/tollgate/rogue.secret:ro",
            secret.display()
        ))
        .args([
            "-e",
            "TOLLGATE_ID=99",
            "-e",
            "TOLLGATE_ADVERTISE_ADDR=rogue",
        ])
        .args(["-e", "TOLLGATE_ADMIN_LISTEN=127.0.0.1:8001"])
        .args(["-e", "TOLLGATE_CLUSTER_LISTEN=0.0.0.0:7000"])
        .args(["-e", "TOLLGATE_GOSSIP_LISTEN=0.0.0.0:7946"])
        .args([
            "-e",
            "TOLLGATE_CLUSTER_SECRET_FILE=/run/tollgate/rogue.secret",
        ])
        .args(["-e", &format!("TOLLGATE_SEEDS={seeds}")])
        .args([IMAGE, "node"]))?;
    Ok(())
}

pub fn stop_rogue() {
    let _ = Command::new("docker").args(["rm", "-f", ROGUE]).output();
}

const ROGUE: &str = "tollgate-jepsen-rogue";
