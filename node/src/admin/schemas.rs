//! `/schemas`: every declared entity's and every bundled plugin's schema in Kong's format, and
//! validation of a body without storing it. All of it comes from the declarations.

use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;
use tollgate_config::schema::{entity_schema, validate_entity};
use tollgate_config::{plugins, EntityKind};

use super::body::{self, Limited, MAX_ENTITY_BODY};
use super::{json_response, message, schema_error, Ctx};

fn valid() -> Response {
    json_response(
        StatusCode::OK,
        &json!({"message": "schema validation successful"}),
    )
}

async fn entity(Path(name): Path<String>) -> Response {
    match EntityKind::from_table(&name) {
        Some(kind) => json_response(StatusCode::OK, &entity_schema(kind)),
        None => message(StatusCode::NOT_FOUND, &format!("No entity named '{name}'")),
    }
}

async fn validate(
    AxState(ctx): AxState<Ctx>,
    kind: EntityKind,
    headers: HeaderMap,
    bytes: &axum::body::Bytes,
) -> Response {
    let body = match body::parse(&headers, bytes) {
        Ok(b) => b,
        Err(e) => return message(StatusCode::BAD_REQUEST, &e.0),
    };
    let checked = ctx
        .replicator
        .read(|st| validate_entity(kind, &body, st))
        .await;
    match checked {
        Ok(()) => valid(),
        Err(e) => schema_error(e),
    }
}

async fn entity_validate(
    state: AxState<Ctx>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Limited(bytes): Limited<MAX_ENTITY_BODY>,
) -> Response {
    match EntityKind::from_table(&name) {
        Some(kind) => validate(state, kind, headers, &bytes).await,
        None => message(StatusCode::NOT_FOUND, &format!("No entity named '{name}'")),
    }
}

async fn plugin(Path(name): Path<String>) -> Response {
    match plugins::find(&name) {
        Some(p) => json_response(StatusCode::OK, &plugins::schema_json(p)),
        None => message(StatusCode::NOT_FOUND, &format!("No plugin named '{name}'")),
    }
}

async fn plugin_validate(
    state: AxState<Ctx>,
    headers: HeaderMap,
    Limited(bytes): Limited<MAX_ENTITY_BODY>,
) -> Response {
    validate(state, EntityKind::Plugin, headers, &bytes).await
}

pub fn routes(r: Router<Ctx>, paths: &mut super::cors::Paths) -> Router<Ctx> {
    paths.add("/schemas/plugins/validate", &["POST"]);
    paths.add("/schemas/plugins/{name}", &["GET"]);
    paths.add("/schemas/{name}", &["GET"]);
    paths.add("/schemas/{name}/validate", &["POST"]);
    r.route("/schemas/plugins/validate", post(plugin_validate))
        .route("/schemas/plugins/{name}", get(plugin))
        .route("/schemas/{name}", get(entity))
        .route("/schemas/{name}/validate", post(entity_validate))
}
