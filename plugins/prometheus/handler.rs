//! `prometheus`: records Kong's per-request metrics for the families an instance enables
//! (Kong 3.9.3's `kong/plugins/prometheus/{handler,exporter}.lua`), exported on the Admin
//! API's `/metrics` beside Tollgate's own (the families only while a `prometheus` plugin is
//! configured and enabled; `kong_upstream_target_health` only while the last request logged
//! came from an instance with `upstream_health_metrics`).
//!
//! As Kong: nothing is recorded for a request that matched no route; `service` is the
//! service's name, else its host; `route` its name, else its id; `workspace` is `default`;
//! `consumer` is the consumer's username with `per_consumer`, else empty; `source` is
//! `service` when the upstream answered, else `kong`; latencies are in milliseconds with
//! Kong's buckets (the upstream one only when an upstream answered); bandwidth counts only
//! non-zero sizes. The common series (code 200 from the service, no consumer) are looked up
//! once per route and configuration; others by label. `ai_metrics` is accepted and records
//! nothing (Tollgate has no AI plugins).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tollgate_config::entity::Plugin as PluginEntity;
use tollgate_config::plugins::prometheus::{PrometheusConfig, SCHEMA};
use uuid::Uuid;

use super::log_record::{Served, Source};
use super::{Deps, Handler, Instance, Plugin};
use crate::metrics::Metrics;

pub const HANDLER: Handler = Handler {
    schema: &SCHEMA,
    build,
};

const WORKSPACE: &str = "default";

fn build(p: &PluginEntity, deps: &Deps) -> Option<Instance> {
    let cfg = PrometheusConfig::parse(&p.config.0)?;
    Some(Arc::new(Prometheus {
        id: p.id,
        cfg,
        metrics: deps.metrics.clone(),
    }))
}

pub struct Prometheus {
    id: Uuid,
    cfg: PrometheusConfig,
    metrics: Arc<Metrics>,
}

fn ms(d: std::time::Duration) -> f64 {
    // Kong's latencies are whole milliseconds.
    d.as_millis() as f64
}

impl Plugin for Prometheus {
    super::identity!();

    fn log(&self, s: &Served) {
        let k = &self.metrics.kong;
        // Kong's handler sets the exporter's upstream-health switch to this instance's flag on
        // every request (the last one logged wins); written only on a change, so requests on
        // many cores do not contend for the line.
        let health = self.cfg.upstream_health_metrics;
        if k.upstream_health.load(Ordering::Relaxed) != health {
            k.upstream_health.store(health, Ordering::Relaxed);
        }
        let Some(r) = &s.route else {
            return;
        };
        let (svc, rt) = (r.service_label.as_str(), r.route_label.as_str());
        let consumer = match (&s.consumer, self.cfg.per_consumer) {
            (Some(c), true) => c
                .username
                .as_ref()
                .and_then(|u| u.to_str().ok())
                .unwrap_or(""),
            _ => "",
        };
        if self.cfg.status_code_metrics {
            let source = match s.source {
                Source::Upstream => "service",
                Source::Kong => "kong",
            };
            if s.status == 200 && s.source == Source::Upstream && consumer.is_empty() {
                r.series
                    .ok
                    .get_or_init(|| {
                        k.http_requests
                            .with_label_values(&[svc, rt, "200", "service", WORKSPACE, ""])
                    })
                    .inc();
            } else {
                k.http_requests
                    .with_label_values(&[
                        svc,
                        rt,
                        &s.status.to_string(),
                        source,
                        WORKSPACE,
                        consumer,
                    ])
                    .inc();
            }
        }
        if self.cfg.latency_metrics {
            let [request, upstream, kong] = r.series.latency.get_or_init(|| {
                let l = [svc, rt, WORKSPACE];
                [
                    k.request_latency.with_label_values(&l),
                    k.upstream_latency.with_label_values(&l),
                    k.kong_latency.with_label_values(&l),
                ]
            });
            request.observe(ms(s.request_latency()));
            if let Some(up) = s.upstream_latency {
                upstream.observe(ms(up));
            }
            kong.observe(ms(s.kong_latency()));
        }
        if self.cfg.bandwidth_metrics {
            let (ingress, egress) = (s.request_size(), s.response_size());
            if consumer.is_empty() {
                let [i, e] = r.series.bandwidth.get_or_init(|| {
                    [
                        k.bandwidth
                            .with_label_values(&[svc, rt, "ingress", WORKSPACE, ""]),
                        k.bandwidth
                            .with_label_values(&[svc, rt, "egress", WORKSPACE, ""]),
                    ]
                });
                if ingress > 0 {
                    i.inc_by(ingress);
                }
                if egress > 0 {
                    e.inc_by(egress);
                }
            } else {
                for (dir, n) in [("ingress", ingress), ("egress", egress)] {
                    if n > 0 {
                        k.bandwidth
                            .with_label_values(&[svc, rt, dir, WORKSPACE, consumer])
                            .inc_by(n);
                    }
                }
            }
        }
    }
}
