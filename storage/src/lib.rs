//! Durable configuration storage on sled: an append-only log of [`Command`]s and a snapshot of
//! the state they produced.
//!
//! Guarantees:
//! - [`ConfigStore::append`] returns only after the entry is flushed to disk, so a command whose
//!   result the Admin API reported survives a crash.
//! - Recovery ([`ConfigStore::recover`]) loads the newest snapshot and replays every later entry
//!   through the same deterministic `State::apply`, so it rebuilds exactly the state that was
//!   served. Rejected commands are replayed too and rejected again, as in a Raft log.
//! - A snapshot is written before the entries it covers are purged; a crash between the two
//!   leaves entries that recovery skips by index.
//!
//! sled is pre-1.0 and its on-disk format may change, so nothing outside this crate sees it.

use std::path::Path;

use thiserror::Error;
use tollgate_config::command::DecodeError;
use tollgate_config::state::StateData;
use tollgate_config::{ApplyError, Command, State};

/// Storage failures. All are fatal to the operation that hit them; none loses what was
/// already acknowledged.
#[derive(Debug, Error)]
pub enum StorageError {
    #[error("storage I/O: {0}")]
    Sled(#[from] sled::Error),
    #[error("corrupt entry: {0}")]
    Decode(#[from] DecodeError),
    #[error("stored snapshot is inconsistent: {0}")]
    Snapshot(ApplyError),
}

const SNAPSHOT_KEY: &[u8] = b"snapshot";

/// The command log and snapshot of one node.
pub struct ConfigStore {
    db: sled::Db,
    log: sled::Tree,
    meta: sled::Tree,
}

/// What recovery found.
pub struct Recovered {
    pub state: State,
    /// Index of the last entry reflected in `state` (0 when empty).
    pub last_index: u64,
    /// Entries replayed on top of the snapshot.
    pub replayed: u64,
}

impl ConfigStore {
    /// Opens (creating when absent) the store in `dir`.
    pub fn open(dir: &Path) -> Result<ConfigStore, StorageError> {
        let db = sled::Config::new().path(dir).open()?;
        let log = db.open_tree("log")?;
        let meta = db.open_tree("meta")?;
        Ok(ConfigStore { db, log, meta })
    }

    /// Rebuilds the state from the snapshot and the log after it.
    pub fn recover(&self) -> Result<Recovered, StorageError> {
        let (mut state, snap_index) = match self.meta.get(SNAPSHOT_KEY)? {
            Some(bytes) if bytes.len() >= 8 => {
                let mut idx = [0u8; 8];
                idx.copy_from_slice(&bytes[..8]);
                let data = StateData::decode(&bytes[8..])?;
                (
                    State::from_data(data).map_err(StorageError::Snapshot)?,
                    u64::from_be_bytes(idx),
                )
            }
            _ => (State::default(), 0),
        };
        let mut last_index = snap_index;
        let mut replayed = 0;
        for item in self.log.range((snap_index + 1).to_be_bytes()..) {
            let (k, v) = item?;
            let mut idx = [0u8; 8];
            idx.copy_from_slice(&k[..8]);
            let cmd = Command::decode(&v)?;
            // Rejections are part of history: the same command was rejected when first applied.
            let _ = state.apply(cmd);
            last_index = u64::from_be_bytes(idx);
            replayed += 1;
        }
        Ok(Recovered {
            state,
            last_index,
            replayed,
        })
    }

    /// Appends entry `index` and waits until it is on disk.
    pub fn append(&self, index: u64, cmd: &Command) -> Result<(), StorageError> {
        self.log.insert(index.to_be_bytes(), cmd.encode())?;
        self.log.flush()?;
        Ok(())
    }

    /// Stores `state` as of entry `index`, then purges the entries it covers.
    pub fn snapshot(&self, index: u64, state: &StateData) -> Result<(), StorageError> {
        let mut bytes = index.to_be_bytes().to_vec();
        bytes.extend_from_slice(&state.encode());
        self.meta.insert(SNAPSHOT_KEY, bytes)?;
        self.meta.flush()?;
        let mut batch = sled::Batch::default();
        for item in self.log.range(..=index.to_be_bytes()) {
            let (k, _) = item?;
            batch.remove(k);
        }
        self.log.apply_batch(batch)?;
        self.log.flush()?;
        Ok(())
    }

    /// Entries currently in the log (not yet covered by a snapshot).
    pub fn log_len(&self) -> usize {
        self.log.len()
    }

    /// Flushes everything; called on shutdown.
    pub fn flush(&self) -> Result<(), StorageError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_config::entity::*;
    use tollgate_config::PutMode;
    use uuid::Uuid;

    fn consumer(n: u128) -> Command {
        Command::Put {
            entity: Entity::Consumer(Consumer {
                id: Uuid::from_u128(n),
                username: Some(format!("u{n}")),
                custom_id: None,
                tags: None,
                created_at: 1,
                updated_at: 1,
            }),
            mode: PutMode::Create,
        }
    }

    #[test]
    fn recovers_log_and_snapshot_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut live = State::default();
        {
            let store = ConfigStore::open(dir.path()).unwrap();
            for i in 1..=10u64 {
                let cmd = consumer(i as u128);
                store.append(i, &cmd).unwrap();
                live.apply(cmd).unwrap();
                if i == 6 {
                    store.snapshot(6, live.data()).unwrap();
                    assert_eq!(store.log_len(), 0);
                }
            }
            // A rejected command is logged and must be rejected again on replay.
            let dup = consumer(3);
            store.append(11, &dup).unwrap();
            assert!(live.apply(dup).is_err());
            store.flush().unwrap();
        }
        let store = ConfigStore::open(dir.path()).unwrap();
        let rec = store.recover().unwrap();
        assert_eq!(rec.last_index, 11);
        assert_eq!(rec.replayed, 5);
        assert_eq!(rec.state.data(), live.data());
    }

    #[test]
    fn empty_store_recovers_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        let store = ConfigStore::open(dir.path()).unwrap();
        let rec = store.recover().unwrap();
        assert_eq!(rec.last_index, 0);
        assert!(rec.state.is_empty());
    }
}
