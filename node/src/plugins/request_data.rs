//! The request as Kong's PDK hands it to plugins (`kong.request.get_headers`, `get_query`,
//! `get_body`), for the plugins that show or rewrite it (request-termination's echo, the
//! transformers' templates). Each reader stops at Kong's default of 100 arguments or headers
//! (`lua_max_req_headers`, `lua_max_uri_args`), so a hostile request costs no more than that.

use http::HeaderMap;
use serde_json::{Map, Value};

/// Most headers, query arguments or form fields read (Kong's defaults).
pub const MAX_ARGS: usize = 100;

/// Most nesting accepted in a JSON body a plugin parses.
pub const MAX_JSON_DEPTH: usize = 64;

/// Adds `value` under `key`, turning a repeated key into an array (Kong's tables).
fn push(map: &mut Map<String, Value>, key: String, value: Value) {
    match map.get_mut(&key) {
        None => {
            map.insert(key, value);
        }
        Some(Value::Array(a)) => a.push(value),
        Some(prev) => {
            let first = prev.take();
            *prev = Value::Array(vec![first, value]);
        }
    }
}

/// `kong.request.get_headers()`: lower-case names, one string or an array of them.
pub fn headers_json(h: &HeaderMap) -> Value {
    let mut out = Map::new();
    for (name, value) in h.iter().take(MAX_ARGS) {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        push(&mut out, name.as_str().to_string(), Value::String(v));
    }
    Value::Object(out)
}

/// Splits a query string or a urlencoded body into decoded pairs; a name without `=` has no
/// value (Kong's `true`).
pub fn args(raw: &str) -> Vec<(String, Option<String>)> {
    raw.split('&')
        .filter(|p| !p.is_empty())
        .take(MAX_ARGS)
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), Some(decode(v))),
            None => (decode(p), None),
        })
        .filter(|(k, _)| !k.is_empty())
        .collect()
}

/// Percent-decoding with `+` as a space, as `ngx.decode_args` does.
pub fn decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// `kong.request.get_query()` (or a urlencoded body): values are strings, `true` for a name
/// without `=`, arrays for repeats.
pub fn args_json(raw: &str) -> Value {
    let mut out = Map::new();
    for (k, v) in args(raw) {
        push(
            &mut out,
            k,
            v.map(Value::String).unwrap_or(Value::Bool(true)),
        );
    }
    Value::Object(out)
}

/// How a body is encoded, from its `Content-Type` (found by substring, as Kong does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
    Multipart,
    Other,
}

pub fn body_kind(content_type: Option<&[u8]>) -> Option<BodyKind> {
    let ct = String::from_utf8_lossy(content_type?).to_ascii_lowercase();
    Some(if ct.contains("application/json") || ct.contains("+json") {
        BodyKind::Json
    } else if ct.contains("application/x-www-form-urlencoded") {
        BodyKind::Form
    } else if ct.contains("multipart/form-data") {
        BodyKind::Multipart
    } else {
        BodyKind::Other
    })
}

/// Whether a JSON text nests deeper than `max` (checked before parsing, so a hostile body
/// cannot exhaust the stack of a recursive parser or the memory of a deep value).
pub fn too_deep(text: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in text {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Parses a JSON body within [`MAX_JSON_DEPTH`]; `None` when it is not JSON.
pub fn parse_json(body: &[u8]) -> Option<Value> {
    if too_deep(body, MAX_JSON_DEPTH) {
        return None;
    }
    serde_json::from_slice(body).ok()
}

/// `kong.request.get_body()` for JSON and urlencoded bodies; `None` without a content type
/// or for a body that does not parse.
pub fn body_json(content_type: Option<&[u8]>, body: &[u8]) -> Option<Value> {
    match body_kind(content_type)? {
        BodyKind::Json => parse_json(body),
        BodyKind::Form => Some(args_json(std::str::from_utf8(body).ok()?)),
        BodyKind::Multipart | BodyKind::Other => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_like_ngx_get_uri_args() {
        assert_eq!(
            args_json("a=1&b&a=2&c=&d=x+y%20z"),
            json!({"a": ["1", "2"], "b": true, "c": "", "d": "x y z"})
        );
        let many: String = (0..500).map(|i| format!("k{i}=v&")).collect();
        assert_eq!(args(&many).len(), MAX_ARGS);
    }

    #[test]
    fn deep_json_is_refused_before_parsing() {
        let deep = "[".repeat(100_000);
        assert!(parse_json(deep.as_bytes()).is_none());
        assert!(too_deep(b"[[[1]]]", 2));
        assert!(!too_deep(br#"["[[[[" ]"#, 2));
        assert_eq!(parse_json(br#"{"a": [1]}"#), Some(json!({"a": [1]})));
    }
}
