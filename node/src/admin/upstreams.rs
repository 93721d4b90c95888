//! What the Admin API has for upstreams beyond their declared collections (Kong 3.9.3's
//! `kong/api/routes/upstreams.lua`):
//!
//! - `GET /upstreams/{u}/targets` and `…/targets/all`: the upstream's targets newest first,
//!   paged by position (Kong's `page_for_upstream`);
//! - `GET /upstreams/{u}/health`: each target with its health and its addresses', with
//!   `?balancer_health=1` the balancer's as a whole. Beyond Kong, each address also shows the
//!   cluster's view: every live node's own entry and whether the cluster holds it down;
//! - `PUT /upstreams/{u}/targets/{t}[/{address}]/healthy|unhealthy` (204): an operator's mark,
//!   applied here at once and on every other node through the cluster view (no database).

use std::net::SocketAddr;

use axum::extract::{Path, Query, State as AxState};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use http::StatusCode;
use serde_json::{json, Value};
use tollgate_config::entities::{Target, Upstream, DEFAULT_TARGET_PORT};
use tollgate_config::{EntityKind, State};
use uuid::Uuid;

use super::{cors, json_response, message, Ctx, ListQuery};
use crate::balancer::health::{now_ms, Origin};
use crate::balancer::{Balancer, Resolved};

/// How long `/health` waits for a new name target's first resolution.
const RESOLVE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub fn routes(r: Router<Ctx>, paths: &mut cors::Paths) -> Router<Ctx> {
    paths.add("/upstreams/{parent}/targets/all", &["GET"]);
    paths.add("/upstreams/{parent}/health", &["GET"]);
    for p in [
        "/upstreams/{parent}/targets/{key}/healthy",
        "/upstreams/{parent}/targets/{key}/unhealthy",
        "/upstreams/{parent}/targets/{key}/{address}/healthy",
        "/upstreams/{parent}/targets/{key}/{address}/unhealthy",
    ] {
        paths.add(p, &["PUT"]);
    }
    r.route(
        "/upstreams/{parent}/targets/all",
        get(
            |AxState(ctx): AxState<Ctx>, Path(u): Path<String>, Query(q): Query<ListQuery>| async move {
                let base = format!("/upstreams/{u}/targets/all");
                list_targets(ctx, u, q, base, false).await
            },
        ),
    )
    .route("/upstreams/{parent}/health", get(health))
    .route(
        "/upstreams/{parent}/targets/{key}/healthy",
        put(|ctx: AxState<Ctx>, Path((u, t)): Path<(String, String)>| mark(ctx, u, t, None, true)),
    )
    .route(
        "/upstreams/{parent}/targets/{key}/unhealthy",
        put(|ctx: AxState<Ctx>, Path((u, t)): Path<(String, String)>| mark(ctx, u, t, None, false)),
    )
    .route(
        "/upstreams/{parent}/targets/{key}/{address}/healthy",
        put(|ctx: AxState<Ctx>, Path((u, t, a)): Path<(String, String, String)>| mark(ctx, u, t, Some(a), true)),
    )
    .route(
        "/upstreams/{parent}/targets/{key}/{address}/unhealthy",
        put(|ctx: AxState<Ctx>, Path((u, t, a)): Path<(String, String, String)>| mark(ctx, u, t, Some(a), false)),
    )
}

/// An upstream's targets, newest first (Kong orders by `created_at`, then id).
fn targets_of(st: &State, upstream: Uuid) -> Vec<Target> {
    let mut ts: Vec<Target> = st
        .all::<Target>()
        .filter(|t| t.upstream.id == upstream)
        .cloned()
        .collect();
    ts.sort_by_key(|t| std::cmp::Reverse((t.created_at, t.id)));
    ts
}

fn upstream_id(st: &State, key: &str) -> Option<Uuid> {
    st.resolve(EntityKind::Upstream, key)
        .filter(|id| st.one::<Upstream>(*id).is_some())
}

/// A page of targets: `offset` is a position, as Kong's. `/targets/all`'s `next` keeps no
/// `size` (Kong's).
pub async fn list_targets(
    ctx: Ctx,
    upstream: String,
    q: ListQuery,
    base: String,
    keep_size: bool,
) -> Response {
    let size = match q.page_size() {
        Ok(n) => n,
        Err(r) => return r,
    };
    let from = match q.offset.as_deref().map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return q.bad_offset(),
    };
    let all = ctx
        .replicator
        .read(|st| upstream_id(st, &upstream).map(|id| targets_of(st, id)))
        .await;
    let Some(all) = all else {
        return message(StatusCode::NOT_FOUND, "Not found");
    };
    let page: Vec<Value> = all
        .iter()
        .skip(from)
        .take(size)
        .map(|t| tollgate_config::Entity::Target(t.clone()).to_json())
        .collect();
    let more = all.len() > from.saturating_add(size);
    let (next, offset) = if more {
        let at = from.saturating_add(size).to_string();
        let mut next = format!("{base}?offset={at}");
        if keep_size && q.size.is_some() {
            next.push_str(&format!("&size={size}"));
        }
        (Value::String(next), Value::String(at))
    } else {
        (Value::Null, Value::Null)
    };
    let mut body = json!({"data": page, "next": next});
    if !offset.is_null() {
        body["offset"] = offset;
    }
    json_response(StatusCode::OK, &body)
}

#[derive(serde::Deserialize, Default)]
struct HealthQuery {
    balancer_health: Option<String>,
    size: Option<String>,
    offset: Option<String>,
}

async fn health(
    AxState(ctx): AxState<Ctx>,
    Path(u): Path<String>,
    Query(q): Query<HealthQuery>,
) -> Response {
    let found = ctx
        .replicator
        .read(|st| upstream_id(st, &u).map(|id| (id, targets_of(st, id))))
        .await;
    let Some((id, targets)) = found else {
        return message(StatusCode::NOT_FOUND, "Not found");
    };
    let node_id = ctx.node_uuid.to_string();
    let Some(b) = ctx.balancers.get(id) else {
        return json_response(
            StatusCode::OK,
            &json!({"data": [], "next": null, "node_id": node_id}),
        );
    };
    // A name target just added is answered with its resolution, not as unresolved.
    b.resolved(RESOLVE_WAIT).await;
    if matches!(q.balancer_health.as_deref(), Some("1")) {
        return json_response(
            StatusCode::OK,
            &json!({"data": balancer_health(&b), "next": null, "node_id": node_id}),
        );
    }
    let lq = ListQuery {
        size: q.size,
        offset: q.offset,
        ..Default::default()
    };
    let size = match lq.page_size() {
        Ok(n) => n,
        Err(r) => return r,
    };
    let from = lq
        .offset
        .as_deref()
        .and_then(|o| o.parse::<usize>().ok())
        .unwrap_or(0);
    let entries = b.targets();
    let data: Vec<Value> = targets
        .iter()
        .skip(from)
        .take(size)
        .map(|t| {
            let mut v = tollgate_config::Entity::Target(t.clone()).to_json();
            let entry = entries.iter().find(|e| e.target.id == t.id);
            let (health, data) = target_health(&ctx, &b, t, entry);
            v["health"] = json!(health);
            v["data"] = data;
            v
        })
        .collect();
    let more = targets.len() > from.saturating_add(size);
    let mut body = json!({
        "data": data,
        "next": if more { json!(format!("/upstreams/{u}/health?offset={}", from.saturating_add(size))) } else { Value::Null },
        "node_id": node_id,
    });
    if more {
        body["offset"] = json!(from.saturating_add(size).to_string());
    }
    json_response(StatusCode::OK, &body)
}

/// One address's health word, as Kong's.
fn address_health(checks: bool, weight: u32, p: &crate::balancer::Peer) -> &'static str {
    if weight == 0 || !checks {
        "HEALTHCHECKS_OFF"
    } else if p.state.health.available() {
        "HEALTHY"
    } else {
        "UNHEALTHY"
    }
}

fn target_health(
    ctx: &Ctx,
    b: &Balancer,
    t: &Target,
    entry: Option<&crate::balancer::TargetEntry>,
) -> (&'static str, Value) {
    let (host, port) = t.host_port();
    let set = b.set.load();
    let peers: Vec<_> = set.peers.iter().filter(|p| p.target_id == t.id).collect();
    let checks = b.checks_enabled();
    let dns = match entry.map(|e| &e.resolved) {
        Some(Resolved::Failed(e)) => format!("ERROR: {e}"),
        Some(Resolved::Pending) | None => "PENDING".to_string(),
        Some(Resolved::Addresses(ips)) if ips.first().is_some_and(|i| i.is_ipv6()) => "AAAA".into(),
        Some(Resolved::Addresses(_)) => "A".into(),
    };
    let addresses: Vec<Value> = peers
        .iter()
        .map(|p| {
            let nodes: serde_json::Map<String, Value> = ctx
                .health_view
                .entries(&ctx.balancers, b.id, p.addr)
                .into_iter()
                .map(|(n, e)| {
                    (
                        n.to_string(),
                        json!({
                            "health": if e.healthy { "HEALTHY" } else { "UNHEALTHY" },
                            "since_ms": e.at_ms,
                            "cause": cause(e.origin),
                        }),
                    )
                })
                .collect();
            json!({
                "ip": p.addr.ip().to_string(),
                "port": p.addr.port(),
                "weight": p.weight,
                "health": address_health(checks, p.weight, p),
                "cluster": {
                    "held_down": p.state.health.cluster_down(),
                    "probed_by": ctx.health_view.owner(b.id, p.addr),
                    "nodes": nodes,
                },
            })
        })
        .collect();
    let total: u64 = peers.iter().map(|p| p.weight as u64).sum();
    let available: u64 = peers
        .iter()
        .filter(|p| p.state.health.available())
        .map(|p| p.weight as u64)
        .sum();
    let health = if peers.is_empty() {
        "DNS_ERROR"
    } else {
        let words: Vec<&str> = peers
            .iter()
            .map(|p| address_health(checks, p.weight, p))
            .collect();
        if words.contains(&"HEALTHY") {
            "HEALTHY"
        } else if words.contains(&"UNHEALTHY") {
            "UNHEALTHY"
        } else {
            "HEALTHCHECKS_OFF"
        }
    };
    let data = json!({
        "host": host,
        "port": port,
        "dns": dns,
        "nodeWeight": t.weight,
        "weight": {"total": total, "available": available, "unavailable": total - available},
        "addresses": addresses,
    });
    (health, data)
}

fn cause(o: Origin) -> &'static str {
    match o {
        Origin::Initial => "initial",
        Origin::Passive => "passive",
        Origin::Active => "active",
        Origin::Manual => "operator",
    }
}

fn balancer_health(b: &Balancer) -> Value {
    let (healthy, total, available) = b.balancer_health();
    let word = if healthy { "HEALTHY" } else { "UNHEALTHY" };
    let set = b.set.load();
    let hosts: Vec<Value> = b
        .targets()
        .iter()
        .map(|e| {
            let peers: Vec<_> = set
                .peers
                .iter()
                .filter(|p| p.target_id == e.target.id)
                .collect();
            json!({
                "host": e.host,
                "port": e.port,
                "nodeWeight": e.target.weight,
                "addresses": peers.iter().map(|p| json!({
                    "ip": p.addr.ip().to_string(),
                    "port": p.addr.port(),
                    "weight": p.weight,
                    "healthy": p.state.health.available(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "id": b.id,
        "health": if b.checks_enabled() { word } else { "HEALTHCHECKS_OFF" },
        "balancer_health": word,
        "details": {
            "healthy": healthy,
            "weight": {"total": total, "available": available, "unavailable": total - available},
            "hosts": hosts,
        },
    })
}

/// `PUT …/healthy|unhealthy`: the target must belong to the upstream; an address narrows
/// the mark to it (its port defaults to 8000, as Kong's).
async fn mark(
    AxState(ctx): AxState<Ctx>,
    u: String,
    t: String,
    address: Option<String>,
    healthy: bool,
) -> Response {
    let found = ctx
        .replicator
        .read(|st| {
            let up = upstream_id(st, &u)?;
            let id = match Uuid::parse_str(&t) {
                Ok(id) => Some(id),
                Err(_) => st.resolve_in(EntityKind::Target, &t, Some(("upstream", up))),
            }?;
            st.one::<Target>(id)
                .filter(|x| x.upstream.id == up)
                .map(|x| (up, x.id))
        })
        .await;
    let Some((up, target)) = found else {
        return message(StatusCode::NOT_FOUND, "Not found");
    };
    let addr = match address.as_deref().map(parse_address) {
        None => None,
        Some(Ok(a)) => Some(a),
        Some(Err(m)) => return message(StatusCode::BAD_REQUEST, &m),
    };
    let Some(b) = ctx.balancers.get(up) else {
        return message(
            StatusCode::BAD_REQUEST,
            "no balancer found for the upstream",
        );
    };
    // Kong: with health checks off there is no health checker to mark.
    if !b.checks_enabled() {
        let msg = format!("no healthchecker found for {}", b.name());
        return message(StatusCode::BAD_REQUEST, &msg);
    }
    b.resolved(RESOLVE_WAIT).await;
    let n = b.set_health(target, addr, healthy, now_ms(), Origin::Manual);
    if n == 0 && addr.is_some() {
        return message(StatusCode::BAD_REQUEST, "address not found in the target");
    }
    StatusCode::NO_CONTENT.into_response()
}

fn parse_address(a: &str) -> Result<SocketAddr, String> {
    let h = tollgate_config::address::normalize(a).map_err(|e| format!("invalid address: {e}"))?;
    let ip = h
        .host
        .parse()
        .map_err(|_| format!("invalid address: {a} is not an IP address"))?;
    Ok(SocketAddr::new(ip, h.port.unwrap_or(DEFAULT_TARGET_PORT)))
}
