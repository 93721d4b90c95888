//! Commands: the only way configuration changes. Every Admin API write becomes one
//! [`Command`], which is persisted (and, in a cluster, replicated) before [`crate::State::apply`]
//! runs it. Commands are self-contained: ids, timestamps and generated keys are inside, so the
//! same sequence of commands gives the same state on every node.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec::{bincode_config, DecodeError};
use crate::data::StateData;
use crate::entity::{Entity, EntityKind};
use crate::legacy::StateDataV1;

/// How a put treats an existing entity with the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PutMode {
    /// POST: the id must be new.
    Create,
    /// PATCH: the id must exist.
    Update,
    /// PUT: create or replace.
    Upsert,
}

/// A change to the configuration.
// Commands are built once per Admin API write, never on the request path: size is no concern.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    Put {
        entity: Entity,
        mode: PutMode,
    },
    /// Deletes an entity and what Kong cascades with it (a consumer's credentials, plugins
    /// scoped to the deleted entity).
    Delete {
        kind: EntityKind,
        id: Uuid,
    },
    /// A [`Command::Replace`] as versions up to 0.4 wrote it (still in old Raft logs).
    ReplaceV1(Box<StateDataV1>),
    /// Replaces the whole configuration (declarative load). Checked as a whole: either every
    /// entity is consistent and it replaces everything, or nothing changes.
    Replace(Box<StateData>),
    /// Puts and deletes applied together, all or none (a certificate and its SNIs).
    Batch(Vec<Command>),
    /// Replaces what carries `tag` (an earlier apply of the same Kubernetes manifests, say)
    /// by `data`, leaving everything else alone; see [`crate::state::State::merge_tagged`].
    /// Checked as a whole, like [`Command::Replace`]. A new variant: nodes of an older
    /// version cannot apply it, so every node is upgraded before the first tagged load.
    ReplaceTagged {
        tag: String,
        data: Box<StateData>,
    },
}

/// What an applied command did.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Applied {
    Put(Entity),
    Deleted,
    Replaced,
}

impl Command {
    pub fn encode(&self) -> Vec<u8> {
        // Encoding into a Vec only fails for types serde cannot represent; ours are plain data.
        bincode::serde::encode_to_vec(self, bincode_config()).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        bincode::serde::decode_from_slice(bytes, bincode_config())
            .map(|(c, _)| c)
            .map_err(|e| DecodeError(e.to_string()))
    }
}
