//! `request-transformer`: rewrites the request on its way upstream, as Kong 3.9.3's
//! `kong/plugins/request-transformer/access.lua`, in Kong's order: the URI (`replace.uri`),
//! the method (`http_method`; GET, HEAD and TRACE take a form body's fields into the query),
//! the headers, the body (urlencoded, multipart or JSON, found by its content type), then
//! the query string. Within each: remove, rename, replace, add, append.
//!
//! Values are templates over the request as the client sent it ([`Template`]); a template
//! that fails answers Kong's 500. A touched query string or form body is rebuilt sorted and
//! encoded as `ngx.encode_args`; an untouched one passes byte for byte. The body is read only
//! on routes whose config edits bodies, within the proxy's bound (8 MiB, 413 past it); a
//! body that does not parse is sent as it came.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde_json::Value as Json;
use tollgate_config::entity::Plugin as PluginEntity;
use tollgate_config::plugins::request_transformer::template::{Env, Template, Value};
use tollgate_config::plugins::request_transformer::{
    split_entry, RequestTransformerConfig, SCHEMA,
};
use uuid::Uuid;

use super::request_data::{self, BodyKind};
use super::{error_response, Ctx, Deps, Flow, Handler, Instance, Plugin, UpstreamHost, UpstreamPath};

#[path = "multipart.rs"]
mod multipart;

pub const HANDLER: Handler = Handler {
    schema: &SCHEMA,
    build,
};

/// One list entry: a name and, when it has one, its value template (or why it does not
/// compile: header values are not checked when written, as Kong, and fail when used).
struct Entry {
    name: String,
    value: Option<Result<Template, String>>,
}

#[derive(Default)]
struct Lists {
    body: Vec<Entry>,
    headers: Vec<Entry>,
    query: Vec<Entry>,
}

impl Lists {
    fn from(body: &[String], headers: &[String], query: &[String]) -> Lists {
        let entries = |l: &[String]| {
            l.iter()
                .map(|e| {
                    let (name, value) = split_entry(e);
                    Entry {
                        name: name.to_string(),
                        value: (!value.is_empty())
                            .then(|| Template::compile(value).map_err(|e| e.0)),
                    }
                })
                .collect()
        };
        Lists {
            body: entries(body),
            headers: entries(headers),
            query: entries(query),
        }
    }

    fn templated(&self) -> bool {
        [&self.body, &self.headers, &self.query]
            .iter()
            .flat_map(|l| l.iter())
            .any(|e| match &e.value {
                None => false,
                Some(Ok(t)) => !t.is_plain(),
                Some(Err(_)) => true,
            })
    }
}

fn build(p: &PluginEntity, _deps: &Deps) -> Option<Instance> {
    let c = RequestTransformerConfig::parse(&p.config.0)?;
    let method = match &c.http_method {
        Some(m) => Some(Method::from_bytes(m.as_bytes()).ok()?),
        None => None,
    };
    let uri = match &c.replace.uri {
        Some(u) => Some(Template::compile(u).ok()?),
        None => None,
    };
    let ops = [
        Lists::from(&c.remove.body, &c.remove.headers, &c.remove.querystring),
        Lists::from(&c.rename.body, &c.rename.headers, &c.rename.querystring),
        Lists::from(&c.replace.body, &c.replace.headers, &c.replace.querystring),
        Lists::from(&c.add.body, &c.add.headers, &c.add.querystring),
        Lists::from(&c.append.body, &c.append.headers, &c.append.querystring),
    ];
    let templated =
        ops.iter().any(Lists::templated) || uri.as_ref().is_some_and(|u| !u.is_plain());
    let [remove, rename, replace, add, append] = ops;
    let edits_body = [&remove, &rename, &replace, &add, &append]
        .iter()
        .any(|l| !l.body.is_empty());
    let merges_form = method
        .as_ref()
        .is_some_and(|m| matches!(m.as_str(), "GET" | "HEAD" | "TRACE"));
    Some(Arc::new(RequestTransformer {
        id: p.id,
        method,
        uri,
        remove,
        rename,
        replace,
        add,
        append,
        templated,
        reads_body: edits_body || merges_form,
    }))
}

pub struct RequestTransformer {
    id: Uuid,
    method: Option<Method>,
    uri: Option<Template>,
    remove: Lists,
    rename: Lists,
    replace: Lists,
    add: Lists,
    append: Lists,
    /// Some value is a template with an expression: the request is kept as it came for it.
    templated: bool,
    reads_body: bool,
}

/// A render failure: Kong's `error(...)` in the access phase, a 500.
#[derive(Debug)]
struct Failed(String);

fn failed() -> Flow {
    Flow::Respond(error_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        "An unexpected error occurred",
    ))
}

/// The request as templates read it: as the client sent it.
struct Original<'a> {
    headers: &'a HeaderMap,
    query: &'a Args,
    captures: &'a super::UriCaptures,
}

impl Env for Original<'_> {
    fn header(&self, name: &str) -> Value {
        let name = name.to_ascii_lowercase().replace('_', "-");
        let mut all = self.headers.get_all(name.as_str()).iter();
        let Some(first) = all.next() else {
            return Value::Nil;
        };
        let text = |v: &HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned();
        let rest: Vec<String> = all.map(text).collect();
        if rest.is_empty() {
            Value::Str(text(first))
        } else {
            let mut list = vec![text(first)];
            list.extend(rest);
            Value::List(list)
        }
    }

    fn query(&self, name: &str) -> Value {
        match self.query.get(name) {
            None => Value::Nil,
            Some(a) => a.to_template(),
        }
    }

    fn capture(&self, key: &Value) -> Value {
        let text = |s: &str| Value::Str(s.to_string());
        match key {
            Value::Num(n) if *n == 0.0 => self.captures.whole.as_deref().map_or(Value::Nil, text),
            Value::Num(n) if n.fract() == 0.0 && *n >= 1.0 => self
                .captures
                .unnamed
                .get(*n as usize - 1)
                .map_or(Value::Nil, |s| text(s)),
            Value::Str(k) => self
                .captures
                .named
                .iter()
                .find(|(name, _)| name == k)
                .map_or(Value::Nil, |(_, v)| text(v)),
            _ => Value::Nil,
        }
    }
}

/// A query argument or form field as Kong's Lua table holds it.
#[derive(Debug, Clone, PartialEq)]
enum Arg {
    Str(String),
    /// A name without `=` (`true`); `false` is never read, only written by nothing.
    Flag,
    List(Vec<Arg>),
}

type Args = BTreeMap<String, Arg>;

impl Arg {
    fn to_template(&self) -> Value {
        match self {
            Arg::Str(s) => Value::Str(s.clone()),
            Arg::Flag => Value::Bool(true),
            Arg::List(l) => Value::List(
                l.iter()
                    .map(|a| match a {
                        Arg::Str(s) => s.clone(),
                        _ => "true".into(),
                    })
                    .collect(),
            ),
        }
    }
}

/// `ngx.decode_args`.
fn decode_args(raw: &str) -> Args {
    let mut out = Args::new();
    for (k, v) in request_data::args(raw) {
        let v = v.map(Arg::Str).unwrap_or(Arg::Flag);
        match out.get_mut(&k) {
            None => {
                out.insert(k, v);
            }
            Some(Arg::List(l)) => l.push(v),
            Some(prev) => {
                let first = std::mem::replace(prev, Arg::Flag);
                *prev = Arg::List(vec![first, v]);
            }
        }
    }
    out
}

/// Kong's `append_value`: a string becomes a list with the new value, a list grows, anything
/// else is replaced by a list of the new value.
fn append_arg(old: Option<Arg>, value: String) -> Arg {
    match old {
        Some(Arg::Str(s)) => Arg::List(vec![Arg::Str(s), Arg::Str(value)]),
        Some(Arg::List(mut l)) => {
            l.push(Arg::Str(value));
            Arg::List(l)
        }
        _ => Arg::List(vec![Arg::Str(value)]),
    }
}

/// `kong.tools.uri.escape`: everything but `!#$&'()*+,/:;=?@[]`, letters, digits, `-_.~` and
/// `%` (its `ESCAPE_PATTERN`).
const PATH: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'!')
    .remove(b'#')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b'/')
    .remove(b':')
    .remove(b';')
    .remove(b'=')
    .remove(b'?')
    .remove(b'@')
    .remove(b'[')
    .remove(b']')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'%');

/// `ngx.escape_uri` for arguments: everything but letters, digits and `-_.~!*'()`.
const ARG: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'!')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// `ngx.encode_args`, with the pieces sorted (Kong's `set_query`).
fn encode_args(args: &Args) -> String {
    let esc = |s: &str| percent_encoding::utf8_percent_encode(s, ARG).to_string();
    // Sorted by name; a list keeps its values' order.
    let mut keyed: Vec<(String, &Arg)> = args.iter().map(|(k, v)| (esc(k), v)).collect();
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    let mut pieces = Vec::new();
    for (k, v) in &keyed {
        let one = |a: &Arg, pieces: &mut Vec<String>| match a {
            Arg::Str(s) => pieces.push(format!("{k}={}", esc(s))),
            Arg::Flag => pieces.push(k.clone()),
            Arg::List(_) => {}
        };
        match v {
            Arg::List(l) => l.iter().for_each(|a| one(a, &mut pieces)),
            a => one(a, &mut pieces),
        }
    }
    pieces.join("&")
}

impl RequestTransformer {
    /// Each entry's name and rendered value (`None` when it has none).
    fn rendered<'e>(
        &self,
        entries: &'e [Entry],
        env: &Original<'_>,
    ) -> Result<Vec<(&'e str, Option<String>)>, Failed> {
        entries
            .iter()
            .map(|e| {
                let v = match &e.value {
                    None => None,
                    Some(Err(m)) => return Err(Failed(m.clone())),
                    Some(Ok(t)) => Some(t.render(env).map_err(|e| Failed(e.0))?),
                };
                Ok((e.name.as_str(), v))
            })
            .collect()
    }

    fn transform(
        &self,
        ctx: &mut Ctx<'_>,
        req: &mut http::request::Parts,
        env: &Original<'_>,
    ) -> Result<(), Failed> {
        // The URI.
        if let Some(uri) = &self.uri {
            let path = uri.render(env).map_err(|e| Failed(e.0))?;
            // Kong's `kong.service.request.set_path`: a path, escaped as `kong.tools.uri`.
            if !path.starts_with('/') {
                return Err(Failed("path must start with /".into()));
            }
            let escaped = percent_encoding::utf8_percent_encode(&path, PATH).to_string();
            ctx.state.insert(UpstreamPath(escaped));
        }
        let content_type = req
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes().to_vec());
        let kind = request_data::body_kind(content_type.as_deref());
        // The method; a form body joins the query of a GET, HEAD or TRACE.
        let mut query_override: Option<Args> = None;
        if let Some(m) = &self.method {
            req.method = m.clone();
            if matches!(m.as_str(), "GET" | "HEAD" | "TRACE") && kind == Some(BodyKind::Form) {
                let form = decode_args(&String::from_utf8_lossy(
                    ctx.body.as_deref().unwrap_or_default(),
                ));
                if !form.is_empty() {
                    let mut q = decode_args(req.uri.query().unwrap_or_default());
                    for (k, v) in form {
                        let merged = match q.remove(&k) {
                            Some(Arg::List(mut l)) => {
                                l.push(v);
                                Arg::List(l)
                            }
                            Some(prev) => Arg::List(vec![prev, v]),
                            None => v,
                        };
                        q.insert(k, merged);
                    }
                    query_override = Some(q);
                }
            }
        }
        self.headers(ctx, req, env)?;
        // The body's type as the headers now say (an added Content-Type counts).
        let content_type = req
            .headers
            .get(header::CONTENT_TYPE)
            .map(|v| v.as_bytes().to_vec());
        let kind = request_data::body_kind(content_type.as_deref());
        if let (Some(kind), Some(ct)) = (kind, content_type.as_deref()) {
            self.body(ctx, kind, ct, env)?;
        }
        self.query(req, env, query_override)?;
        Ok(())
    }

    fn headers(
        &self,
        ctx: &mut Ctx<'_>,
        req: &mut http::request::Parts,
        env: &Original<'_>,
    ) -> Result<(), Failed> {
        let h = &mut req.headers;
        let name_of = |n: &str| HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()).ok();
        let value_of = |v: Option<String>| -> Result<HeaderValue, Failed> {
            HeaderValue::from_str(v.as_deref().unwrap_or_default())
                .map_err(|_| Failed("a rendered header value is not valid".into()))
        };
        let host = |n: &HeaderName| *n == header::HOST;
        for (name, _) in self.rendered(&self.remove.headers, env)? {
            if let Some(n) = name_of(name).filter(|n| !host(n)) {
                h.remove(n);
            }
        }
        for (old, new) in self.rendered(&self.rename.headers, env)? {
            let (Some(old), Some(new)) = (name_of(old), new.as_deref().and_then(name_of)) else {
                continue;
            };
            if old == new || host(&old) {
                continue;
            }
            let values: Vec<HeaderValue> = h.get_all(&old).iter().cloned().collect();
            if values.is_empty() {
                continue;
            }
            h.remove(&old);
            h.remove(&new);
            for v in values {
                h.append(new.clone(), v);
            }
        }
        for (name, value) in self.rendered(&self.replace.headers, env)? {
            let Some(n) = name_of(name) else { continue };
            if host(&n) {
                ctx.state.insert(UpstreamHost(value_of(value)?));
            } else if h.contains_key(&n) {
                h.insert(n, value_of(value)?);
            }
        }
        for (name, value) in self.rendered(&self.add.headers, env)? {
            let Some(n) = name_of(name) else { continue };
            if !host(&n) && !h.contains_key(&n) {
                h.insert(n, value_of(value)?);
            }
        }
        for (name, value) in self.rendered(&self.append.headers, env)? {
            let Some(n) = name_of(name) else { continue };
            if !host(&n) {
                h.append(n, value_of(value)?);
            }
        }
        Ok(())
    }

    fn query(
        &self,
        req: &mut http::request::Parts,
        env: &Original<'_>,
        merged: Option<Args>,
    ) -> Result<(), Failed> {
        let any = [
            &self.remove, &self.rename, &self.replace, &self.add, &self.append,
        ]
        .iter()
        .any(|l| !l.query.is_empty());
        if !any && merged.is_none() {
            return Ok(());
        }
        let mut q = merged.unwrap_or_else(|| env.query.clone());
        for (name, _) in self.rendered(&self.remove.query, env)? {
            q.remove(name);
        }
        for (old, new) in self.rendered(&self.rename.query, env)? {
            let Some(new) = new else { continue };
            if old != new {
                if let Some(v) = q.remove(old) {
                    q.insert(new, v);
                }
            }
        }
        for (name, value) in self.rendered(&self.replace.query, env)? {
            if let (Some(slot), Some(v)) = (q.get_mut(name), value) {
                *slot = Arg::Str(v);
            }
        }
        for (name, value) in self.rendered(&self.add.query, env)? {
            if let (false, Some(v)) = (q.contains_key(name), value) {
                q.insert(name.to_string(), Arg::Str(v));
            }
        }
        for (name, value) in self.rendered(&self.append.query, env)? {
            let Some(v) = value else { continue };
            let old = q.remove(name);
            q.insert(name.to_string(), append_arg(old, v));
        }
        let encoded = encode_args(&q);
        let path = req.uri.path();
        let pq = if encoded.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{encoded}")
        };
        let mut parts = req.uri.clone().into_parts();
        parts.path_and_query = Some(
            http::uri::PathAndQuery::try_from(pq)
                .map_err(|_| Failed("the rebuilt query is not valid".into()))?,
        );
        req.uri = http::Uri::from_parts(parts)
            .map_err(|_| Failed("the rebuilt URI is not valid".into()))?;
        Ok(())
    }

    fn body(
        &self,
        ctx: &mut Ctx<'_>,
        kind: BodyKind,
        content_type: &[u8],
        env: &Original<'_>,
    ) -> Result<(), Failed> {
        let edits = [
            &self.remove, &self.rename, &self.replace, &self.add, &self.append,
        ]
        .iter()
        .any(|l| !l.body.is_empty());
        if !edits {
            return Ok(());
        }
        let body = ctx.body.clone().unwrap_or_default();
        let new = match kind {
            BodyKind::Form => self.form_body(&body, env)?,
            BodyKind::Json => self.json_body(&body, env)?,
            BodyKind::Multipart => {
                let ct = String::from_utf8_lossy(content_type);
                match multipart::boundary(&ct) {
                    Some(b) => self.multipart_body(&body, &b, env)?,
                    None => None,
                }
            }
            BodyKind::Other => None,
        };
        if let Some(new) = new {
            ctx.body = Some(Bytes::from(new));
        }
        Ok(())
    }

    fn form_body(&self, body: &[u8], env: &Original<'_>) -> Result<Option<Vec<u8>>, Failed> {
        let has_body = !body.is_empty();
        let mut p = decode_args(&String::from_utf8_lossy(body));
        let mut changed = false;
        if has_body {
            for (name, _) in self.rendered(&self.remove.body, env)? {
                p.remove(name);
                changed = true;
            }
            for (old, new) in self.rendered(&self.rename.body, env)? {
                let Some(new) = new else { continue };
                if old != new {
                    if let Some(v) = p.remove(old) {
                        p.insert(new, v);
                        changed = true;
                    }
                }
            }
            for (name, value) in self.rendered(&self.replace.body, env)? {
                if let (Some(slot), Some(v)) = (p.get_mut(name), value) {
                    *slot = Arg::Str(v);
                    changed = true;
                }
            }
        }
        for (name, value) in self.rendered(&self.add.body, env)? {
            if let (false, Some(v)) = (p.contains_key(name), value) {
                p.insert(name.to_string(), Arg::Str(v));
                changed = true;
            }
        }
        for (name, value) in self.rendered(&self.append.body, env)? {
            let Some(v) = value else { continue };
            let old = p.remove(name);
            p.insert(name.to_string(), append_arg(old, v));
            changed = true;
        }
        Ok(changed.then(|| encode_args(&p).into_bytes()))
    }

    fn json_body(&self, body: &[u8], env: &Original<'_>) -> Result<Option<Vec<u8>>, Failed> {
        let has_body = !body.is_empty();
        let mut p = if has_body {
            match request_data::parse_json(body) {
                Some(Json::Object(o)) => o,
                // Not JSON, or not an object: sent as it came.
                _ => return Ok(None),
            }
        } else {
            serde_json::Map::new()
        };
        // Lua's truthiness of a decoded value: JSON null (cjson.null) is truthy, false is not.
        let truthy = |v: Option<&Json>| v.is_some_and(|v| *v != Json::Bool(false));
        let mut changed = false;
        if has_body {
            for (name, _) in self.rendered(&self.remove.body, env)? {
                p.remove(name);
                changed = true;
            }
            for (old, new) in self.rendered(&self.rename.body, env)? {
                let Some(new) = new else { continue };
                if old != new && truthy(p.get(old)) {
                    let v = p.remove(old).unwrap_or(Json::Null);
                    p.insert(new, v);
                    changed = true;
                }
            }
            for (name, value) in self.rendered(&self.replace.body, env)? {
                if let (true, Some(v)) = (truthy(p.get(name)), value) {
                    p.insert(name.to_string(), Json::String(v));
                    changed = true;
                }
            }
        }
        for (name, value) in self.rendered(&self.add.body, env)? {
            if let (false, Some(v)) = (truthy(p.get(name)), value) {
                p.insert(name.to_string(), Json::String(v));
                changed = true;
            }
        }
        for (name, value) in self.rendered(&self.append.body, env)? {
            let Some(v) = value else { continue };
            let new = match p.remove(name) {
                Some(Json::String(s)) => Json::Array(vec![Json::String(s), Json::String(v)]),
                Some(Json::Array(mut a)) => {
                    a.push(Json::String(v));
                    Json::Array(a)
                }
                Some(Json::Object(mut o)) => {
                    // `table.insert` on a hash table: the value lands at [1].
                    o.insert("1".into(), Json::String(v));
                    Json::Object(o)
                }
                _ => Json::Array(vec![Json::String(v)]),
            };
            p.insert(name.to_string(), new);
            changed = true;
        }
        Ok(changed.then(|| Json::Object(p).to_string().into_bytes()))
    }

    fn multipart_body(
        &self,
        body: &[u8],
        boundary: &str,
        env: &Original<'_>,
    ) -> Result<Option<Vec<u8>>, Failed> {
        let Some(mut m) = multipart::Multipart::parse(body, boundary) else {
            return Ok(None);
        };
        let has_body = !body.is_empty();
        let mut changed = false;
        if has_body {
            // lua-multipart's order in Kong: rename before remove.
            for (old, new) in self.rendered(&self.rename.body, env)? {
                let Some(new) = new else { continue };
                if old == new {
                    continue;
                }
                if let Some(value) = m.get(old).map(|p| p.value.clone()) {
                    m.set_simple(&new, &value);
                    m.delete(old);
                    changed = true;
                }
            }
            for (name, _) in self.rendered(&self.remove.body, env)? {
                m.delete(name);
                changed = true;
            }
            for (name, value) in self.rendered(&self.replace.body, env)? {
                if let (true, Some(v)) = (m.get(name).is_some(), value) {
                    m.delete(name);
                    m.set_simple(name, v.as_bytes());
                    changed = true;
                }
            }
        }
        for (name, value) in self.rendered(&self.add.body, env)? {
            if let (false, Some(v)) = (m.get(name).is_some(), value) {
                m.set_simple(name, v.as_bytes());
                changed = true;
            }
        }
        // Kong does not append to multipart bodies.
        Ok(changed.then(|| m.to_bytes()))
    }
}

impl Plugin for RequestTransformer {
    super::identity!();

    fn needs_body(&self) -> bool {
        self.reads_body
    }

    fn access(&self, ctx: &mut Ctx<'_>, req: &mut http::request::Parts) -> Flow {
        let original_headers;
        let captures;
        let empty = HeaderMap::new();
        let query = decode_args(req.uri.query().unwrap_or_default());
        let env = if self.templated {
            original_headers = req.headers.clone();
            captures = match ctx.route {
                Some(r) => ctx.config.uri_captures(r, ctx.path),
                None => super::UriCaptures::default(),
            };
            Original {
                headers: &original_headers,
                query: &query,
                captures: &captures,
            }
        } else {
            captures = super::UriCaptures::default();
            Original {
                headers: &empty,
                query: &query,
                captures: &captures,
            }
        };
        match self.transform(ctx, req, &env) {
            Ok(()) => Flow::Continue,
            Err(Failed(why)) => {
                tracing::error!(plugin = SCHEMA.name, error = %why, "[request-transformer] failed to render the template");
                failed()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_escape_as_kongs_uri_escape() {
        let e = |p: &str| percent_encoding::utf8_percent_encode(p, PATH).to_string();
        assert_eq!(e("/s/hello world"), "/s/hello%20world");
        assert_eq!(e("/a/%41/[x]/~u/é"), "/a/%41/[x]/~u/%C3%A9");
        assert_eq!(e("/q?a=1&b=$"), "/q?a=1&b=$");
    }

    #[test]
    fn args_encode_as_ngx_encode_args_sorted() {
        let q = decode_args("b=x y&a=1&a=2&flag&c=%3A%24%5B");
        assert_eq!(encode_args(&q), "a=1&a=2&b=x%20y&c=%3A%24%5B&flag");
        let q = decode_args("p1=z&p1=a");
        assert_eq!(encode_args(&q), "p1=z&p1=a");
        assert_eq!(
            encode_args(&decode_args("k=!'()*~-_.")),
            "k=!'()*~-_."
        );
    }
}
