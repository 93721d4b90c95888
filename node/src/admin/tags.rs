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

/// Kong's answer to a tag that is not UTF-8 (`validate_utf8_string` in
/// `kong/db/schema/typedefs.lua`), naming the first bad byte's position from 1.
fn invalid_tag(uri: &axum::http::Uri) -> Response {
    let raw = uri.path().rsplit('/').next().unwrap_or("");
    let bytes: Vec<u8> = percent_encoding::percent_decode(raw.as_bytes()).collect();
    let at = std::str::from_utf8(&bytes)
        .err()
        .map_or(0, |e| e.valid_up_to())
        + 1;
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"code": 10, "name": "invalid unique tag",
                "message": format!("invalid utf-8 character sequence detected at position {at}")}),
    )
}

pub fn routes(r: Router<Ctx>, paths: &mut super::cors::Paths) -> Router<Ctx> {
    paths.add("/tags", &["GET"]);
    paths.add("/tags/{tag}", &["GET"]);
    r.route(
        "/tags",
        get(|AxState(ctx): AxState<Ctx>, Query(q): Query<ListQuery>| list(ctx, None, q)),
    )
    .route(
        "/tags/{tag}",
        get(
            |AxState(ctx): AxState<Ctx>,
             uri: axum::http::Uri,
             t: Result<Path<String>, axum::extract::rejection::PathRejection>,
             Query(q): Query<ListQuery>| async move {
                match t {
                    Ok(Path(t)) => list(ctx, Some(t), q).await,
                    Err(_) => invalid_tag(&uri),
                }
            },
        ),
    )
}
