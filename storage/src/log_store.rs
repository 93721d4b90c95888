//! The Raft log store: entries by index in tree `log`, the vote, the committed log id and the
//! last purged log id in tree `raft_meta`. Appends and votes are flushed before openraft is told
//! they are durable.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader, StorageIOError};

use crate::kv::{decode, encode, Batch, Kv, KvError, Tree};
use crate::typ::{Entry, LogId, StorageError, TypeConfig, Vote};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"last_purged";

/// The Raft log of one node.
#[derive(Clone)]
pub struct LogStore {
    kv: Kv,
    log: Tree,
    meta: Tree,
}

fn read_err(e: KvError) -> StorageError {
    StorageIOError::read_logs(&e).into()
}

fn write_err(e: KvError) -> StorageError {
    StorageIOError::write_logs(&e).into()
}

impl LogStore {
    pub fn new(kv: Kv) -> Result<LogStore, KvError> {
        Ok(LogStore {
            log: kv.tree("log")?,
            meta: kv.tree("raft_meta")?,
            kv,
        })
    }

    fn meta_get<T: serde::de::DeserializeOwned>(&self, k: &[u8]) -> Result<Option<T>, KvError> {
        self.meta.get(k)?.map(|b| decode(&b)).transpose()
    }

    /// Number of entries held (not yet purged behind a snapshot).
    pub fn len(&self) -> usize {
        self.log.len()
    }

    pub fn is_empty(&self) -> bool {
        self.log.is_empty()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let from = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(i) => Some(i + 1),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        let to_key = to.map(u64::to_be_bytes);
        let mut out = Vec::new();
        for item in self
            .log
            .range(&from.to_be_bytes(), to_key.as_ref().map(|k| &k[..]))
        {
            let (_, v) = item.map_err(read_err)?;
            out.push(decode(&v).map_err(read_err)?);
        }
        Ok(out)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.meta_get(PURGED).map_err(read_err)?;
        let last = match self.log.last().map_err(read_err)? {
            Some((_, v)) => Some(decode::<Entry>(&v).map_err(read_err)?.log_id),
            None => last_purged,
        };
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let b = encode(vote).map_err(|e| StorageIOError::write_vote(&e))?;
        self.meta
            .put(VOTE, b)
            .map_err(|e| StorageIOError::write_vote(&e))?;
        self.kv
            .flush()
            .await
            .map_err(|e| StorageIOError::write_vote(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self
            .meta_get(VOTE)
            .map_err(|e| StorageIOError::read_vote(&e))?)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not flushed: losing it only means re-learning the commit index from the leader.
        let b = encode(&committed).map_err(write_err)?;
        self.meta.put(COMMITTED, b).map_err(write_err)?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .meta_get::<Option<LogId>>(COMMITTED)
            .map_err(read_err)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = Batch::default();
        for e in entries {
            batch.put(e.log_id.index.to_be_bytes(), encode(&e).map_err(write_err)?);
        }
        self.log.apply(batch).map_err(write_err)?;
        let flushed = self.kv.flush().await;
        let io = flushed
            .as_ref()
            .map(|_| ())
            .map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(io);
        flushed.map_err(write_err)
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = Batch::default();
        for item in self.log.range(&log_id.index.to_be_bytes(), None) {
            let (k, _) = item.map_err(write_err)?;
            batch.remove(k);
        }
        self.log.apply(batch).map_err(write_err)?;
        self.kv.flush().await.map_err(write_err)?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: a crash midway leaves extra entries, never a gap.
        self.meta
            .put(PURGED, encode(&log_id).map_err(write_err)?)
            .map_err(write_err)?;
        let end = (log_id.index + 1).to_be_bytes();
        let mut batch = Batch::default();
        for item in self.log.range(&0u64.to_be_bytes(), Some(&end)) {
            let (k, _) = item.map_err(write_err)?;
            batch.remove(k);
        }
        self.log.apply(batch).map_err(write_err)?;
        self.kv.flush().await.map_err(write_err)?;
        Ok(())
    }
}
