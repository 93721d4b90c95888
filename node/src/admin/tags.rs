//! `/tags` and `/tags/{tag}`: every tagged entity of every declared kind, as Kong lists them
//! (`{"entity_name", "entity_id", "tag"}`), paged.

use axum::extract::{Path, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tollgate_config::EntityKind;

use super::{json_response, Ctx, ListQuery};

async fn list(ctx: Ctx, only: Option<String>, q: ListQuery) -> Response {
    let size = match q.page_size() {
        Ok(n) => n,
        Err(r) => return r,
    };
    // The offset is the position in a deterministic order (kind, id, tag): opaque to clients.
    let skip = match q.offset.as_deref().map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return q.bad_offset(),
    };
    let (rows, more) = ctx
        .replicator
        .read(|st| {
            let all = EntityKind::ALL.iter().flat_map(|k| {
                st.list(*k).flat_map(move |e| {
                    e.tags()
                        .unwrap_or_default()
                        .iter()
                        .map(move |t| (k.table(), e.id(), t.as_str()))
                })
            });
            let mut rows: Vec<Value> = all
                .filter(|(_, _, t)| only.as_deref().is_none_or(|o| o == *t))
                .skip(skip)
                .take(size + 1)
                .map(|(table, id, tag)| json!({"entity_name": table, "entity_id": id, "tag": tag}))
                .collect();
            let more = rows.len() > size;
            rows.truncate(size);
            (rows, more)
        })
        .await;
    let base = match &only {
        Some(t) => format!("/tags/{t}"),
        None => "/tags".into(),
    };
    let offset = more.then(|| (skip + size).to_string());
    let next = offset.as_ref().map(|o| {
        let mut n = format!("{base}?offset={o}");
        if q.size.is_some() {
            n.push_str(&format!("&size={size}"));
        }
        n
    });
    json_response(
        StatusCode::OK,
        &tollgate_config::state::page_json(rows, next, offset),
    )
}

pub fn routes(r: Router<Ctx>) -> Router<Ctx> {
    r.route(
        "/tags",
        get(|AxState(ctx): AxState<Ctx>, Query(q): Query<ListQuery>| list(ctx, None, q)),
    )
    .route(
        "/tags/{tag}",
        get(
            |AxState(ctx): AxState<Ctx>, Path(t): Path<String>, Query(q): Query<ListQuery>| {
                list(ctx, Some(t), q)
            },
        ),
    )
}
