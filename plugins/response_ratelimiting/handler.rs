//! `response-ratelimiting`: limits that the upstream's responses consume. The upstream says
//! what each response cost in a header (`X-Kong-Limit: video=1, image=2`); the gateway counts
//! it per named limit and period, and refuses once a limit is used up. Kong 3.9.3's semantics
//! (`kong/plugins/response-ratelimiting/{access,header_filter,log,handler}.lua`):
//!
//! - access: reads every named limit's usage in the current fixed window. With
//!   `block_on_first_violation`, a limit with exactly 0 left ends the request with 429
//!   `API rate limit exceeded for '<name>'`. Otherwise the upstream request gets
//!   `X-RateLimit-Remaining-<name>` (the least left over the name's periods), as Kong's
//!   access.lua intends and its spec checks; 3.9.3 itself sends it to the client, a
//!   regression Kong fixed after it (commit 2582e76).
//! - header_filter: parses the upstream's header (the first one only, as
//!   `kong.service.response.get_header`), removes it from the response, and, unless
//!   `hide_client_headers`, sets `X-RateLimit-Limit-<name>-<period>` and
//!   `X-RateLimit-Remaining-<name>-<period>` (what is left after this response, at least 0).
//!   If a response consumes a limit that had nothing left before it, the response becomes a
//!   429 with no body and is not counted. Otherwise the costs are counted (Kong counts in its
//!   log phase; counting once the head is known is the same for the next request).
//!
//! Windows are fixed and aligned to the epoch (Kong's response-ratelimiting has no sliding
//! window). Counters live where rate-limiting's do ([`crate::ratelimit`]): `policy: local` on
//! this node, `cluster` and `redis` in the gossip-shared store. Counters cannot fail, so
//! `fault_tolerant` changes nothing.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use tollgate_config::entity::Plugin as PluginEntity;
use tollgate_config::plugins::rate_limiting::{Policy, PERIODS};
use tollgate_config::plugins::response_ratelimiting::{
    LimitBy, ResponseRateLimitingConfig, SCHEMA,
};
use uuid::Uuid;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{error_response, Ctx, Deps, Flow, Handler, Instance, Plugin};
use crate::ratelimit::{CounterKey, Counters};

pub const HANDLER: Handler = Handler {
    schema: &SCHEMA,
    build,
};

fn build(p: &PluginEntity, deps: &Deps) -> Option<Instance> {
    let cfg = ResponseRateLimitingConfig::parse(&p.config.0)?;
    let counters: Arc<dyn Counters> = match cfg.policy {
        Policy::Local => deps.counters.clone(),
        Policy::Cluster | Policy::Redis => deps.cluster_counters.clone(),
    };
    ResponseRateLimiting::new(p.id, cfg, counters).map(|r| Arc::new(r) as Instance)
}

/// Longest cost header read; a longer one counts nothing.
pub const MAX_HEADER_LEN: usize = 4096;
/// Most `name=value` items read from the cost header; the rest are ignored.
pub const MAX_ITEMS: usize = 64;
/// Largest cost one response may declare for one limit.
pub const MAX_COST: u64 = u32::MAX as u64;

struct PeriodLimit {
    period: usize,
    seconds: u64,
    limit: f64,
    limit_value: HeaderValue,
    limit_header: HeaderName,
    remaining_header: HeaderName,
}

struct NamedLimit {
    name: String,
    /// `X-RateLimit-Remaining-<name>`, set in access.
    remaining_header: HeaderName,
    /// `API rate limit exceeded for '<name>'`.
    exceeded: String,
    periods: Vec<PeriodLimit>,
}

pub struct ResponseRateLimiting {
    id: Uuid,
    cfg: ResponseRateLimitingConfig,
    header: HeaderName,
    /// By name, as the config's map is ordered.
    limits: Vec<NamedLimit>,
    counters: Arc<dyn Counters>,
}

/// What access found, for header_filter: the limit key and, per (name, period) in config
/// order, what was left before this request (Kong's `kong.ctx.plugin.usage`).
#[derive(Clone)]
struct Usage {
    ident: u64,
    remaining: Vec<f64>,
}

/// A number as Lua's `tostring` prints it: `10`, `-2`, `2.5`.
fn lua_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

fn number_value(n: f64) -> HeaderValue {
    HeaderValue::from_str(&lua_number(n)).unwrap_or(HeaderValue::from_static("0"))
}

impl ResponseRateLimiting {
    /// `None` when a name cannot be part of a header name (the schema refuses those).
    pub fn new(
        id: Uuid,
        cfg: ResponseRateLimitingConfig,
        counters: Arc<dyn Counters>,
    ) -> Option<Self> {
        let header = HeaderName::from_bytes(cfg.header_name.as_bytes()).ok()?;
        let mut limits = Vec::with_capacity(cfg.limits.len());
        for (name, periods) in &cfg.limits {
            let header_name =
                |kind: &str, period: &str| HeaderName::from_bytes(format!("x-ratelimit-{kind}-{name}{period}").as_bytes()).ok();
            let mut ps = Vec::new();
            for (period, limit) in periods.limits() {
                let (pname, seconds) = PERIODS[period];
                ps.push(PeriodLimit {
                    period,
                    seconds,
                    limit,
                    limit_value: number_value(limit),
                    limit_header: header_name("limit", &format!("-{pname}"))?,
                    remaining_header: header_name("remaining", &format!("-{pname}"))?,
                });
            }
            limits.push(NamedLimit {
                name: name.clone(),
                remaining_header: header_name("remaining", "")?,
                exceeded: format!("API rate limit exceeded for '{name}'"),
                periods: ps,
            });
        }
        Some(ResponseRateLimiting {
            id,
            cfg,
            header,
            limits,
            counters,
        })
    }

    /// Hashes the limit key (Kong's `get_identifier`): the consumer, else its credential,
    /// else the client IP; or the credential, else the IP; or the IP.
    fn identifier(&self, ctx: &Ctx<'_>) -> u64 {
        use crate::ratelimit::{identity_key, KeyBy};
        let by = match self.cfg.limit_by {
            LimitBy::Ip => KeyBy::Ip,
            LimitBy::Consumer => KeyBy::Consumer,
            LimitBy::Credential => KeyBy::Credential,
        };
        identity_key(ctx, by)
    }

    /// One counter per (instance, limit key, name, period).
    fn key(&self, ident: u64, name: &str, period: usize) -> CounterKey {
        CounterKey {
            plugin: self.id.as_u128(),
            period: period as u8,
            ident: xxh3_64_with_seed(name.as_bytes(), ident),
        }
    }
}

/// The costs in an upstream's `X-Kong-Limit` value (`video=1, image=2`), per configured
/// limit (index into `names`, which is sorted). Kong's `parse_header`: items split on `,`,
/// each on `=` into exactly two parts, both trimmed; unknown names and values that are not
/// numbers count nothing; a later item for the same name wins. Costs that are not positive
/// count nothing here (Kong would let an upstream give units back), fractions round up.
pub fn parse_costs(value: &[u8], names: &[&str]) -> Vec<Option<u64>> {
    let mut costs = vec![None; names.len()];
    if value.len() > MAX_HEADER_LEN {
        return costs;
    }
    let Ok(value) = std::str::from_utf8(value) else {
        return costs;
    };
    for item in value.split(',').take(MAX_ITEMS) {
        let mut parts = item.split('=');
        let (Some(name), Some(cost), None) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Ok(at) = names.binary_search(&name.trim()) else {
            continue;
        };
        costs[at] = cost
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|c| c.is_finite() && *c > 0.0)
            .map(|c| (c.ceil() as u64).min(MAX_COST));
    }
    costs
}

impl Plugin for ResponseRateLimiting {
    super::identity!();

    fn access(&self, ctx: &mut Ctx<'_>, req: &mut http::request::Parts) -> Flow {
        let ident = self.identifier(ctx);
        let mut remaining = Vec::with_capacity(self.limits.len() * 2);
        let mut least_left = Vec::with_capacity(self.limits.len());
        for l in &self.limits {
            let mut least: Option<f64> = None;
            for p in &l.periods {
                let used = self
                    .counters
                    .usage(self.key(ident, &l.name, p.period), p.seconds, ctx.now);
                let left = p.limit - used as f64;
                // Kong blocks on exactly 0 left (`lv.remaining == 0`); a limit overshot by a
                // large cost is refused in header_filter instead.
                if self.cfg.block_on_first_violation && left == 0.0 {
                    return Flow::Respond(error_response(
                        StatusCode::TOO_MANY_REQUESTS,
                        &l.exceeded,
                    ));
                }
                least = Some(least.map_or(left, |m: f64| m.min(left)));
                remaining.push(left);
            }
            least_left.push(least.unwrap_or(0.0));
        }
        // For the upstream, as Kong's access.lua says and its spec checks (3.9.3 sends them
        // to the client instead, a regression fixed after it).
        for (l, least) in self.limits.iter().zip(least_left) {
            req.headers
                .insert(l.remaining_header.clone(), number_value(least));
        }
        ctx.state.insert(Usage { ident, remaining });
        Flow::Continue
    }

    fn header_filter(&self, ctx: &mut Ctx<'_>, resp: &mut http::response::Parts) {
        // Nothing kept: access ended the request (Kong returns before touching the response).
        let Some(usage) = ctx.state.remove::<Usage>() else {
            return;
        };
        let names: Vec<&str> = self.limits.iter().map(|l| l.name.as_str()).collect();
        let costs = match resp.headers.get(&self.header) {
            Some(v) => parse_costs(v.as_bytes(), &names),
            None => vec![None; names.len()],
        };
        let mut stop = false;
        let mut left_before = usage.remaining.iter();
        for (l, cost) in self.limits.iter().zip(&costs) {
            let cost = cost.unwrap_or(0) as f64;
            for p in &l.periods {
                let left = left_before.next().copied().unwrap_or(0.0);
                if !self.cfg.hide_client_headers {
                    resp.headers
                        .insert(p.limit_header.clone(), p.limit_value.clone());
                    resp.headers.insert(
                        p.remaining_header.clone(),
                        number_value((left - cost).max(0.0)),
                    );
                }
                if cost > 0.0 && left <= 0.0 {
                    stop = true;
                }
            }
        }
        resp.headers.remove(&self.header);
        if stop {
            // Kong's `kong.response.exit(429)` in header_filter: no body, nothing counted.
            resp.status = StatusCode::TOO_MANY_REQUESTS;
            ctx.replace_body = Some(Bytes::new());
            return;
        }
        for (l, cost) in self.limits.iter().zip(costs) {
            let Some(cost) = cost else { continue };
            for p in &l.periods {
                self.counters.add(
                    self.key(usage.ident, &l.name, p.period),
                    p.seconds,
                    ctx.now,
                    cost,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: [&str; 3] = ["image", "test", "video"];

    // Kong 3.9.3 header_filter.lua `parse_header`; spec/03-plugins/24-response-rate-limiting.
    #[test]
    fn parses_kongs_cost_header() {
        assert_eq!(
            parse_costs(b"video=1, image=2", &NAMES),
            vec![Some(2), None, Some(1)]
        );
        assert_eq!(
            parse_costs(b" video = 3 ,test=10", &NAMES),
            vec![None, Some(10), Some(3)]
        );
        // Unknown names, malformed items and non-numbers count nothing.
        assert_eq!(
            parse_costs(b"audio=1, video, image==1, test=x, =2", &NAMES),
            vec![None, None, None]
        );
        // A later item for the same name wins.
        assert_eq!(
            parse_costs(b"video=1,video=4", &NAMES),
            vec![None, None, Some(4)]
        );
        // Nothing given back, fractions round up.
        assert_eq!(
            parse_costs(b"video=-3,image=0.5,test=0", &NAMES),
            vec![Some(1), None, None]
        );
        assert_eq!(parse_costs(b"", &NAMES), vec![None, None, None]);
    }

    #[test]
    fn cost_header_is_bounded() {
        let long = format!("video=1,{}", "x".repeat(MAX_HEADER_LEN));
        assert_eq!(parse_costs(long.as_bytes(), &NAMES), vec![None, None, None]);
        let many = format!("{}video=1", "a=1,".repeat(MAX_ITEMS));
        assert_eq!(parse_costs(many.as_bytes(), &NAMES), vec![None, None, None]);
        assert_eq!(
            parse_costs(b"video=1e30", &NAMES),
            vec![None, None, Some(MAX_COST)]
        );
        assert_eq!(
            parse_costs(b"video=inf,image=NaN", &NAMES),
            vec![None, None, None]
        );
        assert_eq!(parse_costs(b"video=\xff1", &NAMES), vec![None, None, None]);
    }

    #[test]
    fn numbers_print_as_lua_does() {
        assert_eq!(lua_number(10.0), "10");
        assert_eq!(lua_number(-2.0), "-2");
        assert_eq!(lua_number(2.5), "2.5");
    }
}
