//! `proxy-cache`: caches upstream responses in memory and answers repeated requests from the
//! cache, as Kong 3.9.3's `kong/plugins/proxy-cache/handler.lua` with the `memory` strategy.
//!
//! Access: a request whose method is listed (and, with `cache_control`, without `no-store` or
//! `no-cache`) gets a cache key ([`cache_key`]); a live entry that is fresh enough is sent as
//! it was stored (`X-Cache-Status: Hit`, `Age`); otherwise the request goes upstream marked
//! `Miss` (or `Refresh` for a stale entry). Header filter: a marked response is stored if its
//! status and content type are listed (and, with `cache_control`, its `Cache-Control` allows
//! it and gives it a TTL); else it is marked `Bypass`. The body is copied as it is sent to the
//! client and stored once sent whole ([`super::BodySink`]): no buffering, and a body over
//! [`store::MAX_ENTRY`] simply goes uncached.
//!
//! Differences from Kong, each for want of nginx: the key's request line is the request as
//! Tollgate received it (method and target after earlier plugins, e.g. request-transformer;
//! Kong uses the client's line); a hit carries no `X-Kong-Upstream-Latency` /
//! `X-Kong-Proxy-Latency` (no upstream was timed); a response whose size is not declared and
//! turns out larger than the bound is marked `Miss` but not stored (its head was sent before
//! its size was known).

use std::sync::{Arc, LazyLock};

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use sha2::{Digest, Sha256};
use tollgate_config::entity::Plugin as PluginEntity;
use tollgate_config::plugins::proxy_cache::{ProxyCacheConfig, SCHEMA};
use uuid::Uuid;

use super::{BodySink, Ctx, Deps, Flow, Handler, Instance, Plugin};

#[path = "store.rs"]
pub mod store;

use store::{Entry, Store};

pub const HANDLER: Handler = Handler {
    schema: &SCHEMA,
    build,
};

/// The process's one cache store (Kong's shared dict), shared by every instance and by the
/// Admin API's `/proxy-cache` endpoints.
static STORE: LazyLock<Store> = LazyLock::new(|| Store::new(store::DEFAULT_MEMORY));

/// The process's cache store.
pub fn cache() -> &'static Store {
    &STORE
}

/// The topic of purge notices between nodes (Kong's cluster event `proxy-cache:purge`).
const PURGE_TOPIC: &str = "proxy-cache:purge\n";

/// The notice that makes another node purge `key` from its store, or flush it (`None`):
/// Kong's event data `<plugin_id>:<cache_key or nil>`.
pub fn purge_notice(plugin: Option<Uuid>, key: Option<&str>) -> Vec<u8> {
    let plugin = plugin.map_or_else(|| "nil".to_string(), |p| p.to_string());
    format!("{PURGE_TOPIC}{plugin}:{}", key.unwrap_or("nil")).into_bytes()
}

/// What a node answers to a key purge that found the key.
pub const PURGED: &[u8] = b"purged";

/// Handles a notice from another node (see [`purge_notice`]): `purged` when a key purge found
/// the entry, empty otherwise; `None` when it is not a purge.
pub fn on_notice(body: &[u8]) -> Option<Vec<u8>> {
    let data = std::str::from_utf8(body)
        .ok()?
        .strip_prefix(PURGE_TOPIC)?;
    let (_plugin, key) = data.split_once(':')?;
    let found = match key {
        "nil" => {
            STORE.clear();
            false
        }
        key => STORE.remove(key, now()),
    };
    Some(if found { PURGED.to_vec() } else { Vec::new() })
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

static X_CACHE_STATUS: HeaderName = HeaderName::from_static("x-cache-status");
static X_CACHE_KEY: HeaderName = HeaderName::from_static("x-cache-key");
static KONG_DEBUG: HeaderName = HeaderName::from_static("kong-debug");

/// Most query arguments read for the key (Kong's `kong.request.get_query()` default).
const MAX_ARGS: usize = 100;

fn build(p: &PluginEntity, _deps: &Deps) -> Option<Instance> {
    let cfg = ProxyCacheConfig::parse(&p.config.0)?;
    let content_types = cfg.content_type.iter().map(|c| parse_mime(c)).collect();
    Some(Arc::new(ProxyCache {
        id: p.id,
        cfg,
        content_types,
    }))
}

struct ProxyCache {
    id: Uuid,
    cfg: ProxyCacheConfig,
    /// `content_type`, parsed once (`None`: an entry that does not parse, which matches
    /// nothing).
    content_types: Vec<Option<Mime>>,
}

/// What access leaves for header_filter: the request is to be stored under `key`.
#[derive(Clone)]
struct Pending {
    key: String,
    req_body: Option<Bytes>,
}

/// Which diagnostic header; each is sent when configured or when the request has
/// `Kong-Debug`.
#[derive(Clone, Copy)]
enum Diag {
    Age,
    Status,
    Key,
}

impl ProxyCache {
    fn shows(&self, debug: bool, d: Diag) -> bool {
        debug
            || match d {
                Diag::Age => self.cfg.response_headers.age,
                Diag::Status => self.cfg.response_headers.x_cache_status,
                Diag::Key => self.cfg.response_headers.x_cache_key,
            }
    }

    /// Kong's `set_header` in access: on whatever response the request gets.
    fn set_header(&self, ctx: &mut Ctx<'_>, debug: bool, d: Diag, name: &HeaderName, v: &str) {
        if self.shows(debug, d) {
            if let Ok(v) = HeaderValue::from_str(v) {
                ctx.response_headers.retain(|(k, _)| k != name);
                ctx.response_headers.push((name.clone(), v));
            }
        }
    }

    /// Kong's `cacheable_response`, and the entry's freshness TTL when cacheable.
    fn cacheable_response(&self, resp: &http::response::Parts, now: f64) -> Option<f64> {
        if !self.cfg.response_code.contains(&resp.status.as_u16()) {
            return None;
        }
        let mut cts = resp.headers.get_all(header::CONTENT_TYPE).iter();
        let ct = match (cts.next(), cts.next()) {
            (Some(v), None) if !v.is_empty() => String::from_utf8_lossy(v.as_bytes()),
            _ => return None,
        };
        if !content_type_matches(&ct, &self.content_types) {
            return None;
        }
        if !self.cfg.cache_control {
            return Some(self.cfg.cache_ttl as f64);
        }
        let cc = Directives::of(&resp.headers);
        if cc.has("private") || cc.has("no-store") || cc.has("no-cache") {
            return None;
        }
        let ttl = resource_ttl(&cc, &resp.headers, now);
        (ttl > 0.0).then_some(ttl)
    }
}

impl Plugin for ProxyCache {
    super::identity!();

    fn access(&self, ctx: &mut Ctx<'_>, req: &mut http::request::Parts) -> Flow {
        let debug = req.headers.contains_key(&KONG_DEBUG);
        if debug {
            ctx.state.insert(Debug);
        }
        let cc = Directives::of(&req.headers);
        let method_ok = self
            .cfg
            .request_method
            .iter()
            .any(|m| m == req.method.as_str());
        // Kong also bypasses on `ngx.var.authorization`, a variable nginx does not define:
        // never set, so an Authorization header does not bypass.
        if !method_ok || self.cfg.cache_control && (cc.has("no-store") || cc.has("no-cache")) {
            self.set_header(ctx, debug, Diag::Status, &X_CACHE_STATUS, "Bypass");
            return Flow::Continue;
        }
        let key = cache_key(
            ctx.consumer.as_ref().map(|c| c.id),
            ctx.route.map(|r| r.id),
            req,
            &self.cfg,
        );
        self.set_header(ctx, debug, Diag::Key, &X_CACHE_KEY, &key);
        let now = ctx.now.floor();
        let signal = |ctx: &mut Ctx<'_>, status: &str| {
            self.set_header(ctx, debug, Diag::Status, &X_CACHE_STATUS, status);
            let req_body = ctx.body.clone();
            ctx.state.insert(Pending {
                key: key.clone(),
                req_body,
            });
            Flow::Continue
        };
        let Some(entry) = STORE.get(&key, ctx.now) else {
            if self.cfg.cache_control && cc.has("only-if-cached") {
                let mut r = Response::new(Full::new(Bytes::new()));
                *r.status_mut() = StatusCode::GATEWAY_TIMEOUT;
                return Flow::Respond(r);
            }
            return signal(ctx, "Miss");
        };
        let age = now - entry.timestamp as f64;
        let stale = if self.cfg.cache_control {
            cc.num("max-age").is_some_and(|m| age > m)
                || cc
                    .num("max-stale")
                    .is_some_and(|m| age - entry.ttl as f64 > m)
                || cc
                    .num("min-fresh")
                    .is_some_and(|m| entry.ttl as f64 - age < m)
        } else {
            age > self.cfg.cache_ttl as f64
        };
        if stale {
            return signal(ctx, "Refresh");
        }
        Flow::Respond(self.hit(&entry, &key, age, debug))
    }

    fn header_filter(&self, ctx: &mut Ctx<'_>, resp: &mut http::response::Parts) {
        let Some(pending) = ctx.state.remove::<Pending>() else {
            return;
        };
        let debug = ctx.state.get::<Debug>().is_some();
        let declared_too_large = resp
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n > STORE.max_entry() as u64);
        let ttl = match self.cacheable_response(resp, ctx.now) {
            Some(ttl) if !declared_too_large => ttl,
            _ => {
                // Kong's `set_header(conf, "X-Cache-Status", "Bypass")`: what access sent is
                // replaced.
                let shown = self.shows(debug, Diag::Status);
                if shown {
                    resp.headers
                        .insert(X_CACHE_STATUS.clone(), HeaderValue::from_static("Bypass"));
                }
                return;
            }
        };
        let storage_ttl = match self.cfg.storage_ttl {
            Some(s) => s as f64,
            None => ttl,
        };
        if storage_ttl < 0.0 {
            // A shared dict refuses a negative exptime: Kong stores nothing.
            return;
        }
        let now = ctx.now.floor();
        let headers = resp
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    kong_name(k).to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        ctx.body_sink = Some(Box::new(Sink {
            key: pending.key,
            entry: Entry {
                status: resp.status.as_u16(),
                headers,
                body: Bytes::new(),
                timestamp: now as i64,
                ttl: ttl as i64,
                req_body: pending.req_body,
                // A shared dict's exptime 0 keeps the entry until it is evicted.
                expires: (storage_ttl > 0.0).then_some(ctx.now + storage_ttl),
            },
        }));
    }
}

/// Set in access when the request has `Kong-Debug`, for header_filter.
#[derive(Clone)]
struct Debug;

impl ProxyCache {
    /// The answer from a stored entry (Kong's `kong.response.exit(res.status, res.body,
    /// res.headers)` after dropping hop-by-hop headers).
    fn hit(&self, entry: &Entry, key: &str, age: f64, debug: bool) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(entry.body.clone()));
        *r.status_mut() = StatusCode::from_u16(entry.status).unwrap_or(StatusCode::OK);
        let h = r.headers_mut();
        for (k, v) in &entry.headers {
            let lower = k.to_ascii_lowercase();
            if !replayed(&lower) {
                continue;
            }
            if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v))
            {
                h.append(k, v);
            }
        }
        if self.shows(debug, Diag::Age) {
            h.insert(header::AGE, HeaderValue::from(age.max(0.0) as i64));
        }
        if self.shows(debug, Diag::Status) {
            h.insert(X_CACHE_STATUS.clone(), HeaderValue::from_static("Hit"));
        }
        if self.shows(debug, Diag::Key) {
            if let Ok(v) = HeaderValue::from_str(key) {
                h.insert(X_CACHE_KEY.clone(), v);
            }
        }
        r
    }
}

/// Whether a stored header is sent again on a hit: not Kong's hop-by-hop list (which has
/// `content-length`), nothing with `ratelimit-remaining`, not the diagnostic headers (set
/// anew), and not what the proxy adds to every answer itself (`via`) or measures on the
/// upstream's (latencies).
fn replayed(lower: &str) -> bool {
    !matches!(
        lower,
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailers"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "age"
            | "x-cache-status"
            | "x-cache-key"
            | "via"
            | "x-kong-upstream-latency"
            | "x-kong-proxy-latency"
    ) && !lower.contains("ratelimit-remaining")
}

/// A header name as Kong's stored entry spells it: the plugin's own as it sets them, others
/// as received (lower case: HTTP/2 and this proxy's header map carry no case).
fn kong_name(k: &HeaderName) -> &str {
    if k == X_CACHE_STATUS {
        "X-Cache-Status"
    } else if k == X_CACHE_KEY {
        "X-Cache-Key"
    } else {
        k.as_str()
    }
}

/// Stores the response once its body was sent whole.
struct Sink {
    key: String,
    entry: Entry,
}

impl BodySink for Sink {
    fn max_bytes(&self) -> usize {
        STORE.max_entry()
    }

    fn complete(self: Box<Self>, body: Bytes) {
        let Sink { key, mut entry } = *self;
        entry.body = body;
        STORE.put(key, entry);
    }
}

// ---------------------------------------------------------------------------- cache key

/// Kong's `cache_key.build_cache_key`: the lowercase hex SHA-256 of
/// `prefix|method|uri|params|headers` (kong/plugins/proxy-cache/cache_key.lua), where the
/// prefix is `consumer:route`, `route` or `default`; `uri` is the request line with anything
/// from `?` cut (so `GET /p HTTP/1.1` without a query, `GET /p` with one), lowercased with
/// `ignore_uri_case`; params are the query arguments ([`params_key`]) and headers the
/// `vary_headers` ([`headers_key`]).
pub fn cache_key(
    consumer: Option<Uuid>,
    route: Option<Uuid>,
    req: &http::request::Parts,
    cfg: &ProxyCacheConfig,
) -> String {
    let prefix = prefix_uuid(consumer, route);
    let mut uri = request_line(req);
    if cfg.ignore_uri_case {
        uri = uri.to_lowercase();
    }
    let params = params_key(&query_args(req.uri.query().unwrap_or("")), cfg);
    let headers = headers_key(&req.headers, cfg);
    let text = format!(
        "{prefix}|{}|{uri}|{params}|{headers}",
        req.method.as_str()
    );
    hex(&Sha256::digest(text.as_bytes()))
}

/// Lowercase hex, by table (the formatter's per-byte `{:02x}` was a sixth of a cache hit).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// Kong's `prefix_uuid`.
pub fn prefix_uuid(consumer: Option<Uuid>, route: Option<Uuid>) -> String {
    match (consumer, route) {
        (Some(c), Some(r)) => format!("{c}:{r}"),
        (None, Some(r)) => r.to_string(),
        _ => "default".into(),
    }
}

/// nginx's `$request` with Kong's `gsub("\?.*", "")`.
fn request_line(req: &http::request::Parts) -> String {
    // nginx's `$request` of an HTTP/2 request is `METHOD /path HTTP/2.0`; an HTTP/1 request
    // line carries the target as sent (origin or absolute form).
    let target = if req.version == http::Version::HTTP_2 {
        req.uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into())
    } else {
        req.uri.to_string()
    };
    let line = format!("{} {target} {:?}", req.method.as_str(), req.version);
    match line.find('?') {
        Some(i) => line[..i].to_string(),
        None => line,
    }
}

/// A query or header value as Kong's tables hold it: a value, several, or (a query argument
/// without `=`) `true`.
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    One(Option<String>),
    Many(Vec<Option<String>>),
}

impl Arg {
    fn push(&mut self, v: Option<String>) {
        match self {
            Arg::One(first) => *self = Arg::Many(vec![first.take(), v]),
            Arg::Many(all) => all.push(v),
        }
    }
}

/// `ngx.req.get_uri_args()`: arguments by name in order of first appearance, values
/// unescaped (`+` is a space), at most [`MAX_ARGS`], empty names skipped.
pub fn query_args(query: &str) -> Vec<(String, Arg)> {
    let mut out: Vec<(String, Arg)> = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()).take(MAX_ARGS) {
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (unescape(k), Some(unescape(v))),
            None => (unescape(part), None),
        };
        if k.is_empty() {
            continue;
        }
        match out.iter_mut().find(|(n, _)| *n == k) {
            Some((_, a)) => a.push(v),
            None => out.push((k, Arg::One(v))),
        }
    }
    out
}

fn unescape(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// Kong's `generate_key_from`: for each field in order that is present, `field=value`,
/// `field=v1,v2` (values sorted) or `field` (no value), joined by `:`.
fn generate_key_from<'a>(
    fields: impl Iterator<Item = &'a str>,
    lookup: impl Fn(&str) -> Option<Arg>,
) -> String {
    let mut parts = Vec::new();
    for f in fields {
        match lookup(f) {
            None => {}
            Some(Arg::One(None)) => parts.push(f.to_string()),
            Some(Arg::One(Some(v))) => parts.push(format!("{f}={v}")),
            Some(Arg::Many(vs)) => {
                let mut vs: Vec<String> = vs.into_iter().map(Option::unwrap_or_default).collect();
                vs.sort();
                parts.push(format!("{f}={}", vs.join(",")));
            }
        }
    }
    parts.join(":")
}

/// Kong's `params_key`: all arguments, names sorted, unless `vary_query_params` names some.
pub fn params_key(args: &[(String, Arg)], cfg: &ProxyCacheConfig) -> String {
    let lookup = |f: &str| args.iter().find(|(n, _)| n == f).map(|(_, a)| a.clone());
    match cfg.vary_query_params.as_deref() {
        Some(vary) if !vary.is_empty() => generate_key_from(vary.iter().map(String::as_str), lookup),
        _ => {
            let mut names: Vec<&str> = args.iter().map(|(n, _)| n.as_str()).collect();
            names.sort();
            generate_key_from(names.into_iter(), lookup)
        }
    }
}

/// Kong's `headers_key`: the `vary_headers` in order (looked up as `ngx.req.get_headers()`
/// does: case-insensitive, `_` read as `-`); empty without them.
pub fn headers_key(headers: &http::HeaderMap, cfg: &ProxyCacheConfig) -> String {
    let Some(vary) = cfg.vary_headers.as_deref().filter(|v| !v.is_empty()) else {
        return String::new();
    };
    let lookup = |f: &str| {
        let name = f.to_ascii_lowercase().replace('_', "-");
        let mut vals = headers
            .get_all(name.as_str())
            .iter()
            .map(|v| Some(String::from_utf8_lossy(v.as_bytes()).into_owned()));
        let first = vals.next()?;
        let mut a = Arg::One(first);
        for v in vals {
            a.push(v);
        }
        Some(a)
    };
    generate_key_from(vary.iter().map(String::as_str), lookup)
}

// ---------------------------------------------------------------------------- cacheability

/// A media type as Kong's `kong.tools.mime_type.parse_mime_type` reads it (RFC 2045: type and
/// subtype tokens, lowercased, or `*`; `; name=value` parameters, names lowercased, values
/// tokens or quoted strings; nothing else).
#[derive(Debug, Clone, PartialEq)]
pub struct Mime {
    pub typ: String,
    pub subtype: String,
    pub params: Vec<(String, String)>,
}

fn is_token(b: u8) -> bool {
    b < 128 && b > 31 && b != 127 && !b"()<>@,;:\\\"/[]?={} \t".contains(&b)
}

/// Parses a media type, `None` when it does not follow the grammar.
pub fn parse_mime(s: &str) -> Option<Mime> {
    let b = s.as_bytes();
    let mut i = 0;
    let token = |i: &mut usize| -> Option<String> {
        let start = *i;
        while *i < b.len() && is_token(b[*i]) {
            *i += 1;
        }
        (*i > start).then(|| s[start..*i].to_string())
    };
    let first = token(&mut i)?;
    let (typ, subtype) = if i < b.len() && b[i] == b'/' {
        i += 1;
        let sub = token(&mut i)?;
        (first.to_ascii_lowercase(), sub.to_ascii_lowercase())
    } else if first == "*" {
        ("*".to_string(), "*".to_string())
    } else {
        return None;
    };
    let mut params: Vec<(String, String)> = Vec::new();
    loop {
        let mut j = i;
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        if j >= b.len() || b[j] != b';' {
            break;
        }
        j += 1;
        while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
            j += 1;
        }
        let Some(name) = token(&mut j) else { break };
        if j >= b.len() || b[j] != b'=' {
            break;
        }
        j += 1;
        let value = if j < b.len() && b[j] == b'"' {
            let start = j + 1;
            let mut k = start;
            loop {
                match b.get(k) {
                    None => return None,
                    Some(b'"') => break,
                    Some(b'\\') if b.get(k + 1).is_some_and(|c| *c < 128) => k += 2,
                    Some(c) if *c < 32 || *c == 127 => return None,
                    Some(_) => k += 1,
                }
            }
            let v = s[start..k].to_string();
            j = k + 1;
            v
        } else {
            match token(&mut j) {
                Some(v) => v,
                None => break,
            }
        };
        let name = name.to_ascii_lowercase();
        params.retain(|(n, _)| *n != name);
        params.push((name, value));
        i = j;
    }
    (i == b.len()).then_some(Mime {
        typ,
        subtype,
        params,
    })
}

/// Kong's content type test: a configured type matches when its type and subtype are equal or
/// `*`, and its parameters are exactly the response's (same names, values and count). A
/// response type that does not parse only matches `*/*`-like entries without parameters.
pub fn content_type_matches(ct: &str, expected: &[Option<Mime>]) -> bool {
    let got = parse_mime(ct);
    let (t, st, params) = match &got {
        Some(m) => (Some(m.typ.as_str()), Some(m.subtype.as_str()), &m.params[..]),
        None => (None, None, &[][..]),
    };
    expected.iter().flatten().any(|e| {
        (e.typ == "*" || Some(e.typ.as_str()) == t)
            && (e.subtype == "*" || Some(e.subtype.as_str()) == st)
            && e.params.len() == params.len()
            && e
                .params
                .iter()
                .all(|(k, v)| params.iter().any(|(pk, pv)| pk == k && pv == v))
    })
}

/// A directive's value as Kong's `parse_directive_header` keeps it.
#[derive(Debug, Clone, PartialEq)]
enum Directive {
    Num(f64),
    Text,
    Flag,
}

/// `Cache-Control` directives (kong/tools/http.lua `parse_directive_header`): split on `,`,
/// leading space dropped, `name[=value]`, names lowercased, numbers as numbers.
pub struct Directives(Vec<(String, Directive)>);

/// Most directives read from one header.
const MAX_DIRECTIVES: usize = 64;

impl Directives {
    fn of(headers: &http::HeaderMap) -> Directives {
        let joined: Vec<String> = headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        Directives::parse(&joined.join(", "))
    }

    fn parse(h: &str) -> Directives {
        let mut out: Vec<(String, Directive)> = Vec::new();
        for part in h.split(',').take(MAX_DIRECTIVES) {
            let part = part.trim_start();
            if part.is_empty() {
                continue;
            }
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (part, None),
            };
            if name.is_empty() {
                continue;
            }
            let d = match value.filter(|v| !v.is_empty()) {
                None => Directive::Flag,
                Some(v) => match v.trim().parse::<f64>() {
                    Ok(n) if n.is_finite() => Directive::Num(n),
                    _ => Directive::Text,
                },
            };
            let name = name.to_lowercase();
            out.retain(|(n, _)| *n != name);
            out.push((name, d));
        }
        Directives(out)
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|(n, _)| n == name)
    }

    /// A numeric directive (Kong compares only numbers; anything else would raise a Lua error
    /// there and is ignored here).
    fn num(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| n == name).and_then(|(_, d)| match d {
            Directive::Num(n) => Some(*n),
            _ => None,
        })
    }
}

/// Kong's `calculate_resource_ttl`: `s-maxage`, else `max-age`, else the last `Expires` minus
/// now; never below 0.
fn resource_ttl(cc: &Directives, headers: &http::HeaderMap, now: f64) -> f64 {
    let max_age = cc.num("s-maxage").or_else(|| cc.num("max-age")).or_else(|| {
        let expires = headers.get_all(header::EXPIRES).iter().next_back()?;
        let t = httpdate::parse_http_date(expires.to_str().ok()?).ok()?;
        let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs() as f64;
        Some(secs - now.floor())
    });
    max_age.map_or(0.0, |m| m.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(extra: serde_json::Value) -> ProxyCacheConfig {
        let mut c = json!({"strategy": "memory"});
        for (k, v) in extra.as_object().unwrap() {
            c[k] = v.clone();
        }
        let v = tollgate_config::plugins::validate("proxy-cache", Some(&c)).unwrap();
        ProxyCacheConfig::parse(&v).unwrap()
    }

    fn req(line: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let (method, target) = line.split_once(' ').unwrap();
        let mut b = http::Request::builder().method(method).uri(target);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    // spec/03-plugins/31-proxy-cache/05-cache_key_spec.lua.
    #[test]
    fn kongs_key_parts() {
        let (c1, r1) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(prefix_uuid(None, None), "default");
        assert_eq!(prefix_uuid(Some(c1), None), "default");
        assert_eq!(prefix_uuid(None, Some(r1)), r1.to_string());
        assert_eq!(prefix_uuid(Some(c1), Some(r1)), format!("{c1}:{r1}"));
        let all = cfg(json!({}));
        assert_eq!(params_key(&query_args("b=2&a=1"), &all), "a=1:b=2");
        assert_eq!(params_key(&query_args(""), &all), "");
        let a = cfg(json!({"vary_query_params": ["a"]}));
        assert_eq!(params_key(&query_args(""), &a), "");
        assert_eq!(params_key(&query_args("a=1&b=2"), &a), "a=1");
        assert_eq!(params_key(&query_args("a=2&a=1"), &a), "a=1,2");
        let abc = cfg(json!({"vary_query_params": ["a", "b", "c"]}));
        assert_eq!(params_key(&query_args("a=1&a=2&b=2"), &abc), "a=1,2:b=2");
        assert_eq!(params_key(&query_args("a&b"), &all), "a:b");
        assert_eq!(params_key(&query_args("a=x+y%21"), &all), "a=x y!");
        let h = req("GET /", &[("a", "2"), ("a", "1"), ("b", "2")]).headers;
        assert_eq!(headers_key(&h, &all), "");
        let hv = cfg(json!({"vary_headers": ["a", "b", "c"]}));
        assert_eq!(headers_key(&h, &hv), "a=1,2:b=2");
        let hv = cfg(json!({"vary_headers": ["A"]}));
        assert_eq!(headers_key(&h, &hv), "A=1,2");
    }

    #[test]
    fn the_key_hashes_kongs_string() {
        let r = Uuid::parse_str("6e4c7a3e-6b5e-4f0e-9a57-1f0c1b8f2d10").unwrap();
        let all = cfg(json!({}));
        // sha256("<route>|GET|GET /get HTTP/1.1||")
        let k = cache_key(None, Some(r), &req("GET /get", &[]), &all);
        let want = hex(&Sha256::digest(
            format!("{r}|GET|GET /get HTTP/1.1||").as_bytes(),
        ));
        assert_eq!(k, want);
        assert_eq!(k.len(), 64);
        // With a query the version goes with it.
        let k = cache_key(None, Some(r), &req("GET /get?b=1&a=2", &[]), &all);
        let want = hex(&Sha256::digest(format!("{r}|GET|GET /get|a=2:b=1|").as_bytes()));
        assert_eq!(k, want);
        // ignore_uri_case lowercases the whole line.
        let ic = cfg(json!({"ignore_uri_case": true}));
        assert_eq!(
            cache_key(None, Some(r), &req("GET /A/B", &[]), &ic),
            cache_key(None, Some(r), &req("GET /a/b", &[]), &ic)
        );
        assert_ne!(
            cache_key(None, Some(r), &req("GET /A/B", &[]), &all),
            cache_key(None, Some(r), &req("GET /a/b", &[]), &all)
        );
        // A known value: sha256 of "default|GET|GET / HTTP/1.1||" (sha256sum).
        assert_eq!(
            cache_key(None, None, &req("GET /", &[]), &all),
            "be903eff7636fb8b4c3831c6738829fd1c7247862cf3138391e1618b30c505c9"
        );
    }

    #[test]
    fn kongs_content_type_rules() {
        let exp = |l: &[&str]| l.iter().map(|s| parse_mime(s)).collect::<Vec<_>>();
        let json_plain = exp(&["text/plain", "application/json"]);
        assert!(content_type_matches("application/json", &json_plain));
        assert!(content_type_matches("Application/JSON", &json_plain));
        assert!(!content_type_matches("application/json; charset=utf-8", &json_plain));
        assert!(!content_type_matches("application/xml", &json_plain));
        let with = exp(&["application/json; charset=utf-8"]);
        assert!(content_type_matches("application/json;charset=utf-8", &with));
        assert!(!content_type_matches("application/json; charset=UTF-8", &with));
        assert!(content_type_matches("application/xml", &exp(&["*/*"])));
        assert!(content_type_matches("application/xml", &exp(&["application/*"])));
        assert!(content_type_matches("text/text", &exp(&["*/text"])));
        // An entry that does not parse matches nothing; a response type that does not parse
        // matches only wildcards.
        assert!(parse_mime("application/xml;").is_none());
        assert!(!content_type_matches("application/xml", &exp(&["application/xml;"])));
        assert!(!content_type_matches(
            "application/xml;",
            &exp(&["application/xml; charset=UTF-8"])
        ));
        assert!(content_type_matches("application/xml;", &exp(&["*/*"])));
        let q = parse_mime(r#"text/plain; Charset="a\"b""#).unwrap();
        assert_eq!(q.params, vec![("charset".into(), r#"a\"b"#.into())]);
    }

    #[test]
    fn kongs_cache_control_rules() {
        let d = Directives::parse("public, max-age=2, No-Store, x=abc");
        assert!(d.has("public") && d.has("no-store") && d.has("x"));
        assert_eq!(d.num("max-age"), Some(2.0));
        assert_eq!(d.num("x"), None);
        let mut h = http::HeaderMap::new();
        let now = 1000.0;
        assert_eq!(resource_ttl(&Directives::parse("max-age=10"), &h, now), 10.0);
        assert_eq!(
            resource_ttl(&Directives::parse("max-age=10, s-maxage=20"), &h, now),
            20.0
        );
        assert_eq!(resource_ttl(&Directives::parse("max-age=-5"), &h, now), 0.0);
        assert_eq!(resource_ttl(&Directives::parse("public"), &h, now), 0.0);
        h.insert(
            header::EXPIRES,
            HeaderValue::from_static("Thu, 01 Jan 1970 00:16:50 GMT"),
        );
        assert_eq!(resource_ttl(&Directives::parse(""), &h, now), 10.0);

        let pc = ProxyCache {
            id: Uuid::nil(),
            cfg: cfg(json!({"cache_control": true})),
            content_types: vec![parse_mime("application/json")],
        };
        let resp = |cc: &str| {
            let mut b = http::Response::builder()
                .status(200)
                .header("content-type", "application/json");
            if !cc.is_empty() {
                b = b.header("cache-control", cc);
            }
            b.body(()).unwrap().into_parts().0
        };
        assert_eq!(pc.cacheable_response(&resp("max-age=5"), now), Some(5.0));
        assert_eq!(pc.cacheable_response(&resp("private, max-age=5"), now), None);
        assert_eq!(pc.cacheable_response(&resp("no-cache, max-age=5"), now), None);
        assert_eq!(pc.cacheable_response(&resp("max-age=0"), now), None);
        assert_eq!(pc.cacheable_response(&resp(""), now), None);
    }
}
