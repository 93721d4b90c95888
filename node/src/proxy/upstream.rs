//! Keep-alive connections to one upstream address (`host:port`), shared by every service that
//! points there.
//!
//! A request takes the most recently used idle connection (LIFO: the warmest one, and the
//! oldest ones age out), or opens a new one within `connect_timeout`. The connection goes back
//! to the pool when the response body has been read to its end, as nginx's `keepalive` does; a
//! body dropped early, an error or a `Connection: close` from the upstream closes it instead.
//! Idle connections are closed after [`IDLE_TIMEOUT`], below the keep-alive timeout of common
//! servers (nginx 75 s, Node 5 s is the exception: its close is seen and the connection
//! dropped).
//!
//! A request that hyper hands back unsent (the idle connection was found closed as it was
//! taken) is sent on the next connection: the client never sees that race. A connection that
//! cannot be opened hands the request back too, so the proxy's `retries` resend it without
//! a copy.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::client::conn::http2;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::snapshot::UpstreamBody;

/// How long an unused connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(8);
/// Most idle connections kept per address (nginx's `keepalive` directive).
pub const MAX_IDLE: usize = 1024;

/// Why a request got no response head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be opened; the request was not sent and comes back.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: io::Error,
        request: Box<Request<UpstreamBody>>,
    },
    /// The request was (or may have been) written, and the exchange failed.
    #[error("upstream exchange failed: {0}")]
    Exchange(#[from] hyper::Error),
    /// Connected, and no response head came within the head timeout.
    #[error("no response head within {0:?}")]
    HeadTimeout(Duration),
}

/// The TLS handshake with the upstream failed (an untrusted certificate, a wrong name).
#[derive(Debug, thiserror::Error)]
#[error("TLS handshake with the upstream failed: {0}")]
pub struct TlsFailed(pub String);

/// Starts HTTP/1.1 on a connected stream, its connection driven by its own task (one that
/// allows an upgrade when `upgrades`).
async fn handshake<S>(stream: S, upgrades: bool) -> io::Result<SendRequest<UpstreamBody>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        let ended = if upgrades {
            conn.with_upgrades().await
        } else {
            conn.await
        };
        if let Err(e) = ended {
            tracing::debug!(error = %e, "upstream connection ended with error");
        }
    });
    Ok(tx)
}

/// A service's host that does not resolve (Kong answers 503 "name resolution failed").
#[derive(Debug, thiserror::Error)]
#[error("name resolution failed: {0}")]
pub struct NameResolution(pub String);

impl SendError {
    /// Whether the host did not resolve.
    pub fn is_name_resolution(&self) -> bool {
        matches!(self, SendError::Connect { source, .. }
            if source.get_ref().is_some_and(|e| e.is::<NameResolution>()))
    }

    /// Whether the failure is a timeout (Kong answers 504 to those, 502 otherwise).
    pub fn is_timeout(&self) -> bool {
        match self {
            SendError::Connect { source, .. } => source.kind() == io::ErrorKind::TimedOut,
            SendError::Exchange(e) => e.is_timeout(),
            SendError::HeadTimeout(_) => true,
        }
    }
}

/// How a connection was opened: plain, or with these TLS settings (by address) and SNI. A
/// request takes only a connection made the way it would make one (pools are per address,
/// SNI and client certificate).
type ConnKey = Option<(u64, Arc<str>)>;

/// An open HTTP/2 connection: how it was made, a serial to find it again, its sender.
struct H2Conn {
    key: ConnKey,
    serial: u64,
    tx: http2::SendRequest<UpstreamBody>,
}

/// Most HTTP/2 connections kept per address (all TLS settings and SNIs together); past it the
/// oldest is let go (it closes when its last stream ends).
pub const MAX_H2: usize = 32;

static H2_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

struct Idle {
    tx: SendRequest<UpstreamBody>,
    since: Instant,
    tls: ConnKey,
}

/// How one request's connection is secured: the service's settings and the SNI (the final
/// Host without its port).
#[derive(Clone, Copy)]
pub struct Secure<'a> {
    pub tls: &'a Arc<crate::tls::client::UpstreamTls>,
    pub sni: &'a str,
}

impl Secure<'_> {
    fn id(&self) -> u64 {
        self.tls.id
    }
}

fn same(a: &ConnKey, b: Option<Secure<'_>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some((id, sni)), Some(s)) => *id == s.id() && **sni == *s.sni,
        _ => false,
    }
}

impl Idle {
    /// Still open at the upstream and not past [`IDLE_TIMEOUT`].
    fn usable(&self) -> bool {
        !self.tx.is_closed() && self.since.elapsed() < IDLE_TIMEOUT
    }
}

/// The connections to one `host:port`.
pub struct Pool {
    host: String,
    port: u16,
    connect_timeout: Duration,
    idle: Mutex<VecDeque<Idle>>,
    /// HTTP/2 connections (gRPC services), shared by concurrent requests, by TLS settings and
    /// SNI as idle connections are.
    h2: Mutex<Vec<H2Conn>>,
}

impl Pool {
    /// A pool for `host:port` (an IPv6 host without brackets, as services store it). Idle
    /// connections past [`IDLE_TIMEOUT`] are skipped when taken; [`Pool::evict_expired`],
    /// called periodically, closes them.
    pub fn new(host: &str, port: u16, connect_timeout: Duration) -> Arc<Pool> {
        Arc::new(Pool {
            host: host.to_string(),
            port,
            connect_timeout,
            idle: Mutex::new(VecDeque::new()),
            h2: Mutex::new(Vec::new()),
        })
    }

    /// Number of idle connections (for tests and diagnostics).
    pub fn idle_count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        // A panic while holding this lock cannot leave the queue inconsistent.
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn take_idle(&self, secure: Option<Secure<'_>>) -> Option<SendRequest<UpstreamBody>> {
        let mut idle = self.lock();
        if secure.is_none() {
            // The common case: plain connections, warmest first; stale ones are dropped on
            // the way, and a TLS one stops the fast path.
            while idle.back().is_some_and(|i| i.tls.is_none()) {
                let i = idle.pop_back()?;
                if i.usable() {
                    return Some(i.tx);
                }
            }
            if idle.is_empty() {
                return None;
            }
        }
        let at = idle
            .iter()
            .rposition(|i| same(&i.tls, secure) && i.usable())?;
        idle.remove(at).map(|i| i.tx)
    }

    fn put(&self, tx: SendRequest<UpstreamBody>, tls: ConnKey) {
        if tx.is_closed() {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle {
                tx,
                since: Instant::now(),
                tls,
            });
        }
    }

    /// Closes the idle connections past [`IDLE_TIMEOUT`] and those the upstream closed.
    pub fn evict_expired(&self) {
        let mut idle = self.lock();
        while idle.front().is_some_and(|i| !i.usable()) {
            idle.pop_front();
        }
    }

    /// Sends a gRPC request over HTTP/2 (h2c, or TLS with ALPN `h2`): on the open connection
    /// for these TLS settings and SNI when there is one, else on a new one. The URI must be
    /// absolute (HTTP/2 carries the scheme and authority).
    pub async fn send_h2(
        &self,
        req: Request<UpstreamBody>,
        connect_timeout: Duration,
        head_timeout: Duration,
        secure: Option<Secure<'_>>,
    ) -> Result<Response<PooledBody>, SendError> {
        let lock = || self.h2.lock().unwrap_or_else(|p| p.into_inner());
        let open = {
            let mut conns = lock();
            conns.retain(|c| !c.tx.is_closed());
            conns
                .iter()
                .rev()
                .find(|c| same(&c.key, secure))
                .map(|c| (c.serial, c.tx.clone()))
        };
        let (serial, mut tx) = match open {
            Some(found) => found,
            None => match self.open_h2(connect_timeout, secure).await {
                Ok(tx) => {
                    let serial = H2_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let mut conns = lock();
                    if conns.len() >= MAX_H2 {
                        conns.remove(0);
                    }
                    conns.push(H2Conn {
                        key: secure.map(|s| (s.id(), Arc::from(s.sni))),
                        serial,
                        tx: tx.clone(),
                    });
                    (serial, tx)
                }
                Err(source) => {
                    return Err(SendError::Connect {
                        addr: format!("{}:{}", self.host, self.port),
                        source,
                        request: Box::new(req),
                    })
                }
            },
        };
        let sent = tokio::time::timeout(head_timeout, tx.send_request(req)).await;
        let resp = match sent {
            Ok(Ok(r)) => r,
            failed => {
                // A connection that failed or went silent is not given to the next request.
                lock().retain(|c| c.serial != serial);
                return Err(match failed {
                    Ok(Err(e)) => SendError::Exchange(e),
                    _ => SendError::HeadTimeout(head_timeout),
                });
            }
        };
        Ok(resp.map(|body| PooledBody {
            inner: body,
            lease: None,
            in_flight: None,
        }))
    }

    async fn open_h2(
        &self,
        timeout: Duration,
        secure: Option<Secure<'_>>,
    ) -> io::Result<http2::SendRequest<UpstreamBody>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
        let stream = tokio::time::timeout_at(
            deadline,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| timed_out())??;
        stream.set_nodelay(true)?;
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        // Pings find a connection that died without a close, so requests do not wait on it.
        let mut builder = http2::Builder::new(hyper_util::rt::TokioExecutor::new());
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .keep_alive_while_idle(true);
        macro_rules! start {
            ($io:expr) => {{
                let (tx, conn) = builder
                    .handshake(TokioIo::new($io))
                    .await
                    .map_err(io::Error::other)?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "upstream HTTP/2 connection ended with error");
                    }
                });
                tx
            }};
        }
        Ok(match secure {
            None => start!(stream),
            Some(s) => {
                let addr = stream.peer_addr()?;
                let name = crate::tls::client::server_name(s.sni)
                    .unwrap_or_else(|| rustls::pki_types::ServerName::IpAddress(addr.ip().into()));
                let tls = tokio::time::timeout_at(deadline, s.tls.connector.connect(name, stream))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|e| {
                        io::Error::new(io::ErrorKind::InvalidData, TlsFailed(e.to_string()))
                    })?;
                start!(tls)
            }
        })
    }

    /// A connection of its own (never pooled) that may be upgraded, for a WebSocket handshake.
    pub async fn open_upgradable(
        &self,
        timeout: Duration,
        secure: Option<Secure<'_>>,
    ) -> io::Result<SendRequest<UpstreamBody>> {
        self.open(timeout, secure, true).await
    }

    async fn connect(
        &self,
        timeout: Duration,
        secure: Option<Secure<'_>>,
    ) -> io::Result<SendRequest<UpstreamBody>> {
        self.open(timeout, secure, false).await
    }

    async fn open(
        &self,
        timeout: Duration,
        secure: Option<Secure<'_>>,
        upgrades: bool,
    ) -> io::Result<SendRequest<UpstreamBody>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
        // An IP literal resolves without a lookup; a name goes through the system resolver.
        let addrs = tokio::time::timeout_at(
            deadline,
            tokio::net::lookup_host((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| io::Error::other(NameResolution(e.to_string())))?;
        let mut last = io::Error::other(NameResolution("name resolved to no address".into()));
        for addr in addrs {
            match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
                Err(_) => return Err(timed_out()),
                Ok(Err(e)) => last = e,
                Ok(Ok(stream)) => {
                    stream.set_nodelay(true)?;
                    let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(60));
                    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
                    return match secure {
                        None => handshake(stream, upgrades).await,
                        Some(s) => {
                            let name =
                                crate::tls::client::server_name(s.sni).unwrap_or_else(|| {
                                    rustls::pki_types::ServerName::IpAddress(addr.ip().into())
                                });
                            let tls = tokio::time::timeout_at(
                                deadline,
                                s.tls.connector.connect(name, stream),
                            )
                            .await
                            .map_err(|_| timed_out())?
                            .map_err(|e| {
                                io::Error::new(io::ErrorKind::InvalidData, TlsFailed(e.to_string()))
                            })?;
                            handshake(tls, upgrades).await
                        }
                    };
                }
            }
        }
        Err(last)
    }

    /// Sends `req` (origin-form URI, Host header set) over plain HTTP and returns the response head; the
    /// connection returns to the pool when the body has been read. Connecting has the pool's
    /// `connect_timeout`; once connected, the head must come within `head_timeout` (Kong's
    /// `read_timeout`: the deadlines do not add up).
    pub async fn send(
        self: &Arc<Self>,
        req: Request<UpstreamBody>,
        head_timeout: Duration,
    ) -> Result<Response<PooledBody>, SendError> {
        self.send_within(req, self.connect_timeout, head_timeout, None)
            .await
    }

    /// As [`Pool::send`], with the connect timeout of the caller (a balanced upstream's
    /// addresses serve services with different timeouts).
    pub async fn send_within(
        self: &Arc<Self>,
        mut req: Request<UpstreamBody>,
        connect_timeout: Duration,
        head_timeout: Duration,
        secure: Option<Secure<'_>>,
    ) -> Result<Response<PooledBody>, SendError> {
        loop {
            let (mut tx, reused) = match self.take_idle(secure) {
                Some(tx) => (tx, true),
                None => match self.connect(connect_timeout, secure).await {
                    Ok(tx) => (tx, false),
                    Err(source) => {
                        return Err(SendError::Connect {
                            addr: format!("{}:{}", self.host, self.port),
                            source,
                            request: Box::new(req),
                        })
                    }
                },
            };
            let exchange = async {
                if let Err(e) = tx.ready().await {
                    return Err((e, Some(req)));
                }
                tx.try_send_request(req).await.map_err(|mut e| {
                    let back = e.take_message();
                    (e.into_error(), back)
                })
            };
            let outcome = match tokio::time::timeout(head_timeout, exchange).await {
                Err(_) => return Err(SendError::HeadTimeout(head_timeout)),
                Ok(o) => o,
            };
            match outcome {
                Ok(resp) => {
                    let lease = Lease {
                        pool: Arc::downgrade(self),
                        tx,
                        tls: secure.map(|s| (s.id(), Arc::from(s.sni))),
                    };
                    return Ok(resp.map(|body| PooledBody {
                        inner: body,
                        lease: Some(lease),
                        in_flight: None,
                    }));
                }
                // Never written: the connection closed as it was taken. Try another.
                Err((_, Some(back))) if reused => req = back,
                Err((e, _)) => return Err(SendError::Exchange(e)),
            }
        }
    }
}

/// A connection on loan to one response.
struct Lease {
    pool: Weak<Pool>,
    tx: SendRequest<UpstreamBody>,
    tls: ConnKey,
}

/// The upstream response body; its end gives the connection back to the pool.
pub struct PooledBody {
    inner: Incoming,
    lease: Option<Lease>,
    /// The balanced peer's in-flight count, held until the body ends or is dropped.
    pub in_flight: Option<crate::balancer::InFlight>,
}

impl PooledBody {
    fn give_back(&mut self) {
        if let Some(l) = self.lease.take() {
            if let Some(pool) = l.pool.upgrade() {
                pool.put(l.tx, l.tls);
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.give_back(),
            // A broken body leaves the connection in an unknown state: close it.
            Poll::Ready(Some(Err(_))) => self.lease = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // A body with nothing left (e.g. a 204, or a HEAD response, which the server never
        // polls) still frees its connection; one dropped halfway closes it.
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// An upstream that counts its connections and answers every request with `reply`
    /// (a full HTTP/1.1 response), keeping the connection open unless `close_after` is set.
    async fn upstream(reply: &'static str, close_after: bool) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let Ok(n) = s.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            if s.write_all(reply.as_bytes()).await.is_err() || close_after {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (port, accepted)
    }

    const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

    fn get(method: &str) -> Request<UpstreamBody> {
        Request::builder()
            .method(method)
            .uri("/x")
            .header("host", "upstream")
            .body(UpstreamBody::empty())
            .unwrap()
    }

    async fn read_all(resp: Response<PooledBody>) -> Bytes {
        resp.into_body().collect().await.unwrap().to_bytes()
    }

    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let (port, accepted) = upstream(OK, false).await;
        let pool = Pool::new("127.0.0.1", port, Duration::from_secs(2));
        for _ in 0..5 {
            let resp = pool.send(get("GET"), Duration::from_secs(5)).await.unwrap();
            assert_eq!(read_all(resp).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
        // Not yet expired: kept.
        pool.evict_expired();
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn idle_connections_expire() {
        let (port, accepted) = upstream(OK, false).await;
        let pool = Pool::new("127.0.0.1", port, Duration::from_secs(2));
        let resp = pool.send(get("GET"), Duration::from_secs(5)).await.unwrap();
        assert_eq!(read_all(resp).await, "ok");
        assert_eq!(pool.idle_count(), 1);

        // The clock jumps past the idle timeout, then runs on (a paused clock would also
        // jump over the connect timeout while a connect waits for the network).
        tokio::time::pause();
        tokio::time::advance(IDLE_TIMEOUT + Duration::from_secs(1)).await;
        tokio::time::resume();
        // An expired connection is not taken even before the reaper runs.
        let resp = pool.send(get("GET"), Duration::from_secs(5)).await.unwrap();
        assert_eq!(read_all(resp).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(pool.idle_count(), 1);

        tokio::time::pause();
        tokio::time::advance(IDLE_TIMEOUT + Duration::from_secs(1)).await;
        pool.evict_expired();
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_body_dropped_halfway_closes_its_connection() {
        let (port, accepted) = upstream(
            "HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\npartial",
            false,
        )
        .await;
        let pool = Pool::new("127.0.0.1", port, Duration::from_secs(2));
        let resp = pool.send(get("GET"), Duration::from_secs(5)).await.unwrap();
        drop(resp);
        assert_eq!(pool.idle_count(), 0);
        let resp = pool.send(get("GET"), Duration::from_secs(5)).await.unwrap();
        drop(resp);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_empty_body_never_polled_still_frees_its_connection() {
        let (port, accepted) = upstream("HTTP/1.1 204 No Content\r\n\r\n", false).await;
        let pool = Pool::new("127.0.0.1", port, Duration::from_secs(2));
        for _ in 0..3 {
            let resp = pool.send(get("GET"), Duration::from_secs(5)).await.unwrap();
            assert_eq!(resp.status(), 204);
            drop(resp);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_not_used_again() {
        let (port, accepted) = upstream(OK, true).await;
        let pool = Pool::new("127.0.0.1", port, Duration::from_secs(2));
        let resp = pool.send(get("GET"), Duration::from_secs(5)).await.unwrap();
        assert_eq!(read_all(resp).await, "ok");
        until("the closed connection to be noticed", || {
            pool.lock().iter().all(|i| i.tx.is_closed())
        })
        .await;
        let resp = pool.send(get("GET"), Duration::from_secs(5)).await.unwrap();
        assert_eq!(read_all(resp).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_connect_hands_the_request_back_unsent() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let pool = Pool::new("127.0.0.1", port, Duration::from_secs(2));
        match pool.send(get("DELETE"), Duration::from_secs(5)).await {
            Err(SendError::Connect { request, .. }) => {
                assert_eq!(request.method(), "DELETE");
                assert_eq!(request.uri(), "/x");
                assert_eq!(request.headers()["host"], "upstream");
            }
            other => panic!(
                "expected a connect error, got {:?}",
                other.map(|r| r.status())
            ),
        }
    }

    #[test]
    fn only_a_connect_timeout_counts_as_a_timeout() {
        let connect = |kind| SendError::Connect {
            addr: "a:1".into(),
            source: io::Error::new(kind, "x"),
            request: Box::new(get("GET")),
        };
        assert!(connect(io::ErrorKind::TimedOut).is_timeout());
        assert!(!connect(io::ErrorKind::ConnectionRefused).is_timeout());
    }
}
