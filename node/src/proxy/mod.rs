//! The proxy data plane: one request from a client to an upstream and back.
//!
//! Order of work, as Kong: normalise the path; run global plugins' rewrite; route; run the
//! access phase (authentication first, then plugins re-resolved with the consumer); forward
//! to the service with forwarding headers and hop-by-hop headers dropped; stream the response
//! back through header_filter; log. Bodies are streamed both ways unless a plugin asks for the
//! request body.

pub mod body;
pub mod headers;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;
use tollgate_config::normalize::normalize_path;
use tollgate_config::router::RequestView;

use crate::metrics::Metrics;
use crate::plugins::{error_response, Ctx, Flow, Instance};
use crate::serve::Peer;
use crate::snapshot::{RouteMetrics, RouteRuntime, SnapshotHandle, UpstreamBody};
use body::ReadTimeout;
use headers::{join_path, number_header, split_host, strip_hop_by_hop, Lookup};
use upstream::{PooledBody, SendError};

/// Body type of responses to clients: the upstream's streamed body or a generated one.
pub type ProxyBody = Either<ReadTimeout<PooledBody>, Full<Bytes>>;

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

/// The proxy's long-lived state.
pub struct Proxy {
    pub snapshots: Arc<SnapshotHandle>,
    pub metrics: Arc<Metrics>,
    port_header: HeaderValue,
    via: HeaderValue,
}

fn generated(r: Response<Full<Bytes>>) -> Response<ProxyBody> {
    r.map(Either::Right)
}

enum UpstreamError {
    Timeout,
    Unreachable,
}

impl Proxy {
    pub fn new(snapshots: Arc<SnapshotHandle>, metrics: Arc<Metrics>, listen: SocketAddr) -> Proxy {
        Proxy {
            snapshots,
            metrics,
            port_header: HeaderValue::from(listen.port()),
            via: HeaderValue::from_static(concat!("1.1 tollgate/", env!("CARGO_PKG_VERSION"))),
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

        // Cheap clones (shared bytes) that outlive the plugins' mutable access to `parts`.
        let original_uri = parts.uri.clone();
        let host_value = parts.headers.get(header::HOST).cloned();
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
            now,
            path: &norm,
            consumer: None,
            credential: None,
            body: None,
            response_headers: Vec::new(),
        };

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
            match Limited::new(incoming, MAX_BUFFERED_BODY).collect().await {
                Ok(b) => ctx.body = Some(b.to_bytes()),
                Err(_) => {
                    let r = error_response(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large");
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
        strip_hop_by_hop(h);
        if !route.preserve_host || !client_host {
            h.insert(header::HOST, service.host_header.clone());
        }
        // Room for the forwarding headers at once, instead of growing the map as they go in.
        h.reserve(8);
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
        h.insert(X_REAL_IP.clone(), peer.ip_header);
        h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
        let forwarded_host = match &host_value {
            // The client's Host header is already the name alone: share its bytes.
            Some(v) if port.is_none() && matches!(host, std::borrow::Cow::Borrowed(_)) => {
                Some(v.clone())
            }
            _ => HeaderValue::from_str(&host).ok(),
        };
        if let Some(v) = forwarded_host {
            h.insert(X_FORWARDED_HOST.clone(), v);
        }
        h.insert(X_FORWARDED_PORT.clone(), self.port_header.clone());
        if let Ok(v) = HeaderValue::from_str(original_path) {
            h.insert(X_FORWARDED_PATH.clone(), v);
        }
        if route.strip_path && m.matched_len > 0 {
            if let Ok(v) = HeaderValue::from_str(&norm[..m.matched_len.min(norm.len())]) {
                h.insert(X_FORWARDED_PREFIX.clone(), v);
            }
        } else {
            h.remove(&X_FORWARDED_PREFIX);
        }
        h.append(header::VIA, self.via.clone());

        // A body read by a plugin goes upstream buffered, with its length; an empty one is
        // complete already; anything else streams, and its write counts against the timeout.
        let buffered: Option<Bytes> = match (ctx.body.take(), body.as_ref()) {
            (Some(b), _) => Some(b),
            (None, Some(incoming)) if incoming.is_end_stream() => Some(Bytes::new()),
            _ => None,
        };
        let head_timeout = service.read_timeout
            + if buffered.is_some() {
                Duration::ZERO
            } else {
                service.write_timeout
            }
            + service.connect_timeout;
        let req_body: UpstreamBody = match (buffered, body.take()) {
            (Some(b), _) => {
                if route.needs_body {
                    parts.headers.remove(header::TRANSFER_ENCODING);
                    parts
                        .headers
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(b.len()));
                }
                Either::Right(Full::new(b))
            }
            (None, Some(incoming)) => Either::Left(incoming),
            (None, None) => Either::Right(Full::new(Bytes::new())),
        };

        let upstream_start = Instant::now();
        let mut up = Request::new(req_body);
        *up.method_mut() = parts.method.clone();
        *up.uri_mut() = uri;
        *up.headers_mut() = std::mem::take(&mut parts.headers);
        let mut attempt = 0u32;
        let result = loop {
            match tokio::time::timeout(head_timeout, service.pool.send(up)).await {
                Err(_) => break Err(UpstreamError::Timeout),
                Ok(Ok(resp)) => break Ok(resp),
                // Not sent: the request comes back whole and is resent while retries last
                // (a streamed body was not read, so it can be resent too).
                Ok(Err(SendError::Connect {
                    request, source, ..
                })) if attempt < service.retries => {
                    tracing::debug!(service = %service.label, error = %source, "upstream connect failed, retrying");
                    up = *request;
                    attempt += 1;
                }
                Ok(Err(e)) => {
                    tracing::debug!(service = %service.label, error = %e, "upstream request failed");
                    break Err(if e.is_timeout() {
                        UpstreamError::Timeout
                    } else {
                        UpstreamError::Unreachable
                    });
                }
            }
        };
        let upstream_elapsed = upstream_start.elapsed();
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
            Ok(resp) => {
                let read_timeout = service.read_timeout;
                let mut resp = resp.map(|b| Either::Left(ReadTimeout::new(b, read_timeout)));
                strip_hop_by_hop(resp.headers_mut());
                self.finish(&mut ctx, resp, &ran, start, Some(upstream_elapsed))
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
