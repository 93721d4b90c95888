//! Discovery and joining over gossip (chitchat on `--gossip-listen`).
//!
//! Each node gossips its id, its cluster/admin/proxy addresses, whether its Raft is
//! initialised, and its last applied index. From that:
//! - Bootstrap with `--bootstrap-expect K`: nodes wait until K of them see each other; then the
//!   lowest id among the K lowest live ids initialises Raft with those K as voters. Only that
//!   node initialises, and only when no live node reports an initialised cluster, so there is
//!   one initialiser; a restarted node finds its Raft already initialised and does nothing.
//! - Joining later: the leader adds any live node that is not a member as a learner, waits for
//!   it to catch up (by log or snapshot), then promotes it to voter.
//! - A node with no seeds and no `--bootstrap-expect` above 1 is a single-node cluster.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::transport::UdpTransport;
use chitchat::{spawn_chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig};
use openraft::ServerState;

use crate::raft::ClusterNode;

/// Gossip round interval: bounds how stale a peer's rate-limit counts can be (one or two
/// rounds on small clusters).
const GOSSIP_INTERVAL: Duration = Duration::from_millis(100);

/// A node as gossip shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Peer {
    pub id: u64,
    pub cluster_addr: String,
    pub admin_addr: String,
    pub proxy_addr: String,
    pub initialized: bool,
    pub last_applied: u64,
    pub live: bool,
}

/// This node's gossip membership.
pub struct Discovery {
    handle: ChitchatHandle,
}

impl Discovery {
    /// Joins the gossip cluster through `seeds`, sealing datagrams when `auth` has credentials.
    pub async fn start(
        node: &ClusterNode,
        seeds: Vec<String>,
        auth: &crate::auth::ClusterAuth,
    ) -> Result<Discovery, anyhow::Error> {
        let a = &node.addrs;
        let generation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(format!("node-{}", a.id), generation, a.gossip),
            cluster_id: "tollgate".into(),
            gossip_interval: GOSSIP_INTERVAL,
            listen_addr: a.gossip_listen,
            seed_nodes: seeds,
            failure_detector_config: FailureDetectorConfig {
                initial_interval: GOSSIP_INTERVAL * 5,
                max_interval: Duration::from_secs(5),
                dead_node_grace_period: Duration::from_secs(3600),
                ..Default::default()
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V0,
        };
        let kv = vec![
            ("id".to_string(), a.id.to_string()),
            ("cluster_addr".to_string(), a.cluster.clone()),
            ("admin_addr".to_string(), a.admin.clone()),
            ("proxy_addr".to_string(), a.proxy.clone()),
            ("initialized".to_string(), "false".to_string()),
            ("last_applied".to_string(), "0".to_string()),
        ];
        let handle = match &auth.gossip {
            Some(sealer) => {
                let transport = crate::sealed_transport::SealedUdpTransport {
                    sealer: sealer.clone(),
                    rejections: auth.rejections.clone(),
                };
                spawn_chitchat(config, kv, &transport).await?
            }
            None => spawn_chitchat(config, kv, &UdpTransport).await?,
        };
        Ok(Discovery { handle })
    }

    /// Every node gossip knows of, live or not, by id.
    pub async fn peers(&self) -> BTreeMap<u64, Peer> {
        self.handle
            .with_chitchat(|cc| {
                let live: HashSet<ChitchatId> = cc.live_nodes().cloned().collect();
                let mut out: BTreeMap<u64, Peer> = BTreeMap::new();
                for (cid, st) in cc.node_states() {
                    let Some(id) = st.get("id").and_then(|v| v.parse().ok()) else {
                        continue;
                    };
                    let peer = Peer {
                        id,
                        cluster_addr: st.get("cluster_addr").unwrap_or_default().to_string(),
                        admin_addr: st.get("admin_addr").unwrap_or_default().to_string(),
                        proxy_addr: st.get("proxy_addr").unwrap_or_default().to_string(),
                        initialized: st.get("initialized") == Some("true"),
                        last_applied: st
                            .get("last_applied")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0),
                        live: live.contains(cid),
                    };
                    // A restarted node has a newer generation: keep the live (newest) entry.
                    match out.get(&id) {
                        Some(prev) if prev.live && !peer.live => {}
                        _ => {
                            out.insert(id, peer);
                        }
                    }
                }
                out
            })
            .await
    }

    /// Sets several of this node's gossip keys at once (one lock of the gossip state).
    pub async fn publish_many(&self, kvs: Vec<(String, String)>) {
        self.handle
            .with_chitchat(|cc| {
                let st = cc.self_node_state();
                for (k, v) in &kvs {
                    st.set(k, v);
                }
            })
            .await;
    }

    /// Feeds every rate-limit counter value other nodes publish into `store`. The callback
    /// runs inside gossip's lock, so it only decodes and merges.
    pub async fn feed_counters(&self, store: Arc<crate::gcounter::GCounters>) {
        self.handle
            .with_chitchat(|cc| {
                let store = store.clone();
                cc.subscribe_event(crate::gcounter::GOSSIP_PREFIX, move |ev| {
                    if let Some(id) = ev
                        .node
                        .node_id
                        .strip_prefix("node-")
                        .and_then(|s| s.parse::<u64>().ok())
                    {
                        store.merge(id, ev.value);
                    }
                })
                .forever();
            })
            .await;
    }

    /// Calls `f(node id, generation, key without the prefix, value)` for each change gossip
    /// brings to a key under `prefix` (a restarted node has a newer generation). The callback
    /// runs inside gossip's lock: it must only store.
    pub async fn subscribe(
        &self,
        prefix: &'static str,
        f: impl Fn(u64, u64, &str, &str) + Send + Sync + 'static,
    ) {
        let f = Arc::new(f);
        self.handle
            .with_chitchat(|cc| {
                let f = f.clone();
                cc.subscribe_event(prefix, move |ev| {
                    if let Some(id) = ev
                        .node
                        .node_id
                        .strip_prefix("node-")
                        .and_then(|s| s.parse::<u64>().ok())
                    {
                        f(id, ev.node.generation_id, ev.key, ev.value);
                    }
                })
                .forever();
            })
            .await;
    }

    async fn publish(&self, key: &str, value: String) {
        self.handle
            .with_chitchat(|cc| cc.self_node_state().set(key, value.clone()))
            .await;
    }

    pub async fn shutdown(self) {
        let _ = self.handle.shutdown().await;
    }
}

/// Runs discovery for `node` until `stop` flips: bootstraps a new cluster when asked, keeps
/// this node's gossip entries current, and, while this node leads, adds live non-members.
pub async fn run(
    node: Arc<ClusterNode>,
    disc: Arc<Discovery>,
    bootstrap_expect: Option<u64>,
    has_seeds: bool,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let single = !has_seeds && bootstrap_expect.unwrap_or(1) <= 1;
    if single {
        let members = BTreeMap::from([(node.addrs.id, node.addrs.cluster.clone())]);
        if let Err(e) = node.initialize(members).await {
            tracing::error!(error = %e, "cannot initialise a single-node cluster");
        }
    }
    let joining: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let mut tick = tokio::time::interval(GOSSIP_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let initialized = node.raft.is_initialized().await.unwrap_or(false);
        disc.publish("initialized", initialized.to_string()).await;
        disc.publish("last_applied", node.sm.last_applied_index().to_string())
            .await;
        let peers = disc.peers().await;

        if !initialized {
            let Some(k) = bootstrap_expect.filter(|k| *k > 1) else {
                continue;
            };
            if peers.values().any(|p| p.live && p.initialized) {
                // A cluster exists; its leader will add us.
                continue;
            }
            let live: Vec<&Peer> = peers.values().filter(|p| p.live).collect();
            if (live.len() as u64) < k {
                continue;
            }
            let chosen: BTreeMap<u64, String> = live
                .iter()
                .take(k as usize)
                .map(|p| (p.id, p.cluster_addr.clone()))
                .collect();
            if chosen.keys().next() == Some(&node.addrs.id) {
                if let Err(e) = node.initialize(chosen).await {
                    tracing::warn!(error = %e, "bootstrap failed; retrying");
                }
            }
            continue;
        }

        if node.raft.metrics().borrow().state != ServerState::Leader {
            continue;
        }
        let membership = node.raft.metrics().borrow().membership_config.clone();
        for p in peers.values().filter(|p| p.live && p.id != node.addrs.id) {
            // Not a voter yet (unknown, or a learner whose promotion did not finish): join it.
            let voter = membership.membership().voter_ids().any(|v| v == p.id);
            if voter || p.cluster_addr.is_empty() {
                continue;
            }
            let mut j = joining.lock().unwrap_or_else(|e| e.into_inner());
            if !j.insert(p.id) {
                continue;
            }
            drop(j);
            let (node, joining, id, addr) =
                (node.clone(), joining.clone(), p.id, p.cluster_addr.clone());
            tokio::spawn(async move {
                if let Err(e) = node.add_member(id, addr).await {
                    tracing::warn!(node = id, error = %e, "adding node failed; will retry");
                }
                joining
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
            });
        }
    }
}
