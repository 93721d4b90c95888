//! `cors`: Cross-Origin Resource Sharing for browser clients, as Kong 3.9.3's
//! `kong/plugins/cors/handler.lua`.
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered here
//! with 200 and the allowed origin, methods, headers, max age, credentials and private network
//! access — or, with `preflight_continue`, sent to the upstream untouched. Every other
//! response (the upstream's, or an error such as a key-auth 401) gets the allowed origin,
//! credentials and exposed headers.
//!
//! Origins are matched as Kong does: `*` (or no list) allows any; a single literal is sent as
//! configured whatever the request's origin; otherwise the request's origin, normalised
//! (`scheme://host[:port]`, default ports dropped), must equal a literal entry or match a
//! regex entry (anchored at both ends; against the host alone when the entry has no `:`). A
//! refused origin gets no `Access-Control-Allow-Origin`, and the upstream's is removed.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Response, StatusCode};
use http_body_util::Full;
use tollgate_config::entity::Plugin as PluginEntity;
use tollgate_config::plugins::cors::{is_regex_entry, origin_regex, CorsConfig, METHODS, SCHEMA};
use uuid::Uuid;

use super::{Ctx, Deps, Flow, Handler, Instance, Plugin};

pub const HANDLER: Handler = Handler {
    schema: &SCHEMA,
    build,
};

static ACRPN: header::HeaderName =
    header::HeaderName::from_static("access-control-request-private-network");
static ACAPN: header::HeaderName =
    header::HeaderName::from_static("access-control-allow-private-network");
static TRUE: HeaderValue = HeaderValue::from_static("true");
static ORIGIN: HeaderValue = HeaderValue::from_static("Origin");
static ANY: HeaderValue = HeaderValue::from_static("*");

fn build(p: &PluginEntity, _deps: &Deps) -> Option<Instance> {
    let cfg = CorsConfig::parse(&p.config.0)?;
    let origins = cfg.origins.clone().unwrap_or_default();
    let allow_all = origins.is_empty() || origins.len() == 1 && origins[0] == "*";
    let single_literal = match origins.as_slice() {
        [one] if !allow_all && !is_regex_entry(one) => Some(HeaderValue::from_str(one).ok()?),
        _ => None,
    };
    let mut entries = Vec::new();
    let mut star = false;
    for o in &origins {
        if o == "*" {
            star = true;
            break;
        }
        let by_host = !o.contains(':');
        entries.push(if is_regex_entry(o) {
            Entry::Regex(origin_regex(o).ok()?, by_host)
        } else {
            Entry::Literal(normalize_origin(o).domain)
        });
    }
    let join = |l: &Option<Vec<String>>| {
        l.as_ref()
            .filter(|l| !l.is_empty())
            .and_then(|l| HeaderValue::from_str(&l.join(",")).ok())
    };
    let methods = match &cfg.methods {
        Some(m) => HeaderValue::from_str(&m.join(",")).ok()?,
        None => HeaderValue::from_str(&METHODS.join(",")).ok()?,
    };
    let max_age = match cfg.max_age {
        Some(m) => Some(HeaderValue::from_str(&lua_number(m)).ok()?),
        None => None,
    };
    Some(Arc::new(Cors {
        id: p.id,
        allow_all,
        single_literal,
        star,
        entries,
        headers: join(&cfg.headers),
        exposed: join(&cfg.exposed_headers),
        methods,
        max_age,
        credentials: cfg.credentials,
        private_network: cfg.private_network,
        preflight_continue: cfg.preflight_continue,
    }))
}

/// `tostring` of a Lua number: whole numbers without a fraction.
fn lua_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        n.to_string()
    }
}

enum Entry {
    /// A normalised `scheme://host[:port]` (or the text itself when it has no host).
    Literal(String),
    /// A regex, and whether it is matched against the host alone.
    Regex(regex::Regex, bool),
}

pub struct Cors {
    id: Uuid,
    allow_all: bool,
    single_literal: Option<HeaderValue>,
    /// `*` among several entries: any origin, once one is sent.
    star: bool,
    entries: Vec<Entry>,
    headers: Option<HeaderValue>,
    exposed: Option<HeaderValue>,
    methods: HeaderValue,
    max_age: Option<HeaderValue>,
    credentials: bool,
    private_network: bool,
    preflight_continue: bool,
}

/// The request's `Origin`, kept from access for the response (a preflight keeps `Skip`).
#[derive(Clone)]
enum Seen {
    Origin(HeaderValue),
    Skip,
}

/// An origin as Kong's `normalize_origin` reads it (LuaSocket's `url.parse`).
struct Normalized {
    domain: String,
    host: String,
}

fn normalize_origin(origin: &str) -> Normalized {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Normalized {
            domain: origin.to_string(),
            host: origin.to_string(),
        };
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => (v6, None),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Normalized {
            domain: origin.to_string(),
            host: origin.to_string(),
        };
    }
    let port = port.filter(|p| {
        !(p.is_empty() || scheme == "http" && *p == "80" || scheme == "https" && *p == "443")
    });
    let bracketed;
    let shown = if host.contains(':') {
        bracketed = format!("[{host}]");
        bracketed.as_str()
    } else {
        host
    };
    let domain = match port {
        Some(p) => format!("{scheme}://{shown}:{p}"),
        None => format!("{scheme}://{shown}"),
    };
    Normalized {
        domain,
        host: host.to_string(),
    }
}

impl Cors {
    /// Kong's `configure_origin` and `configure_credentials`, on `h`. `proxied` responses get
    /// `Vary` appended (the upstream may vary on more); a preflight's is set.
    fn origin_headers(&self, h: &mut http::HeaderMap, origin: Option<&HeaderValue>, proxied: bool) {
        let vary = |h: &mut http::HeaderMap| {
            if proxied {
                h.append(header::VARY, ORIGIN.clone());
            } else {
                h.insert(header::VARY, ORIGIN.clone());
            }
        };
        let allow_all = if self.allow_all {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, ANY.clone());
            true
        } else {
            vary(h);
            if let Some(one) = &self.single_literal {
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, one.clone());
                false
            } else if let (true, Some(_)) = (self.star, origin) {
                h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, ANY.clone());
                true
            } else {
                let matched = origin
                    .and_then(|o| o.to_str().ok())
                    .map(normalize_origin)
                    .filter(|n| {
                        self.entries.iter().any(|e| match e {
                            Entry::Literal(d) => *d == n.domain,
                            Entry::Regex(re, true) => re.is_match(&n.host),
                            Entry::Regex(re, false) => re.is_match(&n.domain),
                        })
                    })
                    .and_then(|n| HeaderValue::from_str(&n.domain).ok());
                match matched {
                    Some(v) => h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v),
                    None => h.remove(header::ACCESS_CONTROL_ALLOW_ORIGIN),
                };
                false
            }
        };
        if !self.credentials {
            return;
        }
        if !allow_all {
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
        } else if let Some(o) = origin {
            // `*` cannot go with credentials: the request's origin is echoed instead.
            vary(h);
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o.clone());
            h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone());
        }
    }

    fn preflight(&self, req: &http::request::Parts, origin: &HeaderValue) -> Response<Full<Bytes>> {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::OK;
        let h = r.headers_mut();
        self.origin_headers(h, Some(origin), false);
        let allow_headers = self.headers.clone().or_else(|| {
            req.headers
                .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
                .cloned()
        });
        if let Some(v) = allow_headers {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
        }
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
        if let Some(m) = &self.max_age {
            h.insert(header::ACCESS_CONTROL_MAX_AGE, m.clone());
        }
        if self.private_network && req.headers.get(&ACRPN).is_some_and(|v| v == "true") {
            h.insert(ACAPN.clone(), TRUE.clone());
        }
        r
    }
}

impl Plugin for Cors {
    super::identity!();

    fn access(&self, ctx: &mut Ctx<'_>, req: &mut http::request::Parts) -> Flow {
        let Some(origin) = req.headers.get(header::ORIGIN) else {
            return Flow::Continue;
        };
        let preflight = req.method == Method::OPTIONS
            && req
                .headers
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if !preflight {
            ctx.state.insert(Seen::Origin(origin.clone()));
            return Flow::Continue;
        }
        // A preflight gets its headers here, or none when the upstream answers it.
        ctx.state.insert(Seen::Skip);
        if self.preflight_continue {
            return Flow::Continue;
        }
        Flow::Respond(self.preflight(req, origin))
    }

    fn header_filter(&self, ctx: &mut Ctx<'_>, resp: &mut http::response::Parts) {
        let origin = match ctx.state.get::<Seen>() {
            Some(Seen::Skip) => return,
            Some(Seen::Origin(o)) => Some(o),
            None => None,
        };
        self.origin_headers(&mut resp.headers, origin, true);
        if let Some(e) = &self.exposed {
            resp.headers
                .insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_normalise_as_kongs() {
        let n = normalize_origin("http://example.com:80");
        assert_eq!(n.domain, "http://example.com");
        assert_eq!(n.host, "example.com");
        assert_eq!(normalize_origin("https://a.b:443/x").domain, "https://a.b");
        assert_eq!(normalize_origin("https://a.b:8443").domain, "https://a.b:8443");
        assert_eq!(normalize_origin("null").domain, "null");
        let v6 = normalize_origin("http://[::1]:8080");
        assert_eq!((v6.host.as_str(), v6.domain.as_str()), ("::1", "http://[::1]:8080"));
    }
}
