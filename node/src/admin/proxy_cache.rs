//! The proxy-cache plugin's Admin API (Kong 3.9.3's `kong/plugins/proxy-cache/api.lua`):
//! `DELETE /proxy-cache` flushes the cache, `GET|DELETE /proxy-cache/{cache_key}` reads or
//! purges one entry, `GET|DELETE /proxy-cache/{plugin_id}/caches/{cache_key}` the same through
//! one plugin instance (404 when it is not a proxy-cache plugin). Found: 200 with the stored
//! entry, or 204; not found: 404 without a body. Kong answers 404 to the key endpoints while
//! no proxy-cache plugin is configured, and so does this.
//!
//! Cluster-wide purges (beyond Kong, whose nodes each keep their own cache and hear of purges
//! through database-polled cluster events): a flush or a purge through any node is applied on
//! this node and sent to every other member as a notice ([`tollgate_cluster::notice`]), and
//! the answer waits for their acknowledgements (at most two seconds). Guarantee: **a purge
//! answered 204 has been applied on this node and on every member that was reachable; a
//! member that was not (logged as a warning) was down or cut off: one that was down starts
//! with an empty cache, one that was cut off keeps its entries until they expire.** A key
//! purge answers 204 when any node held the entry. Reads (`GET`) show this node's cache only.

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::delete;
use axum::Router;
use tollgate_config::EntityKind;
use uuid::Uuid;

use super::{json_response, Ctx};
use crate::plugins::proxy_cache::{cache, purge_notice, PURGED};

const NAME: &str = "proxy-cache";

pub fn routes(r: Router<Ctx>, paths: &mut super::cors::Paths) -> Router<Ctx> {
    paths.add("/proxy-cache", &["DELETE"]);
    paths.add("/proxy-cache/{key}", &["GET", "DELETE"]);
    paths.add("/proxy-cache/{plugin}/caches/{key}", &["GET", "DELETE"]);
    r.route("/proxy-cache", delete(flush))
        .route("/proxy-cache/{key}", delete(purge).get(read))
        .route(
            "/proxy-cache/{plugin}/caches/{key}",
            delete(purge_through).get(read_through),
        )
}

fn not_found() -> Response {
    StatusCode::NOT_FOUND.into_response()
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Whether some proxy-cache plugin is configured (with `id`, that one).
async fn configured(ctx: &Ctx, id: Option<Uuid>) -> bool {
    ctx.replicator
        .read(|st| {
            st.list(EntityKind::Plugin).any(|e| match e {
                tollgate_config::Entity::Plugin(p) => {
                    p.name == NAME && id.is_none_or(|id| p.id == id)
                }
                _ => false,
            })
        })
        .await
}

/// Sends a purge to the other members; whether one of them held the entry.
async fn broadcast(ctx: &Ctx, plugin: Option<Uuid>, key: Option<&str>) -> bool {
    let d = ctx.replicator.broadcast(purge_notice(plugin, key)).await;
    for (id, why) in &d.missed {
        tracing::warn!(node = id, error = %why, key = key.unwrap_or("(all)"), "proxy-cache purge did not reach a member");
    }
    d.reached
        .iter()
        .any(|(_, answer)| answer.as_ref() == PURGED)
}

async fn flush(AxState(ctx): AxState<Ctx>) -> Response {
    cache().clear();
    broadcast(&ctx, None, None).await;
    StatusCode::NO_CONTENT.into_response()
}

async fn read(AxState(ctx): AxState<Ctx>, Path(key): Path<String>) -> Response {
    if !configured(&ctx, None).await {
        return not_found();
    }
    match cache().get(&key, now()) {
        Some(e) => json_response(StatusCode::OK, &e.to_json()),
        None => not_found(),
    }
}

async fn purge(AxState(ctx): AxState<Ctx>, Path(key): Path<String>) -> Response {
    if !configured(&ctx, None).await {
        return not_found();
    }
    purged(&ctx, None, &key).await
}

async fn purged(ctx: &Ctx, plugin: Option<Uuid>, key: &str) -> Response {
    let here = cache().remove(key, now());
    let elsewhere = broadcast(ctx, plugin, Some(key)).await;
    if here || elsewhere {
        StatusCode::NO_CONTENT.into_response()
    } else {
        not_found()
    }
}

/// The id in a `/proxy-cache/{plugin}/…` path, when it names a configured proxy-cache.
async fn configured_plugin(ctx: &Ctx, plugin: &str) -> Option<Uuid> {
    let id = Uuid::parse_str(plugin).ok()?;
    configured(ctx, Some(id)).await.then_some(id)
}

async fn read_through(
    AxState(ctx): AxState<Ctx>,
    Path((plugin, key)): Path<(String, String)>,
) -> Response {
    if configured_plugin(&ctx, &plugin).await.is_none() {
        return not_found();
    }
    match cache().get(&key, now()) {
        Some(e) => json_response(StatusCode::OK, &e.to_json()),
        None => not_found(),
    }
}

async fn purge_through(
    AxState(ctx): AxState<Ctx>,
    Path((plugin, key)): Path<(String, String)>,
) -> Response {
    match configured_plugin(&ctx, &plugin).await {
        Some(id) => purged(&ctx, Some(id), &key).await,
        None => not_found(),
    }
}
