//! Errors of validation and apply, each mapping to one of Kong's Admin API error shapes.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use thiserror::Error;

use crate::entity::EntityKind;

/// Per-field messages, nested as Kong nests them (`{"config": {"minute": "..."}}`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FieldErrors(pub BTreeMap<String, Value>);

impl FieldErrors {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn single(field: &str, msg: impl Into<String>) -> Self {
        let mut e = Self::new();
        e.add(field, msg);
        e
    }

    /// Records `msg` for a dotted field path (`config.minute` nests under `config`).
    pub fn add(&mut self, field: &str, msg: impl Into<String>) {
        let path: Vec<String> = field.split('.').map(str::to_string).collect();
        self.put(&path, Value::String(msg.into()));
    }

    /// Adds an entity-level message (Kong's `@entity` list).
    pub fn add_entity(&mut self, msg: impl Into<String>) {
        let slot = self
            .0
            .entry("@entity".into())
            .or_insert_with(|| Value::Array(vec![]));
        if let Value::Array(a) = slot {
            a.push(Value::String(msg.into()));
        }
    }

    /// Puts `v` at a path of keys, making objects on the way (what is there already stays).
    pub fn put(&mut self, path: &[String], v: Value) {
        let Some((first, rest)) = path.split_first() else {
            return;
        };
        if rest.is_empty() {
            merge_into(self.0.entry(first.clone()).or_insert(Value::Null), v);
            return;
        }
        let mut cur = self
            .0
            .entry(first.clone())
            .or_insert_with(|| Value::Object(Map::new()));
        for (i, p) in rest.iter().enumerate() {
            let Some(obj) = cur.as_object_mut() else {
                return;
            };
            if i + 1 == rest.len() {
                merge_into(obj.entry(p.clone()).or_insert(Value::Null), v);
                return;
            }
            cur = obj
                .entry(p.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn merge(&mut self, other: FieldErrors) {
        for (k, v) in other.0 {
            merge_into(self.0.entry(k).or_insert(Value::Null), v);
        }
    }

    pub fn into_result(self) -> Result<(), FieldErrors> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }

    /// Kong's summary line (`kong/db/errors.lua` `schema_violation`): entity-level messages
    /// first, as they are; then each field in sorted order, a record's or an array's members
    /// one level down (`config.minute: ...`, `protocols.1: ...`, arrays counted from 1).
    pub fn message(&self) -> String {
        let mut buf: Vec<String> = Vec::new();
        if let Some(Value::Array(a)) = self.0.get("@entity") {
            buf.extend(a.iter().map(lua_text));
        }
        for (field, v) in self.0.iter().filter(|(k, _)| *k != "@entity") {
            match v {
                Value::Object(m) => {
                    let mut keys: Vec<&String> = m.keys().collect();
                    keys.sort_by(|a, b| lua_key_order(a, b));
                    for k in keys {
                        buf.push(format!(
                            "{field}.{k}: {}",
                            lua_text(&arrays_by_index(&m[k]))
                        ));
                    }
                }
                other => buf.push(format!("{field}: {}", lua_text(&arrays_by_index(other)))),
            }
        }
        match buf.len() {
            1 => format!("{} ({})", self.kind().0, buf[0]),
            n => format!("{n} {} ({})", self.kind().1, buf.join("; ")),
        }
    }

    /// Kong's wording for the summary: schema violations, or unresolved foreign keys when
    /// every message is about a reference by name that names nothing.
    fn kind(&self) -> (&'static str, &'static str) {
        if self.all_unresolved() {
            ("foreign key unresolved", "foreign keys unresolved")
        } else {
            ("schema violation", "schema violations")
        }
    }

    /// Whether every message is Kong's "the foreign key cannot be resolved" (its code 13).
    pub fn all_unresolved(&self) -> bool {
        fn leaves<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
            match v {
                Value::String(s) => out.push(s),
                Value::Object(m) => m.values().for_each(|x| leaves(x, out)),
                Value::Array(a) => a.iter().for_each(|x| leaves(x, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        self.0.values().for_each(|v| leaves(v, &mut all));
        !all.is_empty()
            && all
                .iter()
                .all(|m| m.starts_with("the foreign key cannot be resolved with"))
    }

    /// The `fields` object: a member keyed by array positions (`protocols.2`) becomes an array
    /// with null where a position had no error, as cjson encodes Kong's Lua table.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), arrays_by_index(v)))
                .collect(),
        )
    }
}

/// Puts `v` where `slot` is: into an empty slot; key by key into an object (a nested entity's
/// errors and its parent's own share one place); otherwise the first message stays.
fn merge_into(slot: &mut Value, v: Value) {
    match (slot, v) {
        (slot @ Value::Null, v) => *slot = v,
        (Value::Object(have), Value::Object(add)) => {
            for (k, x) in add {
                merge_into(have.entry(k).or_insert(Value::Null), x);
            }
        }
        _ => {}
    }
}

/// Orders keys as Kong's `sorted_keys` does: positions numerically, names alphabetically.
fn lua_key_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// A value as Kong prints it in a message: a string as it is, a table as penlight's
/// `pretty.write(t)` renders it (two-space indent).
fn lua_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => lua_write(other, "  ", 0),
    }
}

/// A value as penlight's `pretty.write(t, "")` prints it: `{services={{host="..."}}}`.
pub fn lua_compact(v: &Value) -> String {
    lua_write(v, "", 0)
}

/// penlight's `pretty.write` with `indent`: keys sorted, lists as sequences, a list with holes
/// by position (`[2]="..."`); with an indent, one entry per line and ` = ` between key and
/// value.
fn lua_write(v: &Value, indent: &str, depth: usize) -> String {
    let entries: Vec<String> = match v {
        Value::String(s) => return format!("{s:?}"),
        Value::Array(a) if a.iter().all(|x| !x.is_null()) => {
            a.iter().map(|x| lua_write(x, indent, depth + 1)).collect()
        }
        Value::Array(a) => a
            .iter()
            .enumerate()
            .filter(|(_, x)| !x.is_null())
            .map(|(i, x)| lua_entry(&format!("[{}]", i + 1), x, indent, depth))
            .collect(),
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by(|a, b| lua_key_order(a, b));
            keys.iter()
                .map(|k| {
                    let plain = k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        && !k.starts_with(|c: char| c.is_ascii_digit());
                    let key = if plain {
                        k.to_string()
                    } else {
                        format!("[{k:?}]")
                    };
                    lua_entry(&key, &m[*k], indent, depth)
                })
                .collect()
        }
        other => return other.to_string(),
    };
    if indent.is_empty() {
        return format!("{{{}}}", entries.join(","));
    }
    let pad = indent.repeat(depth + 1);
    let end = indent.repeat(depth);
    format!("{{\n{pad}{}\n{end}}}", entries.join(&format!(",\n{pad}")))
}

fn lua_entry(key: &str, v: &Value, indent: &str, depth: usize) -> String {
    let eq = if indent.is_empty() { "=" } else { " = " };
    format!("{key}{eq}{}", lua_write(v, indent, depth + 1))
}

/// Positions become a list only when they are few and dense enough to have come from one:
/// field names are client input, and `{"a.4294967296": 1}` must not allocate a huge list.
const MAX_LIST_HOLES: usize = 64;

/// The list length for an object keyed by positions (`"1"`, `"2"`, ...), if it is one.
fn list_len(m: &Map<String, Value>) -> Option<usize> {
    let mut max = 0;
    for k in m.keys() {
        let n = k
            .parse::<usize>()
            .ok()
            .filter(|n| *n > 0 && !k.starts_with('0'))?;
        max = max.max(n);
    }
    (!m.is_empty() && max <= m.len() + MAX_LIST_HOLES).then_some(max)
}

fn arrays_by_index(v: &Value) -> Value {
    match v {
        Value::Object(m) => match list_len(m) {
            Some(len) => {
                let mut a = vec![Value::Null; len];
                for (k, x) in m {
                    if let Some(slot) = k.parse::<usize>().ok().and_then(|i| a.get_mut(i - 1)) {
                        *slot = arrays_by_index(x);
                    }
                }
                Value::Array(a)
            }
            None => Value::Object(
                m.iter()
                    .map(|(k, x)| (k.clone(), arrays_by_index(x)))
                    .collect(),
            ),
        },
        other => other.clone(),
    }
}

/// Why a command could not be applied. Deterministic: every node rejects the same command
/// with the same error.
#[derive(Debug, Clone, PartialEq, Error, serde::Serialize, serde::Deserialize)]
pub enum ApplyError {
    #[error("{}", .0.message())]
    Schema(FieldErrors),
    #[error("UNIQUE violation detected on '{{{key}}}'")]
    Unique {
        kind: EntityKind,
        /// Kong's rendering of the violated key, e.g. `name="s1"`.
        key: String,
        fields: Value,
    },
    #[error("PRIMARY KEY violation detected on '{{id=\"{id}\"}}'")]
    PrimaryKey { kind: EntityKind, id: String },
    #[error("the foreign key '{{id=\"{id}\"}}' does not reference an existing '{}' entity.", .target.table())]
    ForeignKey {
        field: String,
        target: EntityKind,
        id: String,
    },
    #[error("an existing '{}' entity references this '{}' entity", .by.table(), .kind.table())]
    ReferencedBy { kind: EntityKind, by: EntityKind },
    #[error("Not found")]
    NotFound { kind: EntityKind, id: String },
    /// A reference held in a list (a service's `ca_certificates`) forbids a delete.
    #[error("{0}")]
    ReferencedByOthers(String),
}

impl ApplyError {
    /// A unique violation on one string field.
    pub fn unique(kind: EntityKind, field: &str, value: &str) -> Self {
        ApplyError::Unique {
            kind,
            key: format!("{field}={}", Value::String(value.to_string())),
            fields: json!({ field: value }),
        }
    }

    /// The HTTP status Kong answers with.
    pub fn status(&self) -> u16 {
        match self {
            ApplyError::Schema(_) | ApplyError::ForeignKey { .. } => 400,
            ApplyError::ReferencedBy { .. } | ApplyError::ReferencedByOthers(_) => 400,
            ApplyError::Unique { .. } | ApplyError::PrimaryKey { .. } => 409,
            ApplyError::NotFound { .. } => 404,
        }
    }

    /// The JSON body Kong answers with (`name`, `code`, `message`, `fields`).
    pub fn to_json(&self) -> Value {
        let message = self.to_string();
        match self {
            ApplyError::Schema(f) if f.all_unresolved() => json!({
                "code": 13, "name": "foreign keys unresolved", "message": message, "fields": f.to_json()
            }),
            ApplyError::Schema(f) => json!({
                "code": 2, "name": "schema violation", "message": message, "fields": f.to_json()
            }),
            ApplyError::Unique { fields, .. } => json!({
                "code": 5, "name": "unique constraint violation", "message": message,
                "fields": fields
            }),
            ApplyError::PrimaryKey { id, .. } => json!({
                "code": 3, "name": "primary key violation", "message": message,
                "fields": { "id": id }
            }),
            ApplyError::ForeignKey { field, id, .. } => json!({
                "code": 4, "name": "foreign key violation", "message": message,
                "fields": { field: { "id": id } }
            }),
            ApplyError::ReferencedBy { by, .. } => json!({
                "code": 4, "name": "foreign key violation", "message": message,
                "fields": { "@referenced_by": by.table() }
            }),
            ApplyError::NotFound { .. } => json!({ "message": "Not found" }),
            ApplyError::ReferencedByOthers(_) => json!({
                "code": 19, "name": "referenced by others", "message": message
            }),
        }
    }
}

impl From<FieldErrors> for ApplyError {
    fn from(f: FieldErrors) -> Self {
        ApplyError::Schema(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_fields_and_summary() {
        let mut e = FieldErrors::new();
        e.add("config.minute", "value must be greater than 0");
        e.add("name", "required field missing");
        assert_eq!(
            e.to_json(),
            json!({"config": {"minute": "value must be greater than 0"}, "name": "required field missing"})
        );
        assert_eq!(
            e.message(),
            "2 schema violations (config.minute: value must be greater than 0; name: required field missing)"
        );
    }

    #[test]
    fn list_positions_and_kong_messages() {
        let mut e = FieldErrors::new();
        e.add("protocols.2", "expected one of: http");
        e.add_entity("must set one of 'paths'");
        assert_eq!(
            e.to_json()["protocols"],
            json!([null, "expected one of: http"])
        );
        assert_eq!(
            e.message(),
            "2 schema violations (must set one of 'paths'; protocols.2: expected one of: http)"
        );
    }

    #[test]
    fn a_huge_position_in_a_client_field_name_stays_a_name() {
        // Field names are client input: `a.4294967296` must not become a 4-billion-item list.
        let mut e = FieldErrors::new();
        e.add("a.4294967296", "unknown field");
        e.add("b.18446744073709551615", "unknown field");
        e.add("c.007", "unknown field");
        let v = e.to_json();
        assert_eq!(v["a"]["4294967296"], "unknown field");
        assert_eq!(v["b"]["18446744073709551615"], "unknown field");
        assert_eq!(v["c"]["007"], "unknown field");
    }

    #[test]
    fn a_nested_entity_and_its_parent_share_a_place() {
        let mut e = FieldErrors::new();
        let at = |p: &str| p.split('.').map(str::to_string).collect::<Vec<_>>();
        e.put(&at("services.1.routes.1"), json!({"paths": "bad"}));
        e.put(&at("services.1"), json!({"host": "required field missing"}));
        assert_eq!(
            e.to_json(),
            json!({"services": [{"host": "required field missing", "routes": [{"paths": "bad"}]}]})
        );
    }

    #[test]
    fn unique_message_matches_kong() {
        let e = ApplyError::unique(EntityKind::Service, "name", "s1");
        assert_eq!(
            e.to_string(),
            "UNIQUE violation detected on '{name=\"s1\"}'"
        );
        assert_eq!(e.status(), 409);
    }
}
