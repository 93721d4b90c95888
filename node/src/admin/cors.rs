//! `OPTIONS` and CORS on the Admin API, as Kong's `api_helpers.lua` answers them, so Kong
//! Manager (a browser app on another origin) can talk to it.
//!
//! - `OPTIONS` on a known path is 204 with `Allow` and `Access-Control-Allow-Methods` (the
//!   path's methods, with HEAD and OPTIONS, sorted) and `Access-Control-Allow-Headers` (the
//!   request's `Access-Control-Request-Headers`, or `Content-Type`); on an unknown path, 404.
//! - Every answer carries `Access-Control-Allow-Origin` and `-Credentials: true`. Which origin:
//!   - with `--admin-origins`: the request's `Origin` when listed, else the first listed (Kong's
//!     `admin_gui_origin` rule: the browser then refuses the answer);
//!   - without it, on a loopback bind: Kong Manager's own origins ([`KONG_MANAGER`], its
//!     default `localhost:8002`), and `*` for a request without `Origin` (not a browser's
//!     cross-site request). Kong echoes any origin, which lets every web page the operator
//!     visits read the Admin API (keys included); and not every loopback origin is safe
//!     either: a page served through this gateway's own proxy is one. See the README.
//!   - without it, on any other bind: no CORS headers at all.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// The Admin API's paths and their methods, recorded as the router is built.
#[derive(Default)]
pub struct Paths(Vec<(Vec<Segment>, String)>);

enum Segment {
    Literal(String),
    Param,
}

impl Paths {
    /// Records `pattern` (axum syntax: `/routes/{key}`) answering `methods`.
    pub fn add(&mut self, pattern: &str, methods: &[&str]) {
        let segs = pattern
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| {
                if s.starts_with('{') {
                    Segment::Param
                } else {
                    Segment::Literal(s.to_string())
                }
            })
            .collect();
        let mut all: Vec<&str> = methods.to_vec();
        if all.contains(&"GET") {
            all.push("HEAD");
        }
        all.push("OPTIONS");
        all.sort_unstable();
        all.dedup();
        self.0.push((segs, all.join(", ")));
    }

    /// The methods of the most specific pattern matching `path` (literals beat parameters).
    pub fn allow(&self, path: &str) -> Option<&str> {
        let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        self.0
            .iter()
            .filter(|(segs, _)| {
                segs.len() == parts.len()
                    && segs.iter().zip(&parts).all(|(s, p)| match s {
                        Segment::Literal(l) => l == p,
                        Segment::Param => true,
                    })
            })
            .max_by_key(|(segs, _)| {
                segs.iter()
                    .filter(|s| matches!(s, Segment::Literal(_)))
                    .count()
            })
            .map(|(_, m)| m.as_str())
    }
}

/// Who may read the Admin API from a browser.
pub struct Cors {
    origins: Vec<String>,
    loopback_bind: bool,
}

/// Kong Manager's default origins: allowed by default on a loopback bind.
pub const KONG_MANAGER: [&str; 2] = ["http://localhost:8002", "http://127.0.0.1:8002"];

impl Cors {
    pub fn new(origins: &[String], loopback_bind: bool) -> Cors {
        Cors {
            origins: origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_string())
                .filter(|o| !o.is_empty())
                .collect(),
            loopback_bind,
        }
    }

    /// The `Access-Control-Allow-Origin` to send, if any.
    fn allow_origin(&self, req: &HeaderMap) -> Option<String> {
        let origin = req.get(header::ORIGIN).and_then(|v| v.to_str().ok());
        if let Some(first) = self.origins.first() {
            let listed = origin.filter(|o| self.origins.iter().any(|a| a.eq_ignore_ascii_case(o)));
            return Some(listed.unwrap_or(first).to_string());
        }
        if !self.loopback_bind {
            return None;
        }
        match origin {
            None => Some("*".into()),
            Some(o) if KONG_MANAGER.iter().any(|m| m.eq_ignore_ascii_case(o)) => {
                Some(o.to_string())
            }
            Some(_) => None,
        }
    }

    /// Adds the CORS headers to an answer.
    pub fn decorate(&self, req: &HeaderMap, resp: &mut Response) {
        if let Some(o) = self
            .allow_origin(req)
            .and_then(|o| HeaderValue::from_str(&o).ok())
        {
            let h = resp.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, o);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            // The answer depends on the request's origin: caches must keep them apart.
            h.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }

    /// The answer to `OPTIONS` on a path with `methods`.
    pub fn preflight(&self, req: &HeaderMap, methods: &str) -> Response {
        let mut r = StatusCode::NO_CONTENT.into_response();
        let allow = HeaderValue::from_str(methods).unwrap_or(HeaderValue::from_static("OPTIONS"));
        let h = r.headers_mut();
        h.insert(header::ALLOW, allow.clone());
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, allow);
        let asked = req
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned()
            .unwrap_or(HeaderValue::from_static("Content-Type"));
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(o: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, o.parse().unwrap());
        h
    }

    #[test]
    fn the_most_specific_path_gives_the_methods() {
        let mut p = Paths::default();
        p.add("/plugins", &["GET", "POST"]);
        p.add("/plugins/{key}", &["GET", "PATCH", "PUT", "DELETE"]);
        p.add("/plugins/enabled", &["GET"]);
        assert_eq!(p.allow("/plugins"), Some("GET, HEAD, OPTIONS, POST"));
        assert_eq!(
            p.allow("/plugins/x"),
            Some("DELETE, GET, HEAD, OPTIONS, PATCH, PUT")
        );
        assert_eq!(p.allow("/plugins/enabled"), Some("GET, HEAD, OPTIONS"));
        assert_eq!(p.allow("/nothing"), None);
    }

    #[test]
    fn only_listed_or_kong_manager_origins_are_echoed() {
        let listed = Cors::new(&["https://manager.example".into()], false);
        assert_eq!(
            listed
                .allow_origin(&origin("https://evil.example"))
                .as_deref(),
            Some("https://manager.example")
        );
        let local = Cors::new(&[], true);
        assert_eq!(
            local
                .allow_origin(&origin("http://localhost:8002"))
                .as_deref(),
            Some("http://localhost:8002")
        );
        assert_eq!(local.allow_origin(&origin("https://evil.example")), None);
        // A page served through the gateway's own proxy is a loopback origin too.
        assert_eq!(local.allow_origin(&origin("http://localhost:8000")), None);
        assert_eq!(local.allow_origin(&HeaderMap::new()).as_deref(), Some("*"));
        let public = Cors::new(&[], false);
        assert_eq!(public.allow_origin(&HeaderMap::new()), None);
    }
}
