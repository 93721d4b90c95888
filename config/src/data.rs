//! A whole configuration as one value: what Raft snapshots and declarative loads carry, and
//! its encoding. Kept apart from [`crate::state`] (which applies commands) and
//! [`crate::command`] (which carries this in `Replace`), so neither depends on the other.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::codec::{bincode_config, DecodeError};
use crate::legacy::StateDataV1;
use crate::registry::{Entity, EntityKind, Typed};

/// The entities themselves: what snapshots and declarative loads carry. Ordered maps, so
/// iteration and encoding are deterministic.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StateData {
    pub(crate) tables: BTreeMap<EntityKind, BTreeMap<Uuid, Entity>>,
}

impl StateData {
    pub fn from_entities(all: impl IntoIterator<Item = Entity>) -> StateData {
        let mut data = StateData::default();
        for e in all {
            data.insert(e);
        }
        data
    }

    /// Adds (or replaces) an entity.
    pub fn insert(&mut self, e: Entity) {
        self.tables.entry(e.kind()).or_default().insert(e.id(), e);
    }

    /// The entities of one kind, in id order.
    pub fn table(&self, kind: EntityKind) -> impl Iterator<Item = &Entity> {
        self.tables.get(&kind).into_iter().flat_map(|t| t.values())
    }

    /// The entities of one type, in id order.
    pub fn all<T: Typed>(&self) -> impl Iterator<Item = &T> {
        self.table(T::KIND).filter_map(T::from_entity)
    }

    pub fn count(&self, kind: EntityKind) -> usize {
        self.tables.get(&kind).map_or(0, BTreeMap::len)
    }

    pub fn len(&self) -> usize {
        self.tables.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every entity, kinds in load order (references before referrers), ids in order.
    pub fn into_entities(mut self) -> impl Iterator<Item = Entity> {
        EntityKind::load_order()
            .into_iter()
            .flat_map(move |k| self.tables.remove(&k).unwrap_or_default().into_values())
    }
}

// Encoded as the list of entities: each carries its kind, so the format does not change when
// a kind is registered.
impl Serialize for StateData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let all: Vec<&Entity> = self.tables.values().flat_map(|t| t.values()).collect();
        all.serialize(s)
    }
}

impl<'de> Deserialize<'de> for StateData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut data = StateData::default();
        for e in Vec::<Entity>::deserialize(d)? {
            data.insert(e);
        }
        Ok(data)
    }
}

/// Starts a snapshot in the current format; older snapshots (a [`StateDataV1`]) have none.
const SNAPSHOT_MAGIC: &[u8] = b"TGS2";

impl StateData {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = SNAPSHOT_MAGIC.to_vec();
        out.extend(bincode::serde::encode_to_vec(self, bincode_config()).unwrap_or_default());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<StateData, DecodeError> {
        let err = |e: bincode::error::DecodeError| DecodeError(e.to_string());
        match bytes.strip_prefix(SNAPSHOT_MAGIC) {
            Some(rest) => bincode::serde::decode_from_slice(rest, bincode_config())
                .map(|(c, _)| c)
                .map_err(err),
            None => bincode::serde::decode_from_slice::<StateDataV1, _>(bytes, bincode_config())
                .map(|(c, _)| StateData::from_entities(c.into_entities()))
                .map_err(err),
        }
    }
}
