//! Kong's declarative configuration format (`_format_version: "3.0"`), in YAML or JSON.
//!
//! Nothing here names an entity: every registered kind is a top-level key, and a kind nests
//! under another when its declaration has a nesting reference to it (routes and plugins under
//! services, plugins under routes, credentials, ACL groups and plugins under consumers). Top-
//! level lists may refer to parents by name or id. The result is a whole [`StateData`],
//! loaded with one `Command::Replace`, which is checked as a whole by apply. Export writes the
//! same format back, nested the same way.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use uuid::Uuid;

use crate::entity::Timestamp;
use crate::error::FieldErrors;
use crate::input::Stamp;
use crate::registry::{Entity, EntityKind};
use crate::schema::{BuildCx, ForeignDecl};
use crate::state::{State, StateData};

/// Error loading a declarative file, naming where in the file it is.
#[derive(Debug, thiserror::Error)]
pub enum DeclarativeError {
    #[error("cannot parse declarative config: {0}")]
    Syntax(String),
    #[error("declarative config {path}: {}", .errors.message())]
    Invalid { path: String, errors: FieldErrors },
    #[error("declarative config: {0}")]
    Conflict(String),
}

/// Supplies what a pure crate cannot make: fresh ids and keys, and the time.
pub trait Stamps {
    fn id(&mut self) -> Uuid;
    fn key(&mut self) -> String;
    fn now(&self) -> Timestamp;
}

/// Deterministic stamps for tests and tools: ids counting up from the one after `.0`, keys
/// `k1`, `k2`, …, and the time 1, so two parses of the same file give the same state.
pub struct Sequence(pub u128);

impl Stamps for Sequence {
    fn id(&mut self) -> Uuid {
        self.0 += 1;
        Uuid::from_u128(self.0)
    }
    fn key(&mut self) -> String {
        format!("k{}", self.0)
    }
    fn now(&self) -> Timestamp {
        1
    }
}

fn stamp(s: &mut dyn Stamps) -> Stamp {
    Stamp {
        id: s.id(),
        now: s.now(),
        created_at: None,
        generated_key: s.key(),
    }
}

/// One entity found in the file, before it is built.
struct Item {
    kind: EntityKind,
    /// Where it is in the file, for messages: `services[0].routes[1]`.
    path: String,
    body: Value,
    /// The reference its nesting gives: the field, and the position of the parent item.
    parent: Option<(&'static str, usize)>,
    stamp: Stamp,
}

/// The kinds that nest under `parent` in a file, with the reference field that links them.
fn nested_kinds(parent: EntityKind) -> impl Iterator<Item = (EntityKind, &'static str)> {
    EntityKind::ALL.iter().flat_map(move |k| {
        k.decl()
            .foreign
            .iter()
            .filter(move |f| f.target == parent && f.nests)
            .map(move |f| (*k, f.field))
    })
}

/// Collects `list` (entities of `kind` at `path`) and what is nested in them, depth first.
fn collect(
    kind: EntityKind,
    list: &Value,
    path: &str,
    parent: Option<(&'static str, usize)>,
    stamps: &mut dyn Stamps,
    out: &mut Vec<Item>,
) -> Result<(), DeclarativeError> {
    let Some(list) = list.as_array() else {
        return Err(DeclarativeError::Syntax(format!("{path}: expected a list")));
    };
    for (i, v) in list.iter().enumerate() {
        let here = format!("{path}[{i}]");
        let mut body = refs_to_objects(kind, v);
        let mut children = Vec::new();
        if let Some(o) = body.as_object_mut() {
            for (child, field) in nested_kinds(kind) {
                if let Some(x) = o.remove(child.table()) {
                    children.push((child, field, x));
                }
            }
        }
        let me = out.len();
        out.push(Item {
            kind,
            path: here.clone(),
            body,
            parent,
            stamp: stamp(stamps),
        });
        for (child, field, x) in children {
            let p = format!("{here}.{}", child.table());
            collect(child, &x, &p, Some((field, me)), stamps, out)?;
        }
    }
    Ok(())
}

/// Parses a YAML or JSON declarative file into a complete state.
pub fn parse(text: &str, stamps: &mut dyn Stamps) -> Result<StateData, DeclarativeError> {
    // JSON is YAML too, but the JSON parser is an order of magnitude faster on the large
    // files an API-ops pipeline pushes.
    let doc: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| DeclarativeError::Syntax(e.to_string()))?
    } else {
        serde_yaml::from_str(text).map_err(|e| DeclarativeError::Syntax(e.to_string()))?
    };
    let Some(root) = doc.as_object() else {
        return Err(DeclarativeError::Syntax(
            "expected a mapping at the top".into(),
        ));
    };
    match root.get("_format_version").and_then(Value::as_str) {
        Some("1.1" | "2.1" | "3.0") => {}
        Some(v) => {
            return Err(DeclarativeError::Syntax(format!(
                "unsupported _format_version '{v}' (expected \"3.0\")"
            )))
        }
        None => {
            return Err(DeclarativeError::Syntax(
                "missing _format_version (expected \"3.0\")".into(),
            ))
        }
    }
    for k in root.keys() {
        let meta = matches!(k.as_str(), "_format_version" | "_transform" | "_comment");
        if !meta && EntityKind::from_table(k).is_none() {
            return Err(DeclarativeError::Syntax(format!(
                "unsupported top-level key '{k}'"
            )));
        }
    }
    let mut items = Vec::new();
    for kind in EntityKind::ALL {
        if let Some(list) = root.get(kind.table()) {
            collect(*kind, list, kind.table(), None, stamps, &mut items)?;
        }
    }
    // Built kind by kind, referenced kinds first, so references by name resolve.
    let mut st = State::default();
    let mut ids: Vec<Option<Uuid>> = vec![None; items.len()];
    for kind in EntityKind::load_order() {
        for (n, item) in items.iter().enumerate().filter(|(_, i)| i.kind == kind) {
            let cx = BuildCx {
                stamp: &item.stamp,
                state: &st,
                parent: item
                    .parent
                    .and_then(|(field, p)| ids[p].map(|id| (field, id))),
            };
            let e = kind
                .build(&item.body, &cx)
                .map_err(|e| invalid(&item.path, e))?;
            ids[n] = Some(e.id());
            st.apply(crate::Command::Put {
                entity: e,
                mode: crate::PutMode::Create,
            })
            .map_err(|e| DeclarativeError::Conflict(format!("{}: {e}", item.path)))?;
        }
    }
    Ok(st.data().clone())
}

/// Kong's files name parents as plain strings (`service: my-svc`); input wants objects.
fn refs_to_objects(kind: EntityKind, v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        for f in kind.decl().foreign {
            if let Some(Value::String(s)) = o.get(f.field).cloned() {
                o.insert(f.field.into(), json!({ "id": s }));
            }
        }
    }
    v
}

fn invalid(path: &str, errors: FieldErrors) -> DeclarativeError {
    DeclarativeError::Invalid {
        path: path.to_string(),
        errors,
    }
}

/// The parent an entity is nested under in an export: its one reference, if that reference
/// nests (a route under its service, a credential under its consumer).
fn nesting_parent(e: &Entity) -> Option<(&'static ForeignDecl, Uuid)> {
    let mut set = e
        .kind()
        .decl()
        .foreign
        .iter()
        .filter_map(|f| e.field(f.field).id().map(|id| (f, id)));
    match (set.next(), set.next()) {
        (Some((f, id)), None) if f.nests => Some((f, id)),
        _ => None,
    }
}

/// An entity as exported, with what nests under it.
fn export_entity(st: &State, e: &Entity, nested_in: Option<&str>) -> Value {
    let mut v = e.to_json();
    if let (Some(field), Some(o)) = (nested_in, v.as_object_mut()) {
        o.remove(field);
    }
    let mut children: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for child in st.referrers(e.kind(), e.id()) {
        if let Some((f, pid)) = nesting_parent(child) {
            if f.target == e.kind() && pid == e.id() {
                children
                    .entry(child.kind().table())
                    .or_default()
                    .push(export_entity(st, child, Some(f.field)));
            }
        }
    }
    if let Some(o) = v.as_object_mut() {
        for (table, list) in children {
            o.insert(table.to_string(), Value::Array(list));
        }
    }
    v
}

/// Exports a state in Kong's declarative format (JSON value; callers choose YAML or JSON).
/// An entity with one reference is nested under what it refers to, as Kong exports routes
/// under services and credentials under consumers; the others are listed at the top.
pub fn export(st: &State) -> Value {
    let mut doc = serde_json::Map::new();
    doc.insert("_format_version".into(), json!("3.0"));
    for kind in EntityKind::ALL {
        let top: Vec<Value> = st
            .list(*kind)
            .filter(|e| nesting_parent(e).is_none())
            .map(|e| export_entity(st, e, None))
            .collect();
        doc.insert(kind.table().into(), Value::Array(top));
    }
    Value::Object(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    use Sequence as Seq;

    const KONG_FILE: &str = r#"
_format_version: "3.0"
services:
  - name: example-service
    url: http://echo:8080
    routes:
      - name: example-route
        paths: [/mock]
        plugins:
          - name: rate-limiting
            config: { minute: 5, policy: local }
    plugins:
      - name: key-auth
consumers:
  - username: alice
    keyauth_credentials:
      - key: alice-key
plugins:
  - name: rate-limiting
    config: { hour: 1000 }
"#;

    #[test]
    fn imports_kongs_nested_format() {
        let data = parse(KONG_FILE, &mut Seq(0)).unwrap();
        assert_eq!(data.count(EntityKind::Service), 1);
        assert_eq!(data.count(EntityKind::Route), 1);
        assert_eq!(data.count(EntityKind::Plugin), 3);
        let key = data.all::<crate::KeyAuthCredential>().next().unwrap();
        assert_eq!(key.key, "alice-key");
        let st = State::from_data(data).unwrap();
        let exported = export(&st);
        let again = parse(&serde_json::to_string(&exported).unwrap(), &mut Seq(1000)).unwrap();
        // Ids are kept on re-import, so the export is a faithful round trip.
        assert_eq!(&again, st.data());
    }

    #[test]
    fn errors_name_the_place() {
        let bad = "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: nope\n";
        let e = parse(bad, &mut Seq(0)).unwrap_err();
        assert!(e.to_string().contains("services[0]"), "{e}");
        assert!(parse("services: []", &mut Seq(0)).is_err());
    }
}
