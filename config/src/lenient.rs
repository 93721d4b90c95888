//! Leniency for form-encoded Admin API bodies.
//!
//! Kong users write `curl -d name=svc -d paths[]=/a -d config.minute=5`. Such a body is turned
//! into JSON by [`form_to_json`] (dotted keys nest, `[]` keys and repeats make arrays, integers
//! and booleans are recognised), and the input structs accept a number where they expect a
//! string and a single string where they expect a list, so both JSON and form bodies parse
//! through the same code.

use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// Deepest nesting a dotted form key may ask for (`config.redis.host` is 3). Insertion
/// recurses once per level, and so does everything that later walks or drops the value: a
/// 58 KiB key of `a.a.a…` overflowed the stack before this bound.
pub const MAX_FORM_DEPTH: usize = 16;

/// A form body that cannot be turned into JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("form key '{key}…' nests deeper than {max} levels")]
    TooDeep { key: String, max: usize },
}

/// Turns `key=value` pairs into a JSON object the way Kong's Admin API reads form bodies.
pub fn form_to_json<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Value, FormError> {
    let mut root = Map::new();
    for (raw_key, raw_val) in pairs {
        if raw_key.split('.').nth(MAX_FORM_DEPTH).is_some() {
            let mut key: String = raw_key.chars().take(40).collect();
            key.truncate(key.trim_end_matches('.').len());
            return Err(FormError::TooDeep {
                key,
                max: MAX_FORM_DEPTH,
            });
        }
        let (key, is_array) = match raw_key.strip_suffix("[]") {
            Some(k) => (k, true),
            None => (raw_key, false),
        };
        // `paths[1]=/a` is Kong's indexed array form.
        let (key, is_array) = match key.rfind('[') {
            Some(i) if key.ends_with(']') && key[i + 1..key.len() - 1].parse::<u32>().is_ok() => {
                (&key[..i], true)
            }
            _ => (key, is_array),
        };
        // Kong: a form field sent empty (`hosts=`) is null, which clears it.
        let val = if raw_val.is_empty() && !is_array {
            Value::Null
        } else {
            scalar(raw_val)
        };
        let parts: Vec<&str> = key.split('.').collect();
        insert(&mut root, &parts, val, is_array);
    }
    Ok(Value::Object(root))
}

fn scalar(s: &str) -> Value {
    match s {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(n) = s.parse::<i64>() {
        // Only when the text is the number's canonical form, so "007" stays a string.
        if n.to_string() == s {
            return Value::from(n);
        }
    }
    if let Ok(f) = s.parse::<f64>() {
        if f.is_finite() && f.to_string() == s {
            return Value::from(f);
        }
    }
    Value::String(s.to_string())
}

fn insert(obj: &mut Map<String, Value>, parts: &[&str], val: Value, is_array: bool) {
    let (first, rest) = match parts.split_first() {
        Some(x) => x,
        None => return,
    };
    if rest.is_empty() {
        match obj.get_mut(*first) {
            Some(Value::Array(a)) => a.push(val),
            Some(existing) => {
                let prev = existing.take();
                *existing = Value::Array(vec![prev, val]);
            }
            None => {
                let v = if is_array {
                    Value::Array(vec![val])
                } else {
                    val
                };
                obj.insert(first.to_string(), v);
            }
        }
        return;
    }
    let slot = obj
        .entry(first.to_string())
        .or_insert_with(|| Value::Object(Map::new()));
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    if let Value::Object(m) = slot {
        insert(m, rest, val, is_array);
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    S(String),
    I(i64),
    U(u64),
    F(f64),
    B(bool),
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Scalar::S(s) => s,
            Scalar::I(i) => i.to_string(),
            Scalar::U(u) => u.to_string(),
            Scalar::F(f) => f.to_string(),
            Scalar::B(b) => b.to_string(),
        }
    }
}

/// An optional string that also accepts a number or boolean (from form bodies).
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Scalar>::deserialize(d)?.map(Scalar::into_string))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    Many(Vec<Scalar>),
    One(Scalar),
}

/// An optional list of strings that also accepts a single value.
pub fn opt_string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => None,
        Some(OneOrMany::Many(v)) => Some(v.into_iter().map(Scalar::into_string).collect()),
        Some(OneOrMany::One(s)) => Some(vec![s.into_string()]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kong_style_form_bodies() {
        let v = form_to_json([
            ("name", "svc"),
            ("paths[]", "/a"),
            ("paths[]", "/b"),
            ("hosts", "x.com"),
            ("config.minute", "5"),
            ("config.policy", "local"),
            ("config.hide_client_headers", "false"),
            ("key", "007"),
        ])
        .unwrap();
        assert_eq!(
            v,
            json!({"name": "svc", "paths": ["/a", "/b"], "hosts": "x.com",
                   "config": {"minute": 5, "policy": "local", "hide_client_headers": false},
                   "key": "007"})
        );
    }

    #[test]
    fn repeated_plain_keys_make_arrays() {
        let v = form_to_json([("methods", "GET"), ("methods", "POST")]).unwrap();
        assert_eq!(v, json!({"methods": ["GET", "POST"]}));
    }

    #[test]
    fn deeply_dotted_keys_are_refused_not_recursed() {
        // The security finding: 58 KiB of `a.` aborted the node with a stack overflow.
        let key = "a.".repeat(29 * 1024) + "a";
        let e = form_to_json([(key.as_str(), "1")]).unwrap_err();
        assert!(e.to_string().contains("deeper than 16 levels"), "{e}");
        let ok = "a.".repeat(MAX_FORM_DEPTH - 1) + "a";
        assert!(form_to_json([(ok.as_str(), "1")]).is_ok());
        let over = "a.".repeat(MAX_FORM_DEPTH) + "a";
        assert!(form_to_json([(over.as_str(), "1")]).is_err());
    }
}
