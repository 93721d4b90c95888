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
        let msg = Value::String(msg.into());
        let mut parts = field.split('.');
        let first = parts.next().unwrap_or(field).to_string();
        let rest: Vec<&str> = parts.collect();
        if rest.is_empty() {
            self.0.entry(first).or_insert(msg);
            return;
        }
        let slot = self
            .0
            .entry(first)
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            return;
        }
        let mut cur = slot;
        for (i, p) in rest.iter().enumerate() {
            let obj = match cur.as_object_mut() {
                Some(o) => o,
                None => return,
            };
            if i + 1 == rest.len() {
                obj.entry(p.to_string()).or_insert(msg);
                return;
            }
            cur = obj
                .entry(p.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
        }
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

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn merge(&mut self, other: FieldErrors) {
        for (k, v) in other.0 {
            self.0.entry(k).or_insert(v);
        }
    }

    pub fn into_result(self) -> Result<(), FieldErrors> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(self)
        }
    }

    /// Kong's summary line: `2 schema violations (config.minute: ...; name: ...)`.
    pub fn message(&self) -> String {
        let mut flat = Vec::new();
        flatten(
            "",
            &Value::Object(self.0.clone().into_iter().collect()),
            &mut flat,
        );
        match flat.len() {
            1 => format!("schema violation ({})", flat[0]),
            n => format!("{n} schema violations ({})", flat.join("; ")),
        }
    }

    pub fn to_json(&self) -> Value {
        Value::Object(self.0.clone().into_iter().collect())
    }
}

fn flatten(prefix: &str, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        Value::Array(a) => {
            for v in a {
                flatten(prefix, v, out);
            }
        }
        Value::String(s) => out.push(format!("{prefix}: {s}")),
        other => out.push(format!("{prefix}: {other}")),
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
            ApplyError::ReferencedBy { .. } => 400,
            ApplyError::Unique { .. } | ApplyError::PrimaryKey { .. } => 409,
            ApplyError::NotFound { .. } => 404,
        }
    }

    /// The JSON body Kong answers with (`name`, `code`, `message`, `fields`).
    pub fn to_json(&self) -> Value {
        let message = self.to_string();
        match self {
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
    fn unique_message_matches_kong() {
        let e = ApplyError::unique(EntityKind::Service, "name", "s1");
        assert_eq!(
            e.to_string(),
            "UNIQUE violation detected on '{name=\"s1\"}'"
        );
        assert_eq!(e.status(), 409);
    }
}
