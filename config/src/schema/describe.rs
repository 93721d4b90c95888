//! `GET /schemas/{entity}` and `POST /schemas/{entity}/validate`, in Kong's format, from the
//! declarations.

use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::{BuildCx, EntityDecl, FieldDecl, FieldType};
use crate::error::FieldErrors;
use crate::input::Stamp;
use crate::registry::EntityKind;
use crate::state::State;

fn describe_field(decl: Option<&EntityDecl>, f: &FieldDecl) -> Value {
    let mut d = Map::new();
    let ty = |t: &str| Value::String(t.to_string());
    match f.typ {
        FieldType::Id => {
            d.insert("type".into(), ty("string"));
            d.insert("uuid".into(), Value::Bool(true));
        }
        FieldType::Timestamp => {
            d.insert("type".into(), ty("integer"));
            d.insert("timestamp".into(), Value::Bool(true));
        }
        FieldType::String { min, max } => {
            d.insert("type".into(), ty("string"));
            if min > 0 {
                d.insert("len_min".into(), Value::from(min));
            }
            d.insert("len_max".into(), Value::from(max));
        }
        FieldType::Name => {
            d.insert("type".into(), ty("string"));
        }
        FieldType::Integer { min, max } => {
            d.insert("type".into(), ty("integer"));
            d.insert("between".into(), json!([min, max]));
        }
        FieldType::Number => {
            d.insert("type".into(), ty("number"));
        }
        FieldType::Boolean => {
            d.insert("type".into(), ty("boolean"));
        }
        FieldType::OneOf(allowed) => {
            d.insert("type".into(), ty("string"));
            d.insert("one_of".into(), json!(allowed));
        }
        FieldType::Array => {
            d.insert("type".into(), ty("array"));
            d.insert("elements".into(), json!({"type": "string"}));
        }
        FieldType::Set | FieldType::Tags => {
            d.insert("type".into(), ty("set"));
            d.insert("elements".into(), json!({"type": "string"}));
        }
        FieldType::Map => {
            d.insert("type".into(), ty("map"));
            d.insert("keys".into(), json!({"type": "string"}));
            d.insert(
                "values".into(),
                json!({"type": "array", "elements": {"type": "string"}}),
            );
        }
        FieldType::Foreign(target) => {
            d.insert("type".into(), ty("foreign"));
            d.insert("reference".into(), ty(target.decl().table));
            if let Some(fk) = decl.and_then(|d| d.foreign(f.name)) {
                d.insert("on_delete".into(), ty(fk.on_delete.as_str()));
            }
        }
        FieldType::Record => {
            d.insert("type".into(), ty("record"));
        }
    }
    if f.auto {
        d.insert("auto".into(), Value::Bool(true));
    }
    if f.required {
        d.insert("required".into(), Value::Bool(true));
    }
    if let Some(def) = f.default.and_then(|t| serde_json::from_str(t).ok()) {
        d.insert("default".into(), def);
    }
    if decl.is_some_and(|d| d.uniques.iter().any(|u| u.len() == 1 && u[0] == f.name)) {
        d.insert("unique".into(), Value::Bool(true));
    }
    json!({ f.name: d })
}

/// Kong's description of a list of fields (a plugin's config).
pub fn describe_fields(fields: &[FieldDecl]) -> Vec<Value> {
    fields.iter().map(|f| describe_field(None, f)).collect()
}

/// Kong's `GET /schemas/{entity}` body for a declared entity.
pub fn entity_schema(kind: EntityKind) -> Value {
    let decl = kind.decl();
    let fields: Vec<Value> = decl
        .fields
        .iter()
        .map(|f| describe_field(Some(decl), f))
        .collect();
    let mut v = json!({
        "fields": fields,
        "primary_key": ["id"],
        "endpoint_key": decl.endpoint_key,
    });
    // Kong always lists the entity checks, empty when there are none.
    v["entity_checks"] = match serde_json::from_str::<Value>(decl.entity_checks) {
        Ok(checks @ Value::Array(_)) => checks,
        _ => json!([]),
    };
    let composite: Vec<&&[&str]> = decl.uniques.iter().filter(|u| u.len() > 1).collect();
    if !composite.is_empty() {
        v["unique_across"] = json!(composite);
    }
    v
}

/// `POST /schemas/{entity}/validate`: builds the entity from `body` without storing it.
/// References are resolved against `state` the way a create would.
pub fn validate_entity(kind: EntityKind, body: &Value, state: &State) -> Result<(), FieldErrors> {
    let stamp = Stamp {
        id: Uuid::nil(),
        now: 0,
        now_ms: 0,
        created_at: None,
        generated_key: "validation".into(),
        generated_secret: "validation".into(),
    };
    // Validation stores nothing, so it does not pay for a password hash: a password given
    // is checked as a field, then stands in as already transformed.
    let mut body = body.clone();
    if kind == EntityKind::BasicAuth && body.get("password").is_some_and(Value::is_string) {
        body["password"] = Value::String(crate::password::PLACEHOLDER.into());
    }
    let cx = BuildCx {
        stamp: &stamp,
        state,
        parent: None,
        transform: false,
    };
    kind.build(&body, &cx).map(|_| ())
}
