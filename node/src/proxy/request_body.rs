//! The request body on its way upstream, as the route's `request_buffering` asks (Kong's
//! default: buffered).
//!
//! Buffered, the body is read whole from the client before any upstream connection is taken:
//! a client trickling its body holds only its own connection, never a backend's (nginx's
//! `proxy_request_buffering on`). Each read must come within [`CLIENT_BODY_TIMEOUT`] of the
//! previous one (nginx's `client_body_timeout`: 408 past it). Up to [`MEMORY_PER_BODY`] stays in
//! memory while all buffered bodies together hold less than [`MEMORY_BUDGET`]; beyond either,
//! the body spills to an unlinked temporary file in the data directory. A body the client
//! breaks (malformed chunked encoding, a connection cut short) is the client's error: 400.
//!
//! Streamed (`request_buffering: false`), frames go upstream as they arrive, and a client-side
//! failure is still told apart from an upstream one.

use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use super::body::BoxError;

/// Longest wait between two reads of a request body (nginx's default `client_body_timeout`).
pub const CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest part of one buffered body held in memory.
pub const MEMORY_PER_BODY: usize = 1024 * 1024;
/// Most memory all buffered bodies hold at once; past it, bodies spill to disk sooner.
pub const MEMORY_BUDGET: usize = 256 * 1024 * 1024;

/// Bytes of buffered bodies in memory right now, across all requests.
static IN_MEMORY: AtomicUsize = AtomicUsize::new(0);

/// Why a body could not be read from the client.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Nothing for [`CLIENT_BODY_TIMEOUT`]: 408.
    #[error("client sent nothing for {0:?}")]
    Timeout(Duration),
    /// Malformed framing or a connection cut short: 400.
    #[error("malformed request body: {0}")]
    Malformed(hyper::Error),
    /// The spill file could not be written: 500.
    #[error("cannot buffer the request body: {0}")]
    Io(#[from] std::io::Error),
    /// Longer than a plugin allows (request-size-limiting): its answer.
    #[error("request body over {0} bytes")]
    TooLarge(u64),
}

/// How a streamed client body fared ([`Streamed`]'s flag).
pub const CLIENT_OK: u8 = 0;
/// The client broke its body (malformed chunks, cut short): 400.
pub const CLIENT_BROKE: u8 = 1;
/// The body ran past a plugin's limit and was cut off there.
pub const CLIENT_TOO_LARGE: u8 = 2;

/// The body passed the limit a plugin set.
#[derive(Debug, thiserror::Error)]
#[error("request body over the size limit")]
pub struct OverLimit;

/// A body going upstream.
pub enum UpstreamBody {
    /// Complete, in memory (empty included).
    Full(Full<Bytes>),
    /// Complete, in a spill file.
    Spilled(Spilled),
    /// The client's body as it arrives.
    Streamed(Streamed),
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UpstreamBody::Full(_) => "UpstreamBody::Full",
            UpstreamBody::Spilled(_) => "UpstreamBody::Spilled",
            UpstreamBody::Streamed(_) => "UpstreamBody::Streamed",
        })
    }
}

impl UpstreamBody {
    pub fn empty() -> UpstreamBody {
        UpstreamBody::Full(Full::new(Bytes::new()))
    }

    pub fn bytes(b: Bytes) -> UpstreamBody {
        UpstreamBody::Full(Full::new(b))
    }
}

/// A spilled body, read back in chunks; the file is already unlinked and goes with it.
pub struct Spilled {
    stream: ReaderStream<tokio::fs::File>,
    remaining: u64,
}

/// The client's body, noting whether it failed on the client's side, and cut off past a
/// limit (counted as it streams, so a chunked body cannot slip past it).
pub struct Streamed {
    inner: Incoming,
    client_failed: Arc<AtomicU8>,
    limit: u64,
    seen: u64,
}

impl Streamed {
    /// Wraps `inner`; the flag turns [`CLIENT_BROKE`] if the client breaks the body, and
    /// [`CLIENT_TOO_LARGE`] once more than `limit` bytes came.
    pub fn new(inner: Incoming, limit: Option<u64>) -> (Streamed, Arc<AtomicU8>) {
        let flag = Arc::new(AtomicU8::new(CLIENT_OK));
        (
            Streamed {
                inner,
                client_failed: flag.clone(),
                limit: limit.unwrap_or(u64::MAX),
                seen: 0,
            },
            flag,
        )
    }
}

/// Memory taken from [`MEMORY_BUDGET`], given back when the body goes.
struct Reserved(usize);

impl Reserved {
    fn try_grow(&mut self, n: usize) -> bool {
        let before = IN_MEMORY.fetch_add(n, Ordering::Relaxed);
        if before + n > MEMORY_BUDGET {
            IN_MEMORY.fetch_sub(n, Ordering::Relaxed);
            return false;
        }
        self.0 += n;
        true
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        IN_MEMORY.fetch_sub(self.0, Ordering::Relaxed);
    }
}

/// Reads `body` whole: the body to send upstream and its length.
/// Past `limit` bytes it stops with [`ReadError::TooLarge`].
pub async fn read_whole(
    mut body: Incoming,
    spill_dir: &Path,
    timeout: Duration,
    limit: Option<u64>,
) -> Result<(UpstreamBody, u64), ReadError> {
    let mut memory: Vec<Bytes> = Vec::new();
    let mut reserved = Reserved(0);
    let mut file: Option<tokio::fs::File> = None;
    let mut len: u64 = 0;
    loop {
        let frame = match tokio::time::timeout(timeout, body.frame()).await {
            Err(_) => return Err(ReadError::Timeout(timeout)),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(ReadError::Malformed(e)),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            // Trailers: nothing to forward in a buffered HTTP/1.1 body.
            continue;
        };
        len += data.len() as u64;
        if let Some(max) = limit.filter(|max| len > *max) {
            return Err(ReadError::TooLarge(max));
        }
        if let Some(f) = file.as_mut() {
            f.write_all(&data).await?;
            continue;
        }
        if len as usize <= MEMORY_PER_BODY && reserved.try_grow(data.len()) {
            memory.push(data);
            continue;
        }
        let std_file = tempfile::tempfile_in(spill_dir)?;
        let mut f = tokio::fs::File::from_std(std_file);
        for chunk in memory.drain(..) {
            f.write_all(&chunk).await?;
        }
        f.write_all(&data).await?;
        drop(std::mem::replace(&mut reserved, Reserved(0)));
        file = Some(f);
    }
    if let Some(mut f) = file {
        f.flush().await?;
        use tokio::io::AsyncSeekExt;
        f.seek(std::io::SeekFrom::Start(0)).await?;
        let stream = ReaderStream::with_capacity(f, 64 * 1024);
        return Ok((
            UpstreamBody::Spilled(Spilled {
                stream,
                remaining: len,
            }),
            len,
        ));
    }
    let bytes = match memory.len() {
        0 => Bytes::new(),
        1 => memory.pop().expect("one chunk"),
        _ => {
            let mut all = Vec::with_capacity(len as usize);
            for c in &memory {
                all.extend_from_slice(c);
            }
            Bytes::from(all)
        }
    };
    // The body is about to be sent and dropped: its memory is not held while it waits.
    drop(reserved);
    Ok((UpstreamBody::bytes(bytes), len))
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Full(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
            UpstreamBody::Spilled(s) => match Pin::new(&mut s.stream).poll_next(cx) {
                Poll::Ready(Some(Ok(b))) => {
                    s.remaining = s.remaining.saturating_sub(b.len() as u64);
                    Poll::Ready(Some(Ok(Frame::data(b))))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            UpstreamBody::Streamed(s) => match Pin::new(&mut s.inner).poll_frame(cx) {
                Poll::Ready(Some(Err(e))) => {
                    s.client_failed.store(CLIENT_BROKE, Ordering::Relaxed);
                    Poll::Ready(Some(Err(e.into())))
                }
                Poll::Ready(Some(Ok(f))) => {
                    if let Some(d) = f.data_ref() {
                        s.seen += d.len() as u64;
                        if s.seen > s.limit {
                            s.client_failed.store(CLIENT_TOO_LARGE, Ordering::Relaxed);
                            return Poll::Ready(Some(Err(OverLimit.into())));
                        }
                    }
                    Poll::Ready(Some(Ok(f)))
                }
                other => other.map(|f| f.map(|r| r.map_err(Into::into))),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Full(b) => b.is_end_stream(),
            UpstreamBody::Spilled(s) => s.remaining == 0,
            UpstreamBody::Streamed(s) => s.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Full(b) => b.size_hint(),
            UpstreamBody::Spilled(s) => SizeHint::with_exact(s.remaining),
            UpstreamBody::Streamed(s) => s.inner.size_hint(),
        }
    }
}
