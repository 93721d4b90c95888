//! One hardened accept loop for every HTTP listener (proxy, Admin API, echo).
//!
//! Each listener survives garbage and slow clients: a request head must arrive within
//! [`HEADER_READ_TIMEOUT`] and fit in [`MAX_HEAD_BYTES`] (hyper answers 400 to a malformed
//! head and 431 to an oversized one), the number of open connections is capped, and accept
//! errors (e.g. out of file descriptors) back off instead of spinning. On shutdown the loop
//! stops accepting and gives in-flight requests [`DRAIN_TIMEOUT`] to finish. HTTP/1.1
//! connections may be upgraded (WebSocket): the connection's task ends there, and the tunnel
//! belongs to whoever took the upgrade.
//!
//! With [`Tls`], each connection first completes a TLS handshake within
//! [`HANDSHAKE_TIMEOUT`], in its own task. At most [`MAX_HANDSHAKES`] handshakes are in progress
//! at once, and at most the listener's [`Tls::max_per_ip`] from one address: past either, a
//! new connection is closed at once, so peers that never finish cannot hold a slot past the
//! timeout. A failed handshake is
//! reported and the connection dropped.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
pub const MAX_CONNECTIONS: usize = 16 * 1024;
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
pub const MAX_HANDSHAKES: usize = 256;
pub const MAX_HANDSHAKES_PER_IP: usize = 16;

/// A signal that flips to `true` once, when the process should stop.
pub type Shutdown = watch::Receiver<bool>;

/// A connection's ends, worked out once per connection rather than per request.
pub struct Peer {
    /// The client's address.
    pub addr: SocketAddr,
    /// The client's IP as a header value (`X-Real-IP`, `X-Forwarded-For`).
    pub ip_header: HeaderValue,
    /// This end: the listener's address.
    pub local: SocketAddr,
    /// The connection's serial number in this process (nginx's `$connection`).
    pub connection: u64,
    /// Requests made on the connection, the current one included (`$connection_requests`).
    requests: AtomicU64,
    /// Whether the connection is TLS (the request's scheme is https).
    pub tls: bool,
    /// The server name the client sent in its TLS handshake (lower-case), if any.
    pub sni: Option<Arc<str>>,
}

/// Serial numbers of accepted connections.
static CONNECTIONS: AtomicU64 = AtomicU64::new(0);

impl Peer {
    pub fn new(addr: SocketAddr, local: SocketAddr) -> Peer {
        let ip_header = HeaderValue::from_str(&addr.ip().to_string())
            .expect("an IP address is a valid header value");
        Peer {
            addr,
            ip_header,
            local,
            connection: CONNECTIONS.fetch_add(1, Ordering::Relaxed) + 1,
            requests: AtomicU64::new(0),
            tls: false,
            sni: None,
        }
    }

    /// Counts a new request on the connection.
    fn next_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests made on the connection so far (as of this copy).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// A copy taken for one request keeps that request's number.
impl Clone for Peer {
    fn clone(&self) -> Peer {
        Peer {
            addr: self.addr,
            ip_header: self.ip_header.clone(),
            local: self.local,
            connection: self.connection,
            requests: AtomicU64::new(self.requests()),
            tls: self.tls,
            sni: self.sni.clone(),
        }
    }
}

/// Told of every failed handshake: the peer and the reason.
pub type OnHandshakeFailure = Arc<dyn Fn(SocketAddr, &str) + Send + Sync>;

/// TLS in front of a listener.
pub struct Tls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub on_failure: OnHandshakeFailure,
    /// Handshakes in progress from one address, at most. The cluster plane keeps this low
    /// ([`MAX_HANDSHAKES_PER_IP`]: peers are few); client listeners allow every slot to one
    /// address, since a load balancer or a NAT brings many clients from one.
    pub max_per_ip: usize,
}

/// Server-side HTTP/2 limits: bounded streams, header list and frames, so one client cannot
/// hold unbounded state.
pub const H2_MAX_CONCURRENT_STREAMS: u32 = 128;

/// Handshakes in progress, in all and per source address.
#[derive(Default)]
struct Handshakes {
    by_ip: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One handshake slot, given back on drop.
struct HandshakeSlot {
    book: Arc<Handshakes>,
    ip: std::net::IpAddr,
    _global: tokio::sync::OwnedSemaphorePermit,
}

impl Handshakes {
    fn enter(
        self: &Arc<Self>,
        ip: std::net::IpAddr,
        global: &Arc<Semaphore>,
        max_per_ip: usize,
    ) -> Option<HandshakeSlot> {
        let permit = global.clone().try_acquire_owned().ok()?;
        let mut m = self.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max_per_ip {
            return None;
        }
        *n += 1;
        Some(HandshakeSlot {
            book: self.clone(),
            ip,
            _global: permit,
        })
    }
}

impl Drop for HandshakeSlot {
    fn drop(&mut self) {
        let mut m = self.book.by_ip.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Serves `handler` on `listener` (behind `tls` if given) until `shutdown` fires, then drains.
pub async fn serve<H, F, B>(
    listener: TcpListener,
    handler: H,
    mut shutdown: Shutdown,
    what: &'static str,
    accepted: Option<prometheus::IntCounter>,
    tls: Option<Tls>,
) where
    H: Fn(Request<Incoming>, &Peer) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let handshake_slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let handshakes = Arc::new(Handshakes::default());
    loop {
        let permit = tokio::select! {
            _ = shutdown.changed() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.changed() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(listener = what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        if let Some(c) = &accepted {
            c.inc();
        }
        let h = handler.clone();
        let local = stream.local_addr().unwrap_or(peer);
        let service = move |client: Peer, activity: Option<Arc<Activity>>| {
            hyper::service::service_fn(move |req| {
                client.next_request();
                let activity = activity.clone();
                if let Some(a) = &activity {
                    a.begin();
                }
                // `map`, not an `async` wrapper: the request's future is moved once less.
                futures_util::FutureExt::map(h(req, &client), move |r| {
                    if let Some(a) = activity {
                        a.end();
                    }
                    Ok::<_, Infallible>(r)
                })
            })
        };
        let stop = shutdown.clone();
        match &tls {
            None => {
                let conn = http1_conn(stream, service(Peer::new(peer, local), None));
                tokio::spawn(async move {
                    if let Err(e) = until_shutdown(conn, stop, None).await {
                        tracing::debug!(listener = what, %peer, error = %e, "connection ended with error");
                    }
                    drop(permit);
                });
            }
            Some(tls) => {
                let (acceptor, on_failure) = (tls.acceptor.clone(), tls.on_failure.clone());
                let Some(slot) = handshakes.enter(peer.ip(), &handshake_slots, tls.max_per_ip)
                else {
                    on_failure(peer, "too many TLS handshakes in progress");
                    continue;
                };
                tokio::spawn(async move {
                    let hs = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    let stream = match hs.await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => return on_failure(peer, &e.to_string()),
                        Err(_) => return on_failure(peer, "TLS handshake timed out"),
                    };
                    drop(slot);
                    let session = stream.get_ref().1;
                    let h2 = session.alpn_protocol() == Some(b"h2");
                    let mut client = Peer::new(peer, local);
                    client.tls = true;
                    client.sni = session
                        .server_name()
                        .map(|n| Arc::from(n.to_ascii_lowercase().as_str()));
                    let done = if h2 {
                        let activity = Arc::new(Activity::default());
                        let conn = h2_conn(stream, service(client, Some(activity.clone())));
                        until_shutdown(conn, stop, Some(activity)).await
                    } else {
                        until_shutdown(http1_conn(stream, service(client, None)), stop, None).await
                    };
                    if let Err(e) = done {
                        tracing::debug!(listener = what, %peer, error = %e, "connection ended with error");
                    }
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    drop(tls);
    // Every connection task holds a permit until it ends: all permits back means drained.
    tokio::select! {
        _ = permits.acquire_many(MAX_CONNECTIONS as u32) => tracing::info!(listener = what, "drained"),
        _ = tokio::time::sleep(DRAIN_TIMEOUT) => tracing::warn!(listener = what, "drain timed out"),
    }
}

/// A connection that can stop taking new requests and finish the ones in flight.
trait Graceful: std::future::Future<Output = Result<(), hyper::Error>> {
    fn stop(self: std::pin::Pin<&mut Self>);
}

impl<I, S, B> Graceful for http1::UpgradeableConnection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn stop(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B, E> Graceful for hyper::server::conn::http2::Connection<I, S, E>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn stop(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// An HTTP/2 connection's requests in progress and when the last one started or ended: hyper
/// has no idle or first-request timeout for HTTP/2, so [`until_shutdown`] keeps them.
#[derive(Default)]
pub struct Activity {
    active: AtomicU64,
    /// Milliseconds since [`Activity::epoch`] of the last start or end.
    last_ms: AtomicU64,
    epoch: std::sync::OnceLock<tokio::time::Instant>,
}

impl Activity {
    fn now_ms(&self) -> u64 {
        let epoch = self.epoch.get_or_init(tokio::time::Instant::now);
        epoch.elapsed().as_millis() as u64
    }
    fn begin(&self) {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }
    fn end(&self) {
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }
    /// How long nothing has been in progress, if nothing is.
    fn idle_for(&self) -> Option<Duration> {
        (self.active.load(Ordering::Relaxed) == 0).then(|| {
            Duration::from_millis(
                self.now_ms()
                    .saturating_sub(self.last_ms.load(Ordering::Relaxed)),
            )
        })
    }
}

/// An HTTP/2 connection with no request in progress is closed (GOAWAY) after this long
/// (nginx's `keepalive_timeout`); one that never sends a request, after [`HEADER_READ_TIMEOUT`].
pub const H2_IDLE_TIMEOUT: Duration = Duration::from_secs(75);

/// Serves `conn` to its end; when `shutdown` fires, or (HTTP/2, with `activity`) the
/// connection sits idle too long, it stops taking requests and finishes those in flight (an
/// HTTP/2 GOAWAY, an HTTP/1.1 `Connection: close`).
async fn until_shutdown<C: Graceful>(
    conn: C,
    mut shutdown: Shutdown,
    activity: Option<Arc<Activity>>,
) -> Result<(), hyper::Error> {
    let mut conn = std::pin::pin!(conn);
    let stopping = async move {
        // The guard `wait_for` returns is dropped here, not held across the drain.
        let _ = shutdown.wait_for(|stop| *stop).await.is_ok();
    };
    let idle = async move {
        let Some(a) = activity else {
            return std::future::pending().await;
        };
        a.now_ms();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let limit = if a.last_ms.load(Ordering::Relaxed) == 0
                && a.active.load(Ordering::Relaxed) == 0
            {
                HEADER_READ_TIMEOUT
            } else {
                H2_IDLE_TIMEOUT
            };
            if a.idle_for().is_some_and(|d| d >= limit) {
                return;
            }
        }
    };
    tokio::select! {
        r = conn.as_mut() => r,
        _ = stopping => {
            conn.as_mut().stop();
            conn.await
        }
        _ = idle => {
            conn.as_mut().stop();
            conn.await
        }
    }
}

/// One HTTP/2 connection (negotiated with ALPN) with the listener's limits.
fn h2_conn<S, Svc, B>(
    stream: S,
    svc: Svc,
) -> hyper::server::conn::http2::Connection<TokioIo<S>, Svc, hyper_util::rt::TokioExecutor>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::HttpService<Incoming, ResBody = B>,
    Svc::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_CONCURRENT_STREAMS)
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .keep_alive_interval(Some(Duration::from_secs(60)))
        .serve_connection(TokioIo::new(stream), svc)
}

/// One HTTP/1.1 connection with the listener's limits; it may be upgraded (WebSocket).
fn http1_conn<S, Svc, B>(
    stream: S,
    svc: Svc,
) -> hyper::server::conn::http1::UpgradeableConnection<TokioIo<S>, Svc>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: hyper::service::HttpService<Incoming, ResBody = B>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades()
}
