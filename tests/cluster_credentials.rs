//! The cluster plane with credentials: members with the secret (or certificates from the
//! cluster CA) form a cluster and replicate; a node without them, forged RPCs and plain
//! requests are refused and shown in `GET /cluster`, and change nothing.

mod common;

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{eventually, raw, ClusterSpec, Node, BIN};
use serde_json::{json, Value};

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn secret() -> String {
    let out = std::process::Command::new(BIN)
        .args(["cluster", "secret"])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// `tollgate cluster certs --nodes n --out dir`.
fn make_certs(n: u32, dir: &Path) {
    let out = std::process::Command::new(BIN)
        .args(["cluster", "certs", "--nodes", &n.to_string(), "--out"])
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// Voter ids as `node` sees them.
async fn voters(node: &Node) -> Vec<u64> {
    let c = node.cluster().await;
    let mut v: Vec<u64> = c["members"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter(|m| m["role"] == "voter")
                .filter_map(|m| m["id"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Checks for 3 s (many gossip rounds, in which a live non-member would have been added) that
/// `node`'s voters stay `want`.
async fn voters_stay(node: &Node, want: &[u64]) {
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        assert_eq!(voters(node).await, want);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until `node` lists a refusal on `plane`, and returns it.
async fn refused(node: &Node, plane: &str) -> Value {
    eventually(&format!("a refusal on the {plane} plane"), || async {
        let c = node.cluster().await;
        c["rejected"]
            .as_array()?
            .iter()
            .find(|r| r["plane"] == plane)
            .cloned()
    })
    .await
}

#[tokio::test]
#[allow(clippy::await_holding_lock)]
async fn only_nodes_with_the_secret_join_and_replicate() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let spec = ClusterSpec::new(5);
    let (old, new) = (secret(), secret());
    let file = write(spec.dir.path(), "secret", &format!("{old}\n"));
    let nodes = spec
        .bootstrap(3, &["--cluster-secret-file", file.as_str()])
        .await;
    assert_eq!(nodes[0].cluster().await["credentials"], "secret");
    // Writes through a follower are forwarded over TLS and replicated everywhere.
    nodes[1]
        .create("/consumers", json!({"username": "alice"}))
        .await;
    for n in &nodes {
        let (s, _) = n.get("/consumers/alice?consistent=true").await;
        assert_eq!(s, 200);
    }

    // A rogue node that knows the seeds but not the secret: gossip refuses it, it is never
    // added, and its own cluster never forms.
    let seeds = spec.seeds(3);
    let wrong = write(spec.dir.path(), "wrong", &format!("{}\n", secret()));
    let rogue = spec
        .start(
            3,
            &[
                "--seeds",
                seeds.as_str(),
                "--cluster-secret-file",
                wrong.as_str(),
            ],
        )
        .await;
    let r = refused(&nodes[0], "gossip").await;
    assert!(
        r["reason"].as_str().unwrap().contains("does not hold"),
        "{r}"
    );
    // And one with no credentials at all (allowed on loopback, with a warning).
    let bare = spec.start(4, &["--seeds", seeds.as_str()]).await;
    eventually("the bare node's datagrams refused too", || async {
        let c = nodes[0].cluster().await;
        let g = c["rejected"]
            .as_array()?
            .iter()
            .find(|r| r["plane"] == "gossip")?
            .clone();
        (g["count"].as_u64()? >= 2 && g["reason"].as_str()?.contains("not a sealed")).then_some(())
    })
    .await;
    voters_stay(&nodes[0], &[1, 2, 3]).await;
    for n in [&rogue, &bare] {
        assert_eq!(n.cluster().await["leader_id"], Value::Null);
        assert_eq!(n.get("/consumers/alice").await.0, 404);
    }
    drop((rogue, bare));

    // Rotation, first step: a node holding the old secret first and the new one second still
    // sends with the old one, so the cluster adds it.
    let both = write(spec.dir.path(), "both", &format!("{old}\n{new}\n"));
    let joiner = spec
        .start(
            3,
            &[
                "--seeds",
                seeds.as_str(),
                "--cluster-secret-file",
                both.as_str(),
            ],
        )
        .await;
    eventually("the joiner becomes a voter", || async {
        (voters(&nodes[0]).await == vec![1, 2, 3, 4]).then_some(())
    })
    .await;
    eventually("the joiner has the data", || async {
        (joiner.get("/consumers/alice").await.0 == 200).then_some(())
    })
    .await;
}

#[tokio::test]
#[allow(clippy::await_holding_lock)]
async fn forged_and_plain_rpcs_are_refused_on_the_cluster_port() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let spec = ClusterSpec::new(1);
    let file = write(spec.dir.path(), "secret", &format!("{}\n", secret()));
    let node = spec
        .start(0, &["--cluster-secret-file", file.as_str()])
        .await;
    eventually("a leader", || async {
        node.cluster().await["leader_id"].as_u64()
    })
    .await;
    let cluster_port = spec.ports[0].3;
    // What worked before credentials: a plain POST of a JSON command to the forwarding
    // endpoint created a consumer with a key.
    let forged = br#"{"Put":{"entity":{"Consumer":{"id":"6ee2a1f5-0ccb-4ad1-9a4c-6a2e4b1c2d3e","username":"mallory","custom_id":null,"tags":null,"created_at":0,"updated_at":0}},"mode":"Create"}}"#;
    let mut req = format!(
        "POST /cluster/forward HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        forged.len()
    )
    .into_bytes();
    req.extend_from_slice(forged);
    let answer = raw(&format!("http://127.0.0.1:{cluster_port}"), req).await;
    assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    // A 16-byte snapshot claiming a 2^45-byte string, sent plain: refused at the handshake.
    let mut evil =
        b"POST /raft/snapshot HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\n".to_vec();
    evil.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let _ = raw(&format!("http://127.0.0.1:{cluster_port}"), evil).await;
    let r = refused(&node, "cluster").await;
    assert!(r["count"].as_u64().unwrap() >= 1, "{r}");
    assert_eq!(node.get("/consumers").await.1["data"], json!([]));
    assert_eq!(node.get("/status").await.0, 200);
}

#[tokio::test]
#[allow(clippy::await_holding_lock)]
async fn pki_mode_forms_a_cluster_and_refuses_other_cas() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let spec = ClusterSpec::new(4);
    let certs = spec.dir.path().join("pki");
    make_certs(3, &certs);
    let other = spec.dir.path().join("other-pki");
    make_certs(1, &other);
    let p = |dir: &Path, f: &str| dir.join(f).display().to_string();
    let seeds = spec.seeds(3);
    let mut nodes = Vec::new();
    for i in 0..3 {
        let (cert, key, ca) = (
            p(&certs, &format!("node-{}.pem", i + 1)),
            p(&certs, &format!("node-{}-key.pem", i + 1)),
            p(&certs, "ca.pem"),
        );
        nodes.push(
            spec.start(
                i,
                &[
                    "--seeds",
                    &seeds,
                    "--bootstrap-expect",
                    "3",
                    "--cluster-tls-cert",
                    &cert,
                    "--cluster-tls-key",
                    &key,
                    "--cluster-tls-ca",
                    &ca,
                ],
            )
            .await,
        );
    }
    nodes[0].wait_for_cluster(3).await;
    assert_eq!(nodes[0].cluster().await["credentials"], "pki");
    nodes[2]
        .create("/consumers", json!({"username": "bob"}))
        .await;
    assert_eq!(nodes[1].get("/consumers/bob?consistent=true").await.0, 200);
    // A node whose certificate another CA signed (it trusts that CA only).
    let (cert, key, ca) = (
        p(&other, "node-1.pem"),
        p(&other, "node-1-key.pem"),
        p(&other, "ca.pem"),
    );
    let _stranger = spec
        .start(
            3,
            &[
                "--seeds",
                &seeds,
                "--cluster-tls-cert",
                &cert,
                "--cluster-tls-key",
                &key,
                "--cluster-tls-ca",
                &ca,
            ],
        )
        .await;
    let r = refused(&nodes[0], "gossip").await;
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("not signed by the cluster CA"),
        "{r}"
    );
    voters_stay(&nodes[0], &[1, 2, 3]).await;
}
