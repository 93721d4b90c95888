//! The Admin API, compatible with Kong 3.x: the same paths, JSON shapes, status codes and error
//! bodies, so a Kong user's curl commands work unchanged.
//!
//! Reads are served from this node's applied state. Every write becomes one
//! [`tollgate_config::Command`] handed to the replicator; its answer (the entity, or the apply
//! error mapped to Kong's error body) is what the client gets. When a write returns, the data
//! plane already serves it (the apply hook has swapped the snapshot).

// Handlers return a ready Kong-shaped `Response` as their error: it is the natural error type
// here, and the Admin API is not a hot path.
#![allow(clippy::result_large_err)]

mod body;
mod certificates;
pub mod cors;
pub mod guard;
mod proxy_cache;
mod schemas;
mod tagged;
mod tags;
mod upstreams;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, MethodRouter};
use axum::Router;
use body::{Limited, MAX_CONFIG_BODY, MAX_ENTITY_BODY};
use rand::distr::{Alphanumeric, SampleString};
use serde_json::{json, Value};
use tollgate_cluster::discovery::Discovery;
use tollgate_cluster::{ClusterNode, ProposeError};
use tollgate_config::declarative;
use tollgate_config::input::{self, Stamp};
use tollgate_config::schema::BuildCx;
use tollgate_config::{
    Applied, ApplyError, Command, Entity, EntityKind, FieldErrors, PutMode, State,
};
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::snapshot::SnapshotHandle;

/// What the Admin API works with.
/// The Kong release whose Admin API this one implements.
pub const KONG_VERSION: &str = "3.9.3";

pub struct AdminCtx {
    /// The Raft id (an integer, fixed in the cluster's membership).
    pub node_id: u64,
    /// Kong's `node_id`: a UUID made on the node's first start and kept in its data dir.
    pub node_uuid: Uuid,
    /// The cluster plane's credential mode, and who was refused on it.
    pub cluster_auth: (&'static str, Arc<tollgate_cluster::auth::Rejections>),
    pub replicator: Arc<ClusterNode>,
    pub discovery: Arc<Discovery>,
    pub metrics: Arc<Metrics>,
    pub snapshots: Arc<SnapshotHandle>,
    pub balancers: Arc<crate::balancer::Balancers>,
    pub health_view: Arc<crate::balancer::cluster::ClusterHealth>,
    pub guard: guard::Guard,
    pub cors: cors::Cors,
    pub proxy_listen: String,
    pub admin_listen: String,
}

type Ctx = Arc<AdminCtx>;

/// An entity write's body.
type EntityBody = Limited<MAX_ENTITY_BODY>;

fn json_response(status: StatusCode, v: &Value) -> Response {
    let mut r = (status, v.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

fn message(status: StatusCode, msg: &str) -> Response {
    json_response(status, &json!({ "message": msg }))
}

fn apply_error(e: &ApplyError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    json_response(status, &e.to_json())
}

fn schema_error(e: FieldErrors) -> Response {
    apply_error(&ApplyError::Schema(e))
}

fn propose_error(e: ProposeError) -> Response {
    match e {
        ProposeError::Rejected(e) => apply_error(&e),
        ProposeError::Unavailable(m) => message(StatusCode::SERVICE_UNAVAILABLE, &m),
        e @ ProposeError::TooLarge { .. } => message(StatusCode::PAYLOAD_TOO_LARGE, &e.to_string()),
        ProposeError::Internal(m) => {
            tracing::error!(error = %m, "configuration write failed");
            message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "An unexpected error occurred",
            )
        }
    }
}

/// The first value of `name` in a raw query string.
fn query_arg(q: &Option<String>, name: &str) -> Option<String> {
    form_urlencoded::parse(q.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn fresh_stamp(existing: Option<(Uuid, i64)>) -> Stamp {
    Stamp {
        id: existing.map(|e| e.0).unwrap_or_else(Uuid::new_v4),
        now: now(),
        now_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
        created_at: existing.map(|e| e.1),
        // Kong generates 32 alphanumeric characters.
        generated_key: Alphanumeric.sample_string(&mut rand::rng(), 32),
        generated_secret: Alphanumeric.sample_string(&mut rand::rng(), 32),
    }
}

/// Which collection a URL addresses: a kind, maybe nested under a parent through one of its
/// declared references (`/consumers/{c}/acls` is `acls` under `consumer`).
#[derive(Debug, Clone, Copy)]
struct Collection {
    kind: EntityKind,
    parent: Option<(&'static str, EntityKind)>,
}

impl Collection {
    /// Whether `e` lives under the parent `pid`.
    fn holds(&self, e: &Entity, pid: Option<Uuid>) -> bool {
        match (self.parent, pid) {
            (Some((field, _)), Some(pid)) => e.field(field).id() == Some(pid),
            _ => true,
        }
    }
}

fn build(
    c: Collection,
    body: &Value,
    stamp: &Stamp,
    st: &State,
    parent: Option<Uuid>,
    transformed: bool,
) -> Result<Entity, FieldErrors> {
    let cx = BuildCx {
        stamp,
        state: st,
        parent: c.parent.zip(parent).map(|((field, _), id)| (field, id)),
        transform: !transformed,
    };
    c.kind.build(body, &cx)
}

/// Kong's transformations, done before the state is read: a basic-auth password in the body
/// is hashed here, off the runtime's threads (argon2id takes tens of milliseconds, which
/// must not hold the state's lock). Returns whether the body now holds transformed values.
async fn transform(c: Collection, body: &mut Value) -> bool {
    if c.kind != EntityKind::BasicAuth {
        return false;
    }
    let Some(clear) = body
        .get("password")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return false;
    };
    let seed = Alphanumeric.sample_string(&mut rand::rng(), 32);
    let hashed = tokio::task::spawn_blocking(move || {
        tollgate_config::password::hash(&clear, &seed, Uuid::new_v4())
    })
    .await;
    match hashed {
        Ok(h) => {
            body["password"] = Value::String(h);
            true
        }
        Err(_) => false,
    }
}

/// Resolves the parent from the URL, or answers 404.
fn parent_id(st: &State, c: Collection, key: Option<&str>) -> Result<Option<Uuid>, Response> {
    match (c.parent, key) {
        (Some((_, pk)), Some(k)) => st
            .resolve(pk, k)
            .map(Some)
            .ok_or_else(|| message(StatusCode::NOT_FOUND, "Not found")),
        _ => Ok(None),
    }
}

/// Finds the addressed entity (and checks it is under the parent), or `None`.
fn find<'s>(st: &'s State, c: Collection, parent: Option<Uuid>, key: &str) -> Option<&'s Entity> {
    let scope = c.parent.zip(parent).map(|((field, _), id)| (field, id));
    let id = st.resolve_in(c.kind, key, scope)?;
    st.get(c.kind, id).filter(|e| c.holds(e, parent))
}

/// An entity write's body as a JSON object, with JSON's types kept (see
/// [`tollgate_config::schema::strict_strings`]).
fn read_body(c: Collection, headers: &HeaderMap, bytes: &Bytes) -> Result<Value, Response> {
    let body = body::parse(headers, bytes).map_err(|e| message(StatusCode::BAD_REQUEST, &e.0))?;
    if !body::is_form(headers) {
        tollgate_config::schema::strict_strings(c.kind.decl(), &body).map_err(schema_error)?;
    }
    Ok(body)
}

async fn propose(ctx: &Ctx, cmd: Command) -> Result<Applied, Response> {
    ctx.replicator.propose(cmd).await.map_err(propose_error)
}

#[derive(serde::Deserialize, Default)]
struct ListQuery {
    size: Option<String>,
    offset: Option<String>,
    tags: Option<String>,
    consistent: Option<String>,
    /// `/consumers?custom_id=`: Kong's lookup by custom id (one entity or none, no paging).
    custom_id: Option<String>,
}

/// Kong's `?tags=` filter: all of `a,b`, or any of `a/b`.
struct TagFilter {
    tags: Vec<String>,
    any: bool,
}

impl ListQuery {
    /// `size`: 1 to 1000, 100 when absent (Kong's two messages: not a number, out of range).
    fn page_size(&self) -> Result<usize, Response> {
        let invalid = |m: &str| {
            json_response(
                StatusCode::BAD_REQUEST,
                &json!({"code": 9, "name": "invalid size", "message": m}),
            )
        };
        match self.size.as_deref().map(|s| s.trim().parse::<f64>()) {
            None => Ok(100),
            Some(Ok(n)) if n.fract() == 0.0 && (1.0..=1000.0).contains(&n) => Ok(n as usize),
            Some(Ok(_)) => Err(invalid("size must be an integer between 1 and 1000")),
            Some(Err(_)) => Err(invalid("size must be a number")),
        }
    }

    /// The `tags` filter, or Kong's 400 (code 11) for an empty or mixed one.
    fn tag_filter(&self) -> Result<Option<TagFilter>, Response> {
        let invalid = |why: &str| {
            json_response(
                StatusCode::BAD_REQUEST,
                &json!({"code": 11, "name": "invalid options", "message": format!("invalid option (tags: {why})"), "options": {"tags": why}}),
            )
        };
        let Some(t) = self.tags.as_deref() else {
            return Ok(None);
        };
        if t.is_empty() {
            return Err(invalid("cannot be null"));
        }
        // A tag is printable text without `,` or `/`; bytes that were not UTF-8 arrive as
        // U+FFFD from the query decoder.
        let tag_ok =
            |s: &str| !s.is_empty() && !s.chars().any(|c| c.is_control() || c == '\u{FFFD}');
        let (sep, any) = if t.contains('/') {
            ('/', true)
        } else {
            (',', false)
        };
        let tags: Vec<String> = t.split(sep).map(str::to_string).collect();
        let last_empty = tags.len() > 1 && tags.last().is_some_and(String::is_empty);
        let tags: Vec<String> = if last_empty {
            tags[..tags.len() - 1].to_vec()
        } else {
            tags
        };
        if (any && t.contains(',')) || !tags.iter().all(|s| tag_ok(s)) {
            return Err(invalid("invalid filter syntax"));
        }
        Ok(Some(TagFilter { tags, any }))
    }

    /// Kong's answer to an offset it cannot read.
    fn bad_offset(&self) -> Response {
        let o = self.offset.clone().unwrap_or_default();
        json_response(
            StatusCode::BAD_REQUEST,
            &json!({"code": 7, "name": "invalid offset", "message": format!("'{o}' is not a valid offset: bad base64 encoding")}),
        )
    }
}

#[derive(serde::Deserialize, Default)]
struct ItemQuery {
    consistent: Option<String>,
}

/// `?consistent=true`: confirm leadership with a quorum and catch up before reading.
async fn barrier(ctx: &Ctx, consistent: Option<&str>) -> Result<(), Response> {
    match consistent {
        Some("true" | "1") => ctx
            .replicator
            .linearizable_barrier()
            .await
            .map_err(propose_error),
        _ => Ok(()),
    }
}

async fn list(
    ctx: Ctx,
    c: Collection,
    parent_key: Option<String>,
    q: ListQuery,
    path: String,
) -> Response {
    if let Err(r) = barrier(&ctx, q.consistent.as_deref()).await {
        return r;
    }
    let size = match q.page_size() {
        Ok(n) => n,
        Err(r) => return r,
    };
    let after = match q.offset.as_deref().map(Uuid::parse_str) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return q.bad_offset(),
    };
    // An upstream's targets are paged newest first, by position (Kong's `page_for_upstream`).
    if let (EntityKind::Target, Some(_), Some(u)) = (c.kind, c.parent, parent_key.clone()) {
        return upstreams::list_targets(ctx, u, q, path, true).await;
    }
    // Kong ignores `tags` on nested collections (Kong/kong#6779), and pages them without it.
    let filter = match (c.parent, q.tag_filter()) {
        (Some(_), _) => None,
        (None, Ok(f)) => f,
        (None, Err(r)) => return r,
    };
    if let (EntityKind::Consumer, Some(cid)) = (c.kind, q.custom_id.as_deref()) {
        return by_custom_id(&ctx, cid).await;
    }
    let (want, any) = filter.map(|f| (f.tags, f.any)).unwrap_or_default();
    let res = ctx
        .replicator
        .read(|st| {
            let parent = parent_id(st, c, parent_key.as_deref())?;
            let items: Vec<&Entity> = st
                .list(c.kind)
                .filter(|e| c.holds(e, parent))
                .filter(|e| {
                    want.is_empty() || {
                        let have = e.tags().unwrap_or_default();
                        if any {
                            want.iter().any(|t| have.contains(t))
                        } else {
                            want.iter().all(|t| have.contains(t))
                        }
                    }
                })
                .filter(|e| after.map(|a| e.id() > a).unwrap_or(true))
                .take(size + 1)
                .collect();
            let more = items.len() > size;
            let last = items.get(size.wrapping_sub(1)).map(|e| e.id());
            let page: Vec<Value> = items
                .iter()
                .take(size)
                .map(|e| certificates::render(st, e))
                .collect();
            Ok::<_, Response>((page, more, last))
        })
        .await;
    let (page, more, last) = match res {
        Ok(i) => i,
        Err(r) => return r,
    };
    let (next, offset) = if let (true, Some(last)) = (more, last) {
        let last = last.to_string();
        // Kong's order: offset, tags (percent-encoded), size; nested collections keep neither.
        let mut next = format!("{path}?offset={last}");
        if c.parent.is_none() {
            if let Some(t) = &q.tags {
                next.push_str("&tags=");
                next.extend(
                    form_urlencoded::byte_serialize(t.as_bytes()).map(|p| p.replace('+', "%20")),
                );
            }
            if q.size.is_some() {
                next.push_str(&format!("&size={size}"));
            }
        }
        (Some(next), Some(last))
    } else {
        (None, None)
    };
    json_response(
        StatusCode::OK,
        &tollgate_config::state::page_json(page, next, offset),
    )
}

/// `GET /consumers?custom_id=`: the consumer with that custom id, if any.
async fn by_custom_id(ctx: &Ctx, cid: &str) -> Response {
    if cid.is_empty() {
        return message(
            StatusCode::BAD_REQUEST,
            "custom_id must be an unempty string",
        );
    }
    let found: Vec<Value> = ctx
        .replicator
        .read(|st| {
            st.all::<tollgate_config::Consumer>()
                .filter(|c| c.custom_id.as_deref() == Some(cid))
                .map(|c| Entity::Consumer(c.clone()).to_json())
                .collect()
        })
        .await;
    json_response(StatusCode::OK, &json!({"data": found, "next": null}))
}

async fn create(
    ctx: Ctx,
    c: Collection,
    parent_key: Option<String>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Response {
    let mut body = match read_body(c, &headers, &bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let snis = match c.kind {
        EntityKind::Certificate => match certificates::take_snis(&mut body) {
            Ok(s) => s,
            Err(r) => return r,
        },
        _ => None,
    };
    let transformed = transform(c, &mut body).await;
    let built = ctx
        .replicator
        .read(|st| {
            let parent = parent_id(st, c, parent_key.as_deref())?;
            let e = build(c, &body, &fresh_stamp(None), st, parent, transformed)
                .map_err(schema_error)?;
            certificates::command(st, e, PutMode::Create, snis)
        })
        .await;
    let cmd = match built {
        Ok(c) => c,
        Err(r) => return r,
    };
    written(&ctx, cmd, StatusCode::CREATED).await
}

/// Proposes a write of one entity (maybe with what goes with it) and answers with the entity
/// as it now stands.
async fn written(ctx: &Ctx, cmd: Command, status: StatusCode) -> Response {
    let id = match &cmd {
        Command::Put { entity, .. } => (entity.kind(), entity.id()),
        Command::Batch(cmds) => match cmds.first() {
            Some(Command::Put { entity, .. }) => (entity.kind(), entity.id()),
            _ => {
                return message(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "An unexpected error occurred",
                )
            }
        },
        _ => {
            return message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "An unexpected error occurred",
            )
        }
    };
    match propose(ctx, cmd).await {
        Ok(Applied::Put(e)) if id.0 != EntityKind::Certificate => {
            json_response(status, &e.to_json())
        }
        Ok(_) => {
            let shown = ctx
                .replicator
                .read(|st| st.get(id.0, id.1).map(|e| certificates::render(st, e)))
                .await;
            match shown {
                Some(v) => json_response(status, &v),
                None => message(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "An unexpected error occurred",
                ),
            }
        }
        Err(r) => r,
    }
}

async fn read_one(
    ctx: Ctx,
    c: Collection,
    parent_key: Option<String>,
    key: String,
    q: ItemQuery,
) -> Response {
    if let Err(r) = barrier(&ctx, q.consistent.as_deref()).await {
        return r;
    }
    ctx.replicator
        .read(|st| {
            let parent = match parent_id(st, c, parent_key.as_deref()) {
                Ok(p) => p,
                Err(r) => return r,
            };
            match find(st, c, parent, &key) {
                Some(e) => json_response(StatusCode::OK, &certificates::render(st, e)),
                None if c.kind == EntityKind::Certificate && Uuid::parse_str(&key).is_err() => {
                    message(StatusCode::NOT_FOUND, "SNI not found")
                }
                None => message(StatusCode::NOT_FOUND, "Not found"),
            }
        })
        .await
}

async fn update(
    ctx: Ctx,
    c: Collection,
    parent_key: Option<String>,
    key: String,
    headers: HeaderMap,
    bytes: Bytes,
    upsert: bool,
) -> Response {
    let mut body = match read_body(c, &headers, &bytes) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let snis = match c.kind {
        EntityKind::Certificate => match certificates::take_snis(&mut body) {
            Ok(s) => s,
            Err(r) => return r,
        },
        _ => None,
    };
    // Kong's PUT on an upstream's target updates it (404 when missing), never creates.
    let upsert = upsert && !(c.kind == EntityKind::Target && c.parent.is_some());
    let transformed = transform(c, &mut body).await;
    let built = ctx
        .replicator
        .read(|st| {
            let mut snis = snis;
            let parent = parent_id(st, c, parent_key.as_deref())?;
            let existing = find(st, c, parent, &key);
            let entity = match (existing, upsert) {
                (None, false) => return Err(message(StatusCode::NOT_FOUND, "Not found")),
                (Some(e), false) => {
                    let mut merged = input::merge_patch(&e.to_json(), &body);
                    merged["id"] = Value::String(e.id().to_string());
                    // Kong: a PATCH under a parent that names the parent's field itself (even
                    // as null, to detach) is taken as written.
                    let named = c.parent.is_some_and(|(field, _)| body.get(field).is_some());
                    build(
                        c,
                        &merged,
                        &fresh_stamp(Some((e.id(), e.created_at()))),
                        st,
                        if named { None } else { parent },
                        transformed,
                    )
                }
                (existing, true) => {
                    // PUT /{kind}/{id or name}: the URL names the entity.
                    let id = existing
                        .map(Entity::id)
                        .or_else(|| Uuid::parse_str(&key).ok());
                    if Uuid::parse_str(&key).is_err() {
                        match c.kind.decl().endpoint_key {
                            Some(field) => body[field] = Value::String(key.clone()),
                            // `PUT /certificates/{sni}` creates the certificate with that SNI.
                            None if c.kind == EntityKind::Certificate && existing.is_some() => {}
                            None if c.kind == EntityKind::Certificate => {
                                tollgate_config::entities::check_wildcard_host(&key).map_err(
                                    |m| {
                                        message(
                                            StatusCode::BAD_REQUEST,
                                            &format!("invalid SNI '{key}': {m}"),
                                        )
                                    },
                                )?;
                                let names = snis.get_or_insert_with(Vec::new);
                                if !names.contains(&key) {
                                    names.push(key.clone());
                                    names.sort();
                                }
                            }
                            None => return Err(message(StatusCode::NOT_FOUND, "Not found")),
                        }
                    }
                    let stamp = fresh_stamp(existing.map(|e| (e.id(), e.created_at())));
                    let stamp = Stamp {
                        id: id.unwrap_or(stamp.id),
                        ..stamp
                    };
                    body["id"] = Value::String(stamp.id.to_string());
                    let built = build(c, &body, &stamp, st, parent, transformed);
                    // Kong checks the URL's name first: a bad one is its "invalid unique
                    // name", not a schema violation.
                    if let (Err(e), Some(field)) = (&built, c.kind.decl().endpoint_key) {
                        if let (Some(Value::String(m)), true) =
                            (e.0.get(field), Uuid::parse_str(&key).is_err())
                        {
                            return Err(json_response(
                                StatusCode::BAD_REQUEST,
                                &json!({"code": 10, "name": "invalid unique name", "message": m}),
                            ));
                        }
                    }
                    built
                }
            };
            let mode = if upsert {
                PutMode::Upsert
            } else {
                PutMode::Update
            };
            certificates::command(st, entity.map_err(schema_error)?, mode, snis)
        })
        .await;
    match built {
        Ok(cmd) => written(&ctx, cmd, StatusCode::OK).await,
        Err(r) => r,
    }
}

async fn remove(ctx: Ctx, c: Collection, parent_key: Option<String>, key: String) -> Response {
    let target = ctx
        .replicator
        .read(|st| {
            let parent = parent_id(st, c, parent_key.as_deref())?;
            Ok::<_, Response>(find(st, c, parent, &key).map(|e| e.id()))
        })
        .await;
    match target {
        Err(r) => r,
        // Kong answers 204 to deleting what is not there, but 404 under a parent
        // (`DELETE /consumers/{c}/key-auth/{missing}`).
        Ok(None) if c.parent.is_some() => message(StatusCode::NOT_FOUND, "Not found"),
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Ok(Some(id)) => match propose(&ctx, Command::Delete { kind: c.kind, id }).await {
            Ok(_) => StatusCode::NO_CONTENT.into_response(),
            Err(r) => r,
        },
    }
}

/// `/{kind}/{key}/{field}`: the entity an entity refers to (`/routes/{r}/service`,
/// `/key-auths/{k}/consumer`), as Kong's foreign-entity endpoints: GET reads it, PATCH updates
/// it, PUT updates it or, when there is none, creates one and attaches it; DELETE is refused
/// (405) because it is referenced. Each is 404 when the entity or its reference is missing.
fn back_link(kind: EntityKind, field: &'static str, target: EntityKind) -> MethodRouter<Ctx> {
    let referred = move |ctx: Ctx, key: String| async move {
        ctx.replicator
            .read(|st| {
                st.resolve(kind, &key)
                    .and_then(|id| st.get(kind, id))
                    .map(|e| (e.id(), e.field(field).id()))
            })
            .await
    };
    let whole = Collection {
        kind: target,
        parent: None,
    };
    get(
        move |AxState(ctx): AxState<Ctx>, Path(key): Path<String>| async move {
            match referred(ctx.clone(), key).await {
                Some((_, Some(t))) => read_one(ctx, whole, None, t.to_string(), ItemQuery::default()).await,
                _ => message(StatusCode::NOT_FOUND, "Not found"),
            }
        },
    )
    .patch(
        move |AxState(ctx): AxState<Ctx>, Path(key): Path<String>, h: HeaderMap, b: EntityBody| async move {
            match referred(ctx.clone(), key).await {
                Some((_, Some(t))) => update(ctx, whole, None, t.to_string(), h, b.0, false).await,
                _ => message(StatusCode::NOT_FOUND, "Not found"),
            }
        },
    )
    .put(
        move |AxState(ctx): AxState<Ctx>, Path(key): Path<String>, h: HeaderMap, b: EntityBody| async move {
            match referred(ctx.clone(), key).await {
                None => message(StatusCode::NOT_FOUND, "Not found"),
                Some((_, Some(t))) => update(ctx, whole, None, t.to_string(), h, b.0, true).await,
                Some((id, None)) => {
                    // The new entity's id is chosen here, so attaching it needs no reading back.
                    let new_id = Uuid::new_v4();
                    let made = update(ctx.clone(), whole, None, new_id.to_string(), h, b.0, true).await;
                    if made.status() != StatusCode::OK {
                        return made;
                    }
                    let mut json_ct = HeaderMap::new();
                    json_ct.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    let attach = Bytes::from(json!({ field: { "id": new_id } }).to_string());
                    let own = Collection { kind, parent: None };
                    let linked = update(ctx, own, None, id.to_string(), json_ct, attach, false).await;
                    if linked.status() != StatusCode::OK {
                        return linked;
                    }
                    made
                }
            }
        },
    )
    .delete(
        move |AxState(ctx): AxState<Ctx>, Path(key): Path<String>| async move {
            match referred(ctx, key).await {
                Some((_, Some(_))) => message(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed"),
                _ => message(StatusCode::NOT_FOUND, "Not found"),
            }
        },
    )
}

/// Routes for a collection at `base` and its items at `base/{key}`.
fn collection(
    router: Router<Ctx>,
    paths: &mut cors::Paths,
    base: &str,
    c: Collection,
) -> Router<Ctx> {
    paths.add(base, &["GET", "POST"]);
    paths.add(
        &format!("{base}/{{key}}"),
        &["GET", "PATCH", "PUT", "DELETE"],
    );
    let list_path = base.to_string();
    let coll: MethodRouter<Ctx> = match c.parent {
        None => get(
            move |AxState(ctx): AxState<Ctx>, Query(q): Query<ListQuery>| {
                list(ctx, c, None, q, list_path.clone())
            },
        )
        .post(
            move |AxState(ctx): AxState<Ctx>, h: HeaderMap, b: EntityBody| {
                create(ctx, c, None, h, b.0)
            },
        ),
        Some(_) => {
            let base = base.to_string();
            get(
                move |AxState(ctx): AxState<Ctx>,
                      Path(p): Path<String>,
                      Query(q): Query<ListQuery>| {
                    let path = base.replace("{parent}", &p);
                    list(ctx, c, Some(p), q, path)
                },
            )
            .post(
                move |AxState(ctx): AxState<Ctx>,
                      Path(p): Path<String>,
                      h: HeaderMap,
                      b: EntityBody| { create(ctx, c, Some(p), h, b.0) },
            )
        }
    };
    let item: MethodRouter<Ctx> = match c.parent {
        None => get(
            move |AxState(ctx): AxState<Ctx>, Path(k): Path<String>, Query(q): Query<ItemQuery>| {
                read_one(ctx, c, None, k, q)
            },
        )
        .patch(
            move |AxState(ctx): AxState<Ctx>,
                  Path(k): Path<String>,
                  h: HeaderMap,
                  b: EntityBody| { update(ctx, c, None, k, h, b.0, false) },
        )
        .put(
            move |AxState(ctx): AxState<Ctx>,
                  Path(k): Path<String>,
                  h: HeaderMap,
                  b: EntityBody| { update(ctx, c, None, k, h, b.0, true) },
        )
        .delete(move |AxState(ctx): AxState<Ctx>, Path(k): Path<String>| remove(ctx, c, None, k)),
        Some(_) => get(
            move |AxState(ctx): AxState<Ctx>,
                  Path((p, k)): Path<(String, String)>,
                  Query(q): Query<ItemQuery>| { read_one(ctx, c, Some(p), k, q) },
        )
        .patch(
            move |AxState(ctx): AxState<Ctx>,
                  Path((p, k)): Path<(String, String)>,
                  h: HeaderMap,
                  b: EntityBody| { update(ctx, c, Some(p), k, h, b.0, false) },
        )
        .put(
            move |AxState(ctx): AxState<Ctx>,
                  Path((p, k)): Path<(String, String)>,
                  h: HeaderMap,
                  b: EntityBody| { update(ctx, c, Some(p), k, h, b.0, true) },
        )
        .delete(
            move |AxState(ctx): AxState<Ctx>, Path((p, k)): Path<(String, String)>| {
                remove(ctx, c, Some(p), k)
            },
        ),
    };
    router
        .route(base, coll)
        .route(&format!("{base}/{{key}}"), item)
}

async fn root(AxState(ctx): AxState<Ctx>) -> Response {
    let enabled: Vec<String> = ctx
        .replicator
        .read(|st| {
            let mut names: Vec<String> = st
                .all::<tollgate_config::Plugin>()
                .map(|p| p.name.clone())
                .collect();
            names.sort();
            names.dedup();
            names
        })
        .await;
    let available: serde_json::Map<String, Value> = tollgate_config::plugins::ALL
        .iter()
        .map(|p| {
            (
                p.name.to_string(),
                json!({"priority": p.priority, "version": env!("CARGO_PKG_VERSION")}),
            )
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "tagline": "Welcome to Tollgate",
            // Kong's clients (decK, client libraries) read `version` to choose the API
            // dialect: it names the Kong release whose Admin API this one implements.
            "version": KONG_VERSION,
            "tollgate_version": env!("CARGO_PKG_VERSION"),
            "edition": "community",
            "node_id": ctx.node_uuid,
            "raft_node_id": ctx.node_id,
            "pids": { "master": std::process::id() },
            "hostname": std::env::var("HOSTNAME").unwrap_or_default(),
            "plugins": { "available_on_server": available, "enabled_in_cluster": enabled },
            "configuration": {
                "database": "off",
                "role": "traditional",
                "proxy_listen": [ctx.proxy_listen],
                "admin_listen": [ctx.admin_listen],
            },
        }),
    )
}

async fn status(AxState(ctx): AxState<Ctx>, RawQuery(q): RawQuery) -> Response {
    // Kong's memory units; Tollgate reports no Lua memory, but refuses what Kong refuses.
    if let Some(unit) = query_arg(&q, "unit") {
        if !matches!(unit.as_ref(), "b" | "B" | "k" | "K" | "m" | "M" | "g" | "G") {
            return message(
                StatusCode::BAD_REQUEST,
                &format!("invalid unit '{unit}' (expected 'k/K', 'm/M', or 'g/G')"),
            );
        }
    }
    let (entities, index) = (
        ctx.replicator.read(|st| st.len()).await,
        ctx.replicator.last_index().await,
    );
    let snap = ctx.snapshots.load();
    json_response(
        StatusCode::OK,
        &json!({
            "database": { "reachable": true },
            "server": {
                "connections_accepted": ctx.metrics.connections_accepted.get(),
                // Every accepted connection is served (none is dropped for lack of workers).
                "connections_handled": ctx.metrics.connections_accepted.get(),
                "total_requests": total_requests(&ctx.metrics),
            },
            "configuration_hash": format!("{:032x}", snap.version),
            "tollgate": { "node_id": ctx.node_id, "applied_index": index, "entities": entities, "routes": snap.routes.len() },
        }),
    )
}

/// Requests the proxy answered, over every route and status.
fn total_requests(m: &Metrics) -> u64 {
    use prometheus::core::Collector;
    m.requests
        .collect()
        .iter()
        .flat_map(|f| f.get_metric())
        .map(|c| c.get_counter().get_value() as u64)
        .sum()
}

/// `GET /cluster`: this node's view of the cluster.
async fn cluster(AxState(ctx): AxState<Ctx>) -> Response {
    let m = ctx.replicator.raft.metrics().borrow().clone();
    let peers = ctx.discovery.peers().await;
    let membership = m.membership_config.membership().clone();
    let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
    let members: Vec<Value> = membership
        .nodes()
        .map(|(id, node)| {
            let p = peers.get(id);
            let me = *id == ctx.node_id;
            json!({
                "id": id,
                "role": if voters.contains(id) { "voter" } else { "learner" },
                "cluster_addr": node.addr,
                "admin_addr": p.map(|p| p.admin_addr.clone()).unwrap_or_default(),
                "proxy_addr": p.map(|p| p.proxy_addr.clone()).unwrap_or_default(),
                "last_applied": if me { m.last_applied.map(|l| l.index).unwrap_or(0) } else { p.map(|p| p.last_applied).unwrap_or(0) },
                "reachable": me || p.map(|p| p.live).unwrap_or(false),
            })
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "node_id": ctx.node_id,
            "leader_id": m.current_leader,
            "term": m.current_term,
            "state": format!("{:?}", m.state),
            "members": members,
            "credentials": ctx.cluster_auth.0,
            "rejected": ctx.cluster_auth.1.list(),
        }),
    )
}

/// `DELETE /cluster/members/{id}`: removes a node through a Raft membership change.
async fn remove_member(AxState(ctx): AxState<Ctx>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return message(
            StatusCode::BAD_REQUEST,
            "member id must be a node id (a positive integer)",
        );
    };
    match ctx.replicator.remove_member(id).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => propose_error(e),
    }
}

/// `GET /metrics`: Tollgate's own metrics, then Kong's prometheus exposition
/// (`kong/plugins/prometheus/api.lua`): node-level gauges always, the per-request families
/// only while a `prometheus` plugin is enabled.
async fn metrics(AxState(ctx): AxState<Ctx>) -> Response {
    let plugin_enabled = ctx.snapshots.load().has_plugin("prometheus");
    let kong_health = ctx
        .metrics
        .kong
        .upstream_health
        .load(std::sync::atomic::Ordering::Relaxed);
    let runtime = tokio::runtime::Handle::current().metrics();
    let mut text = ctx.metrics.render();
    text.push_str(&crate::balancer::metrics::render(
        &ctx.balancers,
        kong_health,
    ));
    text.push_str(&crate::metrics::render_kong(
        &ctx.metrics,
        &crate::metrics::NodeStats {
            node_id: &ctx.node_uuid.to_string(),
            version: KONG_VERSION,
            accepted: ctx.metrics.connections_accepted.get(),
            requests: total_requests(&ctx.metrics),
            tasks_alive: runtime.num_alive_tasks(),
            tasks_queued: runtime.global_queue_depth(),
        },
        plugin_enabled,
    ));
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

async fn plugins_enabled() -> Response {
    let names: Vec<&str> = tollgate_config::plugins::ALL
        .iter()
        .map(|p| p.name)
        .collect();
    json_response(StatusCode::OK, &json!({ "enabled_plugins": names }))
}

/// `GET /config`: Kong's `{"config": "<YAML file>"}`; `?format=yaml` gives the YAML file
/// itself and `?format=json` the file as JSON.
async fn config_get(AxState(ctx): AxState<Ctx>, RawQuery(q): RawQuery) -> Response {
    let doc = ctx.replicator.read(declarative::export).await;
    match query_arg(&q, "format").as_deref() {
        Some("json") => json_response(StatusCode::OK, &doc),
        Some("yaml") => {
            let mut r = serde_yaml::to_string(&doc)
                .unwrap_or_default()
                .into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/yaml"),
            );
            r
        }
        _ => json_response(
            StatusCode::OK,
            &json!({ "config": serde_yaml::to_string(&doc).unwrap_or_default() }),
        ),
    }
}

struct AdminStamps;

impl declarative::Stamps for AdminStamps {
    fn id(&mut self) -> Uuid {
        Uuid::new_v4()
    }
    fn key(&mut self) -> String {
        Alphanumeric.sample_string(&mut rand::rng(), 32)
    }
    fn now(&self) -> i64 {
        now()
    }
}

/// Kong's `POST /config`: replaces the whole configuration with a declarative file, given raw
/// (YAML or JSON) or as `{"config": "<file text>"}`.
async fn config_post(
    AxState(ctx): AxState<Ctx>,
    RawQuery(q): RawQuery,
    Limited(bytes): Limited<MAX_CONFIG_BODY>,
) -> Response {
    let flatten = matches!(
        query_arg(&q, "flatten_errors").as_deref(),
        Some("1" | "true" | "on" | "yes")
    );
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let text = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(o)) if o.get("config").map(Value::is_string).unwrap_or(false) => {
            o["config"].as_str().unwrap_or_default().to_string()
        }
        _ => text,
    };
    if text.trim().is_empty() {
        return message(
            StatusCode::BAD_REQUEST,
            "expected a declarative configuration",
        );
    }
    // `?owner_tag=`: replace only what carries the tag (see `tagged`).
    let owner_tag = query_arg(&q, "owner_tag").filter(|t| !t.is_empty());
    let mut passwords = None;
    let text = match &owner_tag {
        Some(_) => match tagged::prepare(&ctx, text).await {
            Ok((t, p)) => {
                passwords = Some(p);
                t
            }
            Err(r) => return r,
        },
        None => text,
    };
    // Parsing builds every entity (a basic-auth password is hashed on purpose slowly): off
    // the runtime's threads.
    let parsed =
        tokio::task::spawn_blocking(move || declarative::parse(&text, &mut AdminStamps)).await;
    let Ok(parsed) = parsed else {
        return message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "An unexpected error occurred",
        );
    };
    let data = match parsed {
        Ok(d) => d,
        Err(e) => {
            let mut body = json!({
                "code": 14,
                "name": "invalid declarative configuration",
                "message": e.kong_message(),
                "fields": e.kong_fields(),
            });
            if flatten {
                body["flattened_errors"] = Value::Array(e.flattened());
            }
            return json_response(StatusCode::BAD_REQUEST, &body);
        }
    };
    if let (Some(tag), Some(passwords)) = (owner_tag, passwords) {
        return tagged::commit(&ctx, tag, data, passwords).await;
    }
    // Kong answers with what was loaded, keyed by entity type, then id.
    let mut loaded = serde_json::Map::new();
    for e in EntityKind::ALL.iter().flat_map(|k| data.table(*k)) {
        let table = loaded
            .entry(e.kind().table())
            .or_insert_with(|| Value::Object(Default::default()));
        if let Value::Object(t) = table {
            t.insert(e.id().to_string(), e.to_json());
        }
    }
    match propose(&ctx, Command::Replace(Box::new(data))).await {
        Ok(_) => json_response(StatusCode::CREATED, &Value::Object(loaded)),
        Err(r) => r,
    }
}

/// Runs [`guard::Guard`] on every request before its handler, answers `OPTIONS` from the
/// recorded paths, and adds the CORS headers to every answer.
async fn guard(
    AxState((ctx, paths)): AxState<(Ctx, Arc<cors::Paths>)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let req_headers = req.headers().clone();
    let started = std::time::Instant::now();
    let mut resp = match ctx
        .guard
        .check(req.method(), req.uri().path(), req.headers())
    {
        Err(refusal) => message(refusal.status(), &refusal.message()),
        Ok(())
            if req
                .uri()
                .query()
                .is_some_and(|q| q.split('&').nth(body::MAX_ARGS).is_some()) =>
        {
            message(StatusCode::BAD_REQUEST, "Too many arguments")
        }
        Ok(()) if req.method() == axum::http::Method::OPTIONS => {
            match paths.allow(req.uri().path()) {
                Some(methods) => ctx.cors.preflight(&req_headers, methods),
                None => message(StatusCode::NOT_FOUND, "Not found"),
            }
        }
        Ok(()) => next.run(req).await,
    };
    ctx.cors.decorate(&req_headers, &mut resp);
    // Kong's header: milliseconds the Admin API spent on the request.
    resp.headers_mut().insert(
        "x-kong-admin-latency",
        HeaderValue::from(started.elapsed().as_millis() as u64),
    );
    resp
}

/// The Admin API router.
pub fn router(ctx: Ctx) -> Router {
    let c = |kind, parent| Collection { kind, parent };
    let mut paths = cors::Paths::default();
    for p in ["/", "/status", "/metrics", "/plugins/enabled", "/cluster"] {
        paths.add(p, &["GET"]);
    }
    paths.add("/config", &["GET", "POST"]);
    paths.add("/cluster/members/{id}", &["DELETE"]);
    let mut r: Router<Ctx> = Router::new()
        .route("/", get(root))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/plugins/enabled", get(plugins_enabled))
        .route("/config", get(config_get).post(config_post))
        .route("/cluster", get(cluster))
        .route(
            "/cluster/members/{id}",
            axum::routing::delete(remove_member),
        );
    // Every declared kind: its collection, the collections nested under what it refers to,
    // and a link from each of its items to what it refers to.
    for kind in EntityKind::ALL {
        let decl = kind.decl();
        r = collection(
            r,
            &mut paths,
            &format!("/{}", decl.admin_path),
            c(*kind, None),
        );
        for fk in decl.foreign {
            if let Some(nested) = fk.nested_path {
                let base = format!("/{}/{{parent}}/{nested}", fk.target.decl().admin_path);
                r = collection(r, &mut paths, &base, c(*kind, Some((fk.field, fk.target))));
            }
            let link = format!("/{}/{{key}}/{}", decl.admin_path, fk.field);
            paths.add(&link, &["GET", "PATCH", "PUT", "DELETE"]);
            r = r.route(&link, back_link(*kind, fk.field, fk.target));
        }
    }
    r = schemas::routes(r, &mut paths);
    r = tags::routes(r, &mut paths);
    r = upstreams::routes(r, &mut paths);
    r = proxy_cache::routes(r, &mut paths);
    let inner = r
        .fallback(|| async { message(StatusCode::NOT_FOUND, "Not found") })
        .method_not_allowed_fallback(|| async {
            message(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed")
        })
        .layer(axum::middleware::from_fn_with_state(
            (ctx.clone(), Arc::new(paths)),
            guard,
        ))
        .with_state(ctx);
    // Kong answers `/key-auths/` as `/key-auths`: the trailing slash goes before routing.
    Router::new().fallback_service(tower::ServiceExt::map_request(
        inner,
        without_trailing_slash,
    ))
}

fn without_trailing_slash(mut req: axum::extract::Request) -> axum::extract::Request {
    let path = req.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let trimmed = if trimmed.is_empty() { "/" } else { trimmed };
        let pq = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_string(),
        };
        if let Ok(pq) = axum::http::uri::PathAndQuery::try_from(pq) {
            let mut parts = req.uri().clone().into_parts();
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}
