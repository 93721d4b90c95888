//! The hostile-peer nemesis: what someone on the cluster's network without its credentials
//! tries, all at once against one node while the workloads run.
//!
//! - A rogue node (id 99) with another secret, gossiping to every node's seeds: it must never
//!   be added as a learner or voter.
//! - Forged RPCs in plain HTTP on the cluster port: a forwarded write creating a consumer, a
//!   Raft append from a leader of a far higher term carrying that write, a 16-byte snapshot
//!   claiming a 2^45-byte string. And a TLS handshake with a certificate from another secret.
//! - Datagrams on the gossip port: random bytes, Tollgate headers with junk, datagrams sealed
//!   with another secret, and datagrams sealed with the cluster's own secret but ten minutes
//!   old or ahead (replays).
//!
//! What must hold, checked during and after: membership stays the cluster's own nodes, no
//! forged consumer exists anywhere, the attacked node is refused on both planes (so the attack
//! did reach it), and the workloads' own checkers (linearizability, availability) still pass.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tollgate_cluster::auth::{keyring, Keyring, RpcTls, Sealer, DEFAULT_SERVER_NAME};
use tollgate_config::{Command, Consumer, Entity, PutMode};

use crate::control::Cluster;
use crate::nemesis::unix_ms;

/// The rogue node's id.
pub const ROGUE_ID: u64 = 99;
/// Forged consumers are named with this prefix: none may ever exist.
pub const FORGED_PREFIX: &str = "hostile-";

fn forged_command(rng: &mut StdRng) -> Command {
    Command::Put {
        entity: Entity::Consumer(Consumer {
            id: uuid::Uuid::from_u128(rng.random()),
            username: Some(format!("{FORGED_PREFIX}{}", rng.random::<u32>())),
            custom_id: None,
            tags: None,
            created_at: 0,
            updated_at: 0,
        }),
        mode: PutMode::Create,
    }
}

/// A forged Raft append: a leader of term 10^6 sending the forged write as entry 1.
fn forged_append(cmd: Command) -> Vec<u8> {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
    let req = openraft::raft::AppendEntriesRequest::<tollgate_storage::TypeConfig> {
        vote: Vote::new_committed(1_000_000, ROGUE_ID),
        prev_log_id: None,
        entries: vec![Entry {
            log_id: LogId::new(CommittedLeaderId::new(1_000_000, ROGUE_ID), 1),
            payload: EntryPayload::Normal(cmd),
        }],
        leader_commit: Some(LogId::new(CommittedLeaderId::new(1_000_000, ROGUE_ID), 1)),
    };
    bincode::serde::encode_to_vec(&req, bincode::config::standard()).unwrap_or_default()
}

/// Sends one plain HTTP POST and returns whatever came back (nothing, from a TLS listener).
async fn plain_post(addr: &str, path: &str, body: &[u8]) -> String {
    let Ok(Ok(mut s)) =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await
    else {
        return String::new();
    };
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let _ = s.write_all(&req).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether a TLS handshake with a certificate from `ring`'s CA completes on `addr`.
async fn tls_handshake_accepted(addr: &str, ring: &Keyring) -> bool {
    let Ok(tls) = RpcTls::from_keyring(ring, DEFAULT_SERVER_NAME) else {
        return false;
    };
    let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
    let Ok(Ok(tcp)) =
        tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await
    else {
        return false;
    };
    let Ok(Ok(mut stream)) = tokio::time::timeout(
        Duration::from_secs(3),
        connector.connect(tls.server_name.clone(), tcp),
    )
    .await
    else {
        return false;
    };
    // TLS 1.3: the server's verdict on our certificate arrives after the client's handshake
    // ends. A refused client reads an alert, an accepted one gets an HTTP answer.
    let _ = stream
        .write_all(b"POST /cluster/read-index HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        .await;
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(3), stream.read(&mut buf)).await,
        Ok(Ok(n)) if n > 0 && buf.starts_with(b"HTTP/")
    )
}

/// Sum of refusals per plane that `node` reports.
async fn refusals(cluster: &Cluster, node: usize) -> (u64, u64) {
    let Some(v) = cluster.cluster_view(node).await else {
        return (0, 0);
    };
    let mut sums = (0, 0);
    for r in v["rejected"].as_array().into_iter().flatten() {
        let c = r["count"].as_u64().unwrap_or(0);
        match r["plane"].as_str() {
            Some("cluster") => sums.0 += c,
            Some("gossip") => sums.1 += c,
            _ => {}
        }
    }
    sums
}

/// Member ids some node reports that are not the cluster's own.
pub async fn foreign_members(cluster: &Cluster) -> Vec<(usize, u64)> {
    let mut out = Vec::new();
    for n in 0..cluster.len() {
        if let Some(v) = cluster.cluster_view(n).await {
            for m in v["members"].as_array().into_iter().flatten() {
                let id = m["id"].as_u64().unwrap_or(0);
                if id == 0 || id > cluster.len() as u64 {
                    out.push((n, id));
                }
            }
        }
    }
    out
}

/// Forged consumers some node serves.
pub async fn forged_consumers(cluster: &Cluster) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for n in 0..cluster.len() {
        for name in cluster.consumer_names(n).await {
            if name.starts_with(FORGED_PREFIX) {
                out.push((n, name));
            }
        }
    }
    out
}

/// Runs every attack against `node` for a few seconds; returns what was done and, if a
/// guarantee broke, the problem.
pub async fn attack(
    cluster: &Cluster,
    node: usize,
    rng: &mut StdRng,
) -> anyhow::Result<(String, Option<String>)> {
    let mut problems = Vec::new();
    let before = refusals(cluster, node).await;
    let wrong_secret = keyring::generate();
    let wrong_file = cluster.out.join("rogue.secret");
    std::fs::write(&wrong_file, format!("{wrong_secret}\n"))?;
    cluster.start_rogue(&wrong_file)?;

    let (cluster_addr, gossip_addr) = cluster.cluster_plane(node);
    let forged = forged_command(rng);
    let forward = bincode::serde::encode_to_vec(&forged, bincode::config::standard())?;
    let mut bomb = vec![0xfdu8];
    bomb.extend_from_slice(&(1u64 << 45).to_le_bytes());
    bomb.extend_from_slice(&[0u8; 7]);
    let rpcs = [
        ("/cluster/forward", forward),
        ("/raft/append", forged_append(forged_command(rng))),
        ("/raft/snapshot", bomb),
    ];
    for (path, body) in &rpcs {
        let answer = plain_post(&cluster_addr, path, body).await;
        if answer.starts_with("HTTP/1.1 2") {
            problems.push(format!(
                "a plain {path} was answered: {}",
                answer.lines().next().unwrap_or("")
            ));
        }
    }
    let wrong_ring = Keyring::parse(&wrong_secret)?;
    if tls_handshake_accepted(&cluster_addr, &wrong_ring).await {
        problems.push("a TLS client with a foreign certificate was served".into());
    }

    let socket = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
    let right = Sealer::Aead(Arc::new(Keyring::parse(&cluster.secret)?));
    let wrong = Sealer::Aead(Arc::new(wrong_ring));
    let ten_minutes = 600_000;
    let mut datagrams: Vec<Vec<u8>> = Vec::new();
    for _ in 0..20 {
        let len = rng.random_range(1..1400);
        datagrams.push((0..len).map(|_| rng.random()).collect());
    }
    for _ in 0..5 {
        let mut d = b"TG\x01\x01".to_vec();
        d.extend((0..rng.random_range(0..200)).map(|_| rng.random::<u8>()));
        datagrams.push(d);
        datagrams.push(wrong.seal(b"\xd3\xb0\x00\x00", unix_ms()));
        datagrams.push(right.seal(b"\xd3\xb0\x00\x00", unix_ms() - ten_minutes));
        datagrams.push(right.seal(b"\xd3\xb0\x00\x00", unix_ms() + ten_minutes));
    }
    for d in &datagrams {
        let _ = socket.send_to(d, &gossip_addr).await;
    }

    // Hold, watching membership: the rogue is alive and gossiping the whole time.
    let until = tokio::time::Instant::now() + Duration::from_millis(rng.random_range(3000..7000));
    while tokio::time::Instant::now() < until {
        let foreign = foreign_members(cluster).await;
        if !foreign.is_empty() {
            problems.push(format!("foreign members (node, id): {foreign:?}"));
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    cluster.stop_rogue();

    let after = refusals(cluster, node).await;
    let (cluster_refused, gossip_refused) = (
        after.0.saturating_sub(before.0),
        after.1.saturating_sub(before.1),
    );
    if cluster_refused == 0 || gossip_refused == 0 {
        problems.push(format!(
            "the attack did not show on node {}: refusals cluster +{cluster_refused}, gossip +{gossip_refused}",
            node + 1
        ));
    }
    let detail = format!(
        "hostile peer at node {}: rogue node {ROGUE_ID}, {} forged RPCs and a foreign TLS client, \
         {} bad datagrams (10 replays); refused: cluster +{cluster_refused}, gossip +{gossip_refused}",
        node + 1,
        rpcs.len(),
        datagrams.len()
    );
    let problem = (!problems.is_empty()).then(|| problems.join("; "));
    Ok((detail, problem))
}

/// The end-of-run check: nothing the hostile nemesis tried left a trace in state or
/// membership.
pub async fn check(cluster: &Cluster, exercised: usize) -> Value {
    let foreign = foreign_members(cluster).await;
    let forged = forged_consumers(cluster).await;
    serde_json::json!({
        "valid": foreign.is_empty() && forged.is_empty(),
        "hostile_faults": exercised,
        "foreign_members": foreign,
        "forged_consumers": forged,
    })
}
