//! `request-termination`: answers every request itself — a status with a message, a raw body,
//! or (for debugging) an echo of the request — so a route can be switched off or stubbed
//! without its upstream. With `trigger`, only requests naming it (header or query argument)
//! are answered; the others go through.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};
use tollgate_config::entity::{Entity, Plugin as PluginEntity};
use tollgate_config::plugins::request_termination::{RequestTerminationConfig, SCHEMA};
use uuid::Uuid;

use super::request_data::{args, args_json, body_json, headers_json};
use super::{error_response, Ctx, Deps, Flow, Handler, Instance, Plugin};

pub const HANDLER: Handler = Handler {
    schema: &SCHEMA,
    build,
};

fn build(p: &PluginEntity, _deps: &Deps) -> Option<Instance> {
    let cfg = RequestTerminationConfig::parse(&p.config.0)?;
    let status = StatusCode::from_u16(cfg.status_code).ok()?;
    let content_type = match &cfg.content_type {
        Some(ct) if !ct.is_empty() => Some(HeaderValue::from_str(ct).ok()?),
        _ => None,
    };
    let trigger = cfg.trigger.as_ref().map(|t| t.to_ascii_lowercase());
    // Kong's `conf.message or DEFAULT_RESPONSE[status]`.
    let message = cfg.message.clone().or_else(|| default_message(status).map(String::from));
    Some(Arc::new(RequestTermination {
        id: p.id,
        status,
        message,
        body: cfg.body.map(Bytes::from),
        content_type,
        echo: cfg.echo,
        trigger,
    }))
}

/// Kong's `DEFAULT_RESPONSE` (kong/plugins/request-termination/handler.lua).
fn default_message(status: StatusCode) -> Option<&'static str> {
    Some(match status.as_u16() {
        401 => "Unauthorized",
        404 => "Not found",
        405 => "Method not allowed",
        500 => "An unexpected error occurred",
        502 => "Bad Gateway",
        503 => "Service unavailable",
        _ => return None,
    })
}

pub struct RequestTermination {
    id: Uuid,
    status: StatusCode,
    message: Option<String>,
    body: Option<Bytes>,
    content_type: Option<HeaderValue>,
    echo: bool,
    /// Lower-case: header names compare without case, query names as given (Kong's table
    /// lookup of a lower-cased header name also finds only that spelling in the query).
    trigger: Option<String>,
}

impl RequestTermination {
    fn triggered(&self, req: &http::request::Parts) -> bool {
        let Some(t) = &self.trigger else {
            return true;
        };
        req.headers.contains_key(t.as_str())
            || req
                .uri
                .query()
                .is_some_and(|q| args(q).iter().any(|(k, _)| k == t))
    }

    /// Kong's echo: the request as the PDK sees it, and the matched route and service.
    fn echo(&self, ctx: &Ctx<'_>, req: &http::request::Parts) -> Value {
        let content_type = req.headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes());
        let raw = ctx.body.as_deref().unwrap_or_default();
        let host = req
            .headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(|h| crate::proxy::headers::split_host(h).0.into_owned())
            .unwrap_or_default();
        let route = ctx.route;
        json!({
            "message": self.message,
            "kong": {
                "node_id": super::NODE_ID.get().map(|u| u.to_string()),
                "worker_pid": std::process::id(),
                "hostname": std::env::var("HOSTNAME").unwrap_or_default(),
            },
            "request": {
                "scheme": if ctx.peer.tls { "https" } else { "http" },
                "host": host,
                "port": ctx.peer.local.port(),
                "headers": headers_json(&req.headers),
                "query": args_json(req.uri.query().unwrap_or_default()),
                "body": body_json(content_type, raw),
                "raw_body": String::from_utf8_lossy(raw),
                "method": req.method.as_str(),
                "path": ctx.path,
                "uri_captures": route
                    .map(|r| ctx.config.uri_captures(r, ctx.path).to_json())
                    .unwrap_or_else(|| json!({"named": {}, "unnamed": []})),
            },
            "matched_route": route.map(|r| Entity::Route((*r.entity).clone()).to_json()),
            "matched_service": route
                .and_then(|r| r.service_entity.as_ref())
                .map(|s| Entity::Service((**s).clone()).to_json()),
        })
    }
}

impl Plugin for RequestTermination {
    super::identity!();

    fn needs_body(&self) -> bool {
        self.echo
    }

    fn access(&self, ctx: &mut Ctx<'_>, req: &mut http::request::Parts) -> Flow {
        if !self.triggered(req) {
            return Flow::Continue;
        }
        let mut resp = if self.echo {
            let mut r = error_response(self.status, "");
            *r.body_mut() = Full::new(Bytes::from(self.echo(ctx, req).to_string()));
            r
        } else if let Some(body) = &self.body {
            let mut r = Response::new(Full::new(body.clone()));
            *r.status_mut() = self.status;
            if let Some(ct) = &self.content_type {
                r.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
            }
            r
        } else if let Some(m) = &self.message {
            error_response(self.status, m)
        } else {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = self.status;
            r
        };
        // Kong's `kong.response.exit` sends no body, and so no length, on a 204 or 304.
        if matches!(self.status.as_u16(), 204 | 304) {
            *resp.body_mut() = Full::new(Bytes::new());
        }
        Flow::Respond(resp)
    }
}
