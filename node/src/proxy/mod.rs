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

// Steps end early with a ready response (see `Early`).
#![allow(clippy::result_large_err)]

pub mod body;
pub mod headers;
pub mod request_body;
pub mod response_body;
pub mod trusted;
pub mod upstream;
pub mod websocket;

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

use crate::balancer::hash_key::{self, HashOn};
use crate::balancer::health::Observation;
use crate::metrics::Metrics;
use crate::plugins::log_record::{PendingLog, RequestHead, Served, ServedParts};
use crate::plugins::{error_response, BodyLimit, Ctx, Flow, Instance};
use crate::serve::Peer;
use crate::snapshot::{
    RouteMetrics, RouteRuntime, ServiceRuntime, ServiceTarget, Snapshot, SnapshotHandle,
};
use body::ReadTimeout;
use headers::{
    join_path, number_header, split_host, strip_client_hop_by_hop, strip_hop_by_hop, Lookup,
};
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
#[derive(Debug, Clone)]
pub struct ClientPolicy {
    /// Keep request headers whose names contain `_` (nginx's `underscores_in_headers on`).
    pub underscores_in_headers: bool,
    /// Peers whose forwarding headers are believed.
    pub trusted: trusted::TrustedIps,
    /// Where a spilled request body goes (in the data directory).
    pub spill_dir: PathBuf,
    /// How long a WebSocket (upgraded) connection may live, busy or not.
    pub websocket_max_lifetime: Duration,
    /// The process's stop signal: open WebSocket tunnels close on it.
    pub shutdown: Option<crate::serve::Shutdown>,
}

impl Default for ClientPolicy {
    fn default() -> ClientPolicy {
        ClientPolicy {
            underscores_in_headers: false,
            trusted: trusted::TrustedIps::default(),
            spill_dir: PathBuf::new(),
            websocket_max_lifetime: Duration::from_secs(24 * 3600),
            shutdown: None,
        }
    }
}

/// The proxy's long-lived state.
pub struct Proxy {
    pub snapshots: Arc<SnapshotHandle>,
    pub metrics: Arc<Metrics>,
    port_header: HeaderValue,
    via: HeaderValue,
    policy: ClientPolicy,
    /// Open WebSocket tunnels, at most [`MAX_TUNNELS`].
    tunnels: Arc<tokio::sync::Semaphore>,
}

/// Most WebSocket tunnels open at once (as many as the listener's connections).
pub const MAX_TUNNELS: usize = crate::serve::MAX_CONNECTIONS;

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
            tunnels: Arc::new(tokio::sync::Semaphore::new(MAX_TUNNELS)),
        }
    }

    /// Handles one client request: the steps below, in order. A step that ends the request
    /// early hands back the response to send, which goes through [`Proxy::finish`] like any.
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
        let accepted = self.accept(&mut parts, &peer);

        // Cheap clones (shared bytes) that outlive the plugins' mutable access to `parts`.
        let original_uri = parts.uri.clone();
        let raw_host: &str = accepted
            .host
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .or_else(|| original_uri.authority().map(|a| a.as_str()))
            .unwrap_or_default();
        let original_path = original_uri.path();
        let norm = normalize_path(original_path);
        let (host, port) = split_host(raw_host);

        let mut ctx = Ctx {
            config: &*snap,
            route: None,
            client_ip: accepted.client_ip,
            peer: &peer,
            now,
            path: &norm,
            consumer: None,
            credential: None,
            body: None,
            response_headers: Vec::new(),
            body_unsized: !body.is_end_stream()
                && !parts.headers.contains_key(header::CONTENT_LENGTH),
            body_limit: None,
            state: http::Extensions::new(),
            replace_body: None,
            body_sink: None,
        };
        let mut done = Done {
            start,
            snap: &snap,
            route: None,
            ran: Vec::new(),
            request: None,
            upstream_uri: None,
            peer: None,
        };
        macro_rules! or_finish {
            ($step:expr) => {
                match $step {
                    Ok(v) => v,
                    Err(r) => {
                        done.capture(&parts);
                        return self.finish(&mut ctx, &mut done, generated(r), None, None);
                    }
                }
            };
        }
        if accepted.bad_host {
            or_finish!(Err(error_response(StatusCode::BAD_REQUEST, "Bad request")));
        }
        or_finish!(rewrite(&snap.global, &mut ctx, &mut parts));
        let (route, matched_len, route_index) =
            or_finish!(self.route(&snap, &parts, (&host, port), &peer, accepted.https, &norm));
        done.route = Some(route);
        ctx.route = Some(&route.info);
        let mut body = Unread(Some(body));
        // Step 5, access. The loop only awaits when a plugin is async or the first plugin
        // that reads the body comes up (so authentication and size limits run before any
        // body is read, as in Kong): the common path builds no nested future.
        let mut next_slot = 0;
        while let Some(pause) = or_finish!(access(
            &snap,
            route,
            &mut ctx,
            &mut parts,
            &mut done.ran,
            &mut next_slot,
            route.needs_body && body.0.is_some(),
        )) {
            match pause {
                Pause::Async(waiting) => {
                    if let Flow::Respond(r) = waiting.access_async(&mut ctx, &mut parts).await {
                        or_finish!(Err(r));
                    }
                }
                Pause::Body => {
                    let incoming = body.0.take().expect("body present");
                    let limit = ctx.body_limit;
                    ctx.body = Some(or_finish!(read_for_plugins(incoming, limit).await));
                }
            }
        }
        // What the log phase shows of the request: as access left it (Kong logs
        // `kong.request.get_headers()`), before it is readied for the upstream.
        done.capture(&parts);
        if accepted.proxy_authorization {
            parts.headers.remove(header::PROXY_AUTHORIZATION);
        }
        let Some(service) = route.service.as_ref() else {
            or_finish!(Err(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "no Service found with those values",
            )))
        };
        let uri = match ctx.state.get::<crate::plugins::UpstreamPath>() {
            Some(p) => or_finish!(plugin_uri(&p.0, &parts)),
            None => or_finish!(upstream_uri(
                route,
                service,
                &parts,
                original_path,
                &norm,
                matches!(norm, std::borrow::Cow::Borrowed(_)),
                matched_len
            )),
        };
        if done.logs() {
            done.upstream_uri = Some(uri.clone());
        }
        self.forwarding_headers(
            &mut parts.headers,
            Forwarding {
                route,
                service,
                peer: &peer,
                client_ip: accepted.client_ip,
                trusted: accepted.trusted,
                client_host: accepted.host.as_ref(),
                original_path,
                norm: &norm,
                matched_len,
                host: &host,
                port,
            },
        );
        if let Some(h) = ctx.state.get::<crate::plugins::UpstreamHost>() {
            parts.headers.insert(header::HOST, h.0.clone());
        }
        if let Some(upgrade) = accepted.upgrade.clone() {
            // Boxed: only upgrades pay for this future's size.
            let keep_host = route.preserve_host && accepted.host.is_some();
            let r = Box::pin(self.upgrade(&mut parts, upgrade, service, uri, keep_host)).await;
            return self.finish(&mut ctx, &mut done, r, None, None);
        }
        let outgoing = match or_finish!(request_body(route, service, &mut ctx, body.0.take())) {
            Plan::Ready(o) => o,
            // Boxed: a path whose future would otherwise enlarge every request's.
            Plan::Buffer(incoming) => {
                let read = request_body::read_whole(
                    incoming,
                    &self.policy.spill_dir,
                    CLIENT_BODY_TIMEOUT,
                    ctx.body_limit.map(|l| l.max),
                );
                match Box::pin(read).await {
                    Ok((b, n)) => Outgoing {
                        body: b,
                        length: Some(n),
                        head_timeout: service.read_timeout,
                        client_failed: None,
                    },
                    Err(e) => or_finish!(Err(buffering_failed(e, ctx.body_limit))),
                }
            }
        };
        if let Some(n) = outgoing.length {
            parts.headers.remove(header::TRANSFER_ENCODING);
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
        }
        let mut up = Request::new(outgoing.body);
        *up.method_mut() = parts.method.clone();
        *up.uri_mut() = uri;
        *up.headers_mut() = std::mem::take(&mut parts.headers);
        // Step 8: send, resending while connects fail and retries last (a request not sent
        // comes back whole, a streamed body unread, so it can be resent). Kept in line: the
        // pool's future is large, and a step function would move it once more per request.
        let upstream_start = Instant::now();
        let mut attempt = 0u32;
        // A balanced service's hash input, taken once for every try (retries re-pick).
        let (balancer, key) = match &service.target {
            ServiceTarget::Direct(_) => (None, None),
            ServiceTarget::Balanced(b) => {
                let hash = b.hash.load();
                let key = if hash.on == HashOn::None {
                    None
                } else {
                    let caps = if hash.uses_captures() {
                        snap.router.captures(route_index, &norm)
                    } else {
                        None
                    };
                    let (key, cookie) = hash_key::key(
                        &hash,
                        &hash_key::Request {
                            consumer: ctx.consumer.as_ref().map(|c| c.id),
                            credential: ctx.credential.as_ref().map(|c| c.id),
                            client_ip: accepted.client_ip,
                            headers: up.headers(),
                            path: &norm,
                            query: original_uri.query(),
                            captures: caps.as_ref(),
                        },
                    );
                    if let Some(c) = cookie {
                        ctx.response_headers.push((header::SET_COOKIE, c));
                    }
                    key
                };
                (Some(b), key)
            }
        };
        let keep_host = route.preserve_host && accepted.host.is_some()
            || ctx.state.get::<crate::plugins::UpstreamHost>().is_some();
        let resp = loop {
            // Where this try goes: the service's host, or the peer the balancer picks.
            let peer = match balancer {
                None => None,
                Some(b) => {
                    let mut picked = b.pick(key.as_deref());
                    // Nothing to send to while a new name target has never been resolved:
                    // its first resolution is awaited, within the connect timeout.
                    if picked.is_none() && *b.resolving.borrow() {
                        Box::pin(b.resolved(service.connect_timeout)).await;
                        picked = b.pick(key.as_deref());
                    }
                    let Some(peer) = picked else {
                        let r = error_response(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "failure to get a peer from the ring-balancer",
                        );
                        return self.finish(&mut ctx, &mut done, generated(r), None, None);
                    };
                    if !keep_host {
                        up.headers_mut()
                            .insert(header::HOST, peer.host_header.clone());
                    }
                    Some(peer)
                }
            };
            let pool = match (&peer, &service.target) {
                (Some(p), _) => &p.state.pool,
                (None, ServiceTarget::Direct(pool)) => pool,
                (None, ServiceTarget::Balanced(_)) => {
                    let r = error_response(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "An unexpected error occurred",
                    );
                    return self.finish(&mut ctx, &mut done, generated(r), None, None);
                }
            };
            // An https service: its TLS settings, and the final Host as SNI (Kong's
            // `$upstream_host`). Settings that cannot be used fail closed.
            let sni_host = match &service.tls {
                None => None,
                Some(Err(_)) => {
                    let r = error_response(
                        StatusCode::BAD_GATEWAY,
                        "An invalid response was received from the upstream server",
                    );
                    return self.finish(&mut ctx, &mut done, generated(r), None, None);
                }
                // A gRPC retry comes back with the Host in its URI.
                Some(Ok(_)) => up.headers().get(header::HOST).cloned().or_else(|| {
                    up.uri()
                        .authority()
                        .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
                }),
            };
            // Never plain for a TLS service: without a name, the address is verified.
            let secure = match &service.tls {
                Some(Ok(t)) => Some(upstream::Secure {
                    tls: t,
                    sni: sni_host
                        .as_ref()
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or_default(),
                }),
                _ => None,
            };
            let in_flight = peer.as_ref().map(|p| (p.start(), Instant::now()));
            let sent = if service.h2 {
                // Boxed: only gRPC pays for the HTTP/2 path's future.
                if let Err(r) = h2_request(&mut up, service.tls.is_some()) {
                    return self.finish(&mut ctx, &mut done, generated(r), None, None);
                }
                Box::pin(pool.send_h2(up, service.connect_timeout, outgoing.head_timeout, secure))
                    .await
            } else {
                // One await site for both kinds of HTTP/1.1 service: the pool's future is
                // large, and a second one would enlarge every request's future.
                pool.send_within(up, service.connect_timeout, outgoing.head_timeout, secure)
                    .await
            };
            match sent {
                Ok(mut resp) => {
                    if let (Some(b), Some(p), Some((guard, sent))) = (balancer, &peer, in_flight) {
                        done.peer = Some(p.addr);
                        p.record_latency(sent.elapsed());
                        b.report_status(p, resp.status().as_u16());
                        resp.body_mut().in_flight = Some(guard);
                    }
                    break resp;
                }
                Err(e) => {
                    // A try the client broke (a streamed body cut short) says nothing about
                    // the target, nor does a timeout while a body streams (the client may be
                    // the slow one).
                    let client_broke = outgoing.client_failed.as_ref().is_some_and(|f| {
                        f.load(Ordering::Relaxed) != request_body::CLIENT_OK
                            || e.is_timeout() && !matches!(e, SendError::Connect { .. })
                    });
                    if let (Some(b), Some(p), false) = (balancer, &peer, client_broke) {
                        let o = if e.is_timeout() {
                            Observation::Timeout
                        } else {
                            Observation::TcpFailure
                        };
                        b.report_failure(p, o);
                    }
                    match e {
                        // A name that does not resolve is not retried.
                        e @ SendError::Connect { .. } if e.is_name_resolution() => {
                            let r =
                                send_failed(service, &e, &outgoing.client_failed, ctx.body_limit);
                            return self.finish(&mut ctx, &mut done, generated(r), None, None);
                        }
                        // Not sent: safe to send again (to another peer when balanced).
                        SendError::Connect {
                            request, source, ..
                        } if attempt < service.retries => {
                            tracing::debug!(service = %service.label, error = %source, "upstream connect failed, retrying");
                            up = *request;
                            attempt += 1;
                        }
                        e => {
                            let r =
                                send_failed(service, &e, &outgoing.client_failed, ctx.body_limit);
                            return self.finish(&mut ctx, &mut done, generated(r), None, None);
                        }
                    }
                }
            }
        };
        let upstream_elapsed = upstream_start.elapsed();

        // Step 9: the response body, read ahead of the client (`response_buffering`),
        // streamed, or read whole for a plugin's response-body hook.
        let (mut head, pooled) = resp.into_parts();
        let read_timeout = service.read_timeout;
        let mut whole = None;
        let body = if done.ran.iter().any(|i| i.wants_response_body(&head)) {
            let read = Limited::new(ReadTimeout::new(pooled, read_timeout), MAX_BUFFERED_BODY);
            match Box::pin(read.collect()).await {
                Ok(b) => {
                    whole = Some(b.to_bytes());
                    Ok(ProxyBody::full(Full::new(Bytes::new())))
                }
                Err(e) => Err(e),
            }
        } else if route.response_buffering {
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
        let body = or_finish!(body.map_err(|e| body_failed(service, &e)));
        strip_hop_by_hop(&mut head.headers);
        self.finish(
            &mut ctx,
            &mut done,
            Response::from_parts(head, body),
            whole,
            Some(upstream_elapsed),
        )
    }

    /// An upgrade (WebSocket) handshake, sent on a connection of its own; on `101` the client
    /// and upstream connections are joined ([`websocket`]).
    async fn upgrade(
        &self,
        parts: &mut http::request::Parts,
        upgrade: HeaderValue,
        service: &ServiceRuntime,
        uri: Uri,
        keep_host: bool,
    ) -> Response<ProxyBody> {
        let Some(client_side) = parts.extensions.remove::<hyper::upgrade::OnUpgrade>() else {
            return generated(error_response(StatusCode::BAD_REQUEST, "Bad request"));
        };
        // Tunnels outlive their connection's task: they are bounded on their own.
        let Ok(slot) = self.tunnels.clone().try_acquire_owned() else {
            return generated(error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many WebSocket connections",
            ));
        };
        let mut headers = std::mem::take(&mut parts.headers);
        websocket::restore(&mut headers, upgrade);
        let pool = match &service.target {
            ServiceTarget::Direct(pool) => pool.clone(),
            ServiceTarget::Balanced(b) => match b.pick(None) {
                Some(peer) => {
                    if !keep_host {
                        headers.insert(header::HOST, peer.host_header.clone());
                    }
                    peer.state.pool.clone()
                }
                None => {
                    return generated(error_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "failure to get a peer from the ring-balancer",
                    ))
                }
            },
        };
        let sni = headers.get(header::HOST).cloned();
        let secure = match (&service.tls, &sni) {
            (None, _) => None,
            (Some(Ok(t)), Some(h)) => Some(upstream::Secure {
                tls: t,
                sni: h.to_str().unwrap_or_default(),
            }),
            _ => {
                return generated(error_response(
                    StatusCode::BAD_GATEWAY,
                    "An invalid response was received from the upstream server",
                ))
            }
        };
        let mut tx = match pool.open_upgradable(service.connect_timeout, secure).await {
            Ok(tx) => tx,
            Err(e) => {
                tracing::debug!(service = %service.label, error = %e, "upgrade: cannot connect");
                let timeout = e.kind() == std::io::ErrorKind::TimedOut;
                return generated(if timeout {
                    error_response(
                        StatusCode::GATEWAY_TIMEOUT,
                        "The upstream server is timing out",
                    )
                } else {
                    error_response(
                        StatusCode::BAD_GATEWAY,
                        "An invalid response was received from the upstream server",
                    )
                });
            }
        };
        let mut req = Request::new(crate::snapshot::UpstreamBody::empty());
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        let sent = tokio::time::timeout(service.read_timeout, tx.send_request(req)).await;
        let mut resp = match sent {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::debug!(service = %service.label, error = %e, "upgrade: exchange failed");
                return generated(error_response(
                    StatusCode::BAD_GATEWAY,
                    "An invalid response was received from the upstream server",
                ));
            }
            Err(_) => {
                return generated(error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "The upstream server is timing out",
                ))
            }
        };
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            // Refused by the upstream: an ordinary answer.
            strip_hop_by_hop(resp.headers_mut());
            let (head, body) = resp.into_parts();
            let read = tokio::time::timeout(
                service.read_timeout,
                Limited::new(body, MAX_BUFFERED_BODY).collect(),
            );
            return match read.await {
                Ok(Ok(b)) => Response::from_parts(head, ProxyBody::full(Full::new(b.to_bytes()))),
                _ => generated(error_response(
                    StatusCode::BAD_GATEWAY,
                    "An invalid response was received from the upstream server",
                )),
            };
        }
        let upstream_side = hyper::upgrade::on(&mut resp);
        websocket::spawn_tunnel(
            client_side,
            upstream_side,
            service.read_timeout,
            self.policy.websocket_max_lifetime,
            slot,
            self.policy.shutdown.clone(),
        );
        // The 101 keeps its Connection and Upgrade headers: they are the answer.
        resp.map(|_| ProxyBody::full(Full::new(Bytes::new())))
    }

    /// Step 1, before anything reads the request: the Host check, underscored headers
    /// dropped, the client's hop-by-hop headers removed, and the client address worked out.
    fn accept(&self, parts: &mut http::request::Parts, peer: &Peer) -> Accepted {
        // Exactly one Host (HTTP/1.0 may have none): two would let the router and the
        // upstream each read a different one.
        if parts.version == http::Version::HTTP_2 && !parts.headers.contains_key(header::HOST) {
            // HTTP/2 names the host in `:authority`; the rest of the proxy reads `Host`.
            if let Some(v) = parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                parts.headers.insert(header::HOST, v);
            }
        }
        let mut hosts = parts.headers.get_all(header::HOST).iter();
        let host = hosts.next().cloned();
        let bad_host =
            hosts.next().is_some() || host.is_none() && parts.version != http::Version::HTTP_10;
        if !self.policy.underscores_in_headers {
            drop_underscored(&mut parts.headers);
        }
        let upgrade = websocket::requested(parts);
        // The client's `Connection` list applies to what the client sent, never to what the
        // gateway adds below (credentials' consumer headers, forwarding headers).
        // `Proxy-Authorization` is addressed to this gateway: the auth plugins read it (Kong's
        // do), and it goes no further (removed after access).
        let seen = strip_client_hop_by_hop(&mut parts.headers);
        let proxy_authorization = seen.proxy_authorization;
        // Who the client is, the gateway says; a client cannot say it for itself.
        if seen.maybe_identity {
            crate::plugins::auth::strip_client_identity(&mut parts.headers);
        }
        let trusted = self.policy.trusted.contains(peer.addr.ip());
        let client_ip = if trusted {
            self.policy
                .trusted
                .real_ip(&parts.headers)
                .unwrap_or(peer.addr.ip())
        } else {
            peer.addr.ip()
        };
        // Kong believes X-Forwarded-Proto only from a trusted proxy.
        let https = peer.tls
            || trusted
                && parts
                    .headers
                    .get(&X_FORWARDED_PROTO)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
        Accepted {
            host,
            bad_host,
            client_ip,
            trusted,
            https,
            upgrade,
            proxy_authorization,
        }
    }

    /// Step 3: the route for the request, and how much of the path it matched. A route that
    /// does not take plain HTTP answers with a redirect or 426.
    fn route<'s>(
        &self,
        snap: &'s Snapshot,
        parts: &http::request::Parts,
        (host, port): (&str, Option<u16>),
        peer: &Peer,
        https: bool,
        norm: &str,
    ) -> Result<(&'s RouteRuntime, usize, usize), Early> {
        let found = snap.router.find(&RequestView {
            method: parts.method.as_str(),
            host,
            port,
            path: norm,
            headers: &Lookup(&parts.headers),
            sni: peer.sni.as_deref(),
            tls: peer.tls,
        });
        let Some(m) = found else {
            return Err(error_response(
                StatusCode::NOT_FOUND,
                "no Route matched with those values",
            ));
        };
        let route = &snap.routes[m.route];
        // Kong's order (`kong/runloop/handler.lua`): an https-only route's redirect, then on a
        // gRPC route the content type, HTTP/2, and TLS for a grpcs-only route.
        if !route.accepts_http && !https {
            return Err(https_redirect(route, host, &parts.uri));
        }
        if route.grpc {
            let grpc_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            if !grpc_type {
                return Err(error_response(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "Non-gRPC request matched gRPC route",
                ));
            }
            if parts.version != http::Version::HTTP_2 {
                let mut r =
                    error_response(StatusCode::UPGRADE_REQUIRED, "Please use HTTP2 protocol");
                r.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
                r.headers_mut()
                    .insert(header::UPGRADE, HeaderValue::from_static("HTTP/2"));
                return Err(r);
            }
            if !route.grpc_plain && !https {
                let mut r = Response::new(Full::new(Bytes::new()));
                let h = r.headers_mut();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/grpc"),
                );
                h.insert("grpc-status", HeaderValue::from_static("1"));
                h.insert(
                    "grpc-message",
                    HeaderValue::from_static("gRPC request matched gRPCs route"),
                );
                return Err(r);
            }
        }
        Ok((route, m.matched_len, m.route))
    }

    /// Step 6: the forwarding headers, as Kong sets them, and the Host sent upstream.
    fn forwarding_headers(&self, h: &mut http::HeaderMap, f: Forwarding<'_>) {
        let client_host = h.contains_key(header::HOST);
        if !f.route.preserve_host || !client_host {
            h.insert(header::HOST, f.service.host_header.clone());
        }
        // Room for the forwarding headers at once, instead of growing the map as they go in.
        h.reserve(8);
        // From a trusted proxy the client is the real IP it names; `X-Forwarded-For` still
        // gets the peer appended, as nginx's `$proxy_add_x_forwarded_for` does.
        let real_ip_header = if f.client_ip == f.peer.addr.ip() {
            f.peer.ip_header.clone()
        } else {
            HeaderValue::from_str(&f.client_ip.to_string()).unwrap_or(f.peer.ip_header.clone())
        };
        let xff = match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) => f
                .peer
                .ip_header
                .to_str()
                .ok()
                .and_then(|ip| HeaderValue::from_str(&format!("{prev}, {ip}")).ok()),
            None => Some(f.peer.ip_header.clone()),
        };
        if let Some(v) = xff {
            h.insert(X_FORWARDED_FOR.clone(), v);
        }
        h.insert(X_REAL_IP.clone(), real_ip_header);
        // Kong believes a trusted proxy's X-Forwarded-Proto/Host/Port/Path/Prefix.
        let keep = |h: &http::HeaderMap, name: &HeaderName| f.trusted && h.contains_key(name);
        if !keep(h, &X_FORWARDED_PROTO) {
            let proto = if f.peer.tls { "https" } else { "http" };
            h.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(proto));
        }
        let forwarded_host = match f.client_host {
            // The client's Host header is already the name alone: share its bytes.
            Some(v) if f.port.is_none() && matches!(f.host, std::borrow::Cow::Borrowed(_)) => {
                Some(v.clone())
            }
            _ => HeaderValue::from_str(f.host).ok(),
        };
        if let Some(v) = forwarded_host.filter(|_| !keep(h, &X_FORWARDED_HOST)) {
            h.insert(X_FORWARDED_HOST.clone(), v);
        }
        if !keep(h, &X_FORWARDED_PORT) {
            let port = if f.peer.tls {
                HeaderValue::from(f.peer.local.port())
            } else {
                self.port_header.clone()
            };
            h.insert(X_FORWARDED_PORT.clone(), port);
        }
        if !keep(h, &X_FORWARDED_PATH) {
            if let Ok(v) = HeaderValue::from_str(f.original_path) {
                h.insert(X_FORWARDED_PATH.clone(), v);
            }
        }
        if !keep(h, &X_FORWARDED_PREFIX) {
            if f.route.strip_path && f.matched_len > 0 {
                if let Ok(v) = HeaderValue::from_str(&f.norm[..f.matched_len.min(f.norm.len())]) {
                    h.insert(X_FORWARDED_PREFIX.clone(), v);
                }
            } else {
                h.remove(&X_FORWARDED_PREFIX);
            }
        }
        h.append(header::VIA, self.via.clone());
    }

    /// The common tail of every request, whatever ended it: response headers from plugins,
    /// latency headers, header_filter, the response-body hook (when the body was read whole
    /// for it), metrics, log.
    fn finish(
        &self,
        ctx: &mut Ctx<'_>,
        done: &mut Done<'_>,
        resp: Response<ProxyBody>,
        whole: Option<Bytes>,
        upstream: Option<Duration>,
    ) -> Response<ProxyBody> {
        let (mut parts, mut body) = resp.into_parts();
        let upstream_status = parts.status;
        for (k, v) in ctx.response_headers.drain(..) {
            // A cookie the gateway sets goes beside the upstream's own.
            if k == header::SET_COOKIE {
                parts.headers.append(k, v);
            } else {
                parts.headers.insert(k, v);
            }
        }
        parts.headers.append(header::VIA, self.via.clone());
        let total = done.start.elapsed();
        if let Some(up) = upstream {
            parts
                .headers
                .insert(X_UPSTREAM_LATENCY.clone(), millis_header(up));
            let own = total.saturating_sub(up);
            parts
                .headers
                .insert(X_PROXY_LATENCY.clone(), millis_header(own));
        }
        for inst in &done.ran {
            inst.header_filter(ctx, &mut parts);
        }
        if let Some(bytes) = ctx.replace_body.take() {
            // A header_filter answered in the upstream's place: no response_body phase on a
            // body that is not sent.
            parts.headers.remove(header::TRANSFER_ENCODING);
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            body = ProxyBody::full(Full::new(bytes));
        } else if let Some(mut bytes) = whole {
            for inst in done.ran.iter().filter(|i| i.needs_response_body()) {
                bytes = inst.response_body(ctx, &mut parts, bytes);
            }
            parts.headers.remove(header::TRANSFER_ENCODING);
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            body = ProxyBody::full(Full::new(bytes));
        }
        if let Some(sink) = ctx.body_sink.take() {
            body = ProxyBody::teed(body, sink);
        }
        let status = parts.status;
        record(&self.metrics, done.route, status, total, upstream);
        if done.logs() {
            body = with_log(ctx, done, &parts, body, upstream, upstream_status);
        }
        Response::from_parts(parts, body)
    }
}

/// A response made by the gateway itself (an error, a plugin's answer) that ends a step. Not
/// boxed: it is moved once, on the rare path, and boxing would allocate on every 401 or 429.
type Early = Response<Full<Bytes>>;

/// What step 1 found out about the request.
struct Accepted {
    /// The one Host header, if there is one.
    host: Option<HeaderValue>,
    bad_host: bool,
    client_ip: std::net::IpAddr,
    /// Whether the peer is a trusted proxy.
    trusted: bool,
    /// Whether the client's request is https: over TLS here, or so said by a trusted proxy.
    https: bool,
    /// The protocol the client asks to upgrade to (WebSocket), if it asks.
    upgrade: Option<HeaderValue>,
    /// The client sent `Proxy-Authorization`: kept for the auth plugins, removed before the
    /// upstream (it is hop-by-hop).
    proxy_authorization: bool,
}

/// What step 6 needs.
struct Forwarding<'a> {
    route: &'a RouteRuntime,
    service: &'a ServiceRuntime,
    peer: &'a Peer,
    client_ip: std::net::IpAddr,
    trusted: bool,
    client_host: Option<&'a HeaderValue>,
    original_path: &'a str,
    norm: &'a str,
    matched_len: usize,
    /// The client's Host, split into name and port.
    host: &'a std::borrow::Cow<'a, str>,
    port: Option<u16>,
}

/// What step 7 produces.
struct Outgoing {
    body: UpstreamBody,
    /// Set when the body's length is known (it replaces the client's framing).
    length: Option<u64>,
    head_timeout: Duration,
    /// Set when a streamed client body breaks (its error, not the upstream's).
    client_failed: Option<Arc<std::sync::atomic::AtomicU8>>,
}

/// What the finish needs to know of the request's way so far.
struct Done<'s> {
    start: Instant,
    snap: &'s Snapshot,
    route: Option<&'s RouteRuntime>,
    /// The plugin instances whose access ran, in order; header_filter and response_body run
    /// for these.
    ran: Vec<&'s Instance>,
    /// The request as the log phase shows it; taken only when something logs.
    request: Option<Box<RequestHead>>,
    /// The URI sent upstream, when something logs.
    upstream_uri: Option<Uri>,
    /// The balanced peer the response came from.
    peer: Option<SocketAddr>,
}

impl Done<'_> {
    /// Whether a logging plugin may run for this request: one on the route, or, without a
    /// route, a global one.
    fn logs(&self) -> bool {
        match self.route {
            Some(r) => !r.log_slots.is_empty(),
            None => !self.snap.global_log.is_empty(),
        }
    }

    /// Keeps the request for the log phase, once, when something logs.
    fn capture(&mut self, parts: &http::request::Parts) {
        if self.request.is_none() && self.logs() {
            self.request = Some(RequestHead::of(parts));
        }
    }
}

/// The log phase's setup: the logging instances that apply (as Kong, also those after a
/// plugin that ended the request), and the response body wrapped so that they run once it
/// has been sent. Kept out of line: only routes with logging plugins come here.
#[inline(never)]
fn with_log(
    ctx: &Ctx<'_>,
    done: &mut Done<'_>,
    parts: &http::response::Parts,
    body: ProxyBody,
    upstream: Option<Duration>,
    upstream_status: StatusCode,
) -> ProxyBody {
    let consumer = ctx.consumer.as_ref().map(|c| c.id);
    let plugins: Vec<Instance> = match done.route {
        Some(r) => r
            .log_slots
            .iter()
            .filter_map(|&i| done.snap.resolve(r, &r.slots[i], consumer))
            .cloned()
            .collect(),
        None => done.snap.global_log.clone(),
    };
    if plugins.is_empty() {
        return body;
    }
    let served = Served::new(
        ServedParts {
            started_at_ms: (ctx.now * 1000.0) as u64,
            start: done.start,
            request: done.request.take(),
            https: ctx.peer.tls,
            server_port: ctx.peer.local.port(),
            upstream_uri: done.upstream_uri.take(),
            upstream_status: upstream.map(|_| upstream_status.as_u16()),
            upstream_latency: upstream,
            route: done.route.and_then(|r| r.log.clone()),
            consumer: ctx.consumer.clone(),
            credential: ctx.credential,
            client_ip: ctx.client_ip,
            peer: done.peer,
        },
        parts,
    );
    ProxyBody::logged(body, Box::new(PendingLog { served, plugins }))
}

/// The client's body while no step has taken it. Dropped unread (an answer made before the
/// upstream, say a 413 or a 401), it is read and thrown away in the background, as nginx's
/// lingering close does: a client still sending would otherwise see its connection reset,
/// and lose the answer with it. The drain stops after [`LINGER_TIME`], or when the client
/// pauses for [`LINGER_TIMEOUT`].
struct Unread(Option<Incoming>);

/// nginx's `lingering_time`.
const LINGER_TIME: Duration = Duration::from_secs(30);
/// nginx's `lingering_timeout`.
const LINGER_TIMEOUT: Duration = Duration::from_secs(5);

impl Drop for Unread {
    fn drop(&mut self) {
        let Some(mut body) = self.0.take().filter(|b| !b.is_end_stream()) else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let deadline = tokio::time::Instant::now() + LINGER_TIME;
            while tokio::time::Instant::now() < deadline {
                match tokio::time::timeout(LINGER_TIMEOUT, body.frame()).await {
                    Ok(Some(Ok(_))) => {}
                    _ => break,
                }
            }
        });
    }
}

/// Step 7's decision: a body ready to send, or one to read whole first.
enum Plan {
    Ready(Outgoing),
    Buffer(Incoming),
}

/// Step 7: the body sent upstream — read by a plugin already, empty, streamed, or (for
/// `request_buffering`, the default) to be read whole by the caller — and how long the
/// response head may take: once connected, `read_timeout`; a streamed body is written
/// meanwhile, so it adds `write_timeout`.
fn request_body(
    route: &RouteRuntime,
    service: &ServiceRuntime,
    ctx: &mut Ctx<'_>,
    incoming: Option<Incoming>,
) -> Result<Plan, Early> {
    let ready = |body, length, head_timeout, client_failed| {
        Ok(Plan::Ready(Outgoing {
            body,
            length,
            head_timeout,
            client_failed,
        }))
    };
    match (ctx.body.take(), incoming) {
        (Some(b), _) => {
            let n = b.len() as u64;
            ready(UpstreamBody::bytes(b), Some(n), service.read_timeout, None)
        }
        (None, Some(incoming)) if incoming.is_end_stream() => {
            ready(UpstreamBody::empty(), None, service.read_timeout, None)
        }
        (None, Some(incoming)) if route.request_buffering => Ok(Plan::Buffer(incoming)),
        (None, Some(incoming)) => {
            let (streamed, flag) = Streamed::new(incoming, ctx.body_limit.map(|l| l.max));
            let timeout = service.write_timeout + service.read_timeout;
            ready(UpstreamBody::Streamed(streamed), None, timeout, Some(flag))
        }
        (None, None) => ready(UpstreamBody::empty(), None, service.read_timeout, None),
    }
}

/// The answer to a request body that could not be read whole.
fn buffering_failed(e: ReadError, limit: Option<BodyLimit>) -> Early {
    let (status, msg) = match e {
        ReadError::TooLarge(max) => {
            return match limit {
                Some(l) => l.response(),
                None => {
                    tracing::error!(max, "a body limit fired without its plugin's answer");
                    error_response(StatusCode::PAYLOAD_TOO_LARGE, "Request size limit exceeded")
                }
            }
        }
        ReadError::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "Request timeout"),
        ReadError::Malformed(_) => (StatusCode::BAD_REQUEST, "Bad request"),
        ReadError::Io(ref io) => {
            tracing::error!(error = %io, "cannot buffer a request body");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "An unexpected error occurred",
            )
        }
    };
    error_response(status, msg)
}

/// Step 2: global plugins' rewrite, before routing; they may change the path and headers
/// routing sees.
fn rewrite(
    global: &[Instance],
    ctx: &mut Ctx<'_>,
    parts: &mut http::request::Parts,
) -> Result<(), Early> {
    for g in global {
        if let Flow::Respond(r) = g.rewrite(ctx, parts) {
            return Err(r);
        }
    }
    Ok(())
}

/// Step 4, only when a plugin on the route needs the request body before access: reads it
/// whole, up to [`MAX_BUFFERED_BODY`].
async fn read_for_plugins(incoming: Incoming, limit: Option<BodyLimit>) -> Result<Bytes, Early> {
    // A plugin's limit (request-size-limiting on a chunked body) answers for itself when it
    // is the tighter one.
    let cap = match limit {
        Some(l) if l.max < MAX_BUFFERED_BODY as u64 => l.max as usize + 1,
        _ => MAX_BUFFERED_BODY,
    };
    // Boxed: a rare path whose future would otherwise enlarge every request's.
    let read = Limited::new(incoming, cap).collect();
    match Box::pin(tokio::time::timeout(CLIENT_BODY_TIMEOUT, read)).await {
        Ok(Ok(b)) => {
            let b = b.to_bytes();
            match limit {
                Some(l) if b.len() as u64 > l.max => Err(l.response()),
                _ => Ok(b),
            }
        }
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(match limit {
            Some(l) if l.max < MAX_BUFFERED_BODY as u64 => l.response(),
            _ => error_response(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large"),
        }),
        Ok(Err(_)) => Err(error_response(StatusCode::BAD_REQUEST, "Bad request")),
        Err(_) => Err(error_response(
            StatusCode::REQUEST_TIMEOUT,
            "Request timeout",
        )),
    }
}

/// Step 5, access: each plugin name on the route, by priority from `*next`, resolved to the
/// instance that applies for the consumer known so far (authentication sets it), run in turn.
/// The instances that run are pushed to `ran`. Returns at the end, or with an async instance
/// for the caller to await before calling again.
fn access<'s>(
    snap: &'s Snapshot,
    route: &'s RouteRuntime,
    ctx: &mut Ctx<'_>,
    parts: &mut http::request::Parts,
    ran: &mut Vec<&'s Instance>,
    next: &mut usize,
    body_unread: bool,
) -> Result<Option<Pause<'s>>, Early> {
    while let Some(slot) = route.slots.get(*next) {
        let consumer = ctx.consumer.as_ref().map(|c| c.id);
        let Some(inst) = snap.resolve(route, slot, consumer) else {
            *next += 1;
            continue;
        };
        if body_unread && inst.needs_body() {
            // Read first, then this slot again.
            return Ok(Some(Pause::Body));
        }
        *next += 1;
        ran.push(inst);
        if inst.is_async() {
            return Ok(Some(Pause::Async(inst)));
        }
        if let Flow::Respond(r) = inst.access(ctx, parts) {
            return Err(r);
        }
    }
    Ok(None)
}

/// Why the access loop stops before its end.
enum Pause<'s> {
    /// This plugin must be awaited.
    Async(&'s Instance),
    /// The next plugin reads the request body: read it, then go on.
    Body,
}

/// The upstream URI in origin form (the connection already goes to the service's address):
/// the service path joined with the (stripped) normalised path, plus the query.
fn upstream_uri(
    route: &RouteRuntime,
    service: &ServiceRuntime,
    parts: &http::request::Parts,
    original_path: &str,
    norm: &str,
    already_normal: bool,
    matched_len: usize,
) -> Result<Uri, Early> {
    let stripped = route.strip_path && matched_len > 1;
    // The client's path and query go upstream as they are when nothing changes them (no
    // service path, nothing stripped, already normal): no string is built.
    let unchanged =
        service.path.is_none() && !stripped && already_normal && parts.uri.path() == original_path;
    let path_and_query = match parts.uri.path_and_query() {
        Some(pq) if unchanged => Ok(pq.clone()),
        _ => {
            let base = service.path.as_deref().unwrap_or("/");
            let mut target = join_path(base, norm, route.strip_path, matched_len, route.path_v1);
            if let Some(q) = parts.uri.query() {
                target.push('?');
                target.push_str(q);
            }
            http::uri::PathAndQuery::try_from(target)
        }
    };
    path_and_query
        .map(Uri::from)
        .map_err(|_| error_response(StatusCode::BAD_REQUEST, "Bad request"))
}

/// The upstream URI when a plugin named the path: that path, and the request's query.
fn plugin_uri(path: &str, parts: &http::request::Parts) -> Result<Uri, Early> {
    let mut target = String::with_capacity(path.len() + 1);
    if !path.starts_with('/') {
        target.push('/');
    }
    target.push_str(path);
    if let Some(q) = parts.uri.query() {
        target.push('?');
        target.push_str(q);
    }
    http::uri::PathAndQuery::try_from(target)
        .map(Uri::from)
        .map_err(|_| error_response(StatusCode::BAD_REQUEST, "Bad request"))
}

/// The answer to a failed upstream request.
fn send_failed(
    service: &ServiceRuntime,
    e: &SendError,
    client_failed: &Option<Arc<std::sync::atomic::AtomicU8>>,
    limit: Option<BodyLimit>,
) -> Early {
    tracing::debug!(service = %service.label, error = %e, "upstream request failed");
    let client = client_failed
        .as_ref()
        .map_or(request_body::CLIENT_OK, |f| f.load(Ordering::Relaxed));
    if let (request_body::CLIENT_TOO_LARGE, Some(l)) = (client, limit) {
        // Cut off where it passed the plugin's limit: the plugin's answer.
        l.response()
    } else if client != request_body::CLIENT_OK {
        // The client broke its streamed body (malformed chunks, cut short).
        error_response(StatusCode::BAD_REQUEST, "Bad request")
    } else if e.is_name_resolution() {
        error_response(StatusCode::SERVICE_UNAVAILABLE, "name resolution failed")
    } else if e.is_timeout() {
        upstream_timed_out()
    } else {
        upstream_invalid()
    }
}

/// The answer to an upstream response body that failed.
fn body_failed(service: &ServiceRuntime, e: &body::BoxError) -> Early {
    tracing::debug!(service = %service.label, error = %e, "upstream body failed");
    if e.is::<http_body_util::LengthLimitError>() {
        // Only a plugin that rewrites bodies reads one whole.
        tracing::warn!(
            service = %service.label,
            limit = MAX_BUFFERED_BODY,
            "upstream response body too large for the route's response-body plugins"
        );
        upstream_invalid()
    } else if e.is::<body::ReadTimedOut>() {
        upstream_timed_out()
    } else {
        upstream_invalid()
    }
}

fn upstream_timed_out() -> Early {
    error_response(
        StatusCode::GATEWAY_TIMEOUT,
        "The upstream server is timing out",
    )
}

fn upstream_invalid() -> Early {
    error_response(
        StatusCode::BAD_GATEWAY,
        "An invalid response was received from the upstream server",
    )
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
    let (svc, rt) = (route.service_label.as_str(), route.info.label.as_str());
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

/// Makes a request ready for HTTP/2 to a gRPC upstream: an absolute URI (HTTP/2 carries the
/// scheme and authority) from the Host going upstream, and `te: trailers`, which gRPC servers
/// may require and the hop-by-hop cleanup removed.
fn h2_request(up: &mut Request<crate::snapshot::UpstreamBody>, tls: bool) -> Result<(), Early> {
    // A retry comes back already absolute, without its Host.
    let authority = up
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| up.uri().authority().map(|a| a.as_str()))
        .unwrap_or_default()
        .to_string();
    let pq = up
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    let scheme = if tls { "https" } else { "http" };
    let uri: Uri = format!("{scheme}://{authority}{pq}").parse().map_err(|_| {
        error_response(
            StatusCode::BAD_GATEWAY,
            "An invalid response was received from the upstream server",
        )
    })?;
    *up.uri_mut() = uri;
    *up.version_mut() = http::Version::HTTP_2;
    up.headers_mut().remove(header::HOST);
    up.headers_mut()
        .insert(header::TE, HeaderValue::from_static("trailers"));
    Ok(())
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
    // Kong: `https://` + the host without its port + the request URI, and no body.
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = code;
    if let Ok(v) = HeaderValue::from_str(&format!("https://{host}{pq}")) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::AtomicUsize;

    use tollgate_config::declarative::{self, Sequence};
    use tollgate_config::State;
    use uuid::Uuid;

    use crate::plugins::{Deps, Plugin};
    use crate::snapshot::Slot;

    /// Waits in access (so it must be awaited), then rewrites the upstream's response body.
    struct Hooks {
        bodies: AtomicUsize,
    }

    impl Plugin for Hooks {
        fn name(&self) -> &'static str {
            "test-hooks"
        }
        fn priority(&self) -> u32 {
            1
        }
        fn id(&self) -> Uuid {
            Uuid::nil()
        }
        fn is_async(&self) -> bool {
            true
        }
        fn access_async<'s>(
            &'s self,
            ctx: &'s mut Ctx<'_>,
            req: &'s mut http::request::Parts,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Flow> + Send + 's>> {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                if req.headers.contains_key("x-stop") {
                    return Flow::Respond(error_response(StatusCode::IM_A_TEAPOT, "stopped"));
                }
                req.headers
                    .insert("x-from-async", HeaderValue::from_static("waited"));
                ctx.response_headers.push((
                    HeaderName::from_static("x-async"),
                    HeaderValue::from_static("1"),
                ));
                Flow::Continue
            })
        }
        fn needs_response_body(&self) -> bool {
            true
        }
        fn response_body(
            &self,
            _ctx: &mut Ctx<'_>,
            _resp: &mut http::response::Parts,
            body: Bytes,
        ) -> Bytes {
            self.bodies.fetch_add(1, Ordering::Relaxed);
            Bytes::from(format!(
                "[{}]",
                String::from_utf8_lossy(&body).to_uppercase()
            ))
        }
    }

    /// An upstream that answers with the `x-from-async` header it was sent.
    async fn upstream() -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (_tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let _keep = _tx;
            crate::serve::serve(
                l,
                |req: Request<Incoming>, _peer: &Peer| {
                    let seen = req
                        .headers()
                        .get("x-from-async")
                        .map(|v| v.to_str().unwrap_or("").to_string())
                        .unwrap_or_default();
                    async move { Response::new(Full::new(Bytes::from(format!("up:{seen}")))) }
                },
                rx,
                "test-upstream",
                None,
                None,
            )
            .await
        });
        port
    }

    #[tokio::test]
    async fn an_async_access_hook_is_awaited_and_the_body_hook_rewrites_the_response() {
        let up = upstream().await;
        let doc = format!(
            "_format_version: \"3.0\"\nservices: [{{name: s, url: \"http://127.0.0.1:{up}\", routes: [{{paths: [\"/\"]}}]}}]\n"
        );
        let st = State::from_data(declarative::parse(&doc, &mut Sequence(0)).unwrap()).unwrap();
        let metrics = Arc::new(Metrics::new());
        let deps = Deps {
            counters: Arc::new(crate::ratelimit::local_counters(10)),
            cluster_counters: Arc::new(crate::ratelimit::GCounters::new(1, 10)),
            metrics: metrics.clone(),
            balancers: Arc::default(),
        };
        let mut snap =
            crate::snapshot::Snapshot::build(&st, &crate::snapshot::Snapshot::empty(), &deps, 1);
        let hooks = Arc::new(Hooks {
            bodies: AtomicUsize::new(0),
        });
        snap.routes[0].slots.push(Slot::with(hooks.clone()));
        let handle = Arc::new(SnapshotHandle::new(snap));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let proxy = Arc::new(Proxy::new(handle, metrics, addr, ClientPolicy::default()));
        let (_tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(crate::serve::serve(
            l,
            move |req, peer: &Peer| proxy.clone().handle(req, peer.clone()),
            rx,
            "test-proxy",
            None,
            None,
        ));
        let client = reqwest::Client::new();
        let r = client.get(format!("http://{addr}/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-async"], "1");
        assert_eq!(r.headers()["content-length"], "11");
        assert_eq!(r.text().await.unwrap(), "[UP:WAITED]");
        assert_eq!(hooks.bodies.load(Ordering::Relaxed), 1);

        // An async access may end the request; the body hook then has nothing to rewrite.
        let r = client
            .get(format!("http://{addr}/x"))
            .header("x-stop", "1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 418);
        assert_eq!(hooks.bodies.load(Ordering::Relaxed), 1);
    }

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
