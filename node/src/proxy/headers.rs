//! Header rewriting between client and upstream: hop-by-hop removal (RFC 9110 §7.6.1),
//! forwarding headers, and upstream path joining.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use tollgate_config::router::HeaderLookup;

// A `static`, not a `const`: a const array is built and dropped at every use, nine header
// names each time, twice per request.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// The position of a hop-by-hop header in [`HOP_BY_HOP`]: a `match` on the name, which
/// compiles to a few length and byte comparisons, where comparing `HeaderName`s is a branch on
/// their representation for each of the nine.
fn hop_by_hop_index(name: &str) -> Option<usize> {
    Some(match name {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-authenticate" => 2,
        "proxy-authorization" => 3,
        "proxy-connection" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        "upgrade" => 8,
        _ => return None,
    })
}

/// Removes hop-by-hop headers, including those the Connection header names.
///
/// This runs twice per proxied request, and the common message carries none of them or only
/// `Connection: keep-alive`: one pass over the few names present finds which to remove, and
/// tokens that name no extra header (`keep-alive`, `close`) build no header name.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    strip_hop_by_hop_but(h, 0);
}

/// What [`strip_client_hop_by_hop`] saw.
pub struct ClientHeaders {
    /// A `Proxy-Authorization` header, kept for the auth plugins.
    pub proxy_authorization: bool,
    /// A name that may be a forged identity header (`x-c…`, `x-a…`, or with `_`).
    pub maybe_identity: bool,
}

/// The bit [`strip_hop_by_hop_but`] sets for a possible identity header.
const IDENTITY_BIT: u16 = 1 << 15;

/// The client's request: as [`strip_hop_by_hop`], but `Proxy-Authorization` stays for the
/// auth plugins (it is addressed to this gateway; the proxy removes it before the upstream),
/// and the same pass notes whether an identity header may be there.
pub fn strip_client_hop_by_hop(h: &mut HeaderMap) -> ClientHeaders {
    let present = strip_hop_by_hop_but(h, 1 << 3 | IDENTITY_BIT);
    ClientHeaders {
        proxy_authorization: present & (1 << 3) != 0,
        maybe_identity: present & IDENTITY_BIT != 0,
    }
}

/// Removes the hop-by-hop headers except those in `keep` (bits by position in
/// [`HOP_BY_HOP`]); returns which were present.
fn strip_hop_by_hop_but(h: &mut HeaderMap, keep: u16) -> u16 {
    let mut present = 0u16;
    for name in h.keys() {
        if let Some(i) = hop_by_hop_index(name.as_str()) {
            present |= 1 << i;
        } else if keep & IDENTITY_BIT != 0
            && crate::plugins::auth::may_be_identity(name.as_str().as_bytes())
        {
            present |= IDENTITY_BIT;
        }
    }
    if present & !keep == 0 {
        return present;
    }
    if present & 1 != 0 {
        let listed: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| {
                !t.is_empty()
                    && !t.eq_ignore_ascii_case("close")
                    && !HOP_BY_HOP
                        .iter()
                        .any(|n| t.eq_ignore_ascii_case(n.as_str()))
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for n in listed {
            h.remove(n);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & !keep & (1 << i) != 0 {
            h.remove(name);
        }
    }
    present
}

/// A number as a header value. Small ones (latencies in ms, seconds to a window's reset) are
/// common on every response: they come from a table instead of being formatted into a new
/// allocation each time.
pub fn number_header(n: u64) -> HeaderValue {
    static SMALL: std::sync::OnceLock<Vec<HeaderValue>> = std::sync::OnceLock::new();
    const TABLE: u64 = 100;
    if n < TABLE {
        let small = SMALL.get_or_init(|| (0..TABLE).map(HeaderValue::from).collect());
        small[n as usize].clone()
    } else {
        HeaderValue::from(n)
    }
}

/// The upstream path, as Kong 3.9 builds it from the service path (`base`), the normalised
/// request path and the part of it the route matched (`kong/router/utils.lua`
/// `get_upstream_uri_v0`, and `traditional.lua` for `path_handling: v1`).
pub fn join_path(base: &str, req: &str, strip: bool, matched_len: usize, v1: bool) -> String {
    // What follows the stripped prefix (`/` when the route matched no path), without a
    // leading `.` or `..` segment.
    let prefix = if matched_len > 0 { matched_len } else { 1 };
    let postfix = sanitize_postfix(req.get(prefix.min(req.len())..).unwrap_or(""));
    let base_slash = base.ends_with('/');
    let cut = || &base[..base.len() - 1];
    if v1 {
        return match (strip, base_slash && postfix.starts_with('/')) {
            (true, true) => format!("{}{postfix}", cut()),
            (true, false) => format!("{base}{postfix}"),
            (false, _) => format!("{base}{}", &req[1.min(req.len())..]),
        };
    }
    match (base_slash, strip) {
        (true, true) if postfix.is_empty() => {
            if base == "/" {
                "/".into()
            } else if req.ends_with('/') {
                base.into()
            } else {
                cut().into()
            }
        }
        (true, true) if postfix.starts_with('/') => format!("{}{postfix}", cut()),
        (true, true) => format!("{base}{postfix}"),
        (true, false) => format!("{base}{}", &req[1.min(req.len())..]),
        (false, true) if postfix.is_empty() => {
            if req.len() > 1 && req.ends_with('/') {
                format!("{base}/")
            } else {
                base.into()
            }
        }
        (false, true) if postfix.starts_with('/') => format!("{base}{postfix}"),
        (false, true) => format!("{base}/{postfix}"),
        (false, false) if req == "/" => base.into(),
        (false, false) => format!("{base}{req}"),
    }
}

/// Kong's `sanitize_uri_postfix`: a postfix that is, or starts with, a `.` or `..` segment
/// loses it, so `/route./x` stripped of `/route` does not climb out of the service path.
fn sanitize_postfix(p: &str) -> &str {
    match p {
        "." | ".." => "",
        _ => p
            .strip_prefix("./")
            .or_else(|| p.strip_prefix("../"))
            .unwrap_or(p),
    }
}

/// The router's view of request headers.
pub struct Lookup<'a>(pub &'a HeaderMap);

impl HeaderLookup for Lookup<'_> {
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.0
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(f)
    }
}

/// Splits a Host header into a lower-case name and an optional port.
pub fn split_host(raw: &str) -> (std::borrow::Cow<'_, str>, Option<u16>) {
    let (name, port) = if let Some(rest) = raw.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':').and_then(|p| p.parse().ok())),
            None => (raw, None),
        }
    } else {
        match raw.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
            _ => (raw, None),
        }
    };
    let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(name.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(name)
    };
    (name, port)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hop_by_hop_match_names_the_table() {
        for (i, n) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(n.as_str()), Some(i), "{n}");
        }
        assert_eq!(hop_by_hop_index("content-length"), None);
    }

    /// Rows of Kong's path-handling table (`spec/01-unit/08-router_spec.lua`); the whole
    /// table runs against a node in `tests/conformance/path_handling.yaml`.
    #[test]
    fn joins_like_kong() {
        // (service path, request, strip, matched length, v1) -> upstream path
        let rows = [
            ("/", "/x", false, 0, false, "/x"),
            ("/srv", "/roureq", true, 4, false, "/srv/req"),
            ("/srv/", "/rou", true, 4, false, "/srv"),
            ("/service", "/", false, 1, false, "/service"),
            ("/service", "/route", true, 1, false, "/service/route"),
            ("/service", "/route./req", true, 6, false, "/service/req"),
            ("/service/", "/route/", true, 7, false, "/service/"),
            ("/srv", "/roureq", true, 4, true, "/srvreq"),
            ("/srv/", "/rou/req", true, 4, true, "/srv/req"),
        ];
        for (base, req, strip, len, v1, want) in rows {
            assert_eq!(
                join_path(base, req, strip, len, v1),
                want,
                "{base} {req} {strip} {len} {v1}"
            );
        }
    }

    #[test]
    fn strips_hop_by_hop_and_connection_listed() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));

        // A listed hop-by-hop name is removed once, and its other values too.
        let mut h = HeaderMap::new();
        h.insert("connection", "Keep-Alive, TE, X-Other".parse().unwrap());
        h.append("te", "trailers".parse().unwrap());
        h.append("te", "gzip".parse().unwrap());
        h.insert("x-other", "1".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
    }

    #[test]
    fn strips_each_hop_by_hop_header_even_without_connection() {
        for name in &HOP_BY_HOP {
            let mut h = HeaderMap::new();
            h.insert(name.clone(), "1".parse().unwrap());
            h.insert("x-kept", "1".parse().unwrap());
            strip_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name} survived");
        }
        let mut h = HeaderMap::new();
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn numbers_read_the_same_from_the_table_or_not() {
        for n in [0u64, 1, 59, 99, 100, 12_345, u64::MAX] {
            assert_eq!(number_header(n), n.to_string().as_str());
        }
    }

    #[test]
    fn host_split() {
        assert_eq!(
            split_host("Example.COM:8000"),
            ("example.com".into(), Some(8000))
        );
        assert_eq!(split_host("a.b"), ("a.b".into(), None));
        assert_eq!(split_host("[::1]:80"), ("::1".into(), Some(80)));
    }
}
