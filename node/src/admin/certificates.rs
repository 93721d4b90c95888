//! What the Admin API adds to `certificates` beyond the generic collection, as Kong's
//! `kong/db/dao/certificates.lua` does: the transient `snis` list in a write creates, keeps
//! and removes the certificate's SNIs in the same command (all or none), a certificate is
//! shown with its SNI names (sorted), and `/certificates/{sni}` addresses the certificate an
//! SNI names (see [`State::resolve_in`]).

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};
use tollgate_config::entities::{check_wildcard_host, Sni};
use tollgate_config::input::Stamp;
use tollgate_config::schema::BuildCx;
use tollgate_config::{Command, Entity, EntityKind, PutMode, State};
use uuid::Uuid;

use super::{fresh_stamp, json_response};

/// Takes the transient `snis` out of a write's body: `None` when absent, the names (checked,
/// without duplicates, sorted) otherwise; `null` is the empty list.
pub fn take_snis(body: &mut Value) -> Result<Option<Vec<String>>, Response> {
    let Some(v) = body.as_object_mut().and_then(|o| o.remove("snis")) else {
        return Ok(None);
    };
    let bad = |m: String| {
        json_response(
            StatusCode::BAD_REQUEST,
            &json!({"code": 2, "name": "schema violation",
                    "message": format!("schema violation (snis: {m})"),
                    "fields": {"snis": m}}),
        )
    };
    let list: Vec<String> = match v {
        Value::Null => vec![],
        Value::String(s) if s.is_empty() => vec![],
        // A form body gives one name as a string.
        Value::String(s) => vec![s],
        Value::Array(a) => {
            let mut out = Vec::new();
            for x in a {
                match x {
                    Value::String(s) => out.push(s),
                    _ => return Err(bad("expected a string".into())),
                }
            }
            out
        }
        _ => return Err(bad("expected an array".into())),
    };
    let mut invalid = tollgate_config::FieldErrors::new();
    for (i, n) in list.iter().enumerate() {
        if let Err(m) = check_wildcard_host(n) {
            invalid.add(&format!("snis.{}", i + 1), m);
        }
    }
    if !invalid.is_empty() {
        return Err(super::schema_error(invalid));
    }
    let mut seen = std::collections::BTreeSet::new();
    for n in &list {
        if !seen.insert(n.clone()) {
            return Err(bad(format!("{n} is duplicated")));
        }
    }
    Ok(Some(seen.into_iter().collect()))
}

/// The command that writes `cert` and makes its SNIs exactly `snis` (when given), or Kong's
/// 400 when a name belongs to another certificate.
pub fn command(
    st: &State,
    cert: Entity,
    mode: PutMode,
    snis: Option<Vec<String>>,
) -> Result<Command, Response> {
    let cid = cert.id();
    let put = Command::Put { entity: cert, mode };
    let Some(names) = snis else {
        return Ok(put);
    };
    for n in &names {
        if let Some(Entity::Sni(s)) = st.find_unique(EntityKind::Sni, "name", n) {
            if s.certificate.id != cid {
                let m = format!(
                    "{n} already associated with existing certificate '{}'",
                    s.certificate.id
                );
                return Err(json_response(
                    StatusCode::BAD_REQUEST,
                    &json!({"code": 2, "name": "schema violation",
                            "message": format!("schema violation (snis: {m})"),
                            "fields": {"snis": m}}),
                ));
            }
        }
    }
    let mut cmds = vec![put];
    let current: Vec<&Sni> = sni_entities(st, cid).collect();
    for s in &current {
        if !names.contains(&s.name) {
            cmds.push(Command::Delete {
                kind: EntityKind::Sni,
                id: s.id,
            });
        }
    }
    for n in names
        .iter()
        .filter(|n| !current.iter().any(|s| &s.name == *n))
    {
        let stamp: Stamp = fresh_stamp(None);
        let cx = BuildCx {
            stamp: &stamp,
            state: st,
            parent: Some(("certificate", cid)),
            transform: true,
        };
        let sni = EntityKind::Sni
            .build(&json!({ "name": n }), &cx)
            .map_err(super::schema_error)?;
        cmds.push(Command::Put {
            entity: sni,
            mode: PutMode::Create,
        });
    }
    Ok(Command::Batch(cmds))
}

/// An entity as the Admin API shows it: a certificate with its SNI names.
pub fn render(st: &State, e: &Entity) -> Value {
    let mut v = e.to_json();
    if let Entity::Certificate(c) = e {
        v["snis"] = json!(snis_of(st, c.id));
    }
    v
}

fn sni_entities(st: &State, cert: Uuid) -> impl Iterator<Item = &Sni> {
    st.referrers(EntityKind::Certificate, cert)
        .filter_map(|e| match e {
            Entity::Sni(s) => Some(s),
            _ => None,
        })
}

fn snis_of(st: &State, cert: Uuid) -> Vec<String> {
    let mut names: Vec<String> = sni_entities(st, cert).map(|s| s.name.clone()).collect();
    names.sort();
    names
}
