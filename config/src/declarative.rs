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
    /// Keys of the file's top level that name no entity kind.
    #[error("declarative config: {}", .0.message())]
    TopLevel(FieldErrors),
    /// Every entity of the file that is invalid or clashes with another, in file order.
    #[error("declarative config {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Entities(Vec<EntityError>),
}

/// One bad entity of a file.
#[derive(Debug)]
pub struct EntityError {
    /// Where it is: `services[0].routes[1]`.
    pub path: String,
    pub kind: EntityKind,
    /// The entity as the file gives it (without what is nested in it).
    pub entity: Value,
    pub problem: Problem,
}

#[derive(Debug)]
pub enum Problem {
    /// Its own fields are wrong.
    Invalid(FieldErrors),
    /// It cannot exist beside an earlier entity (same id, same unique key).
    Conflict(crate::error::ApplyError),
}

impl std::fmt::Display for EntityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.problem {
            Problem::Invalid(e) => write!(f, "{}: {}", self.path, e.message()),
            Problem::Conflict(e) => write!(f, "{}: {e}", self.path),
        }
    }
}

impl EntityError {
    /// What Kong puts at the entity's position in `fields`.
    fn kong_value(&self) -> Value {
        match &self.problem {
            Problem::Invalid(e) => e.to_json(),
            Problem::Conflict(e) => Value::String(uniqueness(&self.path, e)),
        }
    }

    /// One `flattened_errors` entry.
    fn flattened(&self) -> Value {
        let errors = match &self.problem {
            Problem::Invalid(e) => flatten_field_errors(e),
            Problem::Conflict(e) => {
                vec![json!({"type": "entity", "message": uniqueness(&self.path, e)})]
            }
        };
        let table = self.kind.table();
        let entity = &self.entity;
        let mut out = json!({
            "entity_type": table.strip_suffix('s').unwrap_or(table),
            "entity": entity,
            "errors": errors,
        });
        let is_uuid = |v: &Value| v.as_str().is_some_and(|s| Uuid::parse_str(s).is_ok());
        if let Some(id) = entity.get("id").filter(|v| is_uuid(v)) {
            out["entity_id"] = id.clone();
        }
        let named = |v: &Value| v.as_str().is_some_and(|s| !s.is_empty());
        if let Some(name) = entity.get("name").filter(|v| named(v)) {
            out["entity_name"] = name.clone();
        }
        let tags_ok = |v: &Value| v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
        if let Some(tags) = entity.get("tags").filter(|v| tags_ok(v)) {
            out["entity_tags"] = tags.clone();
        }
        out
    }
}

impl DeclarativeError {
    /// Kong's `fields` for this error (`kong/db/declarative/init.lua`): the file's shape, with
    /// each bad entity's errors at its position (lists count from 1, as Lua's), or
    /// `{"error": ...}` when the file itself cannot be read.
    pub fn kong_fields(&self) -> Value {
        let mut fields = FieldErrors::new();
        match self {
            DeclarativeError::Syntax(m) => {
                fields.add(
                    "error",
                    format!("failed parsing declarative configuration: {m}"),
                );
            }
            DeclarativeError::TopLevel(f) => return f.to_json(),
            DeclarativeError::Entities(all) => {
                for e in all {
                    place(&mut fields, &e.path, e.kong_value());
                }
            }
        }
        fields.to_json()
    }

    /// Kong's `?flatten_errors=1` list (what the Ingress Controller reads): per bad entity,
    /// its type, the entity as given, its id, name and tags when they are valid, and each
    /// error as `{"type": "field", "field": "config.minute", ...}` or `{"type": "entity", ...}`.
    pub fn flattened(&self) -> Vec<Value> {
        match self {
            DeclarativeError::Entities(all) => all.iter().map(EntityError::flattened).collect(),
            _ => Vec::new(),
        }
    }

    /// Kong's message: `declarative config is invalid: ` and the fields as Lua prints them.
    pub fn kong_message(&self) -> String {
        format!(
            "declarative config is invalid: {}",
            crate::error::lua_compact(&self.kong_fields())
        )
    }
}

/// Kong's words for two entities of a file that cannot both exist.
fn uniqueness(path: &str, e: &crate::error::ApplyError) -> String {
    use crate::error::ApplyError;
    let table = path.rsplit('.').next().unwrap_or(path);
    let table = table.split('[').next().unwrap_or(table);
    match e {
        ApplyError::Unique { fields, .. } => {
            let (k, v) = fields
                .as_object()
                .and_then(|o| o.iter().next())
                .map(|(k, v)| (k.clone(), v.as_str().map_or(v.to_string(), str::to_string)))
                .unwrap_or_default();
            format!("uniqueness violation: '{table}' entity with {k} set to '{v}' already declared")
        }
        ApplyError::PrimaryKey { id, .. } => format!(
            "uniqueness violation: '{table}' entity with primary key set to '{id}' already declared"
        ),
        other => other.to_string(),
    }
}

/// Puts `v` at a file position such as `services[0].routes[1]` (as `services.1.routes.2`).
fn place(fields: &mut FieldErrors, path: &str, v: Value) {
    let mut parts: Vec<String> = Vec::new();
    for seg in path.split('.') {
        match seg.split_once('[') {
            Some((name, idx)) => {
                parts.push(name.to_string());
                let i: usize = idx.trim_end_matches(']').parse().unwrap_or(0);
                parts.push((i + 1).to_string());
            }
            None => parts.push(seg.to_string()),
        }
    }
    fields.put(&parts, v);
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
        now_ms: s.now() * 1000,
        created_at: None,
        generated_key: s.key(),
        generated_secret: s.key(),
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
    /// Its place when the file is walked children first (Kong's order for errors).
    post: usize,
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
    done: &mut usize,
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
            post: 0,
        });
        for (child, field, x) in children {
            let p = format!("{here}.{}", child.table());
            collect(child, &x, &p, Some((field, me)), stamps, out, done)?;
        }
        // Its subtree is numbered by now: it comes after.
        *done += 1;
        out[me].post = *done;
    }
    Ok(())
}

/// Parses a YAML or JSON declarative file into a complete state.
pub fn parse(text: &str, stamps: &mut dyn Stamps) -> Result<StateData, DeclarativeError> {
    // JSON is YAML too, but the JSON parser is an order of magnitude faster on the large
    // files an API-ops pipeline pushes.
    // Kong reads what JSON refuses (a trailing comma) as YAML, as it does here.
    let json = text
        .trim_start()
        .starts_with('{')
        .then(|| serde_json::from_str(text).ok())
        .flatten();
    let doc: Value = match json {
        Some(doc) => doc,
        None => serde_yaml::from_str(text).map_err(|e| DeclarativeError::Syntax(e.to_string()))?,
    };
    let Some(root) = doc.as_object() else {
        return Err(DeclarativeError::Syntax("expected an object".into()));
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
    let mut unknown = FieldErrors::new();
    for k in root.keys() {
        let meta = matches!(
            k.as_str(),
            "_format_version" | "_transform" | "_comment" | "_workspace"
        );
        if !meta && EntityKind::from_table(k).is_none() {
            unknown.put(
                std::slice::from_ref(k),
                Value::String("unknown field".into()),
            );
        }
    }
    if !unknown.is_empty() {
        return Err(DeclarativeError::TopLevel(unknown));
    }
    // Kong's `_transform` (default true): false when the file holds secrets already
    // transformed, as an export does.
    let transform = match root.get("_transform") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(DeclarativeError::Syntax(
                "_transform: expected a boolean".into(),
            ))
        }
    };
    let (mut items, mut done) = (Vec::new(), 0);
    for kind in EntityKind::ALL {
        if let Some(list) = root.get(kind.table()) {
            collect(
                *kind,
                list,
                kind.table(),
                None,
                stamps,
                &mut items,
                &mut done,
            )?;
        }
    }
    // Built kind by kind, referenced kinds first, so references by name resolve. Every bad
    // entity is reported, not only the first. What is nested in a bad entity is still
    // checked (as Kong validates each entity on its own), against the id its parent was to
    // have, but not applied.
    let mut st = State::default();
    let mut ids: Vec<Option<Uuid>> = vec![None; items.len()];
    let mut failed = vec![false; items.len()];
    let intended: Vec<Uuid> = items
        .iter()
        .map(|i| {
            i.body
                .get("id")
                .and_then(Value::as_str)
                .and_then(|s| Uuid::parse_str(s).ok())
                .unwrap_or(i.stamp.id)
        })
        .collect();
    let mut errors: Vec<(usize, EntityError)> = Vec::new();
    for kind in EntityKind::load_order() {
        for (n, item) in items.iter().enumerate().filter(|(_, i)| i.kind == kind) {
            let parent = item
                .parent
                .map(|(field, p)| (field, ids[p].unwrap_or(intended[p]), failed[p]));
            let cx = BuildCx {
                stamp: &item.stamp,
                state: &st,
                parent: parent.map(|(field, id, _)| (field, id)),
                transform,
            };
            let bad = |problem| {
                // Kong shows a nested entity with the reference its nesting gives it.
                let mut entity = item.body.clone();
                if let (Some((field, id, _)), Some(o)) = (parent, entity.as_object_mut()) {
                    o.insert(field.into(), json!({ "id": id }));
                }
                EntityError {
                    path: item.path.clone(),
                    kind,
                    entity,
                    problem,
                }
            };
            let e = match kind.build(&item.body, &cx) {
                Ok(e) => e,
                Err(f) => {
                    failed[n] = true;
                    errors.push((n, bad(Problem::Invalid(f))));
                    continue;
                }
            };
            if parent.is_some_and(|(_, _, parent_failed)| parent_failed) {
                failed[n] = true;
                continue;
            }
            let id = e.id();
            let put = crate::Command::Put {
                entity: e,
                mode: crate::PutMode::Create,
            };
            match st.apply(put) {
                Ok(_) => ids[n] = Some(id),
                Err(c) => {
                    failed[n] = true;
                    errors.push((n, bad(Problem::Conflict(c))));
                }
            }
        }
    }
    if !errors.is_empty() {
        // Kong's order: what is nested in an entity comes before it, otherwise file order.
        errors.sort_by_key(|(n, _)| items[*n].post);
        return Err(DeclarativeError::Entities(
            errors.into_iter().map(|(_, e)| e).collect(),
        ));
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
    // Secrets are exported transformed (passwords as their hashes), so a file read back
    // takes them as they are (Kong's export writes the same).
    doc.insert("_transform".into(), json!(false));
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

fn flatten_field_errors(errors: &FieldErrors) -> Vec<Value> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<Value>) {
        match v {
            Value::String(m) => out.push(json!({"type": "field", "field": prefix, "message": m})),
            Value::Array(a) if prefix.ends_with("@entity") => {
                let owner = prefix.trim_end_matches("@entity").trim_end_matches('.');
                for m in a {
                    let mut e = json!({"type": "entity", "message": m});
                    if !owner.is_empty() {
                        e["field"] = Value::String(owner.to_string());
                    }
                    out.push(e);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate().filter(|(_, x)| !x.is_null()) {
                    walk(&format!("{prefix}.{}", i + 1), x, out);
                }
            }
            Value::Object(m) => {
                for (k, x) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&p, x, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    let v = errors.to_json();
    if let Some(Value::Array(a)) = v.get("@entity") {
        for m in a {
            out.push(json!({"type": "entity", "message": m}));
        }
    }
    if let Value::Object(m) = &v {
        for (k, x) in m.iter().filter(|(k, _)| *k != "@entity") {
            walk(k, x, &mut out);
        }
    }
    out
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
