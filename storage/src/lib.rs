//! Durable Raft storage for Tollgate: the Raft type configuration ([`typ`]), the log store
//! ([`log_store`]) and the state machine ([`state_machine`]), on sled behind [`kv`].
//!
//! Guarantees (what openraft relies on):
//! - The vote and appended entries are flushed to disk before they are reported durable.
//! - Applying entries and recording the last-applied log id happen in one atomic batch, so the
//!   stored state machine is always exactly "the state after entry N" for some N.
//! - A snapshot is made durable (with the state it describes) before openraft purges the log
//!   entries it covers, so a restart never finds a gap between snapshot and log.

pub mod kv;
pub mod log_store;
pub mod state_machine;
pub mod typ;

pub use kv::{Kv, KvError};
pub use log_store::LogStore;
pub use state_machine::{ApplyHook, StateMachine, StateMachineStore};
pub use typ::{Outcome, TypeConfig};

/// Opens the log store and state machine in `dir` (created when absent).
pub fn open(
    dir: &std::path::Path,
    hook: ApplyHook,
) -> Result<(LogStore, StateMachineStore), KvError> {
    let kv = Kv::open(dir)?;
    let log = LogStore::new(kv.clone())?;
    let sm = StateMachineStore::open(kv, hook)?;
    Ok((log, sm))
}
