//! The cluster: how configuration commands become configuration on every node.
//!
//! Every node runs Raft ([`raft`], openraft with the storage of `tollgate-storage`). An Admin
//! API write on any node is proposed to the leader (forwarded over the cluster listener when
//! this node is a follower), committed by a quorum, and applied by every node's state machine
//! in log order with the same deterministic `State::apply`; each apply rebuilds that node's
//! data-plane snapshot. Discovery and automatic joining run over gossip ([`discovery`]).
//!
//! Guarantees:
//! - Config writes are linearizable: each is one Raft log entry, acknowledged only once
//!   committed by a quorum and applied on the leader.
//! - An acknowledged write survives leader loss, node restarts and a full-cluster restart (it
//!   is on a quorum's disks, flushed before acknowledgement).
//! - Read-your-writes on the node a client wrote through: the node answers only once its own
//!   state machine has applied the write (bounded wait, see [`raft::APPLY_WAIT`]).
//! - Default reads are served from the local applied state: monotonic per node, possibly stale
//!   by the replication lag. `?consistent=true` reads first confirm leadership with a quorum and
//!   wait for the local apply of the leader's commit index: linearizable.
//! - Without a quorum, writes fail within [`raft::WRITE_TIMEOUT`] with an error naming the
//!   cause; reads and the data plane keep serving the last applied configuration.

pub mod auth;
pub mod discovery;
pub mod gcounter;
pub mod network;
pub mod notice;
pub mod raft;
pub mod rpc;
pub mod sealed_transport;
pub mod seeds;

pub use raft::{ClusterNode, NodeAddrs, ProposeError, MAX_ENTRY_BYTES};
pub use seeds::{parse_seeds, SeedError};
