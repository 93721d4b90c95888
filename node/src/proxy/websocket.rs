//! WebSocket (and any HTTP/1.1 `Upgrade`) through the proxy.
//!
//! The handshake is an ordinary request up to the upstream: routed, authenticated and
//! rate-limited by the route's plugins like any other. It goes to the upstream on a
//! connection of its own (never a pooled one: after a `101` it is no longer HTTP), with the
//! client's `Upgrade` header and `Connection: upgrade` put back. If the upstream answers `101
//! Switching Protocols`, the client gets that answer and the two connections are joined byte
//! for byte until either side closes, nothing passes for the service's `read_timeout` (nginx
//! closes idle WebSocket connections at `proxy_read_timeout` too), or the tunnel has lived
//! for the node's `--websocket-max-lifetime`. Any other answer is passed back as a normal
//! response.

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::request::Parts;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest chunk moved at once in each direction.
const CHUNK: usize = 16 * 1024;

/// The client's `Upgrade` value when the request asks for a WebSocket: an HTTP/1.1 request
/// whose `Connection` lists `upgrade` and whose `Upgrade` is `websocket`. Any other upgrade
/// (`h2c`, a custom protocol) is not tunnelled, as Kong: its headers are dropped with the
/// other hop-by-hop ones and the request proxied as a plain one, so nothing can ride a
/// tunnel past routing and plugins.
pub fn requested(parts: &Parts) -> Option<HeaderValue> {
    if parts.version != http::Version::HTTP_11 {
        return None;
    }
    let upgrade = parts
        .headers
        .get(header::UPGRADE)
        .filter(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"))?;
    let asks = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| upgrade.clone())
}

/// Puts the upgrade request's hop-by-hop headers back for the upstream.
pub fn restore(h: &mut http::HeaderMap, upgrade: HeaderValue) {
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, upgrade);
}

/// Joins the client's and the upstream's upgraded connections, in its own task, which holds
/// `slot` (tunnels are counted and bounded) and ends when `shutdown` fires.
pub fn spawn_tunnel(
    client: OnUpgrade,
    upstream: OnUpgrade,
    idle: Duration,
    lifetime: Duration,
    slot: tokio::sync::OwnedSemaphorePermit,
    mut shutdown: Option<crate::serve::Shutdown>,
) {
    tokio::spawn(async move {
        let _slot = slot;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade did not complete");
                return;
            }
        };
        let pumping = pump(TokioIo::new(client), TokioIo::new(upstream), idle, lifetime);
        let stopping = async {
            match shutdown.as_mut() {
                Some(s) => {
                    let _ = s.wait_for(|stop| *stop).await.is_ok();
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            end = pumping => tracing::debug!(?end, "tunnel closed"),
            _ = stopping => tracing::debug!("tunnel closed: shutting down"),
        }
    });
}

/// Why a tunnel ended.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    Closed,
    Idle,
    Lifetime,
    Error,
}

/// Moves bytes both ways until one side closes or a limit is reached. Reads are raced (both
/// directions wait at once); a write is finished before reading more from the same side, so
/// a slow reader slows its writer instead of buffering without bound, and a write that cannot
/// finish within the idle time (a peer that stopped reading) ends the tunnel too.
pub async fn pump<A, B>(mut a: A, mut b: B, idle: Duration, lifetime: Duration) -> End
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = tokio::time::Instant::now() + lifetime;
    let (mut from_a, mut from_b) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let end = loop {
        tokio::select! {
            r = a.read(&mut from_a) => match r {
                Ok(0) => break End::Closed,
                Ok(n) => if let Err(e) = write(&mut b, &from_a[..n], idle, deadline).await { break e },
                Err(_) => break End::Error,
            },
            r = b.read(&mut from_b) => match r {
                Ok(0) => break End::Closed,
                Ok(n) => if let Err(e) = write(&mut a, &from_b[..n], idle, deadline).await { break e },
                Err(_) => break End::Error,
            },
            _ = tokio::time::sleep(idle) => break End::Idle,
            _ = tokio::time::sleep_until(deadline) => break End::Lifetime,
        }
    };
    let _ = a.shutdown().await;
    let _ = b.shutdown().await;
    end
}

/// Writes `buf` whole within the idle time and before the tunnel's end.
async fn write<W: AsyncWrite + Unpin>(
    w: &mut W,
    buf: &[u8],
    idle: Duration,
    deadline: tokio::time::Instant,
) -> Result<(), End> {
    let by = deadline.min(tokio::time::Instant::now() + idle);
    match tokio::time::timeout_at(by, w.write_all(buf)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Error),
        Err(_) if by == deadline => Err(End::Lifetime),
        Err(_) => Err(End::Idle),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bytes_pass_both_ways_and_idle_tunnels_close() {
        let (mut client, a) = tokio::io::duplex(64);
        let (b, mut server) = tokio::io::duplex(64);
        let t = tokio::spawn(pump(
            a,
            b,
            Duration::from_secs(60),
            Duration::from_secs(3600),
        ));
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        server.write_all(b"pong").await.unwrap();
        client.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        // Nothing for a minute: closed.
        assert_eq!(t.await.unwrap(), End::Idle);
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_tunnel_still_ends_at_its_lifetime() {
        let (mut client, a) = tokio::io::duplex(64);
        let (b, mut server) = tokio::io::duplex(64);
        let t = tokio::spawn(pump(
            a,
            b,
            Duration::from_secs(60),
            Duration::from_secs(300),
        ));
        let chatter = tokio::spawn(async move {
            let mut buf = [0u8; 1];
            for _ in 0..1000 {
                if client.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            let _ = client.read(&mut buf).await;
        });
        let drain = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while server.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        assert_eq!(t.await.unwrap(), End::Lifetime);
        chatter.abort();
        drain.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_ends_the_tunnel_at_the_idle_time() {
        // The server side never reads: the client's bytes fill its 64-byte pipe.
        let (mut client, a) = tokio::io::duplex(64);
        let (b, _server) = tokio::io::duplex(64);
        let t = tokio::spawn(pump(
            a,
            b,
            Duration::from_secs(60),
            Duration::from_secs(3600),
        ));
        let feed = tokio::spawn(async move {
            loop {
                if client.write_all(&[7u8; 1024]).await.is_err() {
                    break;
                }
            }
        });
        assert_eq!(t.await.unwrap(), End::Idle);
        feed.abort();
    }
}
