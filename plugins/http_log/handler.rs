//! `http-log`: sends each request's log record ([`super::log_record`]) to an HTTP endpoint
//! through Kong's queue (Kong 3.9.3's `kong/plugins/http-log/handler.lua` and
//! `kong/tools/queue.lua`).
//!
//! The log phase only appends the record to a bounded queue; a task per queue sends it, so a
//! slow or dead endpoint never holds a request. As Kong:
//! - instances with the same endpoint settings share a queue (`make_queue_name`; here the
//!   queue parameters and headers are part of the key too, so a changed config gets its own);
//! - a batch starts with the oldest entry and takes more, up to `max_batch_size`, for at most
//!   `max_coalescing_delay` seconds; one entry is sent as the JSON object, more as an array;
//! - a failed batch (no answer, or a status of 300 or more) is retried after
//!   `initial_retry_delay`, doubled each time up to `max_retry_delay`, until `max_retry_time`
//!   has passed, then dropped;
//! - a queue holding `max_entries` entries (or `max_bytes` bytes) drops its oldest to take a
//!   new one. Dropped entries are counted in
//!   `tollgate_log_entries_dropped_total{plugin="http-log"}` and warned about at most once a
//!   minute per queue;
//! - the request carries `Content-Type`, `Content-Length`, basic authentication from the
//!   URL's user info, then the configured headers (which never override those), to the
//!   URL's path (its query is not sent, as Kong's `fmt("%s://%s:%d%s")` drops it). HTTPS
//!   endpoints are not verified (`ssl_verify = false`).
//!
//! Differences: `concurrency_limit: -1` sends each entry on its own task, at most
//! `max_entries` at once (Kong: unbounded timers); idle connections to the endpoint are kept
//! for the proxy pool's idle time, not `keepalive`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::{Bytes, BytesMut};
use http::{header, HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Limited};
use tokio::sync::{Notify, Semaphore};
use tollgate_config::entity::Plugin as PluginEntity;
use tollgate_config::plugins::http_log::{parse_endpoint, HttpLogConfig, QueueConfig, SCHEMA};
use tollgate_config::plugins::custom_fields;
use uuid::Uuid;

use super::log_record::Served;
use super::{Deps, Handler, Instance, Plugin};
use crate::metrics::Metrics;
use crate::proxy::upstream::{Pool, Secure};
use crate::snapshot::UpstreamBody;
use crate::tls::client::UpstreamTls;

pub const HANDLER: Handler = Handler {
    schema: &SCHEMA,
    build,
};

/// Most bytes of an endpoint's error answer kept for the log.
const ERROR_BODY_MAX: usize = 4096;
/// Least time between two warnings of one queue.
const WARNING_INTERVAL: Duration = Duration::from_secs(60);
/// How often an idle queue's task checks whether its queue is still used.
const IDLE_CHECK: Duration = Duration::from_secs(5);
/// Kong's `COALESCE_MIN_TIME`: less coalescing time left than this, the batch goes.
const COALESCE_MIN: Duration = Duration::from_millis(50);

fn build(p: &PluginEntity, deps: &Deps) -> Option<Instance> {
    let cfg = HttpLogConfig::parse(&p.config.0)?;
    let queue = queue(&cfg, &deps.metrics)?;
    let custom = custom_fields::parse(&cfg.custom_fields_by_lua).ok()?;
    Some(Arc::new(HttpLog {
        id: p.id,
        queue,
        custom,
    }))
}

pub struct HttpLog {
    id: Uuid,
    queue: Arc<Queue>,
    custom: Vec<custom_fields::CustomField>,
}

/// Where and how batches are sent.
struct Sender {
    pool: Arc<Pool>,
    tls: Option<Arc<UpstreamTls>>,
    host: String,
    port: u16,
    method: Method,
    uri: http::Uri,
    /// Host, Content-Type, Authorization and the configured headers.
    headers: http::HeaderMap,
    timeout: Duration,
}

struct Entries {
    entries: VecDeque<Bytes>,
    bytes: usize,
    warned: Option<Instant>,
}

/// One queue and what its task needs.
pub struct Queue {
    name: String,
    params: QueueConfig,
    state: Mutex<Entries>,
    notify: Arc<Notify>,
    started: AtomicBool,
    sender: Sender,
    metrics: Arc<Metrics>,
    /// `concurrency_limit: -1`: sends in flight.
    unqueued: Arc<Semaphore>,
}

/// Queues by key, so instances with the same settings share one.
fn queues() -> &'static Mutex<HashMap<String, Weak<Queue>>> {
    static Q: std::sync::OnceLock<Mutex<HashMap<String, Weak<Queue>>>> =
        std::sync::OnceLock::new();
    Q.get_or_init(Default::default)
}

/// `text` with the user and password of any `scheme://user:pass@host` in it removed.
fn without_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let authority_end = tail.find(['/', '?', '#', ' ', '|']).unwrap_or(tail.len());
        match tail[..authority_end].rfind('@') {
            Some(at) => rest = &tail[at + 1..],
            None => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

fn queue(cfg: &HttpLogConfig, metrics: &Arc<Metrics>) -> Option<Arc<Queue>> {
    let params = cfg.queue_params();
    let key = format!(
        "{}|{}|{}",
        cfg.queue_name(),
        serde_json::to_string(&params).ok()?,
        serde_json::to_string(&cfg.headers).ok()?
    );
    let mut all = queues().lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|_, q| q.strong_count() > 0);
    if let Some(q) = all.get(&key).and_then(Weak::upgrade) {
        return Some(q);
    }
    let e = parse_endpoint(&cfg.http_endpoint).ok()?;
    let timeout = Duration::from_millis(cfg.timeout.clamp(1.0, 2f64.powi(31)) as u64);
    let default_port = if e.https { 443 } else { 80 };
    let host_header = match (e.host.contains(':'), e.port == default_port) {
        (true, true) => format!("[{}]", e.host),
        (true, false) => format!("[{}]:{}", e.host, e.port),
        (false, true) => e.host.clone(),
        (false, false) => format!("{}:{}", e.host, e.port),
    };
    let mut headers = http::HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_str(&host_header).ok()?);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&cfg.content_type).ok()?,
    );
    if let Some(u) = &e.userinfo {
        let b64 = base64::engine::general_purpose::STANDARD.encode(u);
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {b64}")).ok()?,
        );
    }
    for (k, v) in cfg.headers.iter().flatten() {
        let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_str(v))
        else {
            continue;
        };
        if !headers.contains_key(&k) {
            headers.insert(k, v);
        }
    }
    let tls = e.https.then(|| {
        Arc::new(UpstreamTls {
            connector: crate::tls::client::probe_connector(false),
            // Unique enough: this pool is the queue's own.
            id: u64::MAX,
        })
    });
    let q = Arc::new(Queue {
        // Only for logs: without the endpoint's credentials.
        name: without_userinfo(&cfg.queue_name()),
        unqueued: Arc::new(Semaphore::new(params.max_entries.max(1) as usize)),
        params,
        state: Mutex::new(Entries {
            entries: VecDeque::new(),
            bytes: 0,
            warned: None,
        }),
        notify: Arc::new(Notify::new()),
        started: AtomicBool::new(false),
        sender: Sender {
            pool: Pool::new(&e.host, e.port, timeout),
            tls,
            host: e.host.clone(),
            port: e.port,
            method: Method::from_bytes(cfg.method.as_bytes()).ok()?,
            uri: e.path.parse().ok()?,
            headers,
            timeout,
        },
        metrics: metrics.clone(),
    });
    all.insert(key, Arc::downgrade(&q));
    Some(q)
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dropped(&self, n: u64) {
        self.metrics
            .log_entries_dropped
            .with_label_values(&["http-log"])
            .inc_by(n);
    }

    /// Appends an entry, dropping the oldest when full (Kong's `enqueue`), and makes sure the
    /// queue's task runs.
    pub fn enqueue(self: &Arc<Self>, entry: Bytes) {
        if self.params.concurrency_limit == -1 {
            return self.send_alone(entry);
        }
        let max_entries = self.params.max_entries.max(1) as usize;
        let max_bytes = self.params.max_bytes.map(|b| b.max(0) as usize);
        if max_bytes.is_some_and(|m| entry.len() > m) {
            tracing::error!(queue = %self.name, "http-log: entry longer ({} bytes) than the queue's max_bytes", entry.len());
            self.dropped(1);
            return;
        }
        let mut dropped = 0u64;
        {
            let mut st = self.lock();
            while st.entries.len() >= max_entries
                || max_bytes.is_some_and(|m| st.bytes + entry.len() > m)
            {
                match st.entries.pop_front() {
                    Some(old) => {
                        st.bytes -= old.len();
                        dropped += 1;
                    }
                    None => break,
                }
            }
            if dropped > 0 && st.warned.is_none_or(|t| t.elapsed() >= WARNING_INTERVAL) {
                st.warned = Some(Instant::now());
                tracing::warn!(queue = %self.name, "http-log: queue full, dropping old entries until processing is successful again");
            }
            st.bytes += entry.len();
            st.entries.push_back(entry);
        }
        if dropped > 0 {
            self.dropped(dropped);
        }
        self.notify.notify_one();
        self.start();
    }

    /// Starts the queue's task, once, on the runtime the log phase runs on.
    fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(h) => {
                h.spawn(run(Arc::downgrade(self), self.notify.clone()));
            }
            Err(_) => self.started.store(false, Ordering::Release),
        }
    }

    /// `concurrency_limit: -1`: each entry is sent on its own task.
    fn send_alone(self: &Arc<Self>, entry: Bytes) {
        let Ok(permit) = self.unqueued.clone().try_acquire_owned() else {
            self.dropped(1);
            return;
        };
        let Ok(h) = tokio::runtime::Handle::try_current() else {
            self.dropped(1);
            return;
        };
        let q = self.clone();
        h.spawn(async move {
            q.handle(vec![entry]).await;
            drop(permit);
        });
    }

    /// Takes the next batch: the oldest entry, then more as they come, up to
    /// `max_batch_size`, within `max_coalescing_delay` of the first (Kong's `process_once`).
    async fn next_batch(&self) -> Vec<Bytes> {
        let max = self.params.max_batch_size.max(1) as usize;
        if max > 1 {
            let deadline = Instant::now()
                + Duration::from_secs_f64(self.params.max_coalescing_delay.clamp(0.0, 3600.0));
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if self.lock().entries.len() >= max || left < COALESCE_MIN {
                    break;
                }
                let _ = tokio::time::timeout(left, self.notify.notified()).await;
            }
        }
        let mut st = self.lock();
        let n = st.entries.len().min(max);
        let batch: Vec<Bytes> = st.entries.drain(..n).collect();
        st.bytes -= batch.iter().map(Bytes::len).sum::<usize>();
        batch
    }

    /// Sends a batch, retrying as Kong's `handle` does.
    async fn handle(&self, batch: Vec<Bytes>) {
        let start = Instant::now();
        let mut retries = 0i32;
        loop {
            match self.send(&batch).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(queue = %self.name, error = %e, "http-log: handler could not process entries");
                }
            }
            if start.elapsed().as_secs_f64() > self.params.max_retry_time {
                tracing::error!(queue = %self.name, "http-log: could not send entries due to max_retry_time exceeded. {} queue entries were lost", batch.len());
                self.dropped(batch.len() as u64);
                return;
            }
            let delay = (2f64.powi(retries) * self.params.initial_retry_delay)
                .min(self.params.max_retry_delay)
                .clamp(0.0, 1e6);
            tokio::time::sleep(Duration::from_secs_f64(delay)).await;
            retries = retries.saturating_add(1);
        }
    }

    /// One request to the endpoint (Kong's `send_entries`).
    async fn send(&self, batch: &[Bytes]) -> Result<(), String> {
        let s = &self.sender;
        let body = if self.params.max_batch_size <= 1 && batch.len() == 1 {
            batch[0].clone()
        } else {
            let mut b = BytesMut::with_capacity(batch.iter().map(|e| e.len() + 1).sum::<usize>() + 1);
            b.extend_from_slice(b"[");
            for (i, e) in batch.iter().enumerate() {
                if i > 0 {
                    b.extend_from_slice(b",");
                }
                b.extend_from_slice(e);
            }
            b.extend_from_slice(b"]");
            b.freeze()
        };
        let mut req = Request::new(UpstreamBody::bytes(body.clone()));
        *req.method_mut() = s.method.clone();
        *req.uri_mut() = s.uri.clone();
        *req.headers_mut() = s.headers.clone();
        req.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let secure = s.tls.as_ref().map(|tls| Secure {
            tls,
            sni: s.host.as_str(),
        });
        let failed = |e: &dyn std::fmt::Display| {
            format!("failed request to {}:{}: {e}", s.host, s.port)
        };
        let resp = s
            .pool
            .send_within(req, s.timeout, s.timeout, secure)
            .await
            .map_err(|e| failed(&e))?;
        let status = resp.status();
        // Always read the answer, so the connection can be used again.
        let read = Limited::new(resp.into_body(), ERROR_BODY_MAX).collect();
        let body = match tokio::time::timeout(s.timeout, read).await {
            Ok(Ok(b)) => b.to_bytes(),
            _ => Bytes::new(),
        };
        if status.as_u16() < 300 {
            Ok(())
        } else {
            Err(format!(
                "request to {}:{} returned status code {} and body {}",
                s.host,
                s.port,
                status.as_u16(),
                String::from_utf8_lossy(&body)
            ))
        }
    }
}

/// A queue's task: sends batches while there are entries, and ends once no instance uses
/// the queue any more.
async fn run(queue: Weak<Queue>, notify: Arc<Notify>) {
    loop {
        let Some(q) = queue.upgrade() else {
            return;
        };
        if q.lock().entries.is_empty() {
            drop(q);
            let _ = tokio::time::timeout(IDLE_CHECK, notify.notified()).await;
            continue;
        }
        let batch = q.next_batch().await;
        if !batch.is_empty() {
            q.handle(batch).await;
        }
    }
}

impl Plugin for HttpLog {
    super::identity!();

    fn log(&self, served: &Served) {
        self.queue.enqueue(served.record_with(&self.custom));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_queue_names_hide_credentials() {
        assert_eq!(
            without_userinfo("http-log plugin 1 http://user:p%40ss@collector:8080/log"),
            "http-log plugin 1 http://collector:8080/log"
        );
        assert_eq!(without_userinfo("https://c/x"), "https://c/x");
    }
    use serde_json::json;

    fn cfg(port: u16, queue: serde_json::Value) -> HttpLogConfig {
        let v = tollgate_config::plugins::validate(
            "http-log",
            Some(&json!({"http_endpoint": format!("http://u:p@127.0.0.1:{port}/log?q=1"),
                         "queue": queue})),
        )
        .unwrap();
        HttpLogConfig::parse(&v).unwrap()
    }

    /// A server that answers 200 and hands back each request's head and body.
    async fn server() -> (u16, tokio::sync::mpsc::UnboundedReceiver<(http::request::Parts, Bytes)>)
    {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                let tx = tx.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |r: Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let (parts, body) = r.into_parts();
                            let b = body.collect().await.unwrap().to_bytes();
                            let _ = tx.send((parts, b));
                            Ok::<_, hyper::Error>(http::Response::new(
                                http_body_util::Full::new(Bytes::new()),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        (port, rx)
    }

    #[tokio::test]
    async fn one_entry_is_sent_as_the_object_with_kongs_headers() {
        let (port, mut rx) = server().await;
        let m = Arc::new(Metrics::new());
        let q = queue(&cfg(port, json!({})), &m).unwrap();
        q.enqueue(Bytes::from_static(b"{\"a\":1}"));
        let (head, body) = rx.recv().await.unwrap();
        assert_eq!(body, "{\"a\":1}");
        assert_eq!(head.method, "POST");
        assert_eq!(head.uri.path(), "/log");
        assert_eq!(head.uri.query(), None);
        assert_eq!(head.headers["content-type"], "application/json");
        assert_eq!(head.headers["authorization"], "Basic dTpw");
        assert_eq!(head.headers["content-length"], "7");
    }

    #[tokio::test]
    async fn entries_are_batched_as_an_array() {
        let (port, mut rx) = server().await;
        let m = Arc::new(Metrics::new());
        let q = queue(
            &cfg(port, json!({"max_batch_size": 3, "max_coalescing_delay": 5})),
            &m,
        )
        .unwrap();
        for i in 0..3 {
            q.enqueue(Bytes::from(format!("{{\"n\":{i}}}")));
        }
        let (_, body) = rx.recv().await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v, json!([{"n": 0}, {"n": 1}, {"n": 2}]));
    }

    #[tokio::test]
    async fn a_full_queue_drops_its_oldest_entries_and_counts_them() {
        // Nothing listens: every send fails and is retried while entries pile up.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let m = Arc::new(Metrics::new());
        let q = queue(
            &cfg(port, json!({"max_entries": 2, "initial_retry_delay": 10})),
            &m,
        )
        .unwrap();
        for i in 0..6 {
            q.enqueue(Bytes::from(format!("{i}")));
        }
        let dropped = m
            .log_entries_dropped
            .with_label_values(&["http-log"])
            .get();
        // The task may have taken one entry already; the rest past 2 are dropped.
        assert!((3..=4).contains(&dropped), "{dropped}");
        let left: Vec<Bytes> = q.lock().entries.iter().cloned().collect();
        assert_eq!(left.last().unwrap(), "5");
    }
}
