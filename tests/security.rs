//! The security findings, each as the attack that worked before its fix: the attack must now
//! fail, and the node must keep serving.

mod common;

use common::{client, raw, Node};
use serde_json::{json, Value};

/// The node still answers and nothing was created.
async fn still_serving_and_unchanged(node: &Node) {
    let (s, b) = node.get("/consumers").await;
    assert_eq!(s, 200);
    assert_eq!(b["data"], json!([]), "nothing may have been created");
}

#[tokio::test]
async fn a_deeply_dotted_form_key_is_a_400_not_a_crash() {
    let node = Node::start().await;
    let key = "a.".repeat(29 * 1024) + "a";
    let r = client()
        .post(node.admin_url("/consumers"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("{key}=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let b: Value = r.json().await.unwrap();
    assert!(
        b["message"].as_str().unwrap().contains("deeper than 16"),
        "{b}"
    );
    still_serving_and_unchanged(&node).await;
}

#[tokio::test]
async fn cross_site_and_rebound_requests_are_refused() {
    let node = Node::start().await;
    let c = client();
    // A form post from a page on another site (no token is set: the loopback default).
    let r = c
        .post(node.admin_url("/consumers"))
        .header("origin", "https://evil.example")
        .form(&[("username", "mallory")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // The text/plain "simple request" a page can send without a preflight.
    let r = c
        .post(node.admin_url("/consumers"))
        .header("content-type", "text/plain")
        .body(r#"{"username": "mallory"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    // DNS rebinding: the page's own name arrives as Host.
    let r = c
        .get(node.admin_url("/consumers"))
        .header("host", "evil.example:8001")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let b: Value = r.json().await.unwrap();
    assert!(b["message"].as_str().unwrap().contains("--admin-hosts"));
    still_serving_and_unchanged(&node).await;
    // What curl and client libraries send still works.
    node.create("/consumers", json!({"username": "alice"}))
        .await;
}

#[tokio::test]
async fn oversized_fields_and_bodies_are_refused() {
    let node = Node::start().await;
    // Bodies past the limit are refused from their declared length, before they are read.
    let big = |path: &str, len: usize| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
             Content-Length: {len}\r\nConnection: close\r\n\r\n"
        )
        .into_bytes()
    };
    let answer = raw(&node.admin, big("/services", 2_000_000)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("the limit is 1048576 bytes"), "{answer}");
    let answer = raw(&node.admin, big("/config", 17 * 1024 * 1024)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let (s, b) = node
        .post("/services", json!({"name": "n".repeat(600), "host": "h"}))
        .await;
    assert_eq!(s, 400);
    assert_eq!(b["fields"]["name"], "length must be at most 512");
    let tags: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
    let (s, b) = node
        .post("/consumers", json!({"username": "u", "tags": tags}))
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["fields"]["tags"], "length must be at most 128");
    still_serving_and_unchanged(&node).await;
}

#[test]
fn a_node_reachable_by_other_hosts_needs_cluster_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let start = |extra: &[&str]| {
        std::process::Command::new(common::BIN)
            .args([
                "node",
                "--proxy-listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(["--advertise-addr", "127.0.0.1"])
            .args(extra)
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    for listeners in [
        [
            "--cluster-listen",
            "0.0.0.0:0",
            "--gossip-listen",
            "127.0.0.1:0",
        ],
        [
            "--cluster-listen",
            "127.0.0.1:0",
            "--gossip-listen",
            "0.0.0.0:0",
        ],
    ] {
        let out = start(&listeners);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--cluster-secret-file"), "{err}");
    }
    // A weak secret is refused too, naming the line.
    let weak = dir.path().join("weak");
    std::fs::write(&weak, "password\n").unwrap();
    let out = start(&[
        "--cluster-listen",
        "0.0.0.0:0",
        "--cluster-secret-file",
        weak.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1: not a secret"));
}
