//! Notices: small messages a node sends straight to every other member over the cluster
//! listener, for node-local state that must follow an Admin API call everywhere but is not
//! configuration (a proxy-cache purge: the cache is per node and never replicated).
//!
//! A notice is not a Raft entry: nothing is persisted or replayed. [`ClusterNode::broadcast`]
//! returns once every other member acknowledged (its handler ran) or [`NOTICE_TIMEOUT`]
//! passed, and says which members it reached. So what a caller may promise is: when
//! `missed` is empty the notice was handled on every member; a member it missed was down or
//! cut off (and a node that restarts has lost its node-local state anyway).

use std::time::Duration;

use crate::network;
use crate::raft::ClusterNode;

/// Largest notice body.
pub const MAX_NOTICE: usize = 4096;
/// Longest a broadcast waits for a member's acknowledgement.
pub const NOTICE_TIMEOUT: Duration = Duration::from_secs(2);

/// What a node does with a notice it receives: its answer (at most [`MAX_NOTICE`] bytes are
/// sent back), or `None` when it cannot handle it.
pub type NoticeHandler = Box<dyn Fn(&[u8]) -> Option<Vec<u8>> + Send + Sync>;

/// The outcome of a broadcast.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Members that handled it, with their answers.
    pub reached: Vec<(u64, bytes::Bytes)>,
    /// Members that did not, and why.
    pub missed: Vec<(u64, String)>,
}

impl ClusterNode {
    /// Sets what this node does with notices from other members (once; later calls are
    /// ignored).
    pub fn on_notice(&self, handler: NoticeHandler) {
        let _ = self.notice.set(handler);
    }

    /// Runs the handler on a received notice.
    pub(crate) fn handle_notice(&self, body: &[u8]) -> Option<Vec<u8>> {
        let mut answer = self.notice.get().and_then(|h| h(body))?;
        answer.truncate(MAX_NOTICE);
        Some(answer)
    }

    /// Sends `body` to every other member of the cluster's membership, all at once, and waits
    /// for their acknowledgements (at most [`NOTICE_TIMEOUT`]).
    pub async fn broadcast(&self, body: Vec<u8>) -> Delivery {
        let members: Vec<(u64, String)> = {
            let m = self.raft.metrics().borrow().clone();
            m.membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.addrs.id)
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect()
        };
        let mut calls = tokio::task::JoinSet::new();
        for (id, addr) in members {
            let client = self.client.clone();
            let body = body.clone();
            calls.spawn(async move {
                let r = network::post(&client, &addr, "/cluster/notice", body, NOTICE_TIMEOUT)
                    .await
                    .map_err(|e| e.to_string());
                (id, r)
            });
        }
        let mut d = Delivery::default();
        while let Some(done) = calls.join_next().await {
            match done {
                Ok((id, Ok(answer))) => d.reached.push((id, answer)),
                Ok((id, Err(e))) => d.missed.push((id, e)),
                Err(e) => tracing::error!(error = %e, "notice task failed"),
            }
        }
        d.reached.sort_unstable_by_key(|r| r.0);
        d.missed.sort_unstable_by_key(|m| m.0);
        d
    }
}
