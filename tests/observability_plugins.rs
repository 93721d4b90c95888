//! The logging and metrics plugins on one real node: `file-log` (Kong 3.9.3's
//! `spec/03-plugins/04-file-log/01-log_spec.lua`), `http-log`
//! (`spec/03-plugins/03-http-log/01-log_spec.lua`, and `kong/tools/queue.lua`'s dropping) and
//! `prometheus` (`spec/03-plugins/26-prometheus/02-access_spec.lua`,
//! `07-optional_fields_spec.lua`). Endpoints are local servers started by each test.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{client, eventually, Echo, Node};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// A node and backend with service `s`.
async fn setup() -> (Node, Echo) {
    let echo = Echo::start("obs").await;
    let node = Node::start().await;
    node.create("/services", json!({"name": "s", "url": echo.url()}))
        .await;
    (node, echo)
}

/// A route `name` on `/name` with `plugins` on it; returns the route.
async fn route(node: &Node, name: &str, plugins: &[Value]) -> Value {
    let r = node
        .create(
            "/services/s/routes",
            json!({"name": name, "paths": [format!("/{name}")]}),
        )
        .await;
    for p in plugins {
        node.create(&format!("/routes/{name}/plugins"), p.clone())
            .await;
    }
    r
}

async fn get(node: &Node, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut rq = client().get(node.proxy_url(path));
    for (k, v) in headers {
        rq = rq.header(*k, *v);
    }
    let r = tokio::time::timeout(Duration::from_secs(20), rq.send())
        .await
        .expect("the proxied request completes")
        .unwrap();
    let s = r.status().as_u16();
    let _ = r.bytes().await;
    s
}

/// The JSON lines of `path` once it holds at least `n`.
async fn lines(path: &std::path::Path, n: usize) -> Vec<Value> {
    eventually(&format!("{} holds {n} lines", path.display()), || async {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect();
        (lines.len() >= n).then_some(lines)
    })
    .await
}

#[tokio::test]
async fn file_log_writes_kongs_record_per_request_with_credentials_redacted() {
    // "logs to file": one JSON record per request, with Kong's fields.
    let (node, _echo) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("file.log");
    let r = route(
        &node,
        "f",
        // Kong's "logs custom values": constant snippets set and remove fields by path.
        &[json!({"name": "file-log", "config": {"path": path.to_str().unwrap(),
            "custom_fields_by_lua": {"env": "return 'prod'", "request.headers.x-drop": "return nil"}}})],
    )
    .await;
    assert_eq!(
        get(
            &node,
            "/f/x?a=1&b",
            &[
                ("authorization", "Basic c2VjcmV0"),
                ("x-uuid", "first"),
                ("x-drop", "1")
            ]
        )
        .await,
        200
    );
    let rec = &lines(&path, 1).await[0];
    assert_eq!(rec["request"]["method"], "GET");
    assert_eq!(rec["request"]["uri"], "/f/x?a=1&b");
    assert_eq!(rec["request"]["querystring"], json!({"a": "1", "b": true}));
    assert_eq!(rec["request"]["headers"]["x-uuid"], "first");
    assert_eq!(rec["env"], "prod");
    assert!(rec["request"]["headers"].get("x-drop").is_none());
    assert_eq!(rec["request"]["headers"]["authorization"], "REDACTED");
    assert_eq!(rec["response"]["status"], 200);
    assert!(rec["response"]["size"].as_u64().unwrap() > 0);
    // strip_path (on by default) took the route's prefix off.
    assert_eq!(rec["upstream_uri"], "/x?a=1&b");
    assert_eq!(rec["upstream_status"], "200");
    assert_eq!(rec["source"], "upstream");
    assert_eq!(rec["route"]["id"], r["id"]);
    assert_eq!(rec["route"]["name"], "f");
    assert_eq!(rec["service"]["name"], "s");
    assert_eq!(rec["client_ip"], "127.0.0.1");
    assert_eq!(rec["workspace_name"], "default");
    for k in ["kong", "proxy", "request", "receive"] {
        assert!(rec["latencies"][k].is_number(), "latencies.{k}: {rec}");
    }
    assert!(rec["started_at"].as_u64().unwrap() > 1_600_000_000_000);

    // A request an earlier plugin ends is logged too (Kong collects the plugins after the
    // one that exits), with the gateway as its source.
    let path2 = dir.path().join("auth.log");
    route(
        &node,
        "k",
        &[
            json!({"name": "key-auth"}),
            json!({"name": "file-log", "config": {"path": path2.to_str().unwrap()}}),
        ],
    )
    .await;
    assert_eq!(get(&node, "/k", &[]).await, 401);
    let rec = &lines(&path2, 1).await[0];
    assert_eq!(rec["response"]["status"], 401);
    assert_eq!(rec["source"], "kong");
    assert_eq!(rec["upstream_status"], "");
    assert_eq!(rec["latencies"]["proxy"], -1);
}

#[tokio::test]
async fn file_log_with_reopen_follows_a_rotated_file() {
    // "reopens file on each request": the removed file is created again.
    let (node, _echo) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rot.log");
    route(
        &node,
        "r",
        &[json!({"name": "file-log", "config": {"path": path.to_str().unwrap(), "reopen": true}})],
    )
    .await;
    assert_eq!(get(&node, "/r", &[("x-uuid", "one")]).await, 200);
    lines(&path, 1).await;
    std::fs::rename(&path, dir.path().join("rot.log.1")).unwrap();
    assert_eq!(get(&node, "/r", &[("x-uuid", "two")]).await, 200);
    assert_eq!(get(&node, "/r", &[("x-uuid", "three")]).await, 200);
    let recs = lines(&path, 2).await;
    let ids: Vec<&str> = recs
        .iter()
        .map(|r| r["request"]["headers"]["x-uuid"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["two", "three"]);
    let old = std::fs::read_to_string(dir.path().join("rot.log.1")).unwrap();
    assert_eq!(old.lines().count(), 1);
}

/// A log server answering 200 to each request; hands back each body.
async fn log_server() -> (u16, mpsc::UnboundedReceiver<(http::request::Parts, Bytes)>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |r: http::Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let (parts, body) = r.into_parts();
                            let b = body.collect().await.unwrap().to_bytes();
                            let _ = tx.send((parts, b));
                            Ok::<_, hyper::Error>(http::Response::new(http_body_util::Full::new(
                                Bytes::new(),
                            )))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (port, rx)
}

#[tokio::test]
async fn http_log_sends_records_one_by_one_or_batched() {
    // "logs to HTTP" and "logs to HTTP with a buffer" (queue.max_batch_size > 1: an array).
    let (node, _echo) = setup().await;
    let (port, mut rx) = log_server().await;
    route(
        &node,
        "one",
        &[json!({"name": "http-log", "config": {
            "http_endpoint": format!("http://bob:secret@127.0.0.1:{port}/single")}})],
    )
    .await;
    route(
        &node,
        "batch",
        &[json!({"name": "http-log", "config": {
            "http_endpoint": format!("http://127.0.0.1:{port}/batch"),
            "headers": {"x-log-key": "k1"},
            "queue": {"max_batch_size": 3, "max_coalescing_delay": 5}}})],
    )
    .await;
    assert_eq!(get(&node, "/one", &[]).await, 200);
    let (head, body) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.method, "POST");
    assert_eq!(head.uri.path(), "/single");
    assert_eq!(head.headers["content-type"], "application/json");
    // "adds authorization if userinfo and/or header is present".
    assert_eq!(head.headers["authorization"], "Basic Ym9iOnNlY3JldA==");
    let rec: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(rec["request"]["uri"], "/one");
    assert_eq!(rec["response"]["status"], 200);

    for _ in 0..3 {
        assert_eq!(get(&node, "/batch", &[]).await, 200);
    }
    let (head, body) = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.uri.path(), "/batch");
    assert_eq!(head.headers["x-log-key"], "k1");
    let batch: Value = serde_json::from_slice(&body).unwrap();
    let batch = batch.as_array().expect("a batch is an array");
    assert_eq!(batch.len(), 3);
    assert!(batch.iter().all(|r| r["request"]["uri"] == "/batch"));
}

/// `name{labels} value` lines of `text` whose labels include every `want` pair.
fn series<'a>(text: &'a str, name: &str, want: &[(&str, &str)]) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| {
            want.iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .collect()
}

fn value(line: &str) -> f64 {
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_hung_log_server_never_holds_requests_and_overflow_is_dropped_and_counted() {
    // "gracefully handles layer 4 failures", and queue.lua's "queue full, dropping old
    // entries": an endpoint that accepts and never answers.
    let (node, _echo) = setup().await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            keep.lock().unwrap().push(s);
        }
    });
    route(
        &node,
        "hung",
        &[json!({"name": "http-log", "config": {
            "http_endpoint": format!("http://127.0.0.1:{port}/"),
            "timeout": 600000,
            "queue": {"max_entries": 5}}})],
    )
    .await;
    // Every request completes while the endpoint hangs.
    for _ in 0..30 {
        assert_eq!(get(&node, "/hung", &[]).await, 200);
    }
    let m = eventually("drops are counted", || async {
        let m = node.metrics().await;
        let s = series(
            &m,
            "tollgate_log_entries_dropped_total",
            &[("plugin", "http-log")],
        );
        (s.len() == 1 && value(s[0]) >= 20.0).then_some(m)
    })
    .await;
    // 30 entries: one in flight, five waiting, the rest dropped.
    let dropped = value(
        series(
            &m,
            "tollgate_log_entries_dropped_total",
            &[("plugin", "http-log")],
        )[0],
    );
    assert!((20.0..=25.0).contains(&dropped), "{dropped}");
}

#[tokio::test]
async fn prometheus_records_a_family_only_when_an_instance_enables_it() {
    // 26-prometheus/07-optional_fields_spec.lua ("less metrics" with the flags off) and
    // 02-access_spec.lua (the series and their labels).
    let (node, _echo) = setup().await;
    route(&node, "off", &[json!({"name": "prometheus"})]).await;
    assert_eq!(get(&node, "/off", &[]).await, 200);
    let m = node.metrics().await;
    for family in [
        "kong_http_requests_total",
        "kong_request_latency_ms_bucket",
        "kong_kong_latency_ms_bucket",
        "kong_bandwidth_bytes",
    ] {
        assert!(
            series(&m, family, &[]).is_empty(),
            "{family} without its flag:\n{m}"
        );
    }
    // Node-level gauges are always there.
    assert_eq!(series(&m, "kong_datastore_reachable", &[]).len(), 1);
    assert_eq!(series(&m, "kong_node_info", &[]).len(), 1);
    assert_eq!(
        series(&m, "kong_nginx_connections_total", &[("state", "accepted")]).len(),
        1
    );

    node.create("/consumers", json!({"username": "alice"}))
        .await;
    node.create("/consumers/alice/key-auth", json!({"key": "alice-key"}))
        .await;
    route(
        &node,
        "on",
        &[
            json!({"name": "key-auth"}),
            json!({"name": "prometheus", "config": {
                "status_code_metrics": true, "latency_metrics": true,
                "bandwidth_metrics": true, "per_consumer": true}}),
        ],
    )
    .await;
    assert_eq!(get(&node, "/on", &[("apikey", "alice-key")]).await, 200);
    assert_eq!(get(&node, "/on", &[]).await, 401);
    let m = eventually("kong series", || async {
        let m = node.metrics().await;
        (!series(&m, "kong_http_requests_total", &[]).is_empty()).then_some(m)
    })
    .await;
    let ok = series(
        &m,
        "kong_http_requests_total",
        &[
            ("service", "s"),
            ("route", "on"),
            ("code", "200"),
            ("source", "service"),
            ("workspace", "default"),
            ("consumer", "alice"),
        ],
    );
    assert_eq!(ok.len(), 1, "{m}");
    assert_eq!(value(ok[0]), 1.0);
    let refused = series(
        &m,
        "kong_http_requests_total",
        &[
            ("route", "on"),
            ("code", "401"),
            ("source", "kong"),
            ("consumer", ""),
        ],
    );
    assert_eq!(refused.len(), 1, "{m}");
    // Nothing for the route without the flags.
    assert!(series(&m, "kong_http_requests_total", &[("route", "off")]).is_empty());
    for family in ["kong_request_latency_ms", "kong_kong_latency_ms"] {
        let count = series(
            &m,
            &format!("{family}_count"),
            &[("route", "on"), ("workspace", "default")],
        );
        assert_eq!(count.len(), 1, "{family}\n{m}");
        assert_eq!(value(count[0]), 2.0);
    }
    // Kong's buckets: 25 ms is the upstream histograms' first, 1 ms the kong one's.
    assert_eq!(
        series(
            &m,
            "kong_request_latency_ms_bucket",
            &[("route", "on"), ("le", "25")]
        )
        .len(),
        1
    );
    assert_eq!(
        series(
            &m,
            "kong_kong_latency_ms_bucket",
            &[("route", "on"), ("le", "1")]
        )
        .len(),
        1
    );
    // Only the proxied request has an upstream latency.
    let up = series(&m, "kong_upstream_latency_ms_count", &[("route", "on")]);
    assert_eq!(value(up[0]), 1.0);
    for dir in ["ingress", "egress"] {
        let b = series(
            &m,
            "kong_bandwidth_bytes",
            &[("route", "on"), ("direction", dir), ("consumer", "alice")],
        );
        assert_eq!(b.len(), 1, "{dir}\n{m}");
        assert!(value(b[0]) > 0.0);
    }
    assert_eq!(series(&m, "kong_nginx_metric_errors_total", &[]).len(), 1);
}
