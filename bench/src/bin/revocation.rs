//! How fast a revoked credential stops working on every node of a 3-node cluster, under load.
//!
//! Four revocations, each repeated 30 times: delete a key-auth key, a basic-auth credential,
//! a jwt secret, and remove the consumer from the ACL group a route allows. The change goes
//! through node 1's Admin API; on every node, clients keep sending the credential (4
//! connections per node, back to back) the whole time. For each revocation the figure is the
//! time from sending the Admin API request to the first refusal (401/403) on the last node to
//! refuse, after which that node never accepts again. Between rounds the credential is put
//! back and every node must accept it again.
//!
//! Kong's reference point: a node learns of a change by polling the database every
//! `db_update_frequency` (5 s by default), so a revoked credential can keep working up to
//! about 5 s on a node, plus its cache TTLs.
//!
//! Run: `cargo build --release -p tollgate && cargo run --release -p tollgate-bench --bin revocation`

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::json;
use tollgate_bench::{admin_post, client, cluster, pct, spawn_echo};

const ROUNDS: usize = 30;
const CLIENTS_PER_NODE: usize = 4;

/// One kind of revocation: how a request carries the credential, how to revoke it, how to
/// give it back.
struct Kind {
    name: &'static str,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    revoke: (&'static str, &'static str),
    restore: (&'static str, serde_json::Value),
}

fn b64url(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn jwt() -> String {
    use hmac::Mac;
    let h = b64url(r#"{"alg":"HS256","typ":"JWT"}"#);
    let p = b64url(r#"{"iss":"rev-iss"}"#);
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"rev-secret").unwrap();
    m.update(format!("{h}.{p}").as_bytes());
    let s = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("Bearer {h}.{p}.{s}")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (_echo, echo_port) = spawn_echo();
    let dir = tempfile::tempdir()?;
    let nodes = cluster(3, dir.path()).await;
    let a = nodes[0].admin.clone();
    admin_post(
        &a,
        "/services",
        json!({"name": "s", "url": format!("http://127.0.0.1:{echo_port}")}),
    )
    .await?;
    admin_post(&a, "/consumers", json!({"username": "rev"})).await?;
    for (route, plugins) in [
        ("/key", vec![json!({"name": "key-auth"})]),
        ("/basic", vec![json!({"name": "basic-auth"})]),
        ("/jwt", vec![json!({"name": "jwt"})]),
        (
            "/acl",
            vec![
                json!({"name": "key-auth"}),
                json!({"name": "acl", "config": {"allow": ["rev-group"]}}),
            ],
        ),
    ] {
        let r = admin_post(&a, "/services/s/routes", json!({"paths": [route]})).await?;
        for p in plugins {
            admin_post(
                &a,
                &format!("/routes/{}/plugins", r["id"].as_str().unwrap_or_default()),
                p,
            )
            .await?;
        }
    }
    admin_post(&a, "/consumers/rev/key-auth", json!({"key": "rev-acl-key"})).await?;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("rev-user:rev-password")
    );
    let kinds = vec![
        Kind {
            name: "key-auth key deleted",
            path: "/key",
            headers: vec![("apikey", "rev-key".into())],
            revoke: ("DELETE", "/consumers/rev/key-auth/rev-key"),
            restore: ("/consumers/rev/key-auth", json!({"key": "rev-key"})),
        },
        Kind {
            name: "basic-auth credential deleted",
            path: "/basic",
            headers: vec![("authorization", basic)],
            revoke: ("DELETE", "/consumers/rev/basic-auth/rev-user"),
            restore: (
                "/consumers/rev/basic-auth",
                json!({"username": "rev-user", "password": "rev-password"}),
            ),
        },
        Kind {
            name: "jwt secret deleted",
            path: "/jwt",
            headers: vec![("authorization", jwt())],
            revoke: ("DELETE", "/consumers/rev/jwt/rev-iss"),
            restore: (
                "/consumers/rev/jwt",
                json!({"key": "rev-iss", "secret": "rev-secret"}),
            ),
        },
        Kind {
            name: "consumer removed from the ACL group",
            path: "/acl",
            headers: vec![("apikey", "rev-acl-key".into())],
            revoke: ("DELETE", "/consumers/rev/acls/rev-group"),
            restore: ("/consumers/rev/acls", json!({"group": "rev-group"})),
        },
    ];
    let c = client();
    println!("3 nodes on loopback, {CLIENTS_PER_NODE} clients per node sending the credential back to back; {ROUNDS} revocations each");
    for kind in &kinds {
        let mut worst = Vec::new();
        let mut served = 0u64;
        for _ in 0..ROUNDS {
            admin_post(&a, kind.restore.0, kind.restore.1.clone()).await?;
            // Every node accepts the credential again before it is revoked.
            for n in &nodes {
                let t = Instant::now();
                loop {
                    let mut rq = c.get(format!("{}{}", n.proxy, kind.path));
                    for (k, v) in &kind.headers {
                        rq = rq.header(*k, v);
                    }
                    if rq.send().await?.status() == 200 {
                        break;
                    }
                    anyhow::ensure!(
                        t.elapsed() < Duration::from_secs(10),
                        "{}: never accepted",
                        kind.name
                    );
                }
            }
            // Load on every node; each client notes when it first sees a refusal after t0,
            // and whether it ever saw an acceptance after that.
            let stop = Arc::new(AtomicBool::new(false));
            let t0 = Arc::new(std::sync::OnceLock::<Instant>::new());
            let mut tasks = Vec::new();
            let count = Arc::new(AtomicU64::new(0));
            let refusing = Arc::new(AtomicUsize::new(0));
            for n in &nodes {
                for _ in 0..CLIENTS_PER_NODE {
                    let (stop, t0, count) = (stop.clone(), t0.clone(), count.clone());
                    let refusing = refusing.clone();
                    let url = format!("{}{}", n.proxy, kind.path);
                    let headers = kind.headers.clone();
                    let c = client();
                    tasks.push(tokio::spawn(async move {
                        let mut refused_at: Option<Duration> = None;
                        let mut accepted_after = false;
                        while !stop.load(Ordering::Relaxed) {
                            let sent = Instant::now();
                            let mut rq = c.get(&url);
                            for (k, v) in &headers {
                                rq = rq.header(*k, v);
                            }
                            let Ok(r) = rq.send().await else { continue };
                            count.fetch_add(1, Ordering::Relaxed);
                            let Some(start) = t0.get().copied() else {
                                continue;
                            };
                            // Only a request sent after the revocation started counts.
                            if sent < start {
                                continue;
                            }
                            match r.status().as_u16() {
                                200 if refused_at.is_some() => accepted_after = true,
                                401 | 403 if refused_at.is_none() => {
                                    refused_at = Some(Instant::now() - start);
                                    refusing.fetch_add(1, Ordering::Relaxed);
                                }
                                _ => {}
                            }
                        }
                        (refused_at, accepted_after)
                    }));
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = t0.set(Instant::now());
            let r = c
                .request(kind.revoke.0.parse()?, format!("{a}{}", kind.revoke.1))
                .send()
                .await?;
            anyhow::ensure!(
                r.status() == 204,
                "{}: revoke answered {}",
                kind.name,
                r.status()
            );
            // Until every client has seen a refusal (10 s at most), then 200 ms more in which
            // none may be accepted again.
            let deadline = Instant::now() + Duration::from_secs(10);
            let total = nodes.len() * CLIENTS_PER_NODE;
            while refusing.load(Ordering::Relaxed) < total && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            stop.store(true, Ordering::Relaxed);
            let mut last = Duration::ZERO;
            for t in tasks {
                let (refused, accepted_after) = t.await?;
                let refused = refused.ok_or_else(|| {
                    anyhow::anyhow!("{}: a client never saw a refusal", kind.name)
                })?;
                anyhow::ensure!(
                    !accepted_after,
                    "{}: accepted again after a refusal",
                    kind.name
                );
                last = last.max(refused);
            }
            anyhow::ensure!(Instant::now() < deadline, "{}: too slow", kind.name);
            served += count.load(Ordering::Relaxed);
            worst.push(last);
        }
        worst.sort();
        println!(
            "{:<38} until every node refuses: p50 {:6.2} ms  p99 {:6.2} ms  max {:6.2} ms   ({} requests served during the rounds; Kong: up to ~5,000 ms)",
            kind.name,
            pct(&worst, 0.5).as_secs_f64() * 1e3,
            pct(&worst, 0.99).as_secs_f64() * 1e3,
            worst.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            served
        );
    }
    Ok(())
}
