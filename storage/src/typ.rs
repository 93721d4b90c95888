//! The Raft type configuration: log entries carry [`tollgate_config::Command`]s, and applying
//! one yields an [`Outcome`].

use std::io::Cursor;

use serde::{Deserialize, Serialize};
use tollgate_config::{Applied, ApplyError, Command};

/// What applying one log entry produced, returned to the writer that proposed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome(pub Option<Result<Applied, ApplyError>>);

openraft::declare_raft_types!(
    /// Tollgate's Raft types: node ids are the operator's `--id`, nodes are known by their
    /// cluster address.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
