//! `key-auth`: identifies the consumer from an API key in a header, the query string or the
//! body, as Kong's plugin does, with the same config, messages and upstream headers.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, StatusCode, Uri};
use tollgate_config::entity::Plugin as PluginEntity;
use tollgate_config::plugins::key_auth::{KeyAuthConfig, SCHEMA};
use uuid::Uuid;

use super::{error_response, ConsumerInfo, Ctx, Deps, Flow, Handler, Instance, Plugin};

pub const HANDLER: Handler = Handler {
    schema: &SCHEMA,
    build,
};

fn build(p: &PluginEntity, _deps: &Deps) -> Option<Instance> {
    let cfg = KeyAuthConfig::parse(&p.config.0)?;
    Some(Arc::new(KeyAuth::new(p.id, cfg)))
}

static X_CONSUMER_ID: HeaderName = HeaderName::from_static("x-consumer-id");
static X_CONSUMER_USERNAME: HeaderName = HeaderName::from_static("x-consumer-username");
static X_CONSUMER_CUSTOM_ID: HeaderName = HeaderName::from_static("x-consumer-custom-id");
static X_CREDENTIAL_IDENTIFIER: HeaderName = HeaderName::from_static("x-credential-identifier");
static X_ANONYMOUS_CONSUMER: HeaderName = HeaderName::from_static("x-anonymous-consumer");

pub struct KeyAuth {
    id: Uuid,
    cfg: KeyAuthConfig,
    header_names: Vec<Option<HeaderName>>,
    challenge: HeaderValue,
}

enum Found {
    Header(usize),
    Query(usize),
    Body(usize),
}

impl KeyAuth {
    pub fn new(id: Uuid, cfg: KeyAuthConfig) -> KeyAuth {
        let header_names = cfg
            .key_names
            .iter()
            .map(|k| HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes()).ok())
            .collect();
        let realm = cfg.realm.clone().unwrap_or_else(|| "kong".to_string());
        let challenge = HeaderValue::from_str(&format!("Key realm=\"{realm}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("Key"));
        KeyAuth {
            id,
            cfg,
            header_names,
            challenge,
        }
    }

    /// Looks for a key: for each key name, in a header, then the query, then the body.
    fn find(&self, ctx: &Ctx<'_>, req: &http::request::Parts) -> Option<(String, Found)> {
        for (i, name) in self.cfg.key_names.iter().enumerate() {
            if self.cfg.key_in_header {
                if let Some(v) = self.header_names[i]
                    .as_ref()
                    .and_then(|h| req.headers.get(h))
                {
                    if let Ok(s) = v.to_str() {
                        return Some((s.to_string(), Found::Header(i)));
                    }
                }
            }
            if self.cfg.key_in_query {
                if let Some(q) = req.uri.query() {
                    if let Some((_, v)) =
                        form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == name)
                    {
                        return Some((v.into_owned(), Found::Query(i)));
                    }
                }
            }
            if self.cfg.key_in_body {
                if let Some(v) = ctx.body.as_ref().and_then(|b| body_field(req, b, name)) {
                    return Some((v, Found::Body(i)));
                }
            }
        }
        None
    }

    fn hide(&self, ctx: &mut Ctx<'_>, req: &mut http::request::Parts, found: &Found) {
        match *found {
            Found::Header(i) => {
                if let Some(h) = &self.header_names[i] {
                    req.headers.remove(h);
                }
            }
            Found::Query(i) => {
                let name = &self.cfg.key_names[i];
                let q = req.uri.query().unwrap_or("");
                let kept: String = form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(form_urlencoded::parse(q.as_bytes()).filter(|(k, _)| k != name))
                    .finish();
                let pq = if kept.is_empty() {
                    req.uri.path().to_string()
                } else {
                    format!("{}?{kept}", req.uri.path())
                };
                if let Ok(u) = pq.parse::<Uri>() {
                    req.uri = u;
                }
            }
            Found::Body(i) => {
                let name = &self.cfg.key_names[i];
                if let Some(b) = ctx.body.take() {
                    ctx.body = Some(body_without(req, &b, name).unwrap_or(b));
                }
            }
        }
    }

    fn reject_or_anonymous(
        &self,
        ctx: &mut Ctx<'_>,
        req: &mut http::request::Parts,
        message: &str,
    ) -> Flow {
        // The anonymous consumer (an id or a username) is looked up in the request's configuration,
        // so the instance does not depend on the consumers and survives their changes.
        let Some(who) = &self.cfg.anonymous else {
            let mut r = error_response(StatusCode::UNAUTHORIZED, message);
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, self.challenge.clone());
            return Flow::Respond(r);
        };
        match ctx.config.consumer_by_ref(who).cloned() {
            // Configured but no such consumer: a 500, as Kong.
            None => Flow::Respond(error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("anonymous consumer {who} is configured but doesn't exist"),
            )),
            Some(c) => {
                set_consumer_headers(req, &c);
                req.headers.remove(&X_CREDENTIAL_IDENTIFIER);
                req.headers.insert(
                    X_ANONYMOUS_CONSUMER.clone(),
                    HeaderValue::from_static("true"),
                );
                ctx.consumer = Some(c);
                ctx.credential = None;
                Flow::Continue
            }
        }
    }
}

fn set_consumer_headers(req: &mut http::request::Parts, c: &ConsumerInfo) {
    let h = &mut req.headers;
    h.insert(X_CONSUMER_ID.clone(), c.id_header.clone());
    match &c.username {
        Some(u) => h.insert(X_CONSUMER_USERNAME.clone(), u.clone()),
        None => h.remove(&X_CONSUMER_USERNAME),
    };
    match &c.custom_id {
        Some(u) => h.insert(X_CONSUMER_CUSTOM_ID.clone(), u.clone()),
        None => h.remove(&X_CONSUMER_CUSTOM_ID),
    };
}

fn content_type(req: &http::request::Parts) -> &str {
    req.headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn body_field(req: &http::request::Parts, body: &Bytes, name: &str) -> Option<String> {
    let ct = content_type(req);
    if ct.starts_with("application/x-www-form-urlencoded") {
        form_urlencoded::parse(body)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    } else if ct.starts_with("application/json") {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        match v.get(name)? {
            serde_json::Value::String(s) => Some(s.clone()),
            other => Some(other.to_string()),
        }
    } else {
        None
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
    fn name(&self) -> &'static str {
        SCHEMA.name
    }

    fn priority(&self) -> u32 {
        SCHEMA.priority
    }

    fn id(&self) -> Uuid {
        self.id
    }

    fn needs_body(&self) -> bool {
        self.cfg.key_in_body
    }

    fn access(&self, ctx: &mut Ctx<'_>, req: &mut http::request::Parts) -> Flow {
        if !self.cfg.run_on_preflight && req.method == Method::OPTIONS {
            return Flow::Continue;
        }
        let Some((key, found)) = self.find(ctx, req) else {
            return self.reject_or_anonymous(ctx, req, "No API key found in request");
        };
        let Some((cred, consumer)) = ctx.config.find_credential(&key) else {
            return self.reject_or_anonymous(ctx, req, "Invalid authentication credentials");
        };
        if self.cfg.hide_credentials {
            self.hide(ctx, req, &found);
        }
        set_consumer_headers(req, &consumer);
        if let Ok(v) = HeaderValue::from_str(&cred.id.to_string()) {
            req.headers.insert(X_CREDENTIAL_IDENTIFIER.clone(), v);
        }
        req.headers.remove(&X_ANONYMOUS_CONSUMER);
        ctx.consumer = Some(consumer);
        ctx.credential = Some(cred);
        Flow::Continue
    }
}
