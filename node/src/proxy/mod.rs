//! The proxy data plane: one request from a client to an upstream and back.
//!
//! Order of work, as Kong: normalise the path; run global plugins' rewrite; route; run the
//! access phase (authentication first, then plugins re-resolved with the consumer); forward
//! to the service with forwarding headers and hop-by-hop headers dropped; stream the response
//! back through header_filter; log. Bodies are buffered or streamed as the route's
//! `request_buffering` and `response_buffering` say ([`request_body`], [`response_body`]).
//!
//! Before anything reads the request: a request without exactly one `Host` (HTTP/1.1) is a
//! 400 (RFC 9112); headers with an underscore are dropped (nginx's `underscores_in_headers
//! off`, so `X_Consumer_Username` cannot pose as the gateway's header to backends that fold
//! `_` into `-`); and the headers the client's `Connection` names are removed before the
//! gateway adds its own, so a client cannot make the gateway drop them. The client address is
//! the peer's, or, from a trusted proxy (`--trusted-ips`), the one in `--real-ip-header`.

pub mod body;
pub mod headers;
pub mod request_body;
pub mod response_body;
pub mod trusted;
pub mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tollgate_config::normalize::normalize_path;
use tollgate_config::router::RequestView;

use crate::metrics::Metrics;
use crate::plugins::{error_response, Ctx, Flow, Instance};
use crate::serve::Peer;
use crate::snapshot::{RouteMetrics, RouteRuntime, SnapshotHandle};
use body::ReadTimeout;
use headers::{join_path, number_header, split_host, strip_hop_by_hop, Lookup};
use request_body::{ReadError, Streamed, UpstreamBody, CLIENT_BODY_TIMEOUT};
pub use response_body::ProxyBody;
use upstream::SendError;

/// Largest request body read into memory when a plugin needs it.
pub const MAX_BUFFERED_BODY: usize = 8 * 1024 * 1024;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
static X_FORWARDED_PATH: HeaderName = HeaderName::from_static("x-forwarded-path");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static X_UPSTREAM_LATENCY: HeaderName = HeaderName::from_static("x-kong-upstream-latency");
static X_PROXY_LATENCY: HeaderName = HeaderName::from_static("x-kong-proxy-latency");

/// How the proxy treats what clients send, from the command line.
#[derive(Debug, Clone, Default)]
pub struct ClientPolicy {
    /// Keep request headers whose names contain `_` (nginx's `underscores_in_headers on`).
    pub underscores_in_headers: bool,
    /// Peers whose forwarding headers are believed.
    pub trusted: trusted::TrustedIps,
    /// Where a spilled request body goes (in the data directory).
    pub spill_dir: PathBuf,
}

/// The proxy's long-lived state.
pub struct Proxy {
    pub snapshots: Arc<SnapshotHandle>,
    pub metrics: Arc<Metrics>,
    port_header: HeaderValue,
    via: HeaderValue,
    policy: ClientPolicy,
}

fn generated(r: Response<Full<Bytes>>) -> Response<ProxyBody> {
    r.map(ProxyBody::full)
}

/// Removes request headers whose names contain `_`, allocating only when there is one.
fn drop_underscored(h: &mut http::HeaderMap) {
    if !h.keys().any(|k| k.as_str().as_bytes().contains(&b'_')) {
        return;
    }
    let names: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().contains('_'))
        .cloned()
        .collect();
    for n in names {
        h.remove(&n);
    }
}

enum UpstreamError {
    Timeout,
    Unreachable,
    /// The client broke its streamed body (malformed chunks, cut short): its error, 400.
    ClientBody,
}

impl Proxy {
    pub fn new(
        snapshots: Arc<SnapshotHandle>,
        metrics: Arc<Metrics>,
        listen: SocketAddr,
        policy: ClientPolicy,
    ) -> Proxy {
        Proxy {
            snapshots,
            metrics,
            port_header: HeaderValue::from(listen.port()),
            via: HeaderValue::from_static(concat!("1.1 tollgate/", env!("CARGO_PKG_VERSION"))),
            policy,
        }
    }

    /// Handles one client request.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: Peer,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        let snap = self.snapshots.load_full();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let (mut parts, body) = req.into_parts();

        // Exactly one Host (HTTP/1.0 may have none): two would let the router and the
        // upstream each read a different one.
        let mut hosts = parts.headers.get_all(header::HOST).iter();
        let host_value = hosts.next().cloned();
        let bad_host = hosts.next().is_some()
            || host_value.is_none() && parts.version != http::Version::HTTP_10;
        if !self.policy.underscores_in_headers {
            drop_underscored(&mut parts.headers);
        }
        // The client's `Connection` list applies to what the client sent, never to what the
        // gateway adds below (credentials' consumer headers, forwarding headers).
        strip_hop_by_hop(&mut parts.headers);
        let trusted = self.policy.trusted.contains(peer.addr.ip());
        let client_ip = if trusted {
            self.policy
                .trusted
                .real_ip(&parts.headers)
                .unwrap_or(peer.addr.ip())
        } else {
            peer.addr.ip()
        };

        // Cheap clones (shared bytes) that outlive the plugins' mutable access to `parts`.
        let original_uri = parts.uri.clone();
        let raw_host: &str = host_value
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .or_else(|| original_uri.authority().map(|a| a.as_str()))
            .unwrap_or_default();
        let original_path = original_uri.path();
        let norm = normalize_path(original_path);

        let mut ctx = Ctx {
            snapshot: &snap,
            route: None,
            client_ip: peer.addr.ip(),
            peer: &peer,
            now,
            path: &norm,
            consumer: None,
            credential: None,
            body: None,
            response_headers: Vec::new(),
        };
        ctx.client_ip = client_ip;
        if bad_host {
            let r = error_response(StatusCode::BAD_REQUEST, "Bad request");
            return self.finish(&mut ctx, generated(r), &[], start, None);
        }

        for g in &snap.global {
            if let Flow::Respond(r) = g.rewrite(&mut ctx, &mut parts) {
                return self.finish(&mut ctx, generated(r), &[], start, None);
            }
        }

        let (host, port) = split_host(raw_host);
        let found = snap.router.find(&RequestView {
            method: parts.method.as_str(),
            host: &host,
            port,
            path: &norm,
            headers: &Lookup(&parts.headers),
        });
        let Some(m) = found else {
            let r = error_response(StatusCode::NOT_FOUND, "no Route matched with those values");
            return self.finish(&mut ctx, generated(r), &[], start, None);
        };
        let route = &snap.routes[m.route];
        ctx.route = Some(route);

        if !route.accepts_http {
            let r = https_redirect(route, raw_host, &parts.uri);
            return self.finish(&mut ctx, generated(r), &[], start, None);
        }

        let mut body = Some(body);
        if route.needs_body {
            let incoming = body.take().expect("body present");
            // Boxed: a rare path whose future would otherwise enlarge every request's.
            let read = Limited::new(incoming, MAX_BUFFERED_BODY).collect();
            match Box::pin(tokio::time::timeout(CLIENT_BODY_TIMEOUT, read)).await {
                Ok(Ok(b)) => ctx.body = Some(b.to_bytes()),
                Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                    let r = error_response(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large");
                    return self.finish(&mut ctx, generated(r), &[], start, None);
                }
                Ok(Err(_)) => {
                    let r = error_response(StatusCode::BAD_REQUEST, "Bad request");
                    return self.finish(&mut ctx, generated(r), &[], start, None);
                }
                Err(_) => {
                    let r = error_response(StatusCode::REQUEST_TIMEOUT, "Request timeout");
                    return self.finish(&mut ctx, generated(r), &[], start, None);
                }
            }
        }

        // Access phase, with instances re-resolved as authentication sets the consumer.
        let mut ran: Vec<&Instance> = Vec::with_capacity(route.slots.len());
        for slot in &route.slots {
            let consumer = ctx.consumer.as_ref().map(|c| c.id);
            let Some(inst) = snap.resolve(route, slot, consumer) else {
                continue;
            };
            ran.push(inst);
            if let Flow::Respond(r) = inst.access(&mut ctx, &mut parts) {
                return self.finish(&mut ctx, generated(r), &ran, start, None);
            }
        }

        let Some(service) = route.service.as_ref() else {
            let r = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "no Service found with those values",
            );
            return self.finish(&mut ctx, generated(r), &ran, start, None);
        };

        // Upstream URI: service path joined with the (stripped) normalised path, plus the query.
        let rest = if route.strip_path {
            &norm[m.matched_len.min(norm.len())..]
        } else {
            &norm[..]
        };
        // The client's path and query go upstream as they are when nothing changes them (no
        // service path, nothing stripped, already normal): no string is built.
        let unchanged = service.path.is_none()
            && rest.len() == original_path.len()
            && matches!(norm, std::borrow::Cow::Borrowed(_))
            && parts.uri.path() == original_path;
        let path_and_query = match parts.uri.path_and_query() {
            Some(pq) if unchanged => Ok(pq.clone()),
            _ => {
                let mut target = join_path(service.path.as_deref(), rest);
                if let Some(q) = parts.uri.query() {
                    target.push('?');
                    target.push_str(q);
                }
                http::uri::PathAndQuery::try_from(target)
            }
        };
        // Origin form: the connection already goes to the service's address.
        let uri = path_and_query.ok().map(Uri::from);
        let Some(uri) = uri else {
            let r = error_response(StatusCode::BAD_REQUEST, "Bad request");
            return self.finish(&mut ctx, generated(r), &ran, start, None);
        };

        let h = &mut parts.headers;
        let client_host = h.contains_key(header::HOST);
        if !route.preserve_host || !client_host {
            h.insert(header::HOST, service.host_header.clone());
        }
        // Room for the forwarding headers at once, instead of growing the map as they go in.
        h.reserve(8);
        // From a trusted proxy the client is the real IP it names; `X-Forwarded-For` still
        // gets the peer appended, as nginx's `$proxy_add_x_forwarded_for` does.
        let real_ip_header = if client_ip == peer.addr.ip() {
            peer.ip_header.clone()
        } else {
            HeaderValue::from_str(&client_ip.to_string()).unwrap_or(peer.ip_header.clone())
        };
        let xff = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) => peer
                .ip_header
                .to_str()
                .ok()
                .and_then(|ip| HeaderValue::from_str(&format!("{prev}, {ip}")).ok()),
            None => Some(peer.ip_header.clone()),
        };
        if let Some(v) = xff {
            h.insert(X_FORWARDED_FOR.clone(), v);
        }
        h.insert(X_REAL_IP.clone(), real_ip_header);
        // Kong believes a trusted proxy's X-Forwarded-Proto/Host/Port/Path/Prefix.
        let keep = |h: &http::HeaderMap, name: &HeaderName| trusted && h.contains_key(name);
        if !keep(h, &X_FORWARDED_PROTO) {
            h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
        }
        let forwarded_host = match &host_value {
            // The client's Host header is already the name alone: share its bytes.
            Some(v) if port.is_none() && matches!(host, std::borrow::Cow::Borrowed(_)) => {
                Some(v.clone())
            }
            _ => HeaderValue::from_str(&host).ok(),
        };
        if let Some(v) = forwarded_host.filter(|_| !keep(h, &X_FORWARDED_HOST)) {
            h.insert(X_FORWARDED_HOST.clone(), v);
        }
        if !keep(h, &X_FORWARDED_PORT) {
            h.insert(X_FORWARDED_PORT.clone(), self.port_header.clone());
        }
        if !keep(h, &X_FORWARDED_PATH) {
            if let Ok(v) = HeaderValue::from_str(original_path) {
                h.insert(X_FORWARDED_PATH.clone(), v);
            }
        }
        if !keep(h, &X_FORWARDED_PREFIX) {
            if route.strip_path && m.matched_len > 0 {
                if let Ok(v) = HeaderValue::from_str(&norm[..m.matched_len.min(norm.len())]) {
                    h.insert(X_FORWARDED_PREFIX.clone(), v);
                }
            } else {
                h.remove(&X_FORWARDED_PREFIX);
            }
        }
        h.append(header::VIA, self.via.clone());

        // The body: read by a plugin already, empty, read whole here (request_buffering, the
        // default) or streamed. Once connected, the response head has read_timeout; a
        // streamed body is written meanwhile, so it adds write_timeout.
        let mut client_failed = None;
        let (req_body, length, head_timeout) = match (ctx.body.take(), body.take()) {
            (Some(b), _) => {
                let n = b.len() as u64;
                (UpstreamBody::bytes(b), Some(n), service.read_timeout)
            }
            (None, Some(incoming)) if incoming.is_end_stream() => {
                (UpstreamBody::empty(), None, service.read_timeout)
            }
            (None, Some(incoming)) if route.request_buffering => {
                let read =
                    request_body::read_whole(incoming, &self.policy.spill_dir, CLIENT_BODY_TIMEOUT);
                match Box::pin(read).await {
                    Ok((b, n)) => (b, Some(n), service.read_timeout),
                    Err(e) => {
                        let (status, msg) = match e {
                            ReadError::Timeout(_) => {
                                (StatusCode::REQUEST_TIMEOUT, "Request timeout")
                            }
                            ReadError::Malformed(_) => (StatusCode::BAD_REQUEST, "Bad request"),
                            ReadError::Io(ref io) => {
                                tracing::error!(error = %io, "cannot buffer a request body");
                                (
                                    StatusCode::INTERNAL_SERVER_ERROR,
                                    "An unexpected error occurred",
                                )
                            }
                        };
                        let r = error_response(status, msg);
                        return self.finish(&mut ctx, generated(r), &ran, start, None);
                    }
                }
            }
            (None, Some(incoming)) => {
                let (streamed, flag) = Streamed::new(incoming);
                client_failed = Some(flag);
                (
                    UpstreamBody::Streamed(streamed),
                    None,
                    service.write_timeout + service.read_timeout,
                )
            }
            (None, None) => (UpstreamBody::empty(), None, service.read_timeout),
        };
        if let Some(n) = length {
            parts.headers.remove(header::TRANSFER_ENCODING);
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }

        let upstream_start = Instant::now();
        let mut up = Request::new(req_body);
        *up.method_mut() = parts.method.clone();
        *up.uri_mut() = uri;
        *up.headers_mut() = std::mem::take(&mut parts.headers);
        let mut attempt = 0u32;
        let result = loop {
            match service.pool.send(up, head_timeout).await {
                Ok(resp) => break Ok(resp),
                // Not sent: the request comes back whole and is resent while retries last
                // (a streamed body was not read, so it can be resent too).
                Err(SendError::Connect {
                    request, source, ..
                }) if attempt < service.retries => {
                    tracing::debug!(service = %service.label, error = %source, "upstream connect failed, retrying");
                    up = *request;
                    attempt += 1;
                }
                Err(e) => {
                    tracing::debug!(service = %service.label, error = %e, "upstream request failed");
                    break Err(
                        if client_failed
                            .as_ref()
                            .is_some_and(|f| f.load(Ordering::Relaxed))
                        {
                            UpstreamError::ClientBody
                        } else if e.is_timeout() {
                            UpstreamError::Timeout
                        } else {
                            UpstreamError::Unreachable
                        },
                    );
                }
            }
        };
        match result {
            Err(UpstreamError::Timeout) => {
                let r = error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "The upstream server is timing out",
                );
                self.finish(&mut ctx, generated(r), &ran, start, None)
            }
            Err(UpstreamError::Unreachable) => {
                let r = error_response(
                    StatusCode::BAD_GATEWAY,
                    "An invalid response was received from the upstream server",
                );
                self.finish(&mut ctx, generated(r), &ran, start, None)
            }
            Err(UpstreamError::ClientBody) => {
                let r = error_response(StatusCode::BAD_REQUEST, "Bad request");
                self.finish(&mut ctx, generated(r), &ran, start, None)
            }
            Ok(resp) => {
                let upstream_elapsed = upstream_start.elapsed();
                let (mut head, pooled) = resp.into_parts();
                let read_timeout = service.read_timeout;
                let buffered = if route.response_buffering {
                    match response_body::take_if_ready(pooled) {
                        response_body::Ready::Done(b) => Ok(b),
                        response_body::Ready::Failed(e) => Err(e),
                        // Boxed: the slow path's future would enlarge every request's.
                        response_body::Ready::Later(pooled, first) => {
                            Box::pin(response_body::buffered(
                                ReadTimeout::new(pooled, read_timeout),
                                first,
                            ))
                            .await
                        }
                    }
                } else {
                    Ok(ProxyBody::streamed(ReadTimeout::new(pooled, read_timeout)))
                };
                let body = match buffered {
                    Ok(b) => b,
                    Err(e) => {
                        let timed_out = e.is::<body::ReadTimedOut>();
                        tracing::debug!(service = %service.label, error = %e, "upstream body failed");
                        let r = if timed_out {
                            error_response(
                                StatusCode::GATEWAY_TIMEOUT,
                                "The upstream server is timing out",
                            )
                        } else {
                            error_response(
                                StatusCode::BAD_GATEWAY,
                                "An invalid response was received from the upstream server",
                            )
                        };
                        return self.finish(&mut ctx, generated(r), &ran, start, None);
                    }
                };
                strip_hop_by_hop(&mut head.headers);
                self.finish(
                    &mut ctx,
                    Response::from_parts(head, body),
                    &ran,
                    start,
                    Some(upstream_elapsed),
                )
            }
        }
    }

    /// Common tail of every request: response headers, header_filter, metrics, log.
    fn finish(
        &self,
        ctx: &mut Ctx<'_>,
        resp: Response<ProxyBody>,
        ran: &[&Instance],
        start: Instant,
        upstream: Option<Duration>,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = resp.into_parts();
        for (k, v) in ctx.response_headers.drain(..) {
            parts.headers.insert(k, v);
        }
        parts.headers.append(header::VIA, self.via.clone());
        let total = start.elapsed();
        if let Some(up) = upstream {
            parts
                .headers
                .insert(X_UPSTREAM_LATENCY.clone(), millis_header(up));
            let own = total.saturating_sub(up);
            parts
                .headers
                .insert(X_PROXY_LATENCY.clone(), millis_header(own));
        }
        for inst in ran {
            inst.header_filter(ctx, &mut parts);
        }
        let status = parts.status;
        record(&self.metrics, ctx.route, status, total, upstream);
        for inst in ran {
            inst.log(ctx, status);
        }
        Response::from_parts(parts, body)
    }
}

/// A duration in whole milliseconds as a header value.
fn millis_header(d: Duration) -> HeaderValue {
    number_header(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn record(
    m: &Metrics,
    route: Option<&RouteRuntime>,
    status: StatusCode,
    total: Duration,
    upstream: Option<Duration>,
) {
    let Some(route) = route else {
        m.requests
            .with_label_values(&["", "", status.as_str()])
            .inc();
        m.request_latency
            .with_label_values(&["", ""])
            .observe(total.as_secs_f64());
        return;
    };
    let (svc, rt) = (route.service_label.as_str(), route.label.as_str());
    let rm = route.metrics.get_or_init(|| RouteMetrics {
        latency: m.request_latency.with_label_values(&[svc, rt]),
        upstream: m.upstream_latency.with_label_values(&[svc, rt]),
        ok: m.requests.with_label_values(&[svc, rt, "200"]),
    });
    if status == StatusCode::OK {
        rm.ok.inc();
    } else {
        m.requests
            .with_label_values(&[svc, rt, status.as_str()])
            .inc();
    }
    rm.latency.observe(total.as_secs_f64());
    if let Some(up) = upstream {
        rm.upstream.observe(up.as_secs_f64());
    }
}

/// A route that does not accept plain HTTP: 426 with an upgrade hint, or a redirect to HTTPS.
fn https_redirect(route: &RouteRuntime, host: &str, uri: &Uri) -> Response<Full<Bytes>> {
    let code = StatusCode::from_u16(route.https_redirect_status_code)
        .unwrap_or(StatusCode::UPGRADE_REQUIRED);
    if code == StatusCode::UPGRADE_REQUIRED {
        let mut r = error_response(code, "Please use HTTPS protocol");
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        r.headers_mut().insert(
            header::UPGRADE,
            HeaderValue::from_static("TLS/1.2, HTTP/1.1"),
        );
        return r;
    }
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut r = error_response(code, "Moved");
    if let Ok(v) = HeaderValue::from_str(&format!("https://{host}{pq}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millis_headers_read_as_whole_milliseconds() {
        for (d, want) in [
            (Duration::ZERO, "0"),
            (Duration::from_micros(1_999), "1"),
            (Duration::from_millis(99), "99"),
            (Duration::from_millis(100), "100"),
            (Duration::from_secs(60), "60000"),
        ] {
            assert_eq!(millis_header(d), want);
        }
    }
}
