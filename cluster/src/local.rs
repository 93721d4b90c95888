//! The single-node replicator: a durable command log on this node's disk.
//!
//! Guarantees (single node): writes are linearizable, because one writer at a time appends,
//! flushes and applies; a write acknowledged to a client is on disk and survives a crash; a
//! read issued after an acknowledged write sees it (the apply hook has run before `propose`
//! returns).

use std::path::Path;
use std::sync::Arc;

use thiserror::Error;
use tokio::sync::Mutex;
use tollgate_config::{Applied, ApplyError, Command, State};
use tollgate_storage::{ConfigStore, StorageError};

/// Entries between two snapshots of the state.
const SNAPSHOT_EVERY: u64 = 1000;

/// Why a proposal produced no result.
#[derive(Debug, Error)]
pub enum ProposeError {
    /// The command was applied and rejected by `State::apply`: a client error.
    #[error(transparent)]
    Rejected(#[from] ApplyError),
    /// The command could not be made durable; nothing was applied.
    #[error("storage unavailable: {0}")]
    Storage(#[from] StorageError),
    /// The storage task died (a panic in the blocking pool); nothing was applied.
    #[error("storage task failed: {0}")]
    Internal(String),
}

/// Called with the new state and the index of the entry that produced it, after every
/// command that changed it (and once at start with the recovered state).
pub type ApplyHook = Box<dyn Fn(&State, u64) + Send + Sync>;

struct Inner {
    state: State,
    last_index: u64,
}

/// A replicator whose only member is this node.
pub struct LocalReplicator {
    store: Arc<ConfigStore>,
    inner: Mutex<Inner>,
    hook: ApplyHook,
}

impl LocalReplicator {
    /// Opens the store in `dir`, recovers the state and runs the hook once with it.
    pub fn open(dir: &Path, hook: ApplyHook) -> Result<LocalReplicator, StorageError> {
        let store = ConfigStore::open(dir)?;
        let rec = store.recover()?;
        tracing::info!(
            entities = rec.state.len(),
            last_index = rec.last_index,
            replayed = rec.replayed,
            "configuration recovered"
        );
        hook(&rec.state, rec.last_index);
        Ok(LocalReplicator {
            store: Arc::new(store),
            inner: Mutex::new(Inner {
                state: rec.state,
                last_index: rec.last_index,
            }),
            hook,
        })
    }

    /// Makes `cmd` durable, applies it and publishes the result. Returns what apply returned.
    pub async fn propose(&self, cmd: Command) -> Result<Applied, ProposeError> {
        let mut inner = self.inner.lock().await;
        let index = inner.last_index + 1;
        let store = self.store.clone();
        let bytes_cmd = cmd.clone();
        tokio::task::spawn_blocking(move || store.append(index, &bytes_cmd))
            .await
            .map_err(|e| ProposeError::Internal(e.to_string()))??;
        inner.last_index = index;
        let result = inner.state.apply(cmd);
        if result.is_ok() {
            (self.hook)(&inner.state, index);
        }
        if index % SNAPSHOT_EVERY == 0 {
            let store = self.store.clone();
            let data = inner.state.data().clone();
            // A failed snapshot only means a longer replay next start; the log still has it all.
            let _ = tokio::task::spawn_blocking(move || {
                if let Err(e) = store.snapshot(index, &data) {
                    tracing::warn!(error = %e, "snapshot failed");
                }
            })
            .await;
        }
        Ok(result?)
    }

    /// Runs `f` on the current state (Admin API reads).
    pub async fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        let inner = self.inner.lock().await;
        f(&inner.state)
    }

    /// Index of the last applied entry.
    pub async fn last_index(&self) -> u64 {
        self.inner.lock().await.last_index
    }

    /// Flushes storage; called on shutdown.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.store.flush()
    }
}
