//! Prometheus metrics, served on the Admin API's `/metrics` in the text format.
//!
//! Names follow Kong's Prometheus plugin where one exists (`*_http_requests_total` by service,
//! route and code), prefixed `tollgate_`.

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
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
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
            connections_accepted,
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
