//! `response-transformer`: rewrites the response on its way to the client, as Kong 3.9.3's
//! `kong/plugins/response-transformer/{header_transformer,body_transformer}.lua`: headers
//! (remove, rename, replace, add, append — on any response, the gateway's own answers
//! included), then, for a JSON response (`application/json` or `application/*+json`), the
//! body's top-level keys in the same order, values typed by `json_types`.
//!
//! A JSON body is read whole only for a JSON response on a route whose config edits JSON,
//! within the proxy's bound (8 MiB; a larger one is a 502, logged). A body that does not
//! parse as a JSON object is sent as it came.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue};
use serde_json::Value as Json;
use tollgate_config::entity::Plugin as PluginEntity;
use tollgate_config::plugins::request_transformer::split_entry;
use tollgate_config::plugins::response_transformer::{ResponseTransformerConfig, SCHEMA};
use uuid::Uuid;

use super::request_data;
use super::{Ctx, Deps, Handler, Instance, Plugin};

pub const HANDLER: Handler = Handler {
    schema: &SCHEMA,
    build,
};

/// A header edit: the name and, when given, the value (or the new name, for rename).
type HeaderEdit = (HeaderName, Option<HeaderValue>);

/// A JSON edit: the key, the value as text, and its JSON type.
struct JsonEdit {
    name: String,
    value: Option<String>,
    typ: Option<String>,
}

fn build(p: &PluginEntity, _deps: &Deps) -> Option<Instance> {
    let c = ResponseTransformerConfig::parse(&p.config.0)?;
    let headers = |l: &[String]| -> Vec<HeaderEdit> {
        l.iter()
            .filter_map(|e| {
                let (name, value) = split_entry(e);
                let name = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).ok()?;
                let value = (!value.is_empty())
                    .then(|| HeaderValue::from_str(value).ok())
                    .flatten();
                Some((name, value))
            })
            .collect()
    };
    let renames = c
        .rename
        .headers
        .iter()
        .filter_map(|e| {
            let (old, new) = split_entry(e);
            Some((
                HeaderName::from_bytes(old.to_ascii_lowercase().as_bytes()).ok()?,
                HeaderName::from_bytes(new.to_ascii_lowercase().as_bytes()).ok()?,
            ))
        })
        .collect();
    let json = |l: &[String], types: &[String]| -> Vec<JsonEdit> {
        l.iter()
            .enumerate()
            .map(|(i, e)| {
                let (name, value) = split_entry(e);
                JsonEdit {
                    name: name.to_string(),
                    value: (!value.is_empty()).then(|| value.to_string()),
                    typ: types.get(i).cloned(),
                }
            })
            .collect()
    };
    Some(Arc::new(ResponseTransformer {
        id: p.id,
        edits_json: c.edits_json(),
        remove_headers: headers(&c.remove.headers),
        rename_headers: renames,
        replace_headers: headers(&c.replace.headers),
        add_headers: headers(&c.add.headers),
        append_headers: headers(&c.append.headers),
        remove_json: c.remove.json.clone(),
        rename_json: json(&c.rename.json, &[]),
        replace_json: json(&c.replace.json, &c.replace.json_types),
        add_json: json(&c.add.json, &c.add.json_types),
        append_json: json(&c.append.json, &c.append.json_types),
    }))
}

pub struct ResponseTransformer {
    id: Uuid,
    edits_json: bool,
    remove_headers: Vec<HeaderEdit>,
    rename_headers: Vec<(HeaderName, HeaderName)>,
    replace_headers: Vec<HeaderEdit>,
    add_headers: Vec<HeaderEdit>,
    append_headers: Vec<HeaderEdit>,
    remove_json: Vec<String>,
    rename_json: Vec<JsonEdit>,
    replace_json: Vec<JsonEdit>,
    add_json: Vec<JsonEdit>,
    append_json: Vec<JsonEdit>,
}

/// Kong's `is_json_body`: one of the listed media types is `application/json` or
/// `application/*+json`.
fn is_json(content_type: Option<&HeaderValue>) -> bool {
    let Some(ct) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    ct.split(',').any(|one| {
        let media = one.split(';').next().unwrap_or_default().trim();
        let Some((t, sub)) = media.split_once('/') else {
            return false;
        };
        t.eq_ignore_ascii_case("application")
            && (sub.eq_ignore_ascii_case("json") || sub.to_ascii_lowercase().ends_with("+json"))
    })
}

/// Kong's `json_value`: the value as cjson writes a string, without the outer quotes and with
/// `\"` and `\/` unescaped, then cast to its JSON type. `None` when a number does not parse.
fn json_value(value: &str, typ: Option<&str>) -> Option<Json> {
    let encoded = serde_json::to_string(value).ok()?;
    let inner = encoded[1..encoded.len() - 1]
        .replace("\\\"", "\"")
        .replace("\\/", "/");
    Some(match typ {
        Some("number") => {
            let n: f64 = inner.trim().parse().ok()?;
            serde_json::Number::from_f64(n).map(|n| {
                // Whole numbers print as integers, as cjson does.
                if n.as_f64().is_some_and(|f| f.fract() == 0.0 && f.abs() < 9.0e15) {
                    Json::from(n.as_f64().unwrap_or_default() as i64)
                } else {
                    Json::Number(n)
                }
            })?
        }
        Some("boolean") => Json::Bool(inner == "true"),
        _ => Json::String(inner),
    })
}

/// Lua's truthiness of a decoded JSON value (`cjson.null` is truthy, `false` is not).
fn truthy(v: Option<&Json>) -> bool {
    v.is_some_and(|v| *v != Json::Bool(false))
}

impl ResponseTransformer {
    fn transform_json(&self, body: &[u8]) -> Option<Vec<u8>> {
        let Some(Json::Object(mut o)) = request_data::parse_json(body) else {
            return None;
        };
        for name in &self.remove_json {
            o.remove(name);
        }
        for e in &self.rename_json {
            if let (Some(new), true) = (&e.value, o.contains_key(&e.name)) {
                let v = o.remove(&e.name).unwrap_or(Json::Null);
                o.insert(new.clone(), v);
            }
        }
        let value = |e: &JsonEdit| {
            e.value
                .as_deref()
                .and_then(|v| json_value(v, e.typ.as_deref()))
        };
        for e in &self.replace_json {
            if let (true, Some(v)) = (truthy(o.get(&e.name)), value(e)) {
                o.insert(e.name.clone(), v);
            }
        }
        for e in &self.add_json {
            if let (false, Some(v)) = (truthy(o.get(&e.name)), value(e)) {
                o.insert(e.name.clone(), v);
            }
        }
        for e in &self.append_json {
            let Some(v) = value(e) else { continue };
            let new = match o.remove(&e.name) {
                Some(Json::String(s)) => Json::Array(vec![Json::String(s), v]),
                Some(Json::Array(mut a)) => {
                    a.push(v);
                    Json::Array(a)
                }
                Some(Json::Object(mut m)) => {
                    // `table.insert` on a hash table: the value lands at [1].
                    m.insert("1".into(), v);
                    Json::Object(m)
                }
                _ => Json::Array(vec![v]),
            };
            o.insert(e.name.clone(), new);
        }
        Some(Json::Object(o).to_string().into_bytes())
    }
}

impl ResponseTransformer {
    /// The `Content-Type` header_filter will leave in `h`.
    fn content_type_after(&self, h: &http::HeaderMap) -> Option<HeaderValue> {
        let ct = &header::CONTENT_TYPE;
        let mut v = h.get(ct).cloned();
        if self.remove_headers.iter().any(|(n, _)| n == ct) {
            v = None;
        }
        for (old, new) in &self.rename_headers {
            if old == ct && v.is_some() && new != ct {
                v = None;
            } else if new == ct && old != ct {
                if let Some(moved) = h.get(old) {
                    v = Some(moved.clone());
                }
            }
        }
        for (n, value) in &self.replace_headers {
            if let (true, true, Some(x)) = (n == ct, v.is_some(), value) {
                v = Some(x.clone());
            }
        }
        for (n, value) in self.add_headers.iter().chain(&self.append_headers) {
            if let (true, None, Some(x)) = (n == ct, &v, value) {
                v = Some(x.clone());
            }
        }
        v
    }
}

impl Plugin for ResponseTransformer {
    super::identity!();

    fn header_filter(&self, _ctx: &mut Ctx<'_>, resp: &mut http::response::Parts) {
        let h = &mut resp.headers;
        for (name, _) in &self.remove_headers {
            h.remove(name);
        }
        for (old, new) in &self.rename_headers {
            let values: Vec<HeaderValue> = h.get_all(old).iter().cloned().collect();
            if values.is_empty() {
                continue;
            }
            h.remove(old);
            h.remove(new);
            for v in values {
                h.append(new.clone(), v);
            }
        }
        for (name, value) in &self.replace_headers {
            if let (true, Some(v)) = (h.contains_key(name), value) {
                h.insert(name.clone(), v.clone());
            }
        }
        for (name, value) in &self.add_headers {
            if let (false, Some(v)) = (h.contains_key(name), value) {
                h.insert(name.clone(), v.clone());
            }
        }
        for (name, value) in &self.append_headers {
            if let Some(v) = value {
                h.append(name.clone(), v.clone());
            }
        }
    }

    fn needs_response_body(&self) -> bool {
        self.edits_json
    }

    fn wants_response_body(&self, head: &http::response::Parts) -> bool {
        // Asked before header_filter runs: the content type this plugin's own header edits
        // will leave is the one Kong's body_filter reads.
        self.edits_json && is_json(self.content_type_after(&head.headers).as_ref())
    }

    fn response_body(
        &self,
        _ctx: &mut Ctx<'_>,
        resp: &mut http::response::Parts,
        body: Bytes,
    ) -> Bytes {
        if !self.edits_json || !is_json(resp.headers.get(header::CONTENT_TYPE)) {
            return body;
        }
        match self.transform_json(&body) {
            Some(b) => Bytes::from(b),
            None => {
                tracing::warn!(plugin = SCHEMA.name, "body transform failed: failed parsing json body");
                body
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // Facts from Kong 3.9.3's spec/03-plugins/15-response-transformer/02-body_transformer_spec.lua.
    #[test]
    fn values_as_kongs_json_value() {
        assert_eq!(json_value("/hello/world", None), Some(json!("/hello/world")));
        assert_eq!(json_value("\"wot\"", None), Some(json!("\"wot\"")));
        assert_eq!(json_value("1.5", Some("number")), Some(json!(1.5)));
        assert_eq!(json_value("10", Some("number")), Some(json!(10)));
        assert_eq!(json_value("x", Some("number")), None);
        assert_eq!(json_value("true", Some("boolean")), Some(json!(true)));
        assert_eq!(json_value("yes", Some("boolean")), Some(json!(false)));
    }

    #[test]
    fn json_media_types() {
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert!(is_json(Some(&v("application/json; charset=utf-8"))));
        assert!(is_json(Some(&v("application/vnd.api+json"))));
        assert!(is_json(Some(&v("text/plain, application/json"))));
        assert!(!is_json(Some(&v("text/html"))));
        assert!(!is_json(None));
    }
}
