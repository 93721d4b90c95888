//! How configuration commands become configuration on every node.
//!
//! The node hands each Admin API write to a [`Replicator`] as a [`tollgate_config::Command`];
//! the replicator makes it durable, applies it with the deterministic `State::apply`, and then
//! tells the node (through the apply hook) so the data plane can swap in a new snapshot.
//!
//! Today the only replicator is [`local::LocalReplicator`], a single-node log on sled. The Raft
//! replicator slots in behind the same interface; nothing above it assumes a single node.

pub mod local;
pub mod seeds;

pub use local::{LocalReplicator, ProposeError};
pub use seeds::{parse_seeds, SeedError};
