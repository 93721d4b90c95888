//! `rate-limiting`: Kong's plugin (periods second to year, `limit_by`, headers, 429) with a
//! sliding or fixed window. Counters are per (plugin instance, limit key, period).
//!
//! `policy: local` counts on this node ([`crate::ratelimit::LocalCounters`]: N nodes admit up
//! to N × limit). `policy: cluster` and `policy: redis` count cluster-wide through gossip
//! ([`tollgate_cluster::gcounter`]), with no database and no Redis: Kong files with
//! `policy: redis` run unchanged, and the plugin's `redis` fields are kept (and shown) but not
//! used.

use std::sync::Arc;

use http::{HeaderName, HeaderValue, StatusCode};
use tollgate_config::entity::Plugin as PluginEntity;
use tollgate_config::plugins::rate_limiting::{
    LimitBy, Policy, RateLimitingConfig, WindowType, PERIODS, SCHEMA,
};
use uuid::Uuid;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{error_response, Ctx, Deps, Flow, Handler, Instance, Plugin};
use crate::metrics::Metrics;
use crate::proxy::headers::number_header;
use crate::ratelimit::{CounterKey, Counters, Decision};

pub const HANDLER: Handler = Handler {
    schema: &SCHEMA,
    build,
};

fn build(p: &PluginEntity, deps: &Deps) -> Option<Instance> {
    let cfg = RateLimitingConfig::parse(&p.config.0)?;
    Some(Arc::new(RateLimiting::new(
        p.id,
        cfg,
        deps.counters.clone(),
        deps.cluster_counters.clone(),
        deps.metrics.clone(),
    )))
}

const PERIOD_TITLES: [&str; 6] = ["Second", "Minute", "Hour", "Day", "Month", "Year"];

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

struct Limit {
    period: usize,
    seconds: u64,
    limit: f64,
    limit_header: HeaderValue,
    limit_name: HeaderName,
    remaining_name: HeaderName,
}

pub struct RateLimiting {
    id: Uuid,
    cfg: RateLimitingConfig,
    limits: Vec<Limit>,
    counters: Arc<dyn Counters>,
    policy: &'static str,
    metrics: Arc<Metrics>,
}

fn fmt_limit(l: f64) -> String {
    if l.fract() == 0.0 {
        format!("{}", l as u64)
    } else {
        format!("{l}")
    }
}

impl RateLimiting {
    /// `local` counts in `local`, the cluster policies in `cluster`.
    pub fn new(
        id: Uuid,
        cfg: RateLimitingConfig,
        local: Arc<dyn Counters>,
        cluster: Arc<dyn Counters>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (counters, policy): (Arc<dyn Counters>, &'static str) = match cfg.policy {
            Policy::Local => (local, "local"),
            Policy::Cluster => (cluster, "cluster"),
            Policy::Redis => (cluster, "redis"),
        };
        let limits = cfg
            .limits()
            .into_iter()
            .map(|(period, limit)| {
                let title = PERIOD_TITLES[period];
                Limit {
                    period,
                    seconds: PERIODS[period].1,
                    limit,
                    limit_header: HeaderValue::from_str(&fmt_limit(limit))
                        .unwrap_or(HeaderValue::from_static("0")),
                    limit_name: HeaderName::from_bytes(
                        format!("x-ratelimit-limit-{}", title.to_ascii_lowercase()).as_bytes(),
                    )
                    .expect("static header name"),
                    remaining_name: HeaderName::from_bytes(
                        format!("x-ratelimit-remaining-{}", title.to_ascii_lowercase()).as_bytes(),
                    )
                    .expect("static header name"),
                }
            })
            .collect();
        RateLimiting {
            id,
            cfg,
            limits,
            counters,
            policy,
            metrics,
        }
    }

    /// Hashes the limit key (Kong's identifier) without allocating. The seed keeps keys of
    /// different kinds apart.
    fn identifier(&self, ctx: &Ctx<'_>, req: &http::request::Parts) -> u64 {
        use crate::ratelimit::{identity_key, KeyBy};
        let ip = || identity_key(ctx, KeyBy::Ip);
        let id = |u: Uuid| xxh3_64_with_seed(u.as_bytes(), 2);
        match self.cfg.limit_by {
            LimitBy::Ip => ip(),
            LimitBy::Consumer => identity_key(ctx, KeyBy::Consumer),
            LimitBy::Credential => identity_key(ctx, KeyBy::Credential),
            LimitBy::Service => ctx
                .route
                .and_then(|r| r.service)
                .map(id)
                .unwrap_or_else(ip),
            LimitBy::Header => self
                .cfg
                .header_name
                .as_deref()
                .and_then(|h| req.headers.get(h))
                .map(|v| xxh3_64_with_seed(v.as_bytes(), 3))
                .unwrap_or_else(ip),
            LimitBy::Path => match self.cfg.path.as_deref() {
                Some(p) if p == ctx.path => xxh3_64_with_seed(p.as_bytes(), 4),
                _ => ip(),
            },
        }
    }
}

impl Plugin for RateLimiting {
    super::identity!();

    fn access(&self, ctx: &mut Ctx<'_>, req: &mut http::request::Parts) -> Flow {
        let ident = self.identifier(ctx, req);
        let plugin = self.id.as_u128();
        let sliding = self.cfg.window_type == WindowType::Sliding;
        let mut decisions: [Option<Decision>; 6] = [None; 6];
        let mut rejected = false;
        for l in &self.limits {
            let key = CounterKey {
                plugin,
                period: l.period as u8,
                ident,
            };
            let d = self
                .counters
                .try_acquire(key, l.seconds, l.limit, ctx.now, sliding);
            rejected |= !d.admitted;
            decisions[l.period] = Some(d);
        }
        if rejected {
            // All or nothing: periods that admitted give their unit back.
            for l in &self.limits {
                if let Some(d) = decisions[l.period].as_mut() {
                    if d.admitted {
                        self.counters.release(
                            CounterKey {
                                plugin,
                                period: l.period as u8,
                                ident,
                            },
                            ctx.now,
                        );
                        d.remaining = (d.remaining + 1).min(l.limit as u64);
                    }
                }
            }
        }
        if !self.cfg.hide_client_headers {
            // RateLimit-* describe the period with the least left; ties go to the longer one.
            let mut tightest: Option<(&Limit, Decision, HeaderValue)> = None;
            for l in &self.limits {
                let Some(d) = decisions[l.period] else {
                    continue;
                };
                let d_rem = if d.admitted || !rejected {
                    d.remaining
                } else {
                    0
                };
                let remaining = number_header(d_rem);
                ctx.response_headers
                    .push((l.limit_name.clone(), l.limit_header.clone()));
                ctx.response_headers
                    .push((l.remaining_name.clone(), remaining.clone()));
                if tightest
                    .as_ref()
                    .map(|(_, t, _)| d_rem <= t.remaining)
                    .unwrap_or(true)
                {
                    tightest = Some((
                        l,
                        Decision {
                            remaining: d_rem,
                            ..d
                        },
                        remaining,
                    ));
                }
            }
            if let Some((l, d, remaining)) = tightest {
                ctx.response_headers
                    .push((RATELIMIT_LIMIT.clone(), l.limit_header.clone()));
                ctx.response_headers
                    .push((RATELIMIT_REMAINING.clone(), remaining));
                ctx.response_headers
                    .push((RATELIMIT_RESET.clone(), number_header(d.reset)));
            }
        }
        if !rejected {
            return Flow::Continue;
        }
        let retry_after = decisions
            .iter()
            .flatten()
            .filter(|d| !d.admitted)
            .map(|d| d.retry_after)
            .max()
            .unwrap_or(1);
        if !self.cfg.hide_client_headers {
            ctx.response_headers
                .push((http::header::RETRY_AFTER, number_header(retry_after)));
        }
        let route = ctx.route.map(|r| r.label.as_str()).unwrap_or("");
        self.metrics
            .rate_limit_rejections
            .with_label_values(&[route, self.policy])
            .inc();
        let status =
            StatusCode::from_u16(self.cfg.error_code).unwrap_or(StatusCode::TOO_MANY_REQUESTS);
        Flow::Respond(error_response(status, &self.cfg.error_message))
    }
}
