//! `POST /config?owner_tag=<tag>`: a declarative load that replaces only what carries the
//! tag and leaves the rest of the configuration alone (how `tollgate k8s apply` loads the
//! entities of a set of Kubernetes manifests, each tagged `k8s-apply:<set>`).
//!
//! Applying the same file twice changes nothing: the state machine keeps entities that are
//! equal but for their timestamps ([`State::merge_tagged`]), and this module makes the
//! parts Kong would regenerate come out equal: a credential whose file leaves its key or
//! secret to be generated keeps the one it has, and a basic-auth password that the stored
//! hash verifies keeps that hash (a new hash has a new salt). When nothing would change, no
//! Raft entry is written and the answer is 200; otherwise 201. Both carry the counts of
//! created, updated, deleted and unchanged entities (as computed on this node's applied
//! state; the state machine applies the same merge to the state it holds at that point in
//! the log).
//!
//! [`State::merge_tagged`]: tollgate_config::State::merge_tagged

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use tollgate_config::entities::BasicAuthCredential;
use tollgate_config::state::StateData;
use tollgate_config::{password, Command, Entity, EntityKind};
use uuid::Uuid;

use super::{apply_error, json_response, message, propose, Ctx};

/// Credential fields Kong generates when a file leaves them out.
const GENERATED: &[(&str, &[&str])] = &[
    ("keyauth_credentials", &["key"]),
    ("hmacauth_credentials", &["secret"]),
    ("jwt_secrets", &["key", "secret"]),
];

/// Basic-auth passwords given in clear, by credential id.
pub struct Passwords(Vec<(Uuid, String)>);

fn credential_lists(doc: &mut Value) -> Vec<(&'static str, &mut Vec<Value>)> {
    let mut out = Vec::new();
    let Value::Object(root) = doc else { return out };
    let tables: Vec<&'static str> = GENERATED
        .iter()
        .map(|(t, _)| *t)
        .chain(["basicauth_credentials"])
        .collect();
    for (key, v) in root.iter_mut() {
        if key == "consumers" {
            for c in v.as_array_mut().into_iter().flatten() {
                if let Value::Object(co) = c {
                    for (k, list) in co.iter_mut() {
                        if let (Some(t), Value::Array(a)) =
                            (tables.iter().find(|t| **t == k.as_str()), list)
                        {
                            out.push((*t, a));
                        }
                    }
                }
            }
        } else if let (Some(t), Value::Array(a)) = (tables.iter().find(|t| **t == key.as_str()), v)
        {
            out.push((*t, a));
        }
    }
    out
}

/// The path of the first entity (at the top level or nested) that has no `id`.
fn first_without_id(doc: &Value) -> Option<String> {
    fn walk(list: &Value, path: &str) -> Option<String> {
        for (i, item) in list.as_array()?.iter().enumerate() {
            let here = format!("{path}[{i}]");
            if item.get("id").is_none_or(Value::is_null) {
                return Some(here);
            }
            for (k, v) in item.as_object()?.iter() {
                if EntityKind::from_table(k).is_some() && v.is_array() {
                    if let Some(p) = walk(v, &format!("{here}.{k}")) {
                        return Some(p);
                    }
                }
            }
        }
        None
    }
    doc.as_object()?
        .iter()
        .filter(|(k, v)| EntityKind::from_table(k).is_some() && v.is_array())
        .find_map(|(k, v)| walk(v, k))
}

fn id_of(item: &Value) -> Option<Uuid> {
    item.get("id")?.as_str()?.parse().ok()
}

/// Fills generated credential fields the file leaves out from the entities they replace,
/// and collects the clear basic-auth passwords. Returns the file to parse.
pub async fn prepare(ctx: &Ctx, text: String) -> Result<(String, Passwords), Response> {
    // What "unchanged" means is judged against the cluster's latest state, not this node's
    // possibly lagging copy: otherwise a follower behind the leader could answer "nothing to
    // do" to an apply the cluster has not seen.
    ctx.replicator
        .linearizable_barrier()
        .await
        .map_err(super::propose_error)?;
    let parsed = tokio::task::spawn_blocking(move || {
        serde_json::from_str::<Value>(&text).or_else(|_| serde_yaml::from_str(&text))
    })
    .await;
    let mut doc: Value = match parsed {
        Ok(Ok(doc)) => doc,
        Ok(Err(e)) => {
            return Err(message(
                StatusCode::BAD_REQUEST,
                &format!("invalid declarative configuration: {e}"),
            ))
        }
        Err(_) => {
            return Err(message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "An unexpected error occurred",
            ))
        }
    };
    if let Some(path) = first_without_id(&doc) {
        return Err(message(
            StatusCode::BAD_REQUEST,
            &format!("{path}: every entity of an owner_tag load needs an id (a generated one would differ on every load)"),
        ));
    }
    let mut passwords = Vec::new();
    let lists = credential_lists(&mut doc);
    let mut wanted: Vec<(EntityKind, Uuid)> = Vec::new();
    for (table, list) in &lists {
        let Some(kind) = EntityKind::from_table(table) else {
            continue;
        };
        for item in list.iter() {
            if let Some(id) = id_of(item) {
                wanted.push((kind, id));
            }
        }
    }
    let old: Vec<Option<Value>> = ctx
        .replicator
        .read(|st| {
            wanted
                .iter()
                .map(|(k, id)| st.get(*k, *id).map(Entity::to_json))
                .collect()
        })
        .await;
    let mut old = old.into_iter();
    for (table, list) in lists {
        let fields = GENERATED
            .iter()
            .find(|(t, _)| *t == table)
            .map_or(&[][..], |(_, f)| *f);
        for item in list.iter_mut() {
            let Some(id) = id_of(item) else { continue };
            let before = old.next().flatten();
            if table == "basicauth_credentials" {
                if let Some(p) = item.get("password").and_then(Value::as_str) {
                    passwords.push((id, p.to_string()));
                }
                continue;
            }
            let (Some(before), Value::Object(o)) = (before, item) else {
                continue;
            };
            for f in fields {
                if o.get(*f).is_none_or(Value::is_null) {
                    if let Some(v) = before.get(*f).filter(|v| !v.is_null()) {
                        o.insert((*f).to_string(), v.clone());
                    }
                }
            }
        }
    }
    Ok((doc.to_string(), Passwords(passwords)))
}

/// Keeps the stored hash of every basic-auth credential whose password is unchanged, then
/// replaces what `tag` owns by `data`.
pub async fn commit(ctx: &Ctx, tag: String, mut data: StateData, passwords: Passwords) -> Response {
    let ids: Vec<Uuid> = passwords.0.iter().map(|(id, _)| *id).collect();
    let stored: Vec<Option<(String, Uuid)>> = ctx
        .replicator
        .read(|st| {
            ids.iter()
                .map(|id| {
                    st.one::<BasicAuthCredential>(*id)
                        .map(|c| (c.password.clone(), c.consumer.id))
                })
                .collect()
        })
        .await;
    let checks: Vec<(Uuid, String, Uuid, String)> = passwords
        .0
        .into_iter()
        .zip(stored)
        .filter_map(|((id, clear), old)| old.map(|(hash, consumer)| (id, clear, consumer, hash)))
        .collect();
    // argon2 is slow on purpose: off the runtime's threads.
    let verified = tokio::task::spawn_blocking(move || {
        checks
            .into_iter()
            .filter(|(_, clear, consumer, hash)| {
                password::verify(hash, clear.as_bytes(), *consumer)
            })
            .map(|(id, _, consumer, hash)| (id, consumer, hash))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for (id, consumer, hash) in verified {
        let same = data
            .all::<BasicAuthCredential>()
            .find(|c| c.id == id && c.consumer.id == consumer)
            .cloned();
        if let Some(mut c) = same {
            c.password = hash;
            data.insert(Entity::from(c));
        }
    }
    let checked = ctx
        .replicator
        .read(|st| {
            st.merge_tagged(&tag, data.clone())
                .map(|(_, change)| change)
        })
        .await;
    let change = match checked {
        Ok(c) => c,
        Err(e) => return apply_error(&e),
    };
    let body = json!({
        "owner_tag": tag,
        "created": change.created,
        "updated": change.updated,
        "deleted": change.deleted,
        "unchanged": change.unchanged,
    });
    if change.is_nothing() {
        return json_response(StatusCode::OK, &body);
    }
    match propose(
        ctx,
        Command::ReplaceTagged {
            tag,
            data: Box::new(data),
        },
    )
    .await
    {
        Ok(_) => json_response(StatusCode::CREATED, &body),
        Err(r) => r,
    }
}
