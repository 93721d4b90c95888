//! Kong's `custom_fields_by_lua` (file-log, http-log and the other log plugins): fields set in
//! each log record, by dotted path, to what a Lua snippet returns (`nil` removes the field).
//!
//! Tollgate runs no Lua. It accepts the snippets whose result does not depend on the request —
//! `return` followed by a string, number, boolean or `nil` literal, which is how static fields
//! (an environment name, a team) are commonly added — and applies them exactly as Kong does.
//! Any other snippet is refused when written, naming the field, rather than accepted and
//! ignored.

use serde_json::{Map, Value};

use crate::error::FieldErrors;

/// Most custom fields per plugin.
pub const MAX_FIELDS: usize = 100;

/// One field: its path in the record and its value (`None` removes it).
#[derive(Debug, Clone, PartialEq)]
pub struct CustomField {
    pub path: Vec<String>,
    pub value: Option<Value>,
}

/// The literal a `return <literal>` snippet gives, or `None` when it is anything else.
fn literal(snippet: &str) -> Option<Option<Value>> {
    let rest = snippet.trim().strip_prefix("return")?;
    if !rest.starts_with(char::is_whitespace) && !rest.starts_with(['\'', '"']) {
        return None;
    }
    let rest = rest.trim().trim_end_matches(';').trim_end();
    match rest {
        "nil" => return Some(None),
        "true" => return Some(Some(Value::Bool(true))),
        "false" => return Some(Some(Value::Bool(false))),
        _ => {}
    }
    if let Some(q) = rest.chars().next().filter(|c| *c == '\'' || *c == '"') {
        let inner = rest.strip_prefix(q)?.strip_suffix(q)?;
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(match chars.next()? {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    e @ ('\\' | '\'' | '"') => e,
                    _ => return None,
                }),
                c if c == q => return None,
                c => out.push(c),
            }
        }
        return Some(Some(Value::String(out)));
    }
    let n: f64 = rest.parse().ok().filter(|n: &f64| n.is_finite())?;
    Some(Some(if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::from(n as i64)
    } else {
        Value::from(n)
    }))
}

/// Checks a config's `custom_fields_by_lua` (errors under `config.custom_fields_by_lua`).
pub fn parse(fields: &Option<Map<String, Value>>) -> Result<Vec<CustomField>, FieldErrors> {
    let Some(fields) = fields else {
        return Ok(Vec::new());
    };
    let mut errs = FieldErrors::new();
    if fields.len() > MAX_FIELDS {
        errs.add(
            "config.custom_fields_by_lua",
            format!("length must be at most {MAX_FIELDS}"),
        );
        return Err(errs);
    }
    let mut out = Vec::new();
    for (key, v) in fields {
        let parsed = v.as_str().and_then(literal);
        match parsed {
            Some(value) if !key.is_empty() => out.push(CustomField {
                path: key.split('.').map(String::from).collect(),
                value,
            }),
            _ => errs.add(
                &format!("config.custom_fields_by_lua.{key}"),
                "Tollgate runs no Lua: only `return` with a string, number, boolean or nil is supported",
            ),
        }
    }
    errs.into_result()?;
    Ok(out)
}

/// Sets (or removes) each field in `record`, creating objects along a path as Kong does.
pub fn apply(record: &mut Value, fields: &[CustomField]) {
    for f in fields {
        let Some((last, parents)) = f.path.split_last() else {
            continue;
        };
        let mut at = &mut *record;
        for p in parents {
            let Value::Object(o) = at else { break };
            at = o
                .entry(p.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
        if let Value::Object(o) = at {
            match &f.value {
                Some(v) => {
                    o.insert(last.clone(), v.clone());
                }
                None => {
                    o.remove(last);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Kong 3.9.3's spec/03-plugins/04-file-log/01-log_spec.lua ("logs custom values") and
    // 02-kong_routes_spec's `request.headers.myheader: return nil`.
    #[test]
    fn literal_snippets_set_and_remove_fields() {
        let fields = json!({"new_field": "return 123", "request.headers.myheader": "return nil",
                            "env": "return 'prod'", "deep.a.b": "return true"});
        let parsed = parse(&fields.as_object().cloned()).unwrap();
        let mut record = json!({"request": {"headers": {"myheader": "x", "other": "y"}}});
        apply(&mut record, &parsed);
        assert_eq!(
            record,
            json!({"request": {"headers": {"other": "y"}}, "new_field": 123, "env": "prod",
                   "deep": {"a": {"b": true}}})
        );
    }

    #[test]
    fn code_is_refused_by_name() {
        let fields = json!({"ua": "return kong.request.get_header('user-agent')"});
        let e = parse(&fields.as_object().cloned()).unwrap_err().to_json();
        assert!(e["config"]["custom_fields_by_lua"]["ua"]
            .as_str()
            .unwrap()
            .starts_with("Tollgate runs no Lua"));
        assert!(literal("return 'a' .. 'b'").is_none());
        assert!(literal("returnx").is_none());
    }
}
