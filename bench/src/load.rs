//! Load tools shared by the benchmarks: nginx instances and wrk runs pinned to CPUs, with
//! latency percentiles from wrk's `done()` hook.

use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Connections wrk keeps open.
pub const CONNECTIONS: u32 = 64;
/// The API key the benchmarks' key-auth routes accept (sent by [`wrk`] when `key` is set).
pub const KEY: &str = "bench-key";

pub fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn ensure_tools() -> anyhow::Result<()> {
    let missing: Vec<&str> = [
        ("nginx", "nginx"),
        ("wrk", "wrk"),
        ("taskset", "util-linux"),
    ]
    .iter()
    .filter(|(bin, _)| !have(bin) && !Path::new(&format!("/usr/sbin/{bin}")).exists())
    .map(|(_, pkg)| *pkg)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {missing:?} from Debian packages");
    let ok = Command::new("apt-get")
        .args(["update", "-qq"])
        .status()?
        .success()
        && Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?
            .success();
    anyhow::ensure!(ok, "could not install {missing:?}");
    Ok(())
}

/// An nginx master + one worker, pinned, killed on drop.
pub struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn nginx(dir: &Path, name: &str, cpu: &str, http: &str) -> anyhow::Result<Nginx> {
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\nmaster_process on;\ndaemon off;\nuser root;\npid {dir}/{name}.pid;\n\
             error_log {dir}/{name}.err warn;\nevents {{ worker_connections 4096; }}\n\
             http {{\n access_log off;\n keepalive_requests 1000000;\n{http}\n}}\n",
            dir = dir.display()
        ),
    )?;
    let nginx = if have("nginx") {
        "nginx".to_string()
    } else {
        "/usr/sbin/nginx".to_string()
    };
    let child = Command::new("taskset")
        .args(["-c", cpu, &nginx, "-p"])
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    Ok(Nginx(child))
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Run {
    pub rps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub errors: u64,
}

/// One wrk run; parses the line the done() hook prints.
pub fn wrk(cpu: &str, url: &str, key: bool, seconds: u64, script: &Path) -> anyhow::Result<Run> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", cpu, "wrk", "-t1"])
        .arg(format!("-c{CONNECTIONS}"))
        .arg(format!("-d{seconds}s"))
        .arg("-s")
        .arg(script);
    if key {
        cmd.args(["-H", &format!("apikey: {KEY}")]);
    }
    let out = cmd.arg(url).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("RESULT"))
        .ok_or_else(|| anyhow::anyhow!("wrk printed no result: {text}"))?;
    let f: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    anyhow::ensure!(f.len() == 6, "bad wrk line {line}");
    Ok(Run {
        rps: f[0] / (f[1] / 1e6),
        p50_us: f[2],
        p99_us: f[3],
        p999_us: f[4],
        errors: f[5] as u64,
    })
}

pub const WRK_SCRIPT: &str = r#"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    e.connect + e.read + e.write + e.status + e.timeout))
end
"#;

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}
