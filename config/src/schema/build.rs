//! Building an entity from input by its declared fields alone: types, defaults, required
//! fields, lengths, ranges, references and Kong's messages. Entities with nothing beyond their
//! fields (credentials, ACL groups) build with [`build_record`]; the others add their own
//! checks in their `Declared::build`.

use serde_json::{Map, Value};
use uuid::Uuid;

use super::{EntityDecl, FieldDecl, FieldType};
use crate::error::FieldErrors;
use crate::input::{check_len, check_name, check_tags, Stamp};
use crate::registry::EntityKind;
use crate::state::State;

/// What building an entity may read besides its input.
pub struct BuildCx<'a> {
    pub stamp: &'a Stamp,
    /// For references given by name (`{"service": {"name": "s"}}`).
    pub state: &'a State,
    /// The reference the URL or the file's nesting gives (`/consumers/{c}/acls` gives
    /// `("consumer", c)`); it wins over one in the body.
    pub parent: Option<(&'static str, Uuid)>,
    /// Kong's `_transform`: secrets given in clear are transformed (passwords hashed) on
    /// write. A declarative file with `_transform: false` holds them already transformed.
    pub transform: bool,
}

impl BuildCx<'_> {
    /// The parent's id if the parent reference is `field`.
    pub fn parent_for(&self, field: &str) -> Option<Uuid> {
        self.parent.filter(|(f, _)| *f == field).map(|(_, id)| id)
    }
}

/// A reference in input: `{"id": ...}`, or the target's endpoint key
/// (`{"name": ...}`, `{"username": ...}`), or a bare id or key (declarative files).
pub struct FkInput;

impl FkInput {
    /// Resolves a reference for `field` to `target`; an error names the field as Kong does.
    pub fn resolve(
        state: &State,
        field: &str,
        target: EntityKind,
        v: &Value,
        errs: &mut FieldErrors,
    ) -> Option<Uuid> {
        let by = target.decl().endpoint_key.unwrap_or("name");
        let (key, via) = match v {
            Value::Null => return None,
            Value::String(s) => (s.clone(), "id"),
            Value::Object(o) => {
                // Kong validates a reference as the entity it names: other fields must be
                // valid for it, and without a key it has no primary key.
                let mut bad = FieldErrors::new();
                for (k, x) in o.iter().filter(|(k, _)| *k != "id" && *k != by) {
                    match target.decl().fields.iter().find(|f| f.name == k) {
                        Some(f) => {
                            let mut one = FieldErrors::new();
                            let cx = BuildCx {
                                stamp: &crate::input::Stamp::default(),
                                state,
                                parent: None,
                                transform: true,
                            };
                            self::field(f, Some(x), &cx, &mut one);
                            if let Some(m) = one.0.remove(k) {
                                bad.put(&[field.to_string(), k.clone()], m);
                            }
                        }
                        None => bad.put(
                            &[field.to_string(), k.clone()],
                            Value::String("unknown field".into()),
                        ),
                    }
                }
                if !bad.is_empty() {
                    errs.merge(bad);
                    return None;
                }
                // Form bodies carry numbers for names (`service.name=123`).
                match (
                    o.get("id").and_then(string_of),
                    o.get(by).and_then(string_of),
                ) {
                    (Some(s), _) => (s, "id"),
                    (_, Some(s)) if !s.is_empty() => (s, by),
                    _ => {
                        errs.add(&format!("{field}.id"), "missing primary key");
                        return None;
                    }
                }
            }
            _ => {
                errs.add(field, "expected a record");
                return None;
            }
        };
        if let Some(id) = state.resolve(target, &key) {
            return Some(id);
        }
        match Uuid::parse_str(&key) {
            // An unknown id is reported by apply as a foreign key violation.
            Ok(id) => Some(id),
            Err(_) if via == "id" => {
                errs.add(&format!("{field}.id"), "expected a valid UUID");
                None
            }
            Err(_) => {
                errs.add(
                    &format!("{field}.{by}"),
                    format!(
                        "the foreign key cannot be resolved with '{{{by}=\"{key}\"}}' for an existing '{}' entity",
                        target.decl().table
                    ),
                );
                None
            }
        }
    }
}

fn string_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        // Form bodies carry numbers and booleans for string fields.
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn strings_of(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(a) => a.iter().map(string_of).collect(),
        other => string_of(other).map(|s| vec![s]),
    }
}

/// Checks one field's input and returns its stored value (`Null` when unset).
fn field(f: &FieldDecl, v: Option<&Value>, cx: &BuildCx<'_>, errs: &mut FieldErrors) -> Value {
    let name = f.name;
    let given = v.filter(|v| !v.is_null());
    if let FieldType::Foreign(target) = f.typ {
        let id = match cx.parent_for(name) {
            Some(id) => Some(id),
            None => given.and_then(|v| FkInput::resolve(cx.state, name, target, v, errs)),
        };
        return match id {
            Some(id) => serde_json::json!({ "id": id }),
            None => {
                if f.required && !errs.0.contains_key(name) {
                    errs.add(name, "required field missing");
                }
                Value::Null
            }
        };
    }
    match f.typ {
        FieldType::Id => {
            return match given.map(string_of) {
                None => Value::String(cx.stamp.id.to_string()),
                Some(Some(s)) if Uuid::parse_str(&s).is_ok() => Value::String(s),
                Some(_) => {
                    errs.add(name, "expected a valid UUID");
                    Value::Null
                }
            }
        }
        FieldType::Timestamp => {
            let t = if name == "created_at" {
                cx.stamp
                    .created_at
                    .or(given.and_then(Value::as_i64))
                    .unwrap_or(cx.stamp.now)
            } else {
                cx.stamp.now
            };
            return Value::from(t);
        }
        _ => {}
    }
    let Some(v) = given else {
        if f.auto {
            return Value::String(cx.stamp.generated_key.clone());
        }
        if let Some(d) = f.default {
            return serde_json::from_str(d).unwrap_or(Value::Null);
        }
        if f.required {
            errs.add(name, "required field missing");
        }
        return Value::Null;
    };
    match f.typ {
        FieldType::String { min, max } => match string_of(v) {
            None => errs.add(name, "expected a string"),
            Some(s) if s.chars().count() < min => {
                errs.add(name, format!("length must be at least {min}"))
            }
            Some(s) => {
                if !check_len(name, Some(&s), max, errs) {
                    return Value::String(s);
                }
            }
        },
        FieldType::Name => match string_of(v) {
            None => errs.add(name, "expected a string"),
            Some(s) => {
                let before = errs.0.len();
                check_name(name, &Some(s.clone()), errs);
                if errs.0.len() == before {
                    return Value::String(s);
                }
            }
        },
        FieldType::Integer { min, max } => match v.as_i64() {
            Some(i) if (min..=max).contains(&i) => return Value::from(i),
            Some(_) => errs.add(name, format!("value should be between {min} and {max}")),
            None => errs.add(name, "expected an integer"),
        },
        FieldType::Number => match v.as_f64() {
            Some(_) => return v.clone(),
            None => errs.add(name, "expected a number"),
        },
        FieldType::Boolean => match v.as_bool() {
            Some(b) => return Value::Bool(b),
            None => errs.add(name, "expected a boolean"),
        },
        FieldType::OneOf(allowed) => match string_of(v) {
            Some(s) if allowed.contains(&s.as_str()) => return Value::String(s),
            _ => errs.add(name, format!("expected one of: {}", allowed.join(", "))),
        },
        FieldType::Array | FieldType::Set => match strings_of(v) {
            Some(list) => return Value::from(list),
            None => errs.add(name, "expected an array"),
        },
        FieldType::Tags => match strings_of(v) {
            Some(list) => {
                let list = Some(list);
                let before = errs.0.len();
                check_tags(&list, errs);
                if errs.0.len() == before {
                    return Value::from(list);
                }
            }
            None => errs.add(name, "expected a set"),
        },
        FieldType::Map | FieldType::Record => match v {
            Value::Object(_) => return v.clone(),
            _ => errs.add(name, "expected a record"),
        },
        FieldType::Id | FieldType::Timestamp | FieldType::Foreign(_) => {}
    }
    Value::Null
}

/// Builds an entity's stored JSON from input by its declared fields: every declared field is
/// present (null when unset), unknown fields are refused, and every message names its field.
pub fn build_record(
    decl: &EntityDecl,
    body: &Value,
    cx: &BuildCx<'_>,
) -> Result<Map<String, Value>, FieldErrors> {
    let Some(input) = body.as_object() else {
        return Err(FieldErrors::single("@entity", "expected a JSON object"));
    };
    let mut errs = FieldErrors::new();
    for k in input.keys() {
        if !decl.has_field(k) {
            // The name is the client's: kept whole, never split at its dots.
            errs.put(
                std::slice::from_ref(k),
                Value::String("unknown field".into()),
            );
        }
    }
    let mut out = Map::new();
    for f in decl.fields {
        let v = field(f, input.get(f.name), cx, &mut errs);
        out.insert(f.name.to_string(), v);
    }
    errs.into_result()?;
    Ok(out)
}

/// [`build_record`], read into the entity's struct: what an entity whose fields need no more
/// than their declarations builds with.
pub fn build_typed<T: serde::de::DeserializeOwned>(
    decl: &EntityDecl,
    body: &Value,
    cx: &BuildCx<'_>,
) -> Result<T, FieldErrors> {
    let record = build_record(decl, body, cx)?;
    serde_json::from_value(Value::Object(record))
        .map_err(|e| FieldErrors::single("@entity", e.to_string()))
}

/// Fields declared as strings given another JSON type. Kong reads JSON bodies with their
/// types, so `{"key": 123}` is "expected a string" rather than the text `123`; the lenient
/// builders accept numbers for strings because form bodies carry only text.
pub fn strict_strings(decl: &EntityDecl, body: &Value) -> Result<(), FieldErrors> {
    let mut errs = FieldErrors::new();
    if let Some(input) = body.as_object() {
        for f in decl.fields {
            let is_string = matches!(f.typ, FieldType::String { .. } | FieldType::Name);
            if let (true, Some(v)) = (is_string, input.get(f.name)) {
                if !v.is_string() && !v.is_null() {
                    errs.add(f.name, "expected a string");
                }
            }
        }
    }
    errs.into_result()
}
