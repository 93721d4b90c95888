//! What the log phase knows of a served request ([`Served`]), and Kong's log record built
//! from it (`kong.log.serialize()` in Kong 3.9.3's `kong/pdk/log.lua`), which `file-log` and
//! `http-log` write and send as JSON.
//!
//! The log phase runs once the response has been sent (its body read to the end or the
//! client gone: [`PendingLog`] fires when the response body is dropped), so sizes and the
//! request latency include the body, as nginx's log phase sees them.
//!
//! Fields, as Kong: `request{id,uri,url,querystring,method,headers,size,tls}`, `upstream_uri`,
//! `upstream_status` (a string, `""` when no upstream answered), `response{status,headers,
//! size}`, `latencies{kong,proxy,request,receive}` (milliseconds; `proxy` is -1 without an
//! upstream), `tries`, `authenticated_entity`, `route`, `service`, `consumer`, `client_ip`,
//! `started_at` (ms), `source` (`upstream` or `kong`), `workspace`, `workspace_name`.
//! Request `authorization` and `proxy-authorization` values are `REDACTED`.
//!
//! Differences from Kong, by what the data plane holds:
//! - `route` and `service` are the entities as the Admin API prints them (built once per
//!   configuration snapshot); `consumer` is `{id, username, custom_id}` only (the data plane
//!   keeps no consumer timestamps or tags).
//! - `request.size` and `response.size` are computed from the head as HTTP/1.1 would write it
//!   plus the body bytes (nginx counts the bytes on the wire).
//! - `tries` lists the balanced peer the request went to (`ip`, `port`); a service without an
//!   upstream entity has none.
//! - `request.id` is a fresh random id (Kong's `$kong_request_id`); `workspace` is a fixed id
//!   (Tollgate has one workspace, `default`).
//! - `request.tls` is `{version: null, cipher: null, client_verify: "NONE"}` on TLS connections
//!   (the handshake's parameters are not kept per request).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Uri};
use serde_json::{Map, Value};

use super::{ConsumerInfo, CredentialInfo, Instance};

/// The one workspace's id in log records (Kong's `ctx.workspace`).
pub const WORKSPACE_ID: &str = "00000000-0000-0000-0000-000000000000";

/// A route's part of log records and metric labels, built once per configuration snapshot
/// for routes that have a logging plugin.
pub struct RouteLog {
    /// The route as the Admin API prints it.
    pub route_json: Value,
    /// Its service as the Admin API prints it.
    pub service_json: Option<Value>,
    /// `,"route":{…}` and `,"service":{…}` as JSON text, written once and spliced into every
    /// record (serializing the entities again per request was most of a record's cost).
    pub entities_text: Bytes,
    /// Kong's prometheus `service` label: the service's name, else its host.
    pub service_label: String,
    /// Kong's prometheus `route` label: the route's name, else its id.
    pub route_label: String,
    /// The route's `kong_*` metric series, each looked up on first use.
    pub series: crate::metrics::KongRouteSeries,
}

/// The client's request as logged: captured before it goes upstream.
pub struct RequestHead {
    pub method: Method,
    pub uri: Uri,
    /// The request headers after the access phase (Kong logs `kong.request.get_headers()`).
    pub headers: HeaderMap,
}

impl RequestHead {
    pub fn of(parts: &http::request::Parts) -> Box<RequestHead> {
        Box::new(RequestHead {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        })
    }

    /// The head's size as HTTP/1.1 writes it, plus the declared body length.
    fn size(&self) -> u64 {
        let line = self.method.as_str().len()
            + 1
            + self.uri.path_and_query().map_or(1, |p| p.as_str().len())
            + " HTTP/1.1\r\n".len();
        let body = self
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        (line + headers_size(&self.headers) + 2) as u64 + body
    }
}

fn headers_size(h: &HeaderMap) -> usize {
    h.iter()
        .map(|(k, v)| k.as_str().len() + 2 + v.len() + 2)
        .sum()
}

/// Who produced the response (Kong's `kong.response.get_source()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The upstream answered (`service`).
    Upstream,
    /// The gateway or a plugin did (`exit`, `error`).
    Kong,
}

/// A served request, as the log phase sees it.
pub struct Served {
    /// Unix time the request came in, in milliseconds.
    pub started_at_ms: u64,
    pub start: Instant,
    /// When the response head was ready.
    pub head_at: Instant,
    /// When the body ended (set just before the log phase).
    pub ended: Option<Instant>,
    pub request: Option<Box<RequestHead>>,
    pub https: bool,
    /// The listener's port (Kong's `server_port`).
    pub server_port: u16,
    pub status: u16,
    pub response_headers: HeaderMap,
    /// Response body bytes sent.
    pub body_bytes: u64,
    pub upstream_uri: Option<Uri>,
    /// The upstream's status, before header_filter could change it.
    pub upstream_status: Option<u16>,
    pub source: Source,
    /// Time from sending upstream to the response head.
    pub upstream_latency: Option<Duration>,
    pub route: Option<Arc<RouteLog>>,
    pub consumer: Option<Arc<ConsumerInfo>>,
    pub credential: Option<CredentialInfo>,
    pub client_ip: IpAddr,
    /// The balanced peer the request went to.
    pub peer: Option<SocketAddr>,
    record: OnceLock<Bytes>,
}

/// What [`Served::new`] needs besides the response.
pub struct ServedParts {
    pub started_at_ms: u64,
    pub start: Instant,
    pub request: Option<Box<RequestHead>>,
    pub https: bool,
    pub server_port: u16,
    pub upstream_uri: Option<Uri>,
    pub upstream_status: Option<u16>,
    pub upstream_latency: Option<Duration>,
    pub route: Option<Arc<RouteLog>>,
    pub consumer: Option<Arc<ConsumerInfo>>,
    pub credential: Option<CredentialInfo>,
    pub client_ip: IpAddr,
    pub peer: Option<SocketAddr>,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Served {
    pub fn new(p: ServedParts, resp: &http::response::Parts) -> Served {
        Served {
            started_at_ms: p.started_at_ms,
            start: p.start,
            head_at: Instant::now(),
            ended: None,
            request: p.request,
            https: p.https,
            server_port: p.server_port,
            status: resp.status.as_u16(),
            response_headers: resp.headers.clone(),
            body_bytes: 0,
            upstream_uri: p.upstream_uri,
            upstream_status: p.upstream_status,
            source: if p.upstream_latency.is_some() {
                Source::Upstream
            } else {
                Source::Kong
            },
            upstream_latency: p.upstream_latency,
            route: p.route,
            consumer: p.consumer,
            credential: p.credential,
            client_ip: p.client_ip,
            peer: p.peer,
            record: OnceLock::new(),
        }
    }

    fn ended(&self) -> Instant {
        self.ended.unwrap_or(self.head_at)
    }

    /// Kong's `latencies.request`: from the request's start to the end of the response.
    pub fn request_latency(&self) -> Duration {
        self.ended().saturating_duration_since(self.start)
    }

    /// Kong's `latencies.kong`: the gateway's own time before the response head (the upstream's
    /// wait taken out).
    pub fn kong_latency(&self) -> Duration {
        let head = self.head_at.saturating_duration_since(self.start);
        head.saturating_sub(self.upstream_latency.unwrap_or_default())
    }

    /// Kong's `latencies.receive`: the time the body took after the head.
    pub fn receive_latency(&self) -> Duration {
        if self.source == Source::Upstream {
            self.ended().saturating_duration_since(self.head_at)
        } else {
            Duration::ZERO
        }
    }

    pub fn request_size(&self) -> u64 {
        self.request.as_ref().map_or(0, |r| r.size())
    }

    /// The response's size: its head as HTTP/1.1 writes it and the body bytes sent.
    pub fn response_size(&self) -> u64 {
        ("HTTP/1.1 200 OK\r\n".len() + headers_size(&self.response_headers) + 2) as u64
            + self.body_bytes
    }

    /// The record as Kong's `kong.log.serialize()` builds it.
    pub fn record(&self) -> Value {
        let mut root = self.record_without_entities();
        if let (Some(r), Value::Object(o)) = (&self.route, &mut root) {
            o.insert("route".into(), r.route_json.clone());
            if let Some(s) = &r.service_json {
                o.insert("service".into(), s.clone());
            }
        }
        root
    }

    /// [`Served::record`] without `route` and `service`.
    fn record_without_entities(&self) -> Value {
        let mut root = Map::new();
        let mut request = Map::new();
        request.insert(
            "id".into(),
            Value::String(uuid::Uuid::new_v4().simple().to_string()),
        );
        if let Some(r) = &self.request {
            let uri = r.uri.path_and_query().map_or("/", |p| p.as_str());
            let host = r
                .headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| crate::proxy::headers::split_host(h).0.into_owned())
                .unwrap_or_default();
            let scheme = if self.https { "https" } else { "http" };
            request.insert("uri".into(), uri.into());
            request.insert(
                "url".into(),
                format!("{scheme}://{host}:{}{uri}", self.server_port).into(),
            );
            request.insert("querystring".into(), querystring(r.uri.query()));
            request.insert("method".into(), r.method.as_str().into());
            request.insert("headers".into(), headers(&r.headers, true));
        }
        request.insert("size".into(), self.request_size().into());
        if self.https {
            request.insert(
                "tls".into(),
                serde_json::json!({"version": null, "cipher": null, "client_verify": "NONE"}),
            );
        }
        root.insert("request".into(), Value::Object(request));
        root.insert(
            "upstream_uri".into(),
            self.upstream_uri
                .as_ref()
                .and_then(|u| u.path_and_query())
                .map_or("", |p| p.as_str())
                .into(),
        );
        root.insert(
            "upstream_status".into(),
            self.upstream_status
                .map_or(String::new(), |s| s.to_string())
                .into(),
        );
        root.insert(
            "response".into(),
            serde_json::json!({
                "status": self.status,
                "headers": headers(&self.response_headers, false),
                "size": self.response_size(),
            }),
        );
        root.insert(
            "latencies".into(),
            serde_json::json!({
                "kong": millis(self.kong_latency()),
                "proxy": self.upstream_latency.map_or(-1, |d| millis(d) as i64),
                "request": millis(self.request_latency()),
                "receive": millis(self.receive_latency()),
            }),
        );
        if let Some(p) = self.peer {
            root.insert(
                "tries".into(),
                serde_json::json!([{"ip": p.ip().to_string(), "port": p.port(), "balancer_latency": 0}]),
            );
        }
        if let Some(c) = &self.credential {
            root.insert(
                "authenticated_entity".into(),
                serde_json::json!({"id": c.id, "consumer_id": c.consumer}),
            );
        }
        if let Some(c) = &self.consumer {
            let text = |v: &Option<http::HeaderValue>| {
                v.as_ref()
                    .and_then(|h| h.to_str().ok())
                    .map_or(Value::Null, |s| Value::String(s.to_string()))
            };
            root.insert(
                "consumer".into(),
                serde_json::json!({"id": c.id, "username": text(&c.username),
                                   "custom_id": text(&c.custom_id)}),
            );
        }
        root.insert("client_ip".into(), self.client_ip.to_string().into());
        root.insert("started_at".into(), self.started_at_ms.into());
        root.insert(
            "source".into(),
            match self.source {
                Source::Upstream => "upstream",
                Source::Kong => "kong",
            }
            .into(),
        );
        root.insert("workspace".into(), WORKSPACE_ID.into());
        root.insert("workspace_name".into(), "default".into());
        Value::Object(root)
    }

    /// The record with a plugin's `custom_fields_by_lua` applied, as one line of JSON: the
    /// shared [`Served::record_json`] when the plugin has none.
    pub fn record_with(
        &self,
        custom: &[tollgate_config::plugins::custom_fields::CustomField],
    ) -> Bytes {
        if custom.is_empty() {
            return self.record_json();
        }
        let mut record = self.record();
        tollgate_config::plugins::custom_fields::apply(&mut record, custom);
        Bytes::from(serde_json::to_vec(&record).unwrap_or_default())
    }

    /// The record as one line of JSON (no newline), built once for every plugin that logs it.
    pub fn record_json(&self) -> Bytes {
        self.record
            .get_or_init(|| {
                // Written straight to bytes (not through `Display`), the route and service
                // spliced in as text written once per configuration.
                let mut out = serde_json::to_vec(&self.record_without_entities())
                    .unwrap_or_else(|_| b"{}".to_vec());
                if let Some(r) = &self.route {
                    if out.last() == Some(&b'}') && !r.entities_text.is_empty() {
                        out.pop();
                        if out.len() > 1 {
                            out.push(b',');
                        }
                        out.extend_from_slice(&r.entities_text);
                        out.push(b'}');
                    }
                }
                Bytes::from(out)
            })
            .clone()
    }
}

/// Headers as Kong's `get_headers()` gives them: lower-case names, a repeated header as an
/// array; request credentials redacted.
fn headers(h: &HeaderMap, redact: bool) -> Value {
    let mut out = Map::new();
    for name in h.keys() {
        let key = name.as_str();
        let mut values: Vec<Value> = h
            .get_all(name)
            .iter()
            .map(|v| Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        if redact && (key == "authorization" || key == "proxy-authorization") {
            values = vec![Value::String("REDACTED".into())];
        }
        let v = if values.len() == 1 {
            values.pop().unwrap_or(Value::Null)
        } else {
            Value::Array(values)
        };
        out.insert(key.to_string(), v);
    }
    Value::Object(out)
}

/// The query as Kong's `get_query()` gives it (bounded as the PDK's).
fn querystring(q: Option<&str>) -> Value {
    super::request_data::args_json(q.unwrap_or_default())
}

/// The log phase of a response, run when its body is dropped (sent, or abandoned by the
/// client).
pub struct PendingLog {
    pub served: Served,
    pub plugins: Vec<Instance>,
}

impl Drop for PendingLog {
    fn drop(&mut self) {
        self.served.ended = Some(Instant::now());
        for p in &self.plugins {
            p.log(&self.served);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn served(req: &str, headers: &[(&str, &str)]) -> Served {
        let mut b = http::Request::builder().method("GET").uri(req);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let (parts, ()) = b.body(()).unwrap().into_parts();
        let resp = http::Response::builder()
            .status(201)
            .header("x-a", "1")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        Served::new(
            ServedParts {
                started_at_ms: 1_700_000_000_000,
                start: Instant::now(),
                request: Some(RequestHead::of(&parts)),
                https: false,
                server_port: 8000,
                upstream_uri: Some("/up?x=1".parse().unwrap()),
                upstream_status: Some(200),
                upstream_latency: Some(Duration::from_millis(3)),
                route: None,
                consumer: None,
                credential: None,
                client_ip: "127.0.0.1".parse().unwrap(),
                peer: None,
            },
            &resp,
        )
    }

    #[test]
    fn the_record_has_kongs_fields_and_redacts_credentials() {
        let s = served(
            "/p?a=1&b&a=2&c=x+y%21",
            &[
                ("host", "example.test:8000"),
                ("authorization", "Basic secret"),
                ("proxy-authorization", "Basic secret"),
                ("x-many", "1"),
                ("x-many", "2"),
            ],
        );
        let r = s.record();
        assert_eq!(r["request"]["uri"], "/p?a=1&b&a=2&c=x+y%21");
        assert_eq!(
            r["request"]["url"],
            "http://example.test:8000/p?a=1&b&a=2&c=x+y%21"
        );
        assert_eq!(
            r["request"]["querystring"],
            json!({"a": ["1", "2"], "b": true, "c": "x y!"})
        );
        assert_eq!(r["request"]["method"], "GET");
        assert_eq!(r["request"]["headers"]["authorization"], "REDACTED");
        assert_eq!(r["request"]["headers"]["proxy-authorization"], "REDACTED");
        assert_eq!(r["request"]["headers"]["x-many"], json!(["1", "2"]));
        assert_eq!(r["response"]["status"], 201);
        assert_eq!(r["response"]["headers"]["x-a"], "1");
        assert_eq!(r["upstream_uri"], "/up?x=1");
        assert_eq!(r["upstream_status"], "200");
        assert_eq!(r["source"], "upstream");
        assert_eq!(r["latencies"]["proxy"], 3);
        assert_eq!(r["started_at"], 1_700_000_000_000u64);
        assert_eq!(r["workspace_name"], "default");
        assert_eq!(r["client_ip"], "127.0.0.1");
        assert!(r["request"]["size"].as_u64().unwrap() > 0);
        assert!(r.get("consumer").is_none());
        assert!(r["request"].get("tls").is_none());
    }
}
