//! One node's Raft: start-up, proposing commands (forwarding to the leader when this node is a
//! follower), linearizable read barriers, membership changes and the cluster view.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers, Config, Raft, ServerState, SnapshotPolicy};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tollgate_config::{Applied, ApplyError, Command, State};
use tollgate_storage::{ApplyHook, StateMachineStore, TypeConfig};

use crate::network::{self, Client, Network};

/// Longest a write may take before it is reported as failed (no quorum, no leader).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a node waits for its own state machine to apply a write it forwarded, so that the
/// client's next read on this node sees it.
pub const APPLY_WAIT: Duration = Duration::from_secs(5);

/// Largest command one log entry may carry (bincode bytes): a declarative file of about
/// 30,000 routes. Every node holds, fsyncs and replicates each entry whole, and openraft gives
/// one append [`HEARTBEAT_MS`]: an entry that cannot reach a follower in that time is retried
/// forever, and the cluster stops committing behind it (measured on this project's 2-core VM:
/// 3.8 MB entries replicate, 7.7 MB ones need many retries, 12.6 MB ones never arrive). Past
/// this size a write is refused (413) instead. Peers refuse larger appends too (see
/// [`crate::rpc`]).
pub const MAX_ENTRY_BYTES: usize = 4 * 1024 * 1024;

/// Raft heartbeat interval, which openraft also uses as the deadline of every append.
pub const HEARTBEAT_MS: u64 = 250;

/// Commands above this size (declarative loads, mostly) are committed one at a time on the
/// leader, so that two of them never hold the log at once while small writes queue behind.
const LARGE_ENTRY_BYTES: usize = 256 * 1024;

/// The size of an encoded command, or [`ProposeError::TooLarge`].
fn checked_size(encoded: &[u8]) -> Result<usize, ProposeError> {
    match encoded.len() {
        size if size > MAX_ENTRY_BYTES => Err(ProposeError::TooLarge {
            size,
            max: MAX_ENTRY_BYTES,
        }),
        size => Ok(size),
    }
}

/// Where a node listens, and the addresses other nodes and operators reach it at.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeAddrs {
    pub id: u64,
    /// `host:port` peers use for Raft and forwarded writes.
    pub cluster: String,
    /// Gossip socket to bind.
    pub gossip_listen: SocketAddr,
    /// Gossip address peers use (an IP: gossip identities are socket addresses).
    pub gossip: SocketAddr,
    pub admin: String,
    pub proxy: String,
}

/// Why a proposal produced no result.
#[derive(Debug, Error, Serialize, Deserialize)]
pub enum ProposeError {
    /// Committed and applied, and `State::apply` rejected it: the client's error.
    #[error(transparent)]
    Rejected(#[from] ApplyError),
    /// The cluster cannot commit now (no leader, no quorum, leader unreachable). Nothing was
    /// acknowledged; the write may or may not take effect later.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// The command is larger than [`MAX_ENTRY_BYTES`]: nothing was proposed.
    #[error("configuration change too large: {size} bytes encoded, the limit is {max}")]
    TooLarge { size: usize, max: usize },
}

pub type RaftNode = Raft<TypeConfig>;

/// A running cluster member.
pub struct ClusterNode {
    pub raft: RaftNode,
    pub sm: StateMachineStore,
    pub addrs: NodeAddrs,
    pub(crate) client: Client,
    large_writes: tokio::sync::Semaphore,
    pub(crate) intake: crate::rpc::Intake,
    /// What this node does with notices from other members ([`crate::notice`]).
    pub(crate) notice: std::sync::OnceLock<crate::notice::NoticeHandler>,
}

/// What the leader answers to a forwarded write.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ForwardReply {
    pub result: Result<Applied, ProposeError>,
    /// Index of the log entry; the forwarding node waits to have applied it.
    pub index: u64,
}

fn raft_config() -> Result<Config, anyhow::Error> {
    // Timeouts sized for a loaded 2-core machine: a missed heartbeat must not start elections.
    let c = Config {
        cluster_name: "tollgate".into(),
        heartbeat_interval: HEARTBEAT_MS,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        install_snapshot_timeout: 5000,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(1000),
        snapshot_max_chunk_size: crate::rpc::SNAPSHOT_CHUNK as u64,
        max_in_snapshot_log_to_keep: 200,
        purge_batch_size: 256,
        ..Default::default()
    };
    Ok(c.validate()?)
}

impl ClusterNode {
    /// Opens storage in `dir` and starts Raft (not yet initialised: see [`crate::discovery`]).
    /// Calls to peers use `tls` when the cluster has credentials.
    pub async fn start(
        addrs: NodeAddrs,
        dir: &Path,
        hook: ApplyHook,
        tls: Option<&crate::auth::RpcTls>,
    ) -> Result<Arc<ClusterNode>, anyhow::Error> {
        let (log, sm) = tollgate_storage::open(dir, hook)?;
        let client = network::client(tls);
        let raft = Raft::new(
            addrs.id,
            Arc::new(raft_config()?),
            Network::new(client.clone()),
            log,
            sm.clone(),
        )
        .await?;
        Ok(Arc::new(ClusterNode {
            raft,
            sm,
            addrs,
            client,
            large_writes: tokio::sync::Semaphore::new(1),
            intake: crate::rpc::Intake::default(),
            notice: std::sync::OnceLock::new(),
        }))
    }

    /// Initialises a new cluster whose voters are `members` (id → cluster address). Idempotent:
    /// a node that is already initialised does nothing.
    pub async fn initialize(&self, members: BTreeMap<u64, String>) -> Result<(), anyhow::Error> {
        if self.raft.is_initialized().await? {
            return Ok(());
        }
        let nodes: BTreeMap<u64, BasicNode> = members
            .into_iter()
            .map(|(id, a)| (id, BasicNode::new(a)))
            .collect();
        tracing::info!(voters = ?nodes.keys().collect::<Vec<_>>(), "initialising the cluster");
        match self.raft.initialize(nodes).await {
            Ok(()) => Ok(()),
            // Another path got there first (restart, or the leader added us).
            Err(e) if self.raft.is_initialized().await.unwrap_or(false) => {
                tracing::debug!(error = %e, "already initialised");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Runs `f` on this node's applied state.
    pub async fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        self.sm.read(|a| f(&a.state))
    }

    /// Index of the last entry this node applied.
    pub async fn last_index(&self) -> u64 {
        self.sm.last_applied_index()
    }

    fn leader_addr(&self) -> Option<(u64, String)> {
        let m = self.raft.metrics().borrow().clone();
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader)?.clone();
        Some((leader, node.addr))
    }

    async fn wait_applied(&self, index: u64) {
        let _ = self
            .raft
            .wait(Some(APPLY_WAIT))
            .applied_index_at_least(Some(index), "apply a forwarded write")
            .await;
    }

    /// Proposes a command on this node if it leads. Returns the result and the entry's index.
    pub(crate) async fn propose_here(&self, cmd: Command) -> Result<(Applied, u64), ProposeError> {
        // A forwarded write comes straight here: its size is checked here too.
        let size = checked_size(&cmd.encode())?;
        self.commit(cmd, size).await
    }

    /// Commits `cmd`, whose encoded size is `size`, on this node if it leads.
    async fn commit(&self, cmd: Command, size: usize) -> Result<(Applied, u64), ProposeError> {
        let m = self.raft.metrics().borrow().clone();
        if m.state == ServerState::Leader {
            // A leader that has not heard from a quorum for a while cannot commit: fail fast.
            if m.millis_since_quorum_ack.is_some_and(|ms| ms > 3000) {
                return Err(ProposeError::Unavailable(
                    "no quorum: this leader has not heard from a majority of voters for over 3 s"
                        .into(),
                ));
            }
        }
        let _large = if size > LARGE_ENTRY_BYTES {
            match tokio::time::timeout(WRITE_TIMEOUT, self.large_writes.acquire()).await {
                Ok(Ok(permit)) => Some(permit),
                _ => {
                    return Err(ProposeError::Unavailable(
                        "busy: another large configuration change is being committed".into(),
                    ))
                }
            }
        } else {
            None
        };
        match tokio::time::timeout(WRITE_TIMEOUT, self.raft.client_write(cmd)).await {
            Err(_) => Err(ProposeError::Unavailable(format!(
                "no quorum: the write was not committed within {} s",
                WRITE_TIMEOUT.as_secs()
            ))),
            Ok(Ok(resp)) => match resp.data.0 {
                Some(Ok(applied)) => Ok((applied, resp.log_id.index)),
                Some(Err(e)) => Err(ProposeError::Rejected(e)),
                None => Err(ProposeError::Internal(
                    "entry applied without an outcome".into(),
                )),
            },
            Ok(Err(e)) => match e.forward_to_leader::<BasicNode>() {
                Some(_) => Err(ProposeError::Unavailable("not the leader".into())),
                None => Err(ProposeError::Unavailable(format!("raft: {e}"))),
            },
        }
    }

    /// Proposes `cmd` to the cluster and returns what applying it produced, once this node has
    /// applied it too (read-your-writes).
    pub async fn propose(&self, cmd: Command) -> Result<Applied, ProposeError> {
        // Encoded once: for the size check, and as the body of every forward attempt.
        let encoded = cmd.encode();
        let size = checked_size(&encoded)?;
        let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
        loop {
            let is_leader = self.raft.metrics().borrow().state == ServerState::Leader;
            if is_leader {
                return self.commit(cmd, size).await.map(|(a, _)| a);
            }
            match self.leader_addr() {
                Some((leader, addr)) if leader != self.addrs.id => {
                    let ttl = deadline.saturating_duration_since(tokio::time::Instant::now());
                    let body = encoded.clone();
                    match network::post(&self.client, &addr, "/cluster/forward", body, ttl).await {
                        Ok(bytes) => {
                            let reply: ForwardReply =
                                serde_json::from_slice(&bytes).map_err(|e| {
                                    ProposeError::Internal(format!("bad forward reply: {e}"))
                                })?;
                            match reply.result {
                                // The leader lost leadership meanwhile: find the new one.
                                Err(ProposeError::Unavailable(m)) if m == "not the leader" => {}
                                other => {
                                    if other.is_ok() {
                                        self.wait_applied(reply.index).await;
                                    }
                                    return other;
                                }
                            }
                        }
                        Err(e) => {
                            if tokio::time::Instant::now() >= deadline {
                                return Err(ProposeError::Unavailable(format!(
                                    "leader {leader} unreachable: {e}"
                                )));
                            }
                        }
                    }
                }
                _ => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProposeError::Unavailable(
                    "no leader: the cluster has no quorum to elect one".into(),
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The leader's read index, confirmed with a quorum (runs on the leader).
    pub(crate) async fn read_index_here(&self) -> Result<u64, ProposeError> {
        match tokio::time::timeout(WRITE_TIMEOUT, self.raft.ensure_linearizable()).await {
            Err(_) => Err(ProposeError::Unavailable(
                "no quorum to confirm leadership".into(),
            )),
            Ok(Ok(id)) => Ok(id.map(|l| l.index).unwrap_or(0)),
            Ok(Err(e)) => Err(ProposeError::Unavailable(format!("raft: {e}"))),
        }
    }

    /// Waits until a read on this node is linearizable: leadership confirmed by a quorum and
    /// everything committed before this call applied locally.
    pub async fn linearizable_barrier(&self) -> Result<(), ProposeError> {
        let index = if self.raft.metrics().borrow().state == ServerState::Leader {
            self.read_index_here().await?
        } else {
            let (_, addr) = self.leader_addr().ok_or_else(|| {
                ProposeError::Unavailable("no leader: cannot serve a consistent read".into())
            })?;
            let bytes = network::post(
                &self.client,
                &addr,
                "/cluster/read-index",
                Vec::new(),
                WRITE_TIMEOUT,
            )
            .await
            .map_err(|e| ProposeError::Unavailable(format!("leader unreachable: {e}")))?;
            let r: Result<u64, ProposeError> = serde_json::from_slice(&bytes)
                .map_err(|e| ProposeError::Internal(e.to_string()))?;
            r?
        };
        if self.sm.last_applied_index() < index {
            self.wait_applied(index).await;
        }
        if self.sm.last_applied_index() < index {
            return Err(ProposeError::Unavailable(
                "this node is too far behind to serve a consistent read".into(),
            ));
        }
        Ok(())
    }

    /// Removes `id` from the cluster (runs on the leader, or is forwarded to it).
    pub async fn remove_member(&self, id: u64) -> Result<(), ProposeError> {
        if self.raft.metrics().borrow().state != ServerState::Leader {
            let (_, addr) = self
                .leader_addr()
                .ok_or_else(|| ProposeError::Unavailable("no leader".into()))?;
            let bytes = network::post(
                &self.client,
                &addr,
                "/cluster/remove",
                id.to_string().into_bytes(),
                WRITE_TIMEOUT,
            )
            .await
            .map_err(|e| ProposeError::Unavailable(format!("leader unreachable: {e}")))?;
            let r: Result<(), ProposeError> = serde_json::from_slice(&bytes)
                .map_err(|e| ProposeError::Internal(e.to_string()))?;
            return r;
        }
        let change = ChangeMembers::RemoveVoters(BTreeSet::from([id]));
        match tokio::time::timeout(WRITE_TIMEOUT, self.raft.change_membership(change, false)).await
        {
            Err(_) => Err(ProposeError::Unavailable(
                "membership change not committed in time".into(),
            )),
            Ok(Err(e)) => Err(ProposeError::Unavailable(format!("raft: {e}"))),
            // `retain = false` removed the node outright (not kept as a learner). A second
            // change to drop it as a node is not only redundant: when the removed voter is
            // this leader itself, openraft 0.9 panics its core on that second change (found by
            // the fault-injection harness's membership nemesis).
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// Adds `id` as a learner, waits for it to catch up, then makes it a voter (leader only).
    pub async fn add_member(&self, id: u64, cluster_addr: String) -> Result<(), anyhow::Error> {
        tracing::info!(node = id, addr = %cluster_addr, "adding node as learner");
        self.raft
            .add_learner(id, BasicNode::new(cluster_addr), true)
            .await?;
        tracing::info!(node = id, "promoting caught-up learner to voter");
        self.raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
            .await?;
        Ok(())
    }

    /// Flushes storage and stops Raft.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}
