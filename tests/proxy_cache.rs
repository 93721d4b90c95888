//! The proxy-cache plugin end to end on real nodes: a purge through any node's Admin API
//! empties every node's cache (three nodes), and a body larger than the store's entry bound
//! goes to the client whole and uncached (declared or chunked).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::{client, eventually, ClusterSpec, Echo, Node};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

// Each test owns its runtime and thread; blocking it while another test runs is the point.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Larger than the store's entry bound (4 MiB).
const BIG: usize = 5 * 1024 * 1024;

/// A backend answering `/sized/<n>` with `n` bytes (Content-Length) and `/chunked/<n>` with
/// `n` bytes chunked, `text/plain`; counts the requests it answered.
async fn sized_backend() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let counted = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head);
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let (chunked, n) = match path.rsplit_once('/') {
                    Some((kind, n)) => (kind == "/chunked", n.parse::<usize>().unwrap_or(0)),
                    None => (false, 0),
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let body = vec![b'x'; n];
                let mut out = Vec::new();
                if chunked {
                    out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n");
                    for c in body.chunks(64 * 1024) {
                        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
                        out.extend_from_slice(c);
                        out.extend_from_slice(b"\r\n");
                    }
                    out.extend_from_slice(b"0\r\n\r\n");
                } else {
                    out.extend_from_slice(
                        format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {n}\r\nconnection: close\r\n\r\n")
                            .as_bytes(),
                    );
                    out.extend_from_slice(&body);
                }
                let _ = s.write_all(&out).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, count)
}

/// GETs `path` through `node`'s proxy: status, `X-Cache-Status`, `X-Cache-Key`, body length.
async fn get(node: &Node, path: &str) -> (u16, String, String, usize) {
    let r = client().get(node.proxy_url(path)).send().await.unwrap();
    let h = |n: &str| {
        r.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (status, cache, key) = (r.status().as_u16(), h("x-cache-status"), h("x-cache-key"));
    let len = r.bytes().await.unwrap().len();
    (status, cache, key, len)
}

async fn delete(node: &Node, path: &str) -> u16 {
    client()
        .delete(node.admin_url(path))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
#[allow(clippy::await_holding_lock)]
async fn bodies_over_the_entry_bound_pass_through_uncached() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (addr, answered) = sized_backend().await;
    let node = Node::start().await;
    node.create(
        "/services",
        json!({"name": "s", "url": format!("http://{addr}")}),
    )
    .await;
    let route = node
        .create("/services/s/routes", json!({"paths": ["/"]}))
        .await;
    node.create(
        "/plugins",
        json!({"name": "proxy-cache", "route": {"id": route["id"]}, "config": {"strategy": "memory"}}),
    )
    .await;
    let before = answered.load(Ordering::SeqCst);
    for small in ["/sized/1000", "/chunked/1000"] {
        assert_eq!(get(&node, small).await.1, "Miss", "{small}");
        let (status, cache, _, len) = get(&node, small).await;
        assert_eq!((status, cache.as_str(), len), (200, "Hit", 1000), "{small}");
    }
    assert_eq!(answered.load(Ordering::SeqCst) - before, 2);

    // Declared too large: not stored, and said so at once.
    let (status, cache, _, len) = get(&node, &format!("/sized/{BIG}")).await;
    assert_eq!((status, cache.as_str(), len), (200, "Bypass", BIG));
    let (status, cache, _, len) = get(&node, &format!("/sized/{BIG}")).await;
    assert_eq!((status, cache.as_str(), len), (200, "Bypass", BIG));
    // Chunked: its size shows only once the head was sent (Miss), and it is not stored.
    for _ in 0..2 {
        let (status, cache, _, len) = get(&node, &format!("/chunked/{BIG}")).await;
        assert_eq!((status, cache.as_str(), len), (200, "Miss", BIG));
    }
    assert_eq!(answered.load(Ordering::SeqCst) - before, 6);
}

#[tokio::test]
#[allow(clippy::await_holding_lock)]
async fn a_purge_through_any_node_empties_every_nodes_cache() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let echo = Echo::start("e").await;
    let spec = ClusterSpec::new(3);
    let nodes = spec.bootstrap(3, &[]).await;
    nodes[0]
        .create("/services", json!({"name": "s", "url": echo.url()}))
        .await;
    let route = nodes[0]
        .create("/services/s/routes", json!({"paths": ["/c"]}))
        .await;
    let plugin = nodes[0]
        .create(
            "/plugins",
            json!({"name": "proxy-cache", "route": {"id": route["id"]}, "config": {"strategy": "memory"}}),
        )
        .await;
    let plugin = plugin["id"].as_str().unwrap().to_string();
    // Every node serves the route with the plugin (configuration replicates through Raft).
    for n in &nodes {
        eventually("proxy-cache applied", || async {
            let (_, cache, _, _) = get(n, "/c").await;
            (!cache.is_empty()).then_some(())
        })
        .await;
    }
    // Each node has its own cache, and the key is the same everywhere.
    let warm = || async {
        let mut keys = Vec::new();
        for n in &nodes {
            let (_, cache, key, _) = get(n, "/c").await;
            assert!(cache == "Miss" || cache == "Hit", "{cache}");
            let (_, cache, key2, _) = get(n, "/c").await;
            assert_eq!(cache, "Hit");
            assert_eq!(key, key2);
            keys.push(key);
        }
        keys.dedup();
        assert_eq!(keys.len(), 1);
        keys.pop().unwrap()
    };
    let ns = &nodes;
    let all_miss = |why: &'static str| async move {
        for (i, n) in ns.iter().enumerate() {
            assert_eq!(get(n, "/c").await.1, "Miss", "node {i} after {why}");
        }
    };

    // One key, purged through node 0: gone everywhere once the Admin API answered.
    let key = warm().await;
    assert_eq!(delete(&nodes[0], &format!("/proxy-cache/{key}")).await, 204);
    all_miss("a key purge").await;

    // Everything, flushed through node 1.
    warm().await;
    assert_eq!(delete(&nodes[1], "/proxy-cache").await, 204);
    all_miss("a flush").await;

    // Through a plugin, from node 2.
    warm().await;
    assert_eq!(
        delete(&nodes[2], &format!("/proxy-cache/{plugin}/caches/{key}")).await,
        204
    );
    all_miss("a purge through the plugin").await;

    // An entry only node 2 holds is purged through node 0 (204: some node held it), and a
    // second purge finds nothing (404).
    assert_eq!(delete(&nodes[1], "/proxy-cache").await, 204);
    assert_eq!(get(&nodes[2], "/c").await.1, "Miss");
    assert_eq!(get(&nodes[2], "/c").await.1, "Hit");
    assert_eq!(delete(&nodes[0], &format!("/proxy-cache/{key}")).await, 204);
    assert_eq!(delete(&nodes[0], &format!("/proxy-cache/{key}")).await, 404);
    assert_eq!(get(&nodes[2], "/c").await.1, "Miss");
}
