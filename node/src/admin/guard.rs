//! Who may talk to the Admin API, checked before any handler runs.
//!
//! - **Token** (`--admin-token`): required on every request but `GET /status`. Compared as
//!   SHA-256 digests in constant time, so neither the token's bytes nor its length leak
//!   through timing.
//! - **Host** (`--admin-hosts`): the `Host` header must be one of the node's admin names. A
//!   browser tricked by DNS rebinding sends the attacker's domain as `Host`; IP literals and
//!   `localhost` are always accepted (they cannot be rebound), other names only when listed.
//! - **Origin** (`--admin-origins`): a write (anything but GET, HEAD, OPTIONS) that carries an
//!   `Origin` is refused unless that origin is listed or is the Admin API's own. Browsers
//!   send `Origin` on every cross-site write; curl and client libraries send none.
//! - **Content type**: a write with a body must be JSON, form-encoded or multipart (YAML too
//!   for `/config`); anything else is 415, which also shuts the `text/plain` route browsers
//!   use for cross-site "simple" requests.

use axum::http::{header, HeaderMap, Method, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why a request was refused, with the status Kong (or HTTP) uses for it.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Token,
    Host(String),
    Origin(String),
    ContentType(String),
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Token => StatusCode::UNAUTHORIZED,
            Refusal::Host(_) | Refusal::Origin(_) => StatusCode::FORBIDDEN,
            Refusal::ContentType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Refusal::Token => "Invalid or missing admin token".into(),
            Refusal::Host(h) => format!(
                "Host '{h}' is not one of this Admin API's names; add it with --admin-hosts"
            ),
            Refusal::Origin(o) => format!(
                "cross-site request from origin '{o}' refused; allow it with --admin-origins"
            ),
            Refusal::ContentType(ct) => format!(
                "Unsupported Content-Type '{ct}': send application/json or application/x-www-form-urlencoded"
            ),
        }
    }
}

/// The Admin API's access rules.
pub struct Guard {
    token: Option<[u8; 32]>,
    /// Lower-case host names accepted besides IP literals and `localhost`; `*` accepts any.
    hosts: Vec<String>,
    /// Lower-case `scheme://host[:port]` origins accepted on writes.
    origins: Vec<String>,
    /// With no origins listed and a loopback bind, Kong Manager's default origins may write
    /// (`localhost:8002`), as [`super::cors`] lets them read.
    manager_origins: bool,
}

fn digest(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

/// The name part of a `Host` header, lower-cased: without the port, IPv6 without brackets.
fn host_name(host: &str) -> String {
    let h = host.trim();
    let name = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        h.rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map(|(n, _)| n)
            .unwrap_or(h)
    };
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Guard {
    pub fn new(token: Option<&str>, hosts: &[String], origins: &[String]) -> Guard {
        Guard {
            token: token
                .filter(|t| !t.is_empty())
                .map(|t| digest(t.as_bytes())),
            hosts: hosts
                .iter()
                .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            origins: origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|o| !o.is_empty())
                .collect(),
            manager_origins: false,
        }
    }

    /// Accepts writes from Kong Manager's default origins when no origin is listed
    /// (loopback binds only).
    pub fn with_manager_origins(mut self, loopback_bind: bool) -> Guard {
        self.manager_origins = loopback_bind && self.origins.is_empty();
        self
    }

    /// Whether the request may go on to its handler.
    pub fn check(&self, method: &Method, path: &str, headers: &HeaderMap) -> Result<(), Refusal> {
        // Host first: a rebinding page must not even learn whether a token is set.
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !self.host_allowed(host) {
            return Err(Refusal::Host(host.chars().take(100).collect()));
        }
        // A browser's preflight never carries the token, and its answer reveals nothing.
        let public = (path == "/status" && method == Method::GET) || method == Method::OPTIONS;
        if let (Some(want), false) = (&self.token, public) {
            let given = headers
                .get("kong-admin-token")
                .map(|v| v.as_bytes())
                .or_else(|| {
                    headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
                })
                .unwrap_or(b"");
            if !bool::from(digest(given).ct_eq(want)) {
                return Err(Refusal::Token);
            }
        }
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(());
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let o = origin.to_str().unwrap_or("").trim().to_ascii_lowercase();
            let same_site = o
                .split_once("://")
                .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host.trim()));
            let local = self.manager_origins && super::cors::KONG_MANAGER.contains(&o.as_str());
            if !same_site && !local && !self.origins.contains(&o) {
                return Err(Refusal::Origin(o.chars().take(100).collect()));
            }
        }
        // Kong answers 415 to a body without a content type too: it cannot tell how to read it.
        let has_body = headers.contains_key(header::TRANSFER_ENCODING)
            || headers
                .get(header::CONTENT_LENGTH)
                .is_some_and(|l| l.as_bytes() != b"0");
        if has_body && !headers.contains_key(header::CONTENT_TYPE) {
            return Err(Refusal::ContentType(String::new()));
        }
        if let Some(ct) = headers.get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or("").to_ascii_lowercase();
            let essence = ct.split(';').next().unwrap_or("").trim();
            let ok = essence == "application/json"
                || essence.ends_with("+json")
                || essence == "application/x-www-form-urlencoded"
                || essence == "multipart/form-data"
                || (path == "/config"
                    && matches!(
                        essence,
                        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml"
                    ));
            if !ok {
                return Err(Refusal::ContentType(essence.chars().take(100).collect()));
            }
        }
        Ok(())
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = host_name(host);
        name == "localhost"
            || name.parse::<std::net::IpAddr>().is_ok()
            || self.hosts.iter().any(|h| h == "*" || *h == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_token_is_compared_as_a_digest_whatever_its_length() {
        let g = Guard::new(Some("s3cret"), &[], &[]);
        let get = |pairs: &[(&str, &str)]| g.check(&Method::GET, "/services", &headers(pairs));
        assert_eq!(get(&[("host", "127.0.0.1:8001")]), Err(Refusal::Token));
        for wrong in ["s", "s3cre", "s3cret!", "S3CRET", &"x".repeat(10_000)] {
            assert_eq!(
                get(&[("host", "localhost"), ("kong-admin-token", wrong)]),
                Err(Refusal::Token)
            );
        }
        assert_eq!(
            get(&[("host", "localhost"), ("kong-admin-token", "s3cret")]),
            Ok(())
        );
        assert_eq!(
            get(&[("host", "localhost"), ("authorization", "Bearer s3cret")]),
            Ok(())
        );
        // Only the digest is kept: nothing of the token's length is left to compare early.
        assert_eq!(g.token, Some(digest(b"s3cret")));
        // /status stays open for health checks.
        assert_eq!(
            g.check(&Method::GET, "/status", &headers(&[("host", "localhost")])),
            Ok(())
        );
    }

    #[test]
    fn rebound_host_names_are_refused() {
        let g = Guard::new(None, &["admin.internal".into()], &[]);
        let with_host = |h: &str| g.check(&Method::GET, "/", &headers(&[("host", h)]));
        for ok in [
            "localhost:8001",
            "127.0.0.1:8001",
            "[::1]:8001",
            "10.0.0.5",
            "ADMIN.internal:8001",
            "localhost.",
        ] {
            assert_eq!(with_host(ok), Ok(()), "{ok}");
        }
        assert!(matches!(
            with_host("evil.example.com:8001"),
            Err(Refusal::Host(_))
        ));
        assert!(matches!(with_host(""), Err(Refusal::Host(_))));
        let any = Guard::new(None, &["*".into()], &[]);
        assert_eq!(
            any.check(&Method::GET, "/", &headers(&[("host", "whatever.example")])),
            Ok(())
        );
    }

    #[test]
    fn cross_site_writes_are_refused() {
        let g = Guard::new(None, &[], &["https://manager.example.com".into()]);
        let post = |pairs: &[(&str, &str)]| g.check(&Method::POST, "/services", &headers(pairs));
        let form = ("content-type", "application/x-www-form-urlencoded");
        assert!(matches!(
            post(&[
                ("host", "127.0.0.1:8001"),
                ("origin", "https://evil.example"),
                form
            ]),
            Err(Refusal::Origin(_))
        ));
        assert!(matches!(
            post(&[("host", "127.0.0.1:8001"), ("origin", "null"), form]),
            Err(Refusal::Origin(_))
        ));
        assert_eq!(
            post(&[
                ("host", "127.0.0.1:8001"),
                ("origin", "https://manager.example.com"),
                form
            ]),
            Ok(())
        );
        assert_eq!(
            post(&[
                ("host", "127.0.0.1:8001"),
                ("origin", "http://127.0.0.1:8001"),
                form
            ]),
            Ok(())
        );
        // No Origin: curl and client libraries.
        assert_eq!(post(&[("host", "127.0.0.1:8001"), form]), Ok(()));
        // Reads carry no risk of a change.
        assert_eq!(
            g.check(
                &Method::GET,
                "/services",
                &headers(&[("host", "localhost"), ("origin", "https://evil.example")])
            ),
            Ok(())
        );
    }

    #[test]
    fn writes_need_a_content_type_the_api_reads() {
        let g = Guard::new(None, &[], &[]);
        let post = |path: &str, ct: &str| {
            g.check(
                &Method::POST,
                path,
                &headers(&[("host", "localhost"), ("content-type", ct)]),
            )
        };
        assert_eq!(
            post("/services", "text/plain"),
            Err(Refusal::ContentType("text/plain".into()))
        );
        assert_eq!(post("/services", "application/json; charset=utf-8"), Ok(()));
        assert_eq!(post("/services", "multipart/form-data; boundary=x"), Ok(()));
        assert!(post("/services", "application/yaml").is_err());
        assert_eq!(post("/config", "application/yaml"), Ok(()));
    }
}
