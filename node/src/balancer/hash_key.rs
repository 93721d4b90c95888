//! What consistent hashing hashes: Kong's `hash_on`, then `hash_fallback` when the first
//! gives nothing (`kong/runloop/balancer/init.lua`, `get_value_to_hash`).
//!
//! - `consumer`: the consumer's id, else the credential's;
//! - `ip`: the client address (after trusted-proxy resolution);
//! - `header`: the header's values, joined with `, ` when repeated (as nginx joins them);
//! - `cookie`: the cookie's value; when absent, a new UUID that is also set on the client
//!   with `Set-Cookie: <name>=<uuid>; Path=<hash_on_cookie_path>; Same-Site=Lax; HttpOnly`,
//!   so the client sticks;
//! - `path`: the normalised request path;
//! - `query_arg`: the argument's values (`true` for one without `=`), sorted and joined with
//!   `,`;
//! - `uri_capture`: a named or numbered capture of the route's regex path.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};
use tollgate_config::entities::Upstream;
use uuid::Uuid;

/// One hashing input.
#[derive(Debug, Clone, PartialEq)]
pub enum HashOn {
    None,
    Consumer,
    Ip,
    Header(HeaderName),
    Cookie { name: String, path: String },
    Path,
    QueryArg(String),
    UriCapture(String),
}

impl HashOn {
    fn from(
        mode: &str,
        header: Option<&str>,
        up: &Upstream,
        arg: Option<&str>,
        capture: Option<&str>,
    ) -> HashOn {
        match mode {
            "consumer" => HashOn::Consumer,
            "ip" => HashOn::Ip,
            "header" => header
                .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .map(HashOn::Header)
                .unwrap_or(HashOn::None),
            "cookie" => match &up.hash_on_cookie {
                Some(name) => HashOn::Cookie {
                    name: name.clone(),
                    path: up.hash_on_cookie_path.clone(),
                },
                None => HashOn::None,
            },
            "path" => HashOn::Path,
            "query_arg" => arg
                .map(|a| HashOn::QueryArg(a.to_string()))
                .unwrap_or(HashOn::None),
            "uri_capture" => capture
                .map(|c| HashOn::UriCapture(c.to_string()))
                .unwrap_or(HashOn::None),
            _ => HashOn::None,
        }
    }
}

/// An upstream's hashing inputs, primary then fallback.
#[derive(Debug, Clone, PartialEq)]
pub struct HashSpec {
    pub on: HashOn,
    pub fallback: HashOn,
}

impl HashSpec {
    /// Whether a route's regex captures are needed.
    pub fn uses_captures(&self) -> bool {
        matches!(self.on, HashOn::UriCapture(_)) || matches!(self.fallback, HashOn::UriCapture(_))
    }

    pub fn of(up: &Upstream) -> HashSpec {
        HashSpec {
            on: HashOn::from(
                &up.hash_on,
                up.hash_on_header.as_deref(),
                up,
                up.hash_on_query_arg.as_deref(),
                up.hash_on_uri_capture.as_deref(),
            ),
            fallback: HashOn::from(
                &up.hash_fallback,
                up.hash_fallback_header.as_deref(),
                up,
                up.hash_fallback_query_arg.as_deref(),
                up.hash_fallback_uri_capture.as_deref(),
            ),
        }
    }
}

/// What a request offers to hash.
pub struct Request<'a> {
    pub consumer: Option<Uuid>,
    pub credential: Option<Uuid>,
    pub client_ip: IpAddr,
    pub headers: &'a HeaderMap,
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The route's regex captures, when it matched by a regex path.
    pub captures: Option<&'a regex::Captures<'a>>,
}

/// The hash input for a request, and the cookie to set when one was made up. With nothing
/// to hash, Kong hashes the empty string: such requests all go to one target.
pub fn key(spec: &HashSpec, r: &Request<'_>) -> (Option<Vec<u8>>, Option<HeaderValue>) {
    for on in [&spec.on, &spec.fallback] {
        if *on == HashOn::None {
            break;
        }
        if let Some(v) = value(on, r) {
            return (Some(v), None);
        }
        if let HashOn::Cookie { name, path } = on {
            let id = Uuid::new_v4().to_string();
            let cookie = HeaderValue::from_str(&format!(
                "{name}={id}; Path={path}; Same-Site=Lax; HttpOnly"
            ))
            .ok();
            return (Some(id.into_bytes()), cookie);
        }
    }
    (Some(Vec::new()), None)
}

fn value(on: &HashOn, r: &Request<'_>) -> Option<Vec<u8>> {
    match on {
        HashOn::None => None,
        HashOn::Consumer => r
            .consumer
            .or(r.credential)
            .map(|id| id.to_string().into_bytes()),
        HashOn::Ip => Some(r.client_ip.to_string().into_bytes()),
        HashOn::Header(name) => {
            let values: Vec<&[u8]> = r
                .headers
                .get_all(name)
                .iter()
                .map(|v| v.as_bytes())
                .collect();
            (!values.is_empty()).then(|| values.join(&b", "[..]))
        }
        HashOn::Cookie { name, .. } => r
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_bytes().to_vec()),
        HashOn::Path => Some(r.path.as_bytes().to_vec()),
        HashOn::QueryArg(arg) => {
            // As OpenResty's `get_uri_args`: names and values unescaped (`+` is a space), an
            // argument without `=` is the boolean true, printed "true".
            let decode = |b: &str| -> String {
                form_urlencoded::parse(format!("x={b}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            let mut values: Vec<String> = r
                .query?
                .split('&')
                .filter(|part| !part.is_empty())
                .filter_map(|part| match part.split_once('=') {
                    Some((k, v)) => (decode(k) == *arg).then(|| decode(v)),
                    None => (decode(part) == *arg).then(|| "true".to_string()),
                })
                .collect();
            values.sort();
            (!values.is_empty()).then(|| values.join(",").into_bytes())
        }
        HashOn::UriCapture(name) => {
            let caps = r.captures?;
            let m = match name.parse::<usize>() {
                Ok(i) => caps.get(i),
                Err(_) => caps.name(name),
            };
            m.map(|m| m.as_str().as_bytes().to_vec())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &HeaderMap) -> Request<'_> {
        Request {
            consumer: None,
            credential: None,
            client_ip: "10.0.0.1".parse().unwrap(),
            headers,
            path: "/p",
            query: Some("b=2&a=1&b=1"),
            captures: None,
        }
    }

    /// Kong's `03-consistent-hashing_spec.lua`, "hashing on a query string arg".
    #[test]
    fn query_args_as_openresty_reads_them() {
        let h = HeaderMap::new();
        let arg = |query: &'static str, name: &str| {
            let spec = HashSpec {
                on: HashOn::QueryArg(name.into()),
                fallback: HashOn::None,
            };
            let r = Request {
                query: Some(query),
                ..req(&h)
            };
            String::from_utf8(key(&spec, &r).0.unwrap()).unwrap()
        };
        assert_eq!(arg("hashme=123", "hashme"), "123");
        assert_eq!(arg("other=1", "hashme"), "");
        assert_eq!(arg("hashme", "hashme"), "true");
        assert_eq!(arg("foo=", "foo"), "");
        assert_eq!(arg("foo=b&foo=a&foo=c", "foo"), "a,b,c");
        assert_eq!(arg("foo=s&foo&foo=1&foo=", "foo"), ",1,s,true");
        assert_eq!(arg("foo&foo&", "foo"), "true,true");
        assert_eq!(arg("%7B%7D=x&a%20b=y+z", "{}"), "x");
        assert_eq!(arg("%7B%7D=x&a%20b=y+z", "a b"), "y z");
    }

    #[test]
    fn falls_back_and_makes_up_a_cookie() {
        let h = HeaderMap::new();
        let spec = HashSpec {
            on: HashOn::Header(HeaderName::from_static("x-user")),
            fallback: HashOn::QueryArg("b".into()),
        };
        assert_eq!(key(&spec, &req(&h)).0.unwrap(), b"1,2");
        let mut h = HeaderMap::new();
        h.append("x-user", HeaderValue::from_static("u1"));
        h.append("x-user", HeaderValue::from_static("u2"));
        assert_eq!(key(&spec, &req(&h)).0.unwrap(), b"u1, u2");
        let spec = HashSpec {
            on: HashOn::Cookie {
                name: "sticky".into(),
                path: "/".into(),
            },
            fallback: HashOn::None,
        };
        let (k, set) = key(&spec, &req(&h));
        let set = set.unwrap();
        let text = set.to_str().unwrap();
        assert!(text.starts_with("sticky=") && text.ends_with("; Path=/; Same-Site=Lax; HttpOnly"));
        assert_eq!(&text.as_bytes()[7..43], k.unwrap().as_slice());
        h.insert(
            http::header::COOKIE,
            HeaderValue::from_static("a=b; sticky=abc"),
        );
        assert_eq!(key(&spec, &req(&h)), (Some(b"abc".to_vec()), None));
        // Nothing to hash: the empty string, as Kong.
        let spec = HashSpec {
            on: HashOn::Header(HeaderName::from_static("x-none")),
            fallback: HashOn::None,
        };
        assert_eq!(key(&spec, &req(&h)), (Some(Vec::new()), None));
    }
}
