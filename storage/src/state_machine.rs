//! The Raft state machine: the configuration [`State`], applied entry by entry with the one
//! deterministic `State::apply`, and persisted entity by entity in tree `sm` together with the
//! last-applied log id and membership, in one atomic batch per applied batch of entries.
//!
//! After each apply the hook runs with the new state, so the node rebuilds its data-plane
//! snapshot before the writer that proposed the entry gets its answer.

use std::io::Cursor;
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder, SnapshotMeta, StorageIOError};
use serde::{Deserialize, Serialize};
use tollgate_config::state::{Change, StateData};
use tollgate_config::{Entity, EntityKind, State};

use crate::kv::{decode, encode, Batch, Kv, KvError, Tree};
use crate::typ::{Entry, LogId, Outcome, StorageError, StoredMembership, TypeConfig};

/// Called with the new state and the index of the last entry applied.
pub type ApplyHook = Box<dyn Fn(&State, u64) + Send + Sync>;

const LAST_APPLIED: &[u8] = b"m/last_applied";
const MEMBERSHIP: &[u8] = b"m/membership";
const SNAPSHOT: &[u8] = b"m/snapshot";
const ENTITY_PREFIX: &[u8] = b"e/";

/// `e/` + the kind's declared storage tag + the id: one key per entity.
fn entity_key(k: EntityKind, id: [u8; 16]) -> Vec<u8> {
    let mut key = ENTITY_PREFIX.to_vec();
    key.push(k.decl().storage_tag);
    key.extend_from_slice(&id);
    key
}

/// The applied state, shared with readers (the Admin API).
pub struct Applied {
    pub state: State,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// A stored snapshot: its metadata and the state it holds.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<u64, openraft::BasicNode>,
    data: Vec<u8>,
}

struct Shared {
    applied: RwLock<Applied>,
    hook: ApplyHook,
    kv: Kv,
    tree: Tree,
}

/// The state machine; clones share it (openraft owns one, readers hold others).
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

/// The name openraft's examples use; the store is the machine.
pub type StateMachine = StateMachineStore;

fn io_read(e: KvError) -> StorageError {
    StorageIOError::read_state_machine(&e).into()
}

fn io_write(e: KvError) -> StorageError {
    StorageIOError::write_state_machine(&e).into()
}

impl StateMachineStore {
    /// Loads the stored state machine (entities, last applied, membership) and runs the hook
    /// once with it.
    pub fn open(kv: Kv, hook: ApplyHook) -> Result<StateMachineStore, KvError> {
        let tree = kv.tree("sm")?;
        let mut data = StateData::default();
        for item in tree.scan_prefix(ENTITY_PREFIX) {
            let (_, v) = item?;
            data.insert(decode::<Entity>(&v)?);
        }
        let state = State::from_data(data).map_err(|e| KvError::Inconsistent(e.to_string()))?;
        // Stored as the Option openraft reports (None before the first entry).
        let last_applied: Option<LogId> = tree
            .get(LAST_APPLIED)?
            .map(|b| decode::<Option<LogId>>(&b))
            .transpose()?
            .flatten();
        let membership: StoredMembership = tree
            .get(MEMBERSHIP)?
            .map(|b| decode(&b))
            .transpose()?
            .unwrap_or_default();
        let index = last_applied.map(|l| l.index).unwrap_or(0);
        tracing::info!(
            entities = state.len(),
            last_applied = index,
            "state machine loaded"
        );
        hook(&state, index);
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                applied: RwLock::new(Applied {
                    state,
                    last_applied,
                    membership,
                }),
                hook,
                kv,
                tree,
            }),
        })
    }

    /// Runs `f` on the applied state.
    pub fn read<T>(&self, f: impl FnOnce(&Applied) -> T) -> T {
        let g = self
            .shared
            .applied
            .read()
            .unwrap_or_else(|p| p.into_inner());
        f(&g)
    }

    /// Index of the last applied entry (0 before any).
    pub fn last_applied_index(&self) -> u64 {
        self.read(|a| a.last_applied.map(|l| l.index).unwrap_or(0))
    }

    fn snapshot_of(&self) -> Snapshot<TypeConfig> {
        let (data, last, membership) = self.read(|a| {
            (
                a.state.data().encode(),
                a.last_applied,
                a.membership.clone(),
            )
        });
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: membership,
            snapshot_id: format!(
                "{}-{}",
                last.map(|l| l.leader_id.term).unwrap_or(0),
                last.map(|l| l.index).unwrap_or(0)
            ),
        };
        Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        let snap = self.snapshot_of();
        let stored = StoredSnapshot {
            meta: snap.meta.clone(),
            data: snap.snapshot.get_ref().clone(),
        };
        let sig = Some(snap.meta.signature());
        let bytes = encode(&stored).map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        self.shared
            .tree
            .put(SNAPSHOT, bytes)
            .map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        // The state machine at least as new as the snapshot must be on disk before openraft
        // purges the log behind it.
        self.shared
            .kv
            .flush()
            .await
            .map_err(|e| StorageIOError::write_snapshot(sig, &e))?;
        Ok(snap)
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = StateMachineStore;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok(self.read(|a| (a.last_applied, a.membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut outcomes = Vec::new();
        let mut batch = Batch::default();
        let mut g = self
            .shared
            .applied
            .write()
            .unwrap_or_else(|p| p.into_inner());
        let mut touched = false;
        for entry in entries {
            g.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => outcomes.push(Outcome(None)),
                EntryPayload::Normal(cmd) => {
                    let result = g.state.apply(cmd);
                    for change in g.state.take_changes() {
                        match change {
                            Change::Put(kind, id) => {
                                if let Some(e) = g.state.get(kind, id) {
                                    batch.put(
                                        entity_key(kind, *id.as_bytes()),
                                        encode(e).map_err(io_write)?,
                                    );
                                }
                            }
                            Change::Delete(kind, id) => {
                                batch.remove(entity_key(kind, *id.as_bytes()))
                            }
                            Change::Reset => {
                                for item in self.shared.tree.scan_prefix(ENTITY_PREFIX) {
                                    let (k, _) = item.map_err(io_read)?;
                                    batch.remove(k);
                                }
                            }
                        }
                    }
                    touched |= result.is_ok();
                    outcomes.push(Outcome(Some(result)));
                }
                EntryPayload::Membership(m) => {
                    g.membership = StoredMembership::new(Some(entry.log_id), m);
                    outcomes.push(Outcome(None));
                }
            }
        }
        batch.put(LAST_APPLIED, encode(&g.last_applied).map_err(io_write)?);
        batch.put(MEMBERSHIP, encode(&g.membership).map_err(io_write)?);
        self.shared.tree.apply(batch).map_err(io_write)?;
        if touched {
            (self.shared.hook)(&g.state, g.last_applied.map(|l| l.index).unwrap_or(0));
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, openraft::BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let sig = Some(meta.signature());
        let bytes = snapshot.into_inner();
        let data = StateData::decode(&bytes)
            .map_err(|e| StorageIOError::read_snapshot(sig.clone(), &e))?;
        let state = State::from_data(data.clone())
            .map_err(|e| StorageIOError::read_snapshot(sig.clone(), &e))?;
        let mut batch = Batch::default();
        for item in self.shared.tree.scan_prefix(ENTITY_PREFIX) {
            let (k, _) = item.map_err(io_read)?;
            batch.remove(k);
        }
        for kind in EntityKind::ALL {
            for e in state.list(*kind) {
                batch.put(
                    entity_key(*kind, *e.id().as_bytes()),
                    encode(e).map_err(io_write)?,
                );
            }
        }
        batch.put(LAST_APPLIED, encode(&meta.last_log_id).map_err(io_write)?);
        batch.put(MEMBERSHIP, encode(&meta.last_membership).map_err(io_write)?);
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: bytes,
        };
        batch.put(SNAPSHOT, encode(&stored).map_err(io_write)?);
        self.shared.tree.apply(batch).map_err(io_write)?;
        self.shared.kv.flush().await.map_err(io_write)?;
        let mut g = self
            .shared
            .applied
            .write()
            .unwrap_or_else(|p| p.into_inner());
        g.state = state;
        g.last_applied = meta.last_log_id;
        g.membership = meta.last_membership.clone();
        (self.shared.hook)(&g.state, g.last_applied.map(|l| l.index).unwrap_or(0));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let Some(bytes) = self.shared.tree.get(SNAPSHOT).map_err(io_read)? else {
            return Ok(None);
        };
        let stored: StoredSnapshot = decode(&bytes).map_err(io_read)?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}
