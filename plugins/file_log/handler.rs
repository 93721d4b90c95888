//! `file-log`: appends each request's log record ([`super::log_record`]) as one JSON line
//! to a file (Kong 3.9.3's `kong/plugins/file-log/handler.lua`).
//!
//! Writing never blocks the runtime: the log phase hands the line to a bounded channel and a
//! writer thread per path (shared by every instance naming the path, as Kong keeps one fd per
//! path) writes what is waiting in one batch. A full channel drops the line and counts it in
//! `tollgate_log_entries_dropped_total{plugin="file-log"}`. The file is opened as Kong opens it
//! (`O_WRONLY|O_CREAT|O_APPEND`, mode 0644); with `reopen` it is closed and opened again for
//! every batch (Kong: for every entry), so a rotated file is followed; without, the open file
//! is kept.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tollgate_config::entity::Plugin as PluginEntity;
use tollgate_config::plugins::file_log::{FileLogConfig, SCHEMA};
use tollgate_config::plugins::custom_fields;
use uuid::Uuid;

use super::log_record::Served;
use super::{Deps, Handler, Instance, Plugin};
use crate::metrics::Metrics;

pub const HANDLER: Handler = Handler {
    schema: &SCHEMA,
    build,
};

/// Lines waiting for a path's writer; past it lines are dropped.
pub const CHANNEL_CAPACITY: usize = 16 * 1024;
/// Bytes waiting for a path's writer (a stalled disk holds no more); past it lines are
/// dropped.
pub const QUEUED_BYTES: usize = 64 * 1024 * 1024;

fn build(p: &PluginEntity, deps: &Deps) -> Option<Instance> {
    let cfg = FileLogConfig::parse(&p.config.0)?;
    let writer = writer(PathBuf::from(&cfg.path), &deps.metrics)?;
    let custom = custom_fields::parse(&cfg.custom_fields_by_lua).ok()?;
    Some(Arc::new(FileLog {
        id: p.id,
        custom,
        reopen: cfg.reopen,
        writer,
        metrics: deps.metrics.clone(),
    }))
}

pub struct FileLog {
    id: Uuid,
    custom: Vec<custom_fields::CustomField>,
    reopen: bool,
    writer: Arc<Writer>,
    metrics: Arc<Metrics>,
}

/// The sending end of one path's writer thread; the thread ends when the last instance
/// holding it is gone.
struct Writer {
    tx: SyncSender<(Bytes, bool)>,
    /// Bytes sent and not yet taken by the thread.
    queued: Arc<AtomicUsize>,
}

/// Writers by path, so instances naming the same file share one.
fn writers() -> &'static Mutex<HashMap<PathBuf, Weak<Writer>>> {
    static W: std::sync::OnceLock<Mutex<HashMap<PathBuf, Weak<Writer>>>> =
        std::sync::OnceLock::new();
    W.get_or_init(Default::default)
}

fn writer(path: PathBuf, metrics: &Arc<Metrics>) -> Option<Arc<Writer>> {
    let mut all = writers().lock().unwrap_or_else(|p| p.into_inner());
    all.retain(|_, w| w.strong_count() > 0);
    if let Some(w) = all.get(&path).and_then(Weak::upgrade) {
        return Some(w);
    }
    let (tx, rx) = sync_channel(CHANNEL_CAPACITY);
    let m = metrics.clone();
    let p = path.clone();
    let queued = Arc::new(AtomicUsize::new(0));
    let q = queued.clone();
    std::thread::Builder::new()
        .name("file-log".into())
        .spawn(move || write_loop(p, rx, m, q))
        .ok()?;
    let w = Arc::new(Writer { tx, queued });
    all.insert(path, Arc::downgrade(&w));
    Some(w)
}

/// Opens the file as Kong does: write-only, create, append, mode 0644.
fn open(path: &PathBuf) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
}

/// The writer thread: waits for a line, takes every line waiting with it, writes them.
fn write_loop(
    path: PathBuf,
    rx: Receiver<(Bytes, bool)>,
    metrics: Arc<Metrics>,
    queued: Arc<AtomicUsize>,
) {
    let mut file: Option<File> = None;
    let mut batch: Vec<u8> = Vec::new();
    let mut last_warning: Option<Instant> = None;
    while let Ok((first, mut reopen)) = rx.recv() {
        batch.clear();
        let mut lines = 1u64;
        queued.fetch_sub(first.len(), Ordering::Relaxed);
        batch.extend_from_slice(&first);
        batch.push(b'\n');
        while let Ok((line, r)) = rx.try_recv() {
            reopen |= r;
            lines += 1;
            queued.fetch_sub(line.len(), Ordering::Relaxed);
            batch.extend_from_slice(&line);
            batch.push(b'\n');
            if batch.len() > 1 << 20 {
                break;
            }
        }
        if reopen {
            file = None;
        }
        if file.is_none() {
            file = match open(&path) {
                Ok(f) => Some(f),
                Err(e) => {
                    if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                        tracing::error!(path = %path.display(), error = %e, "file-log: failed to open the file");
                        last_warning = Some(Instant::now());
                    }
                    None
                }
            };
        }
        let written = match file.as_mut() {
            Some(f) => f.write_all(&batch).map_err(|e| {
                tracing::error!(path = %path.display(), error = %e, "file-log: write failed");
            }),
            None => Err(()),
        };
        if written.is_err() {
            file = None;
            metrics
                .log_entries_dropped
                .with_label_values(&["file-log"])
                .inc_by(lines);
        }
        if reopen {
            file = None;
        }
    }
}

impl Plugin for FileLog {
    super::identity!();

    fn log(&self, served: &Served) {
        let line = served.record_with(&self.custom);
        let len = line.len();
        let w = &self.writer;
        let sent = w.queued.fetch_add(len, Ordering::Relaxed) + len <= QUEUED_BYTES
            && match w.tx.try_send((line, self.reopen)) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
            };
        if !sent {
            w.queued.fetch_sub(len, Ordering::Relaxed);
            self.metrics
                .log_entries_dropped
                .with_label_values(&["file-log"])
                .inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_and_a_rotated_file_is_recreated_with_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.log");
        let m = Arc::new(Metrics::new());
        let w = writer(path.clone(), &m).unwrap();
        w.tx.send((Bytes::from_static(b"{\"a\":1}"), true)).unwrap();
        let wait = |p: &PathBuf, want: &str| {
            for _ in 0..200 {
                if std::fs::read_to_string(p).unwrap_or_default() == want {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            panic!("{} never held {want:?}", p.display());
        };
        wait(&path, "{\"a\":1}\n");
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o644, 0o644);
        std::fs::rename(&path, dir.path().join("x.log.1")).unwrap();
        w.tx.send((Bytes::from_static(b"{\"a\":2}"), true)).unwrap();
        wait(&path, "{\"a\":2}\n");
        // The same path shares the writer.
        assert!(Arc::ptr_eq(&w, &writer(path.clone(), &m).unwrap()));
    }
}
