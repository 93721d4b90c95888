//! Per-target metrics, read from the balancers at scrape time (no work on the request path
//! beyond the counters each peer already keeps):
//!
//! - `kong_upstream_target_health{upstream,target,address,state,subsystem}`: Kong's shape,
//!   one series per state (`healthchecks_off`, `healthy`, `unhealthy`, `dns_error`), 1 for
//!   the current one; only with `kong_health`, as Kong exports it only once a `prometheus`
//!   instance with `upstream_health_metrics` has logged a request
//!   (`kong/plugins/prometheus/exporter.lua` `should_export_upstream_health_metrics`). Read
//!   from the live balancers, so deleted upstreams and targets leave it at once (Kong resets
//!   the gauge on every scrape);
//! - `tollgate_upstream_target_requests_total`, `…_failures_total` (connect failures,
//!   timeouts and the statuses passive checks count as failures);
//! - `tollgate_upstream_target_latency_seconds`: the EWMA of response-head latency;
//! - `tollgate_upstream_target_in_flight`.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use super::{Balancers, Resolved};

const STATES: [&str; 4] = ["healthchecks_off", "healthy", "unhealthy", "dns_error"];

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics above in Prometheus' text format.
pub fn render(balancers: &Balancers, kong_health: bool) -> String {
    let mut health = String::new();
    let mut requests = String::new();
    let mut failures = String::new();
    let mut latency = String::new();
    let mut in_flight = String::new();
    for b in balancers.all() {
        let up = label(&b.name());
        let checks = b.checks_enabled();
        let set = b.set.load();
        for t in b.targets() {
            let target = label(&t.target.target);
            let peers: Vec<_> = set
                .peers
                .iter()
                .filter(|p| p.target_id == t.target.id)
                .collect();
            if peers.is_empty() {
                if !kong_health {
                    continue;
                }
                let failed = !matches!(t.resolved, Resolved::Addresses(_));
                for s in STATES {
                    let v = u8::from(failed && s == "dns_error");
                    let _ = writeln!(health, "kong_upstream_target_health{{upstream=\"{up}\",target=\"{target}\",address=\"\",state=\"{s}\",subsystem=\"http\"}} {v}");
                }
                continue;
            }
            for p in peers {
                let addr = p.addr.to_string();
                let now = if p.weight == 0 || !checks {
                    "healthchecks_off"
                } else if p.state.health.available() {
                    "healthy"
                } else {
                    "unhealthy"
                };
                let l = format!("upstream=\"{up}\",target=\"{target}\",address=\"{addr}\"");
                for s in STATES.iter().filter(|_| kong_health) {
                    let _ = writeln!(
                        health,
                        "kong_upstream_target_health{{{l},state=\"{s}\",subsystem=\"http\"}} {}",
                        u8::from(*s == now)
                    );
                }
                let st = &p.state;
                let _ = writeln!(
                    requests,
                    "tollgate_upstream_target_requests_total{{{l}}} {}",
                    st.requests.load(Ordering::Relaxed)
                );
                let _ = writeln!(
                    failures,
                    "tollgate_upstream_target_failures_total{{{l}}} {}",
                    st.failures.load(Ordering::Relaxed)
                );
                let _ = writeln!(
                    latency,
                    "tollgate_upstream_target_latency_seconds{{{l}}} {}",
                    p.ewma_micros() as f64 / 1e6
                );
                let _ = writeln!(
                    in_flight,
                    "tollgate_upstream_target_in_flight{{{l}}} {}",
                    p.in_flight()
                );
            }
        }
    }
    let mut out = String::new();
    for (name, kind, help, body) in [
        (
            "kong_upstream_target_health",
            "gauge",
            "Health status of targets of upstream. States = healthchecks_off|healthy|unhealthy|dns_error, value is 1 when state is populated.",
            health,
        ),
        (
            "tollgate_upstream_target_requests_total",
            "counter",
            "Requests sent to each upstream target address",
            requests,
        ),
        (
            "tollgate_upstream_target_failures_total",
            "counter",
            "Failed requests (connect, timeout, failing status) per upstream target address",
            failures,
        ),
        (
            "tollgate_upstream_target_latency_seconds",
            "gauge",
            "Moving average of response-head latency per upstream target address",
            latency,
        ),
        (
            "tollgate_upstream_target_in_flight",
            "gauge",
            "Requests in flight per upstream target address",
            in_flight,
        ),
    ] {
        if body.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        out.push_str(&body);
    }
    out
}
