//! Multi-node clusters on loopback: real processes, each with its own ports and data dir.
//! Cluster tests run one at a time (they each start several nodes on a 2-core machine).

mod common;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use common::{client, eventually, ClusterSpec, Echo, Node};
use serde_json::{json, Value};

// Each test owns its runtime and thread, so blocking that thread while another test runs is
// exactly what is wanted here.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

async fn proxy_status(node: &Node, path: &str) -> Option<u16> {
    client()
        .get(node.proxy_url(path))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

async fn service_count(node: &Node) -> usize {
    node.get("/services").await.1["data"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0)
}

#[tokio::test]
#[allow(clippy::await_holding_lock)]
async fn three_nodes_bootstrap_replicate_fail_over_and_restart() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let echo = Echo::start("backend").await;
    let spec = ClusterSpec::new(3);
    let mut nodes = spec.bootstrap(3, &[]).await;
    // Restarts use the same arguments as the bootstrap.
    let seeds = spec.seeds(3);
    let args = ["--seeds", seeds.as_str(), "--bootstrap-expect", "3"];
    let leader = nodes[0].wait_for_cluster(3).await;
    for n in &nodes {
        assert_eq!(
            n.wait_for_cluster(3).await,
            leader,
            "every node agrees on the leader"
        );
    }

    // Writes through every node; each node reads its own write at once.
    nodes[0]
        .create("/services", json!({"name": "svc", "url": echo.url()}))
        .await;
    assert_eq!(nodes[0].get("/services/svc").await.0, 200);
    nodes[1]
        .create(
            "/services/svc/routes",
            json!({"name": "r", "paths": ["/r"]}),
        )
        .await;
    assert_eq!(nodes[1].get("/routes/r").await.0, 200);
    nodes[2]
        .create("/consumers", json!({"username": "c"}))
        .await;
    assert_eq!(nodes[2].get("/consumers/c").await.0, 200);
    // Linearizable reads from any node see every acknowledged write.
    for n in &nodes {
        let (s, b) = n.get("/consumers?consistent=true").await;
        assert_eq!((s, b["data"].as_array().unwrap().len()), (200, 1));
    }
    // Every node's data plane serves the route.
    for n in &nodes {
        eventually("route served everywhere", || async {
            (proxy_status(n, "/r").await == Some(200)).then_some(())
        })
        .await;
    }

    // Two nodes racing to create the same name: exactly one wins.
    let (a, b) = tokio::join!(
        nodes[0].post(
            "/services",
            json!({"name": "dup", "url": "http://127.0.0.1:9"})
        ),
        nodes[2].post(
            "/services",
            json!({"name": "dup", "url": "http://127.0.0.1:9"})
        ),
    );
    let mut codes = [a.0, b.0];
    codes.sort();
    assert_eq!(codes, [201, 409], "{a:?} {b:?}");

    // Kill the leader: the survivors keep proxying, elect a new leader and take writes.
    let li = (leader - 1) as usize;
    nodes[li].proc.kill();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != li).collect();
    let killed_at = Instant::now();
    for &i in &survivors {
        assert_eq!(
            proxy_status(&nodes[i], "/r").await,
            Some(200),
            "survivor proxies keep serving"
        );
    }
    let s0 = &nodes[survivors[0]];
    eventually("a write through a survivor", || async {
        let (s, _) = s0
            .post("/consumers", json!({"username": "after-failover"}))
            .await;
        (s == 201).then_some(())
    })
    .await;
    let failover = killed_at.elapsed();
    eprintln!("figure: a survivor accepted a write {failover:?} after the leader was killed");
    assert!(
        failover < Duration::from_secs(30),
        "fail-over took {failover:?}"
    );
    let new_leader = s0.wait_for_cluster(3).await;
    assert_ne!(new_leader, leader);

    // The killed node restarts from its data dir and catches up.
    nodes[li] = spec.start(li, &args).await;
    let back = &nodes[li];
    eventually("restarted node catches up", || async {
        let (s, _) = back.get("/consumers/after-failover").await;
        (s == 200).then_some(())
    })
    .await;

    // Full-cluster restart: everything acknowledged is still there.
    for n in nodes.iter_mut() {
        assert!(n.proc.terminate(), "clean shutdown");
    }
    let nodes = vec![
        spec.start(0, &args).await,
        spec.start(1, &args).await,
        spec.start(2, &args).await,
    ];
    nodes[0].wait_for_cluster(3).await;
    for n in &nodes {
        assert_eq!(service_count(n).await, 2);
        assert_eq!(n.get("/consumers/after-failover").await.0, 200);
        eventually("route served after restart", || async {
            (proxy_status(n, "/r").await == Some(200)).then_some(())
        })
        .await;
    }

    // Quorum lost (2 of 3 down): writes fail fast with 503, reads and the proxy keep serving.
    let mut nodes = nodes;
    let last = nodes.pop().unwrap();
    for mut n in nodes {
        n.proc.kill();
    }
    let started = Instant::now();
    let (s, b) = last
        .post("/consumers", json!({"username": "no-quorum"}))
        .await;
    eprintln!(
        "figure: write without quorum answered {s} in {:?}",
        started.elapsed()
    );
    assert_eq!(s, 503, "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("quorum")
            || b["message"].as_str().unwrap().contains("leader")
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "503 took {:?}",
        started.elapsed()
    );
    assert_eq!(last.get("/services/svc").await.0, 200);
    assert_eq!(proxy_status(&last, "/r").await, Some(200));
}

#[tokio::test]
#[allow(clippy::await_holding_lock)]
async fn late_joiner_catches_up_through_a_snapshot() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let spec = ClusterSpec::new(4);
    let seeds = spec.seeds(3);
    let nodes = spec.bootstrap(3, &[]).await;

    // 2,100 writes, spread over the three nodes, 8 at a time.
    const WRITES: usize = 2100;
    let c = client();
    let mut pending = Vec::new();
    for i in 0..WRITES {
        let url = nodes[i % 3].admin_url("/consumers");
        let c = c.clone();
        pending.push(tokio::spawn(async move {
            let r = c
                .post(url)
                .json(&json!({"username": format!("user-{i}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
        }));
        if pending.len() == 8 {
            for p in pending.drain(..) {
                p.await.unwrap();
            }
        }
    }
    for p in pending {
        p.await.unwrap();
    }

    let joiner = spec.start(3, &["--seeds", seeds.as_str()]).await;
    joiner.wait_for_cluster(4).await;
    eventually("the joiner to hold every consumer", || async {
        let (_, st) = joiner.get("/status").await;
        (st["tollgate"]["entities"].as_u64() == Some(WRITES as u64)).then_some(())
    })
    .await;
    let m = client()
        .get(joiner.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let installed = m
        .lines()
        .find(|l| l.starts_with("tollgate_raft_snapshot_index "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(installed > 0, "the joiner got a snapshot: {installed}");
    let v: Value = joiner.get("/consumers/user-2099").await.1;
    assert_eq!(v["username"], "user-2099");

    // Removing a stopped member is a membership change through Raft.
    let mut joiner = joiner;
    joiner.proc.kill();
    let (s, b) = nodes[1]
        .send(reqwest::Method::DELETE, "/cluster/members/4", None)
        .await;
    assert_eq!(s, 204, "{b}");
    nodes[0].wait_for_cluster(3).await;
    eventually("member 4 gone from the cluster view", || async {
        let c = nodes[2].cluster().await;
        c["members"]
            .as_array()?
            .iter()
            .all(|m| m["id"] != 4)
            .then_some(())
    })
    .await;
    let (s, _) = nodes[0]
        .send(reqwest::Method::DELETE, "/cluster/members/x", None)
        .await;
    assert_eq!(s, 400);
}

#[tokio::test]
#[allow(clippy::await_holding_lock)]
async fn the_leader_can_remove_itself_and_is_added_back() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let spec = ClusterSpec::new(3);
    let nodes = spec.bootstrap(3, &[]).await;
    let leader = eventually("a leader", || async {
        nodes[0].cluster().await["leader_id"].as_u64()
    })
    .await;
    let via = &nodes[leader as usize - 1];
    let (s, b) = via
        .send(
            reqwest::Method::DELETE,
            &format!("/cluster/members/{leader}"),
            None,
        )
        .await;
    assert_eq!(s, 204, "{b}");
    // The removed node is alive and gossips, so the new leader adds it back; its Raft must
    // still work: a write through it is forwarded, committed and applied there.
    for n in &nodes {
        n.wait_for_cluster(3).await;
    }
    // Until the new leader is elected the write may get a 503; a retry after a lost answer
    // finds the name taken (409).
    eventually("a write through the removed node", || async {
        let (s, _) = via
            .send(
                reqwest::Method::POST,
                "/consumers",
                Some(json!({"username": "after-removal"})),
            )
            .await;
        (s == 201 || s == 409).then_some(())
    })
    .await;
    // Committed: every node applies it (a default read is served from the node's own state,
    // which may trail the commit by a moment on a loaded machine).
    for n in &nodes {
        eventually("the write applied on every node", || async {
            (n.get("/consumers/after-removal").await.0 == 200).then_some(())
        })
        .await;
    }
}

/// Credentials and ACL groups are replicated configuration: a revocation written through one
/// node is applied by every node that applies the log, and a node that was down when it
/// happened refuses the credential once it has caught up (eventually consistent, with the
/// bound of its catch-up; it never accepts a credential again after it has applied the
/// revocation).
#[tokio::test]
#[allow(clippy::await_holding_lock)]
async fn a_revoked_credential_stops_working_on_every_node_including_one_that_was_down() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let echo = Echo::start("backend").await;
    let spec = ClusterSpec::new(3);
    let mut nodes = spec.bootstrap(3, &[]).await;
    let seeds = spec.seeds(3);
    let args = ["--seeds", seeds.as_str(), "--bootstrap-expect", "3"];
    let a = &nodes[0];
    a.create("/services", json!({"name": "s", "url": echo.url()}))
        .await;
    let r = a
        .create("/services/s/routes", json!({"paths": ["/basic"]}))
        .await;
    let rid = r["id"].as_str().unwrap().to_string();
    a.create(
        &format!("/routes/{rid}/plugins"),
        json!({"name": "basic-auth"}),
    )
    .await;
    a.create(
        &format!("/routes/{rid}/plugins"),
        json!({"name": "acl", "config": {"allow": ["gold"]}}),
    )
    .await;
    a.create("/consumers", json!({"username": "c"})).await;
    a.create(
        "/consumers/c/basic-auth",
        json!({"username": "u", "password": "p"}),
    )
    .await;
    a.create("/consumers/c/acls", json!({"group": "gold"}))
        .await;
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("u:p")
    );
    let status = |n: &Node| {
        let url = n.proxy_url("/basic");
        let auth = auth.clone();
        async move {
            client()
                .get(url)
                .header("authorization", auth)
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16())
        }
    };
    for n in &nodes {
        eventually("credential accepted everywhere", || async {
            (status(n).await == Some(200)).then_some(())
        })
        .await;
    }
    // Node 3 is down while the consumer leaves the group through node 1.
    nodes[2].proc.kill();
    let (s, _) = nodes[0]
        .send(reqwest::Method::DELETE, "/consumers/c/acls/gold", None)
        .await;
    assert_eq!(s, 204);
    for n in &nodes[..2] {
        eventually("group removal applied on the live nodes", || async {
            (status(n).await == Some(403)).then_some(())
        })
        .await;
    }
    nodes[2] = spec.start(2, &args).await;
    eventually("the restarted node catches up and refuses", || async {
        (status(&nodes[2]).await == Some(403)).then_some(())
    })
    .await;
    // Deleting the credential itself, through node 2: 401 everywhere.
    nodes[0]
        .create("/consumers/c/acls", json!({"group": "gold"}))
        .await;
    for n in &nodes {
        eventually("accepted again", || async {
            (status(n).await == Some(200)).then_some(())
        })
        .await;
    }
    let (s, _) = nodes[1]
        .send(reqwest::Method::DELETE, "/consumers/c/basic-auth/u", None)
        .await;
    assert_eq!(s, 204);
    for n in &nodes {
        eventually("credential deletion applied", || async {
            (status(n).await == Some(401)).then_some(())
        })
        .await;
        // Once refused, it stays refused.
        for _ in 0..20 {
            assert_eq!(status(n).await, Some(401));
        }
    }
}
