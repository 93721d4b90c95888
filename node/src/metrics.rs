//! Prometheus metrics, served on the Admin API's `/metrics` in the text format.
//!
//! Tollgate's own metrics are prefixed `tollgate_` (names follow Kong's where one exists:
//! `tollgate_http_requests_total` by service, route and code) and always exported. Kong's
//! prometheus plugin exposition (`kong_*`, [`KongMetrics`], [`render_kong`]) follows them on
//! the same page.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Every metric the node exports.
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_latency: HistogramVec,
    pub upstream_latency: HistogramVec,
    pub rate_limit_rejections: IntCounterVec,
    pub ratelimit_tracked_keys: IntGauge,
    pub config_entities: IntGauge,
    pub config_applied_index: IntGauge,
    pub config_rebuilds: IntCounter,
    pub config_rebuild_seconds: Histogram,
    pub connections_accepted: IntCounter,
    /// TLS handshakes that failed or timed out, by listener.
    pub tls_handshake_failures: IntCounterVec,
    pub raft_term: IntGauge,
    pub raft_leader_changes: IntCounter,
    pub raft_is_leader: IntGauge,
    pub raft_last_log_index: IntGauge,
    pub raft_snapshot_index: IntGauge,
    pub raft_snapshots: IntCounter,
    pub ratelimit_cluster_keys: IntGauge,
    pub ratelimit_evicted: IntGauge,
    pub ratelimit_published: IntCounter,
    pub ratelimit_publish_seconds: Histogram,
    pub ratelimit_peer_fraction: prometheus::Gauge,
    /// Log entries the logging plugins dropped (queue or channel full, file not writable,
    /// endpoint failing past its retry time), by plugin.
    pub log_entries_dropped: IntCounterVec,
    /// The `prometheus` plugin's metrics, with Kong's names.
    pub kong: KongMetrics,
}

/// Kong's prometheus plugin metrics (`kong/plugins/prometheus/exporter.lua` at 3.9.3). They live
/// in their own registry: Kong exports them only while a `prometheus` plugin is configured
/// and enabled (exporter.lua `configure`, `metric_data(..., local_only)`), and prints their
/// labels in its own order, not sorted by name as the `prometheus` crate's encoder does.
pub struct KongMetrics {
    registry: Registry,
    /// `kong_http_requests_total{service,route,code,source,workspace,consumer}`.
    pub http_requests: IntCounterVec,
    /// `kong_request_latency_ms{service,route,workspace}`.
    pub request_latency: HistogramVec,
    /// `kong_upstream_latency_ms{service,route,workspace}`.
    pub upstream_latency: HistogramVec,
    /// `kong_kong_latency_ms{service,route,workspace}`.
    pub kong_latency: HistogramVec,
    /// `kong_bandwidth_bytes{service,route,direction,workspace,consumer}`.
    pub bandwidth: IntCounterVec,
    /// Whether `kong_upstream_target_health` is exported: as Kong's
    /// `should_export_upstream_health_metrics`, set by every logged request to its
    /// instance's `upstream_health_metrics` (the last one logged wins).
    pub upstream_health: std::sync::atomic::AtomicBool,
}

/// Each family's labels in Kong's order (exporter.lua `init`).
const KONG_LABELS: &[(&str, &[&str])] = &[
    (
        "kong_http_requests_total",
        &[
            "service",
            "route",
            "code",
            "source",
            "workspace",
            "consumer",
        ],
    ),
    (
        "kong_request_latency_ms",
        &["service", "route", "workspace"],
    ),
    (
        "kong_upstream_latency_ms",
        &["service", "route", "workspace"],
    ),
    ("kong_kong_latency_ms", &["service", "route", "workspace"]),
    (
        "kong_bandwidth_bytes",
        &["service", "route", "direction", "workspace", "consumer"],
    ),
];

/// Kong's `KONG_LATENCY_BUCKETS` (milliseconds).
pub const KONG_LATENCY_BUCKETS: &[f64] = &[
    1.0, 2.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 200.0, 500.0, 750.0, 1000.0,
    3000.0, 6000.0,
];
/// Kong's `UPSTREAM_LATENCY_BUCKETS` (milliseconds), also used for the request latency.
pub const UPSTREAM_LATENCY_BUCKETS: &[f64] = &[
    25.0, 50.0, 80.0, 100.0, 250.0, 400.0, 700.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0, 60000.0,
];

/// A route's `kong_*` series, each looked up the first time its family is recorded.
#[derive(Default)]
pub struct KongRouteSeries {
    /// request, upstream and kong latency histograms.
    pub latency: std::sync::OnceLock<[Histogram; 3]>,
    /// `kong_http_requests_total` for code 200 from the service, no consumer.
    pub ok: std::sync::OnceLock<prometheus::IntCounter>,
    /// ingress and egress bandwidth, no consumer.
    pub bandwidth: std::sync::OnceLock<[prometheus::IntCounter; 2]>,
}

impl KongMetrics {
    fn new() -> KongMetrics {
        let registry = Registry::new();
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                &["service", "route", "workspace"],
            )
            .expect("static metric definition")
        };
        let k = KongMetrics {
            registry: registry.clone(),
            http_requests: IntCounterVec::new(
                Opts::new(
                    "kong_http_requests_total",
                    "HTTP status codes per consumer/service/route in Kong",
                ),
                &[
                    "service",
                    "route",
                    "code",
                    "source",
                    "workspace",
                    "consumer",
                ],
            )
            .expect("static metric definition"),
            request_latency: histogram(
                "kong_request_latency_ms",
                "Total latency incurred during requests for each service/route in Kong",
                UPSTREAM_LATENCY_BUCKETS,
            ),
            upstream_latency: histogram(
                "kong_upstream_latency_ms",
                "Latency added by upstream response for each service/route in Kong",
                UPSTREAM_LATENCY_BUCKETS,
            ),
            kong_latency: histogram(
                "kong_kong_latency_ms",
                "Latency added by Kong and enabled plugins for each service/route in Kong",
                KONG_LATENCY_BUCKETS,
            ),
            bandwidth: IntCounterVec::new(
                Opts::new(
                    "kong_bandwidth_bytes",
                    "Total bandwidth (ingress/egress) throughput in bytes",
                ),
                &["service", "route", "direction", "workspace", "consumer"],
            )
            .expect("static metric definition"),
            upstream_health: Default::default(),
        };
        for c in [
            Box::new(k.http_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(k.request_latency.clone()),
            Box::new(k.upstream_latency.clone()),
            Box::new(k.kong_latency.clone()),
            Box::new(k.bandwidth.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        k
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "tollgate_http_requests_total",
                "Proxied requests by service, route and status code",
            ),
            &["service", "route", "code"],
        )
        .expect("static metric definition");
        let request_latency = HistogramVec::new(
            HistogramOpts::new(
                "tollgate_request_latency_seconds",
                "Time from request received to response head sent",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["service", "route"],
        )
        .expect("static metric definition");
        let upstream_latency = HistogramVec::new(
            HistogramOpts::new(
                "tollgate_upstream_latency_seconds",
                "Time from sending upstream to receiving its response head",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["service", "route"],
        )
        .expect("static metric definition");
        let rate_limit_rejections = IntCounterVec::new(
            Opts::new(
                "tollgate_rate_limit_rejections_total",
                "Requests rejected by rate-limiting",
            ),
            &["route", "policy"],
        )
        .expect("static metric definition");
        let ratelimit_tracked_keys = IntGauge::new(
            "tollgate_ratelimit_tracked_keys",
            "Rate-limit counters held by this node",
        )
        .expect("static metric definition");
        let config_entities = IntGauge::new(
            "tollgate_config_entities",
            "Entities in the applied configuration",
        )
        .expect("static metric definition");
        let config_applied_index = IntGauge::new(
            "tollgate_config_applied_index",
            "Index of the last applied configuration command",
        )
        .expect("static metric definition");
        let config_rebuilds = IntCounter::new(
            "tollgate_config_rebuilds_total",
            "Data-plane snapshots built after configuration changes",
        )
        .expect("static metric definition");
        let config_rebuild_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "tollgate_config_rebuild_seconds",
                "Time to build a data-plane snapshot",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("static metric definition");
        let connections_accepted = IntCounter::new(
            "tollgate_connections_accepted_total",
            "Proxy connections accepted",
        )
        .expect("static metric definition");
        let tls_handshake_failures = IntCounterVec::new(
            prometheus::Opts::new(
                "tollgate_tls_handshake_failures_total",
                "TLS handshakes that failed, timed out or were refused, by listener",
            ),
            &["listener"],
        )
        .expect("static metric definition");
        let gauge = |n: &str, h: &str| IntGauge::new(n, h).expect("static metric definition");
        let counter = |n: &str, h: &str| IntCounter::new(n, h).expect("static metric definition");
        let raft_term = gauge("tollgate_raft_term", "Current Raft term");
        let raft_leader_changes = counter(
            "tollgate_raft_leader_changes_total",
            "Leader changes seen by this node",
        );
        let raft_is_leader = gauge("tollgate_raft_is_leader", "1 when this node leads");
        let raft_last_log_index = gauge(
            "tollgate_raft_last_log_index",
            "Index of the last Raft log entry",
        );
        let raft_snapshot_index = gauge(
            "tollgate_raft_snapshot_index",
            "Last log index covered by the latest snapshot",
        );
        let raft_snapshots = counter(
            "tollgate_raft_snapshots_total",
            "Snapshots built or installed on this node",
        );
        let ratelimit_cluster_keys = gauge(
            "tollgate_ratelimit_cluster_keys",
            "Cluster rate-limit counters held (own and heard from peers)",
        );
        let ratelimit_evicted = gauge(
            "tollgate_ratelimit_evicted_keys",
            "Cluster rate-limit counters dropped by the memory cap",
        );
        let ratelimit_published = counter(
            "tollgate_ratelimit_published_values_total",
            "Counter shards published to gossip",
        );
        let ratelimit_publish_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "tollgate_ratelimit_publish_seconds",
                "Time to encode and publish changed counters",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("static metric definition");
        let ratelimit_peer_fraction = prometheus::Gauge::new(
            "tollgate_ratelimit_peer_fraction",
            "Share of the current windows' cluster counts that came from peers (own vs cluster estimate)",
        )
        .expect("static metric definition");
        for c in [
            Box::new(ratelimit_cluster_keys.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(ratelimit_evicted.clone()),
            Box::new(ratelimit_published.clone()),
            Box::new(ratelimit_publish_seconds.clone()),
            Box::new(ratelimit_peer_fraction.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        for c in [
            Box::new(raft_term.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(raft_leader_changes.clone()),
            Box::new(raft_is_leader.clone()),
            Box::new(raft_last_log_index.clone()),
            Box::new(raft_snapshot_index.clone()),
            Box::new(raft_snapshots.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_latency.clone()),
            Box::new(upstream_latency.clone()),
            Box::new(rate_limit_rejections.clone()),
            Box::new(ratelimit_tracked_keys.clone()),
            Box::new(config_entities.clone()),
            Box::new(config_applied_index.clone()),
            Box::new(config_rebuilds.clone()),
            Box::new(config_rebuild_seconds.clone()),
            Box::new(connections_accepted.clone()),
            Box::new(tls_handshake_failures.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        let log_entries_dropped = IntCounterVec::new(
            Opts::new(
                "tollgate_log_entries_dropped_total",
                "Log entries dropped by logging plugins (queue full, write or send failed)",
            ),
            &["plugin"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(log_entries_dropped.clone()))
            .expect("metric names are unique");
        let kong = KongMetrics::new();
        Metrics {
            log_entries_dropped,
            kong,
            registry,
            requests,
            request_latency,
            upstream_latency,
            rate_limit_rejections,
            ratelimit_tracked_keys,
            config_entities,
            config_applied_index,
            config_rebuilds,
            config_rebuild_seconds,
            tls_handshake_failures,
            connections_accepted,
            raft_term,
            raft_leader_changes,
            raft_is_leader,
            raft_last_log_index,
            raft_snapshot_index,
            raft_snapshots,
            ratelimit_cluster_keys,
            ratelimit_evicted,
            ratelimit_published,
            ratelimit_publish_seconds,
            ratelimit_peer_fraction,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Mirrors Raft's metrics into Prometheus until `stop` flips. Apply latency is covered by
/// `tollgate_config_rebuild_seconds` (the apply hook) and the applied index by
/// `tollgate_config_applied_index`.
pub async fn watch_raft(
    node: std::sync::Arc<tollgate_cluster::ClusterNode>,
    m: std::sync::Arc<Metrics>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut rx = node.raft.metrics();
    let mut leader = None;
    let mut snap = None;
    loop {
        {
            let r = rx.borrow_and_update().clone();
            m.raft_term.set(r.current_term as i64);
            m.raft_is_leader
                .set(i64::from(r.state == openraft::ServerState::Leader));
            m.raft_last_log_index
                .set(r.last_log_index.unwrap_or(0) as i64);
            if r.current_leader != leader {
                if r.current_leader.is_some() {
                    m.raft_leader_changes.inc();
                }
                leader = r.current_leader;
            }
            if r.snapshot != snap {
                if r.snapshot.is_some() {
                    m.raft_snapshots.inc();
                }
                snap = r.snapshot;
                m.raft_snapshot_index
                    .set(snap.map(|s| s.index).unwrap_or(0) as i64);
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            _ = stop.changed() => return,
        }
    }
}

/// What Kong's node-level gauges read at scrape time.
pub struct NodeStats<'a> {
    pub node_id: &'a str,
    /// The `version` label of `kong_node_info`.
    pub version: &'a str,
    pub accepted: u64,
    pub requests: u64,
    /// `kong_nginx_timers{state="running"}`: the runtime's live tasks (Tollgate's background
    /// work; nginx timers are Kong's).
    pub tasks_alive: usize,
    /// `kong_nginx_timers{state="pending"}`: tasks waiting in the runtime's global queue.
    pub tasks_queued: usize,
}

fn kong_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Kong's exposition (`kong/plugins/prometheus/exporter.lua` `metric_data` at 3.9.3), without
/// the upstream target health (`crate::balancer::metrics`). Always the node-level gauges
/// (Kong's local-storage metrics): `kong_datastore_reachable` (the replicated store is always
/// local: 1), `kong_nginx_connections_total{node_id,subsystem,state}` (states `accepted`,
/// `handled`, `total`; nginx's active/reading/writing/waiting are not tracked),
/// `kong_nginx_requests_total{node_id,subsystem}`, `kong_nginx_timers{state}` and
/// `kong_node_info{node_id,version}`. With `plugin_enabled` (a `prometheus` plugin is
/// configured and enabled) also the families Kong keeps in its shared dictionary:
/// `kong_nginx_metric_errors_total` (always 0) and the per-request ones.
pub fn render_kong(m: &Metrics, node: &NodeStats, plugin_enabled: bool) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let id = kong_label(node.node_id);
    let _ = writeln!(
        s,
        "# HELP kong_datastore_reachable Datastore reachable from Kong, 0 is unreachable\n# TYPE kong_datastore_reachable gauge\nkong_datastore_reachable 1"
    );
    let _ = writeln!(
        s,
        "# HELP kong_nginx_connections_total Number of connections by subsystem\n# TYPE kong_nginx_connections_total gauge"
    );
    for (state, v) in [
        ("accepted", node.accepted),
        ("handled", node.accepted),
        ("total", node.requests),
    ] {
        let _ = writeln!(
            s,
            "kong_nginx_connections_total{{node_id=\"{id}\",subsystem=\"http\",state=\"{state}\"}} {v}"
        );
    }
    if plugin_enabled {
        let _ = writeln!(
            s,
            "# HELP kong_nginx_metric_errors_total Number of nginx-lua-prometheus errors\n# TYPE kong_nginx_metric_errors_total counter\nkong_nginx_metric_errors_total 0"
        );
    }
    let _ = writeln!(
        s,
        "# HELP kong_nginx_requests_total Number of requests total\n# TYPE kong_nginx_requests_total gauge\nkong_nginx_requests_total{{node_id=\"{id}\",subsystem=\"http\"}} {}",
        node.requests
    );
    let _ = writeln!(
        s,
        "# HELP kong_nginx_timers Number of nginx timers\n# TYPE kong_nginx_timers gauge\nkong_nginx_timers{{state=\"running\"}} {}\nkong_nginx_timers{{state=\"pending\"}} {}",
        node.tasks_alive, node.tasks_queued
    );
    let _ = writeln!(
        s,
        "# HELP kong_node_info Kong Node metadata information\n# TYPE kong_node_info gauge\nkong_node_info{{node_id=\"{id}\",version=\"{}\"}} 1",
        kong_label(node.version)
    );
    if plugin_enabled {
        m.kong.render(&mut s);
    }
    s
}

impl KongMetrics {
    /// The per-request families as Kong prints them: labels in Kong's order, series sorted,
    /// `le` without trailing zeros (exporter.lua, prometheus.lua `fix_histogram_bucket_labels`).
    fn render(&self, out: &mut String) {
        use prometheus::proto::MetricType;
        use std::fmt::Write;
        for mf in self.registry.gather() {
            let name = mf.name();
            if mf.get_metric().is_empty() {
                continue;
            }
            let order = KONG_LABELS
                .iter()
                .find(|(n, _)| *n == name)
                .map_or(&[][..], |(_, l)| *l);
            let histogram = mf.get_field_type() == MetricType::HISTOGRAM;
            let kind = if histogram { "histogram" } else { "counter" };
            let _ = writeln!(out, "# HELP {name} {}\n# TYPE {name} {kind}", mf.help());
            let mut series: Vec<String> = mf
                .get_metric()
                .iter()
                .map(|m| {
                    let pairs = m.get_label();
                    let labels = order
                        .iter()
                        .filter_map(|n| pairs.iter().find(|p| p.name() == *n))
                        .map(|p| format!("{}=\"{}\"", p.name(), kong_label(p.value())))
                        .collect::<Vec<_>>()
                        .join(",");
                    let mut text = String::new();
                    if histogram {
                        let h = m.get_histogram();
                        let le = if labels.is_empty() {
                            String::new()
                        } else {
                            format!("{labels},")
                        };
                        for b in h.get_bucket() {
                            if b.upper_bound().is_finite() {
                                let _ = writeln!(
                                    text,
                                    "{name}_bucket{{{le}le=\"{}\"}} {}",
                                    b.upper_bound(),
                                    b.cumulative_count()
                                );
                            }
                        }
                        let _ = writeln!(
                            text,
                            "{name}_bucket{{{le}le=\"+Inf\"}} {count}\n{name}_count{{{labels}}} {count}\n{name}_sum{{{labels}}} {}",
                            h.get_sample_sum(),
                            count = h.get_sample_count(),
                        );
                    } else {
                        let _ = writeln!(text, "{name}{{{labels}}} {}", m.get_counter().get_value());
                    }
                    text
                })
                .collect();
            series.sort_unstable();
            out.extend(series);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeStats<'static> {
        NodeStats {
            node_id: "n1",
            version: "3.9.3",
            accepted: 2,
            requests: 3,
            tasks_alive: 4,
            tasks_queued: 0,
        }
    }

    #[test]
    fn kong_families_use_kongs_label_order_and_only_while_a_plugin_is_enabled() {
        let m = Metrics::new();
        m.kong
            .http_requests
            .with_label_values(&["svc", "rt", "200", "service", "default", ""])
            .inc();
        m.kong
            .kong_latency
            .with_label_values(&["svc", "rt", "default"])
            .observe(3.0);
        let on = render_kong(&m, &node(), true);
        // exporter.lua's label order, not sorted by name.
        assert!(on.contains("kong_http_requests_total{service=\"svc\",route=\"rt\",code=\"200\",source=\"service\",workspace=\"default\",consumer=\"\"} 1\n"), "{on}");
        assert!(on.contains("kong_kong_latency_ms_bucket{service=\"svc\",route=\"rt\",workspace=\"default\",le=\"2\"} 0\n"), "{on}");
        assert!(on.contains("kong_kong_latency_ms_bucket{service=\"svc\",route=\"rt\",workspace=\"default\",le=\"5\"} 1\n"), "{on}");
        assert!(on.contains("kong_kong_latency_ms_bucket{service=\"svc\",route=\"rt\",workspace=\"default\",le=\"+Inf\"} 1\n"), "{on}");
        assert!(on.contains("kong_kong_latency_ms_count{service=\"svc\",route=\"rt\",workspace=\"default\"} 1\n"), "{on}");
        assert!(on.contains("kong_nginx_metric_errors_total 0\n"), "{on}");
        assert!(
            on.contains("kong_nginx_timers{state=\"running\"} 4\n"),
            "{on}"
        );
        // exporter.lua metric_data(..., local_only): the node-level gauges alone.
        let off = render_kong(&m, &node(), false);
        assert!(!off.contains("kong_http_requests_total"), "{off}");
        assert!(!off.contains("kong_kong_latency_ms"), "{off}");
        assert!(!off.contains("kong_nginx_metric_errors_total"), "{off}");
        assert!(
            off.contains("kong_node_info{node_id=\"n1\",version=\"3.9.3\"} 1\n"),
            "{off}"
        );
        assert!(off.contains("kong_nginx_connections_total{node_id=\"n1\",subsystem=\"http\",state=\"accepted\"} 2\n"), "{off}");
        // Tollgate's own page does not carry them.
        assert!(!m.render().contains("kong_"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(kong_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
