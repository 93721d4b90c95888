//! The response body on its way to the client, as the route's `response_buffering` asks
//! (Kong's default: buffered).
//!
//! Buffered, the upstream is read ahead of the client, so a slow reader does not hold a
//! backend connection (nginx's `proxy_buffering on`): a body of known size up to
//! [`READ_WHOLE_MAX`] is read whole before the head goes out (an upstream failing mid-body is
//! then a clean 502/504, not a cut stream); a larger or unsized one is pumped by its own task
//! up to [`READ_AHEAD`] bytes ahead of the client. Unbuffered, each frame is read from the
//! upstream only when the client took the previous one.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Full};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::body::{BoxError, ReadTimeout};
use super::upstream::PooledBody;
use crate::plugins::log_record::PendingLog;
use crate::plugins::BodySink;

/// Largest body of known size read whole before the response head is sent.
pub const READ_WHOLE_MAX: u64 = 64 * 1024;
/// Most bytes read from the upstream ahead of the client.
pub const READ_AHEAD: usize = 1024 * 1024;

pin_project_lite::pin_project! {
    /// Body type of responses to clients.
    #[project = Projected]
    pub enum ProxyBody {
        /// Streamed from the upstream as the client reads.
        Upstream { #[pin] body: ReadTimeout<PooledBody> },
        /// Complete: generated, or read whole from the upstream.
        Full { body: Full<Bytes> },
        /// Read ahead by a task.
        Pumped { body: Pumped },
        /// Any of the above, with the log phase to run once it has been sent (when it is
        /// dropped: read to the end, or given up by the client).
        Logged { body: Pin<Box<ProxyBody>>, log: Option<Box<PendingLog>> },
        /// Any of the above, copied for a [`BodySink`] as it is sent.
        Teed { body: Pin<Box<ProxyBody>>, tee: Option<Tee> },
    }
}

/// The copy of a body being sent, for a [`BodySink`]. Given up (dropped, the sink never
/// called) past the sink's bound, past [`TEE_BUDGET`] across all copies, or on a failure;
/// handed over at the end of the body.
pub struct Tee {
    sink: Option<Box<dyn BodySink>>,
    parts: Vec<Bytes>,
    len: usize,
}

/// Most bytes all copies in progress hold at once: many slow clients of distinct cacheable
/// answers cannot pin more (past it a copy is given up and that answer is not stored).
pub const TEE_BUDGET: usize = 64 * 1024 * 1024;

/// Bytes held by copies in progress.
static TEE_HELD: AtomicUsize = AtomicUsize::new(0);

impl Tee {
    /// Takes one data frame; false when the copy went past a bound.
    fn take(&mut self, data: &Bytes) -> bool {
        let max = self.sink.as_ref().map_or(0, |s| s.max_bytes());
        if self.len.saturating_add(data.len()) > max {
            return false;
        }
        if TEE_HELD.fetch_add(data.len(), Ordering::Relaxed) + data.len() > TEE_BUDGET {
            TEE_HELD.fetch_sub(data.len(), Ordering::Relaxed);
            return false;
        }
        self.len += data.len();
        if !data.is_empty() {
            self.parts.push(data.clone());
        }
        true
    }

    fn finish(mut self) {
        let parts = std::mem::take(&mut self.parts);
        let body = match parts.len() {
            0 => Bytes::new(),
            1 => parts.into_iter().next().unwrap_or_default(),
            _ => {
                let mut all = Vec::with_capacity(self.len);
                for p in &parts {
                    all.extend_from_slice(p);
                }
                Bytes::from(all)
            }
        };
        if let Some(sink) = self.sink.take() {
            sink.complete(body);
        }
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        TEE_HELD.fetch_sub(self.len, Ordering::Relaxed);
    }
}

impl ProxyBody {
    pub fn full(body: Full<Bytes>) -> ProxyBody {
        ProxyBody::Full { body }
    }

    pub fn streamed(body: ReadTimeout<PooledBody>) -> ProxyBody {
        ProxyBody::Upstream { body }
    }

    /// `body`, copied for `sink` as it is sent.
    pub fn teed(body: ProxyBody, sink: Box<dyn BodySink>) -> ProxyBody {
        let body = Box::pin(body);
        if body.size_hint().lower() > sink.max_bytes() as u64 {
            // Known to be too large: no copy at all.
            return ProxyBody::Teed { body, tee: None };
        }
        let tee = Tee {
            sink: Some(sink),
            parts: Vec::new(),
            len: 0,
        };
        if body.is_end_stream() {
            // Nothing to send (a HEAD answer, an empty body): the client will not poll it.
            tee.finish();
            return ProxyBody::Teed { body, tee: None };
        }
        ProxyBody::Teed {
            body,
            tee: Some(tee),
        }
    }

    /// `body`, counting the bytes sent into `log`, which runs when the body is dropped.
    pub fn logged(body: ProxyBody, log: Box<PendingLog>) -> ProxyBody {
        ProxyBody::Logged {
            body: Box::pin(body),
            log: Some(log),
        }
    }
}

/// What a pump task read, with the read-ahead bytes it holds.
type Pumped_ = (Result<Frame<Bytes>, BoxError>, Option<OwnedSemaphorePermit>);

/// A body read ahead by a task.
pub struct Pumped {
    rx: mpsc::UnboundedReceiver<Pumped_>,
    hint: SizeHint,
    done: bool,
}

/// What [`take_if_ready`] found.
pub enum Ready {
    /// The whole body, at once.
    Done(ProxyBody),
    /// Not all here yet: read on with [`buffered`], from what came already.
    Later(PooledBody, Option<Bytes>),
    Failed(BoxError),
}

/// The usual small response is whole in hyper's read buffer when its head arrives: take it
/// without a task wake-up, a timer or a future (the request path's cost).
pub fn take_if_ready(mut body: PooledBody) -> Ready {
    if body.size_hint().exact().is_none_or(|n| n > READ_WHOLE_MAX) {
        return Ready::Later(body, None);
    }
    if body.is_end_stream() {
        return Ready::Done(ProxyBody::full(Full::new(Bytes::new())));
    }
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match Pin::new(&mut body).poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
            Ok(data) if body.is_end_stream() => Ready::Done(ProxyBody::full(Full::new(data))),
            Ok(data) => Ready::Later(body, Some(data)),
            Err(_) => Ready::Later(body, None),
        },
        Poll::Ready(None) => Ready::Done(ProxyBody::full(Full::new(Bytes::new()))),
        Poll::Ready(Some(Err(e))) => Ready::Failed(e.into()),
        Poll::Pending => Ready::Later(body, None),
    }
}

/// Reads an upstream body ahead of the client, as buffering asks, after `first` (what
/// [`take_if_ready`] took already). An error while reading a body whole is returned (no byte
/// went to the client yet).
pub async fn buffered(
    body: ReadTimeout<PooledBody>,
    first: Option<Bytes>,
) -> Result<ProxyBody, BoxError> {
    let hint = body.size_hint();
    if let Some(n) = hint.exact().filter(|n| *n <= READ_WHOLE_MAX) {
        return read_small(body, n as usize, first)
            .await
            .map(ProxyBody::full);
    }
    debug_assert!(first.is_none(), "only small bodies are started early");
    let (tx, rx) = mpsc::unbounded_channel();
    let room = Arc::new(Semaphore::new(READ_AHEAD));
    tokio::spawn(pump(body, tx, room));
    Ok(ProxyBody::Pumped {
        body: Pumped {
            rx,
            hint,
            done: false,
        },
    })
}

/// Reads a body of `len` bytes whole. The usual case, one frame holding it all, costs no copy
/// and no allocation (a general collect would queue the frames first).
async fn read_small(
    body: ReadTimeout<PooledBody>,
    len: usize,
    mut first: Option<Bytes>,
) -> Result<Full<Bytes>, BoxError> {
    let mut body = std::pin::pin!(body);
    let mut rest: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        match &first {
            None => first = Some(data),
            Some(f) => {
                if rest.is_empty() {
                    rest.reserve(len);
                    rest.extend_from_slice(f);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(Full::new(if rest.is_empty() {
        first.unwrap_or_default()
    } else {
        Bytes::from(rest)
    }))
}

async fn pump(
    body: ReadTimeout<PooledBody>,
    tx: mpsc::UnboundedSender<Pumped_>,
    room: Arc<Semaphore>,
) {
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        let size = frame
            .as_ref()
            .ok()
            .and_then(|f| f.data_ref())
            .map(|d| d.len().clamp(1, READ_AHEAD))
            .unwrap_or(1);
        // Waits while the client is READ_AHEAD behind; fails only if closed, which never is.
        let Ok(permit) = room.clone().acquire_many_owned(size as u32).await else {
            return;
        };
        let failed = frame.is_err();
        if tx.send((frame, Some(permit))).is_err() || failed {
            // The client went away (the body drops, closing the upstream connection if it
            // was not read to the end), or the upstream broke.
            return;
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            Projected::Upstream { body } => body.poll_frame(cx),
            Projected::Full { body } => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(|never| match never {}))),
            Projected::Logged { body, log } => {
                let polled = body.as_mut().poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let (Some(l), Some(d)) = (log.as_mut(), frame.data_ref()) {
                            l.served.body_bytes += d.len() as u64;
                        }
                    }
                    // The end, or a failure: the log phase runs now.
                    Poll::Ready(_) => drop(log.take()),
                    Poll::Pending => {}
                }
                polled
            }
            Projected::Teed { body, tee } => {
                let polled = body.as_mut().poll_frame(cx);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let (Some(t), Some(d)) = (tee.as_mut(), frame.data_ref()) {
                            if !t.take(d) {
                                *tee = None;
                            }
                        }
                        // The client may stop polling once the body says it ended.
                        if body.is_end_stream() {
                            if let Some(t) = tee.take() {
                                t.finish();
                            }
                        }
                    }
                    Poll::Ready(None) => {
                        if let Some(t) = tee.take() {
                            t.finish();
                        }
                    }
                    Poll::Ready(Some(Err(_))) => *tee = None,
                    Poll::Pending => {}
                }
                polled
            }
            Projected::Pumped { body: p } => {
                if p.done {
                    return Poll::Ready(None);
                }
                match p.rx.poll_recv(cx) {
                    Poll::Ready(Some((frame, _permit))) => Poll::Ready(Some(frame)),
                    Poll::Ready(None) => {
                        p.done = true;
                        Poll::Ready(None)
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Upstream { body } => body.is_end_stream(),
            ProxyBody::Full { body } => body.is_end_stream(),
            ProxyBody::Pumped { body } => body.done,
            ProxyBody::Logged { body, .. } => body.is_end_stream(),
            ProxyBody::Teed { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Upstream { body } => body.size_hint(),
            ProxyBody::Full { body } => body.size_hint(),
            ProxyBody::Pumped { body } => body.hint,
            ProxyBody::Logged { body, .. } => body.size_hint(),
            ProxyBody::Teed { body, .. } => body.size_hint(),
        }
    }
}
