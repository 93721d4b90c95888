//! Formats written before entities were declared generically, kept so that data directories,
//! Raft logs and snapshots written by earlier versions still load. Read only: nothing writes
//! these any more.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::entities::{Consumer, Entity, KeyAuthCredential, Plugin, Route, Service};

/// A whole configuration as versions up to 0.4 encoded it: one map per kind, in this order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateDataV1 {
    pub services: BTreeMap<Uuid, Service>,
    pub routes: BTreeMap<Uuid, Route>,
    pub consumers: BTreeMap<Uuid, Consumer>,
    pub keyauth_credentials: BTreeMap<Uuid, KeyAuthCredential>,
    pub plugins: BTreeMap<Uuid, Plugin>,
}

impl StateDataV1 {
    /// Its entities, in the current model.
    pub fn into_entities(self) -> impl Iterator<Item = Entity> {
        self.services
            .into_values()
            .map(Into::into)
            .chain(self.routes.into_values().map(Into::into))
            .chain(self.consumers.into_values().map(Into::into))
            .chain(self.keyauth_credentials.into_values().map(Into::into))
            .chain(self.plugins.into_values().map(Into::into))
    }
}
