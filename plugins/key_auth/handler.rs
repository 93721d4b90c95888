//! `key-auth`: identifies the consumer from an API key in a header, the query string or the
//! body, as Kong's plugin does, with the same config, messages and upstream headers.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Uri};
use tollgate_config::entity::Plugin as PluginEntity;
use tollgate_config::plugins::key_auth::{KeyAuthConfig, SCHEMA};
use uuid::Uuid;

use super::{auth, Ctx, Deps, Flow, Handler, Instance, Plugin};

pub const HANDLER: Handler = Handler {
    schema: &SCHEMA,
    build,
};

fn build(p: &PluginEntity, _deps: &Deps) -> Option<Instance> {
    let cfg = KeyAuthConfig::parse(&p.config.0)?;
    Some(Arc::new(KeyAuth::new(p.id, cfg)))
}

pub struct KeyAuth {
    id: Uuid,
    cfg: KeyAuthConfig,
    /// Per key name, the header names it is looked up under: Kong's header lookup treats `_`
    /// and `-` alike, so `api_key` also finds an `api-key` header.
    header_names: Vec<Vec<HeaderName>>,
    challenge: HeaderValue,
}

/// Which key name gave the key.
struct Found(usize);

/// Kong 3.9.3's messages (`kong/plugins/key-auth/handler.lua`).
const NO_KEY: &str = "No API key found in request";
const DUPLICATE: &str = "Duplicate API key found";
const INVALID: &str = "Unauthorized";

/// A key name given more than once (two headers, `?k=a&k=b`, a JSON array): Kong refuses it
/// rather than guessing which one counts.
struct Duplicate;

impl KeyAuth {
    pub fn new(id: Uuid, cfg: KeyAuthConfig) -> KeyAuth {
        let header_names = cfg
            .key_names
            .iter()
            .map(|k| {
                let lower = k.to_ascii_lowercase();
                let mut names: Vec<HeaderName> = Vec::new();
                // Kong's header table: the name as written, then with `_` read as `-`.
                for n in [lower.clone(), lower.replace('_', "-")] {
                    if let Ok(h) = HeaderName::from_bytes(n.as_bytes()) {
                        if !names.contains(&h) {
                            names.push(h);
                        }
                    }
                }
                names
            })
            .collect();
        // Kong 3.9 sends a bare `Key` challenge unless a realm is configured.
        let challenge = match &cfg.realm {
            Some(realm) => HeaderValue::from_str(&format!("Key realm=\"{realm}\""))
                .unwrap_or_else(|_| HeaderValue::from_static("Key")),
            None => HeaderValue::from_static("Key"),
        };
        KeyAuth {
            id,
            cfg,
            header_names,
            challenge,
        }
    }

    /// Looks for a key as Kong does: for each key name, in a header, then the query, then the
    /// body; the first name given as a string wins, even when empty (then there is no key).
    fn find(
        &self,
        ctx: &Ctx<'_>,
        req: &http::request::Parts,
    ) -> Result<Option<(String, Found)>, Duplicate> {
        for (i, name) in self.cfg.key_names.iter().enumerate() {
            if self.cfg.key_in_header {
                // The first spelling present counts; twice under it is a duplicate.
                let present = self.header_names[i]
                    .iter()
                    .map(|h| req.headers.get_all(h))
                    .find(|all| all.iter().next().is_some());
                if let Some(all) = present {
                    let mut values = all.iter();
                    let first = values.next();
                    if values.next().is_some() {
                        return Err(Duplicate);
                    }
                    let key = match first.map(|v| v.to_str()) {
                        Some(Ok(s)) => s.to_string(),
                        _ => String::from_utf8_lossy(first.map_or(&[], |v| v.as_bytes()))
                            .into_owned(),
                    };
                    return Ok(Some((key, Found(i))));
                }
            }
            if self.cfg.key_in_query {
                match req.uri.query().map(|q| query_value(q, name)).transpose()? {
                    Some(QueryArg::Value(v)) => return Ok(Some((v, Found(i)))),
                    // `?apikey` alone is there but no text: Kong moves to the next name
                    // without looking in the body.
                    Some(QueryArg::Bare) => continue,
                    Some(QueryArg::Absent) | None => {}
                }
            }
            if self.cfg.key_in_body {
                if let Some(v) = ctx.body.as_ref().map(|b| body_field(req, b, name)) {
                    if let Some(v) = v? {
                        return Ok(Some((v, Found(i))));
                    }
                }
            }
        }
        Ok(None)
    }

    /// `hide_credentials`: as Kong, the key name is cleared from the headers and the query
    /// (and the body when keys are read there), wherever the key was found.
    fn hide(&self, ctx: &mut Ctx<'_>, req: &mut http::request::Parts, i: usize) {
        for h in &self.header_names[i] {
            req.headers.remove(h);
        }
        let name = &self.cfg.key_names[i];
        // Only a query that holds the name is rewritten, as Kong's `clear_query_arg` does:
        // the other arguments in order, re-encoded (`valu%65` becomes `value`), a bare `?flag`
        // kept bare.
        let named = |part: &&str| decode(part.split('=').next().unwrap_or("")) == *name;
        if let Some(q) = req.uri.query().filter(|q| q.split('&').any(|p| named(&p))) {
            let kept: String = q
                .split('&')
                .filter(|p| !p.is_empty() && !named(p))
                .map(|p| match p.split_once('=') {
                    Some((k, v)) => format!("{}={}", escape(&decode(k)), escape(&decode(v))),
                    None => escape(&decode(p)),
                })
                .collect::<Vec<_>>()
                .join("&");
            let pq = if kept.is_empty() {
                req.uri.path().to_string()
            } else {
                format!("{}?{kept}", req.uri.path())
            };
            if let Ok(u) = pq.parse::<Uri>() {
                req.uri = u;
            }
        }
        if self.cfg.key_in_body {
            if let Some(b) = ctx.body.take() {
                ctx.body = Some(body_without(req, &b, name).unwrap_or(b));
            }
        }
    }

    fn reject_or_anonymous(
        &self,
        ctx: &mut Ctx<'_>,
        req: &mut http::request::Parts,
        message: &str,
    ) -> Flow {
        auth::reject_or_anonymous(ctx, req, &self.cfg.anonymous, || {
            auth::unauthorized(message, &self.challenge)
        })
    }
}

fn content_type(req: &http::request::Parts) -> &str {
    req.headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A query argument as nginx parses it.
enum QueryArg {
    Absent,
    /// `?k` with no `=`: present, but not a string.
    Bare,
    /// `?k=` (empty) or `?k=v`.
    Value(String),
}

/// Finds `name` in a query; a name given twice is a duplicate.
fn query_value(q: &str, name: &str) -> Result<QueryArg, Duplicate> {
    let mut found = QueryArg::Absent;
    for part in q.split('&') {
        let (k, v) = match part.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (part, None),
        };
        if decode(k) != name {
            continue;
        }
        if !matches!(found, QueryArg::Absent) {
            return Err(Duplicate);
        }
        found = match v {
            Some(v) => QueryArg::Value(decode(v)),
            None => QueryArg::Bare,
        };
    }
    Ok(found)
}

/// nginx's `escape_uri` for arguments: all but unreserved characters percent-encoded.
fn escape(s: &str) -> String {
    const ARG: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, ARG).to_string()
}

/// A query component, `+` as a space, as form decoding reads it.
fn decode(s: &str) -> String {
    form_urlencoded::parse(format!("x={s}").as_bytes())
        .map(|(_, v)| v.into_owned())
        .next()
        .unwrap_or_default()
}

fn body_field(
    req: &http::request::Parts,
    body: &Bytes,
    name: &str,
) -> Result<Option<String>, Duplicate> {
    let ct = content_type(req);
    if ct.starts_with("application/x-www-form-urlencoded") {
        let mut values = form_urlencoded::parse(body).filter(|(k, _)| k == name);
        let first = values.next().map(|(_, v)| v.into_owned());
        if values.next().is_some() {
            return Err(Duplicate);
        }
        Ok(first)
    } else if ct.starts_with("application/json") {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return Ok(None);
        };
        match v.get(name) {
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(serde_json::Value::Array(_) | serde_json::Value::Object(_)) => Err(Duplicate),
            _ => Ok(None),
        }
    } else {
        Ok(None)
    }
}

fn body_without(req: &http::request::Parts, body: &Bytes, name: &str) -> Option<Bytes> {
    let ct = content_type(req);
    if ct.starts_with("application/x-www-form-urlencoded") {
        let kept = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form_urlencoded::parse(body).filter(|(k, _)| k != name))
            .finish();
        Some(Bytes::from(kept))
    } else if ct.starts_with("application/json") {
        let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
        v.as_object_mut()?.remove(name);
        Some(Bytes::from(v.to_string()))
    } else {
        None
    }
}

impl Plugin for KeyAuth {
    super::identity!();

    fn needs_body(&self) -> bool {
        self.cfg.key_in_body
    }

    fn access(&self, ctx: &mut Ctx<'_>, req: &mut http::request::Parts) -> Flow {
        if !self.cfg.run_on_preflight && req.method == Method::OPTIONS {
            return Flow::Continue;
        }
        if auth::already_authenticated(&self.cfg.anonymous, ctx) {
            return Flow::Continue;
        }
        let (key, found) = match self.find(ctx, req) {
            Err(Duplicate) => return self.reject_or_anonymous(ctx, req, DUPLICATE),
            Ok(Some((key, found))) if !key.is_empty() => (key, found),
            Ok(_) => return self.reject_or_anonymous(ctx, req, NO_KEY),
        };
        let Some((cred, consumer)) = ctx.config.find_credential(&key) else {
            return self.reject_or_anonymous(ctx, req, INVALID);
        };
        if self.cfg.hide_credentials {
            self.hide(ctx, req, found.0);
        }
        let identifier = HeaderValue::from_str(&cred.id.to_string())
            .unwrap_or(HeaderValue::from_static(""));
        auth::set_consumer(ctx, req, consumer, Some((cred, identifier)));
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(q: &str) -> Result<QueryArg, Duplicate> {
        query_value(q, "apikey")
    }

    #[test]
    fn query_keys_read_as_nginx_does() {
        assert!(matches!(arg("a=1&apikey=k%20x"), Ok(QueryArg::Value(v)) if v == "k x"));
        assert!(matches!(arg("apikey="), Ok(QueryArg::Value(v)) if v.is_empty()));
        assert!(matches!(arg("apikey&b=2"), Ok(QueryArg::Bare)));
        assert!(matches!(arg("apikeys=1"), Ok(QueryArg::Absent)));
        assert!(matches!(arg("apikey=a&apikey=a"), Err(Duplicate)));
    }
}
