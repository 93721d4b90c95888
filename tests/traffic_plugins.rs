//! Hostile input to the traffic plugins (issue 17): huge, deep and malformed bodies for the
//! transformers, bodies that lie about their length, broken templates, multipart without its
//! parts, origins that are not origins. Each gets a clear answer (Kong's status and message
//! where Kong has one), nothing grows without bound, and the node keeps serving. The logging
//! plugins' down or slow endpoints are in `tests/observability_plugins.rs`.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{client, Echo, Node};
use serde_json::{json, Value};

/// A node and backend with service `s`.
async fn setup() -> (Node, Echo) {
    let echo = Echo::start("traffic").await;
    let node = Node::start().await;
    node.create("/services", json!({"name": "s", "url": echo.url()}))
        .await;
    (node, echo)
}

/// A route on `/name` with `plugins`.
async fn route(node: &Node, name: &str, plugins: &[Value]) {
    node.create(
        "/services/s/routes",
        json!({"name": name, "paths": [format!("/{name}")]}),
    )
    .await;
    for p in plugins {
        node.create(&format!("/routes/{name}/plugins"), p.clone())
            .await;
    }
}

async fn post(node: &Node, path: &str, content_type: &str, body: Vec<u8>) -> (u16, String) {
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        client()
            .post(node.proxy_url(path))
            .header("content-type", content_type)
            .body(body)
            .send(),
    )
    .await
    .expect("answered in time")
    .unwrap();
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// The node still proxies a plain request.
async fn still_serving(node: &Node, path: &str) {
    let r = client().get(node.proxy_url(path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "the node keeps serving {path}");
}

/// Sends `bytes` and returns what the node answers until it closes the connection (the
/// requests say `Connection: close`). With `close_write`, the sending side is closed after
/// the bytes (a client that stops short).
async fn raw(node: &Node, bytes: Vec<u8>, close_write: bool) -> String {
    let addr = node.proxy_url("").trim_start_matches("http://").to_string();
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = s.write_all(&bytes);
        if close_write {
            let _ = s.shutdown(std::net::Shutdown::Write);
        }
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn request_transformer_survives_hostile_bodies() {
    let (node, _echo) = setup().await;
    route(
        &node,
        "rt",
        &[json!({"name": "request-transformer",
                 "config": {"add": {"body": ["added:yes"]}, "remove": {"body": ["secret"]}}})],
    )
    .await;

    // Over the proxy's 8 MiB bound for a body a plugin reads: Kong-style 413, not a crash.
    let huge = format!("{{\"a\":\"{}\"}}", "x".repeat(9 * 1024 * 1024));
    let (status, body) = post(&node, "/rt", "application/json", huge.into_bytes()).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("Request body too large"), "{body}");

    // Nesting deep enough to overflow a recursive parser: refused as JSON, sent unchanged.
    let deep = "[".repeat(200_000);
    let (status, body) = post(&node, "/rt", "application/json", deep.clone().into_bytes()).await;
    assert_eq!(status, 200);
    let echoed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["body_bytes"], deep.len());

    // Malformed JSON: left as it came (Kong's transform_json_body returns false).
    let (status, body) = post(
        &node,
        "/rt",
        "application/json",
        b"{\"secret\": 1,".to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    let echoed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echoed["body"], "{\"secret\": 1,");

    // A JSON body the plugin can edit.
    let (status, body) = post(
        &node,
        "/rt",
        "application/json",
        b"{\"secret\": 1, \"k\": 2}".to_vec(),
    )
    .await;
    assert_eq!(status, 200);
    let echoed: Value = serde_json::from_str(&body).unwrap();
    let sent: Value = serde_json::from_str(echoed["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent, json!({"k": 2, "added": "yes"}));

    // Multipart whose boundary never appears, and one without a boundary: unchanged.
    for ct in ["multipart/form-data; boundary=nope", "multipart/form-data"] {
        let (status, body) = post(&node, "/rt", ct, b"garbage without parts".to_vec()).await;
        assert_eq!(status, 200, "{ct}");
        let echoed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(echoed["body"], "garbage without parts", "{ct}");
    }

    // A form with more fields than Kong reads (100): the rest are dropped, nothing explodes.
    let form: String = (0..5000).map(|i| format!("f{i}=v&")).collect();
    let (status, _) = post(
        &node,
        "/rt",
        "application/x-www-form-urlencoded",
        form.into_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    still_serving(&node, "/rt").await;
}

#[tokio::test]
async fn a_template_that_fails_is_kongs_500_and_nothing_else() {
    let (node, _echo) = setup().await;
    // Header values are not compiled when written (Kong), so a bad one fails when used.
    route(
        &node,
        "bad",
        &[json!({"name": "request-transformer",
                 "config": {"add": {"headers": ["x-a:$(shared.written = true)"]}}})],
    )
    .await;
    route(
        &node,
        "call",
        &[json!({"name": "request-transformer",
                 "config": {"add": {"headers": ["x-a:$(string.rep('x', 1e9))"]}}})],
    )
    .await;
    for path in ["/bad", "/call"] {
        let r = client().get(node.proxy_url(path)).send().await.unwrap();
        assert_eq!(r.status(), 500, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["message"], "An unexpected error occurred");
    }
    // Query and body templates are compiled when written: a 400 naming the entry.
    let (status, body) = node
        .post(
            "/plugins",
            json!({"name": "request-transformer",
                   "config": {"add": {"querystring": [format!("q:$({})", "(".repeat(10_000))]}}}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["fields"]["config"]["add"]["querystring"][0].is_string(),
        "{body}"
    );
}

#[tokio::test]
async fn bodies_that_lie_about_their_length() {
    let (node, _echo) = setup().await;
    route(
        &node,
        "sized",
        &[json!({"name": "request-size-limiting",
                 "config": {"allowed_payload_size": 10, "size_unit": "kilobytes"}})],
    )
    .await;
    route(
        &node,
        "rt",
        &[json!({"name": "request-transformer", "config": {"add": {"body": ["a:b"]}}})],
    )
    .await;

    // Declares 100 bytes, sends 10, closes: no answer is owed, and the node is fine.
    for path in ["/sized", "/rt", "/nothing"] {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n0123456789"
        );
        let answer = raw(&node, req.into_bytes(), true).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{path}: {answer}"
        );
    }
    // Declares 5 bytes and sends more: only the 5 are the body.
    let req = b"POST /sized HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\n12345GARBAGE-NOT-HTTP\r\n\r\n".to_vec();
    let answer = raw(&node, req, false).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"body_bytes\":5"), "{answer}");

    // Chunked past the limit: counted while read and cut off with Kong's 413.
    let mut req =
        b"POST /sized HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..20 {
        req.extend_from_slice(b"400\r\n");
        req.extend_from_slice(&[b'a'; 1024]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let answer = raw(&node, req, false).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("Request size limit exceeded"), "{answer}");

    // A Content-Length over the limit is refused before the body is read.
    let answer = raw(
        &node,
        b"POST /sized HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 999999999\r\n\r\nabc"
            .to_vec(),
        // Still "sending": the answer comes first, then the unread body is drained for a
        // while (nginx's lingering close) before the node closes.
        false,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    still_serving(&node, "/sized").await;
}

#[tokio::test]
async fn response_transformer_with_hostile_upstream_bodies() {
    // An upstream that answers JSON of a chosen size, or broken JSON.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]).into_owned();
                let content_type = if head.starts_with("GET /ct") {
                    "text/plain"
                } else {
                    "application/json"
                };
                let body = if head.starts_with("GET /ct") {
                    "{\"a\":1}".to_string()
                } else if head.starts_with("GET /huge") {
                    format!("{{\"a\":\"{}\"}}", "x".repeat(9 * 1024 * 1024))
                } else if head.starts_with("GET /broken") {
                    "{\"a\": [1, 2".to_string()
                } else {
                    format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000))
                };
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
            });
        }
    });
    let node = Node::start().await;
    node.create(
        "/services",
        json!({"name": "up", "url": format!("http://127.0.0.1:{port}")}),
    )
    .await;
    node.create(
        "/services/up/routes",
        json!({"name": "r", "paths": ["/"], "strip_path": false}),
    )
    .await;
    node.create(
        "/routes/r/plugins",
        json!({"name": "response-transformer", "config": {"add": {"json": ["k:v"]}}}),
    )
    .await;
    // A route whose own header edit makes a text answer JSON: its body is edited too (Kong's
    // body_filter reads the Content-Type after header_filter).
    node.create(
        "/services/up/routes",
        json!({"name": "ct", "paths": ["/ct"], "strip_path": false}),
    )
    .await;
    node.create(
        "/routes/ct/plugins",
        json!({"name": "response-transformer", "config": {
            "replace": {"headers": ["Content-Type:application/json"]},
            "add": {"json": ["k:v"]}}}),
    )
    .await;
    let get = |p: &'static str| {
        let url = node.proxy_url(p);
        async move {
            let r = client().get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    let (status, body) = get("/ct").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"a": 1, "k": "v"})
    );
    // Over the bound for a body plugin: a 502, logged; the gateway does not hold 9 MiB per
    // request for it.
    let (status, _) = get("/huge").await;
    assert_eq!(status, 502);
    // Broken or too deep: sent as it came.
    let (status, body) = get("/broken").await;
    assert_eq!((status, body.as_str()), (200, "{\"a\": [1, 2"));
    let (status, body) = get("/deep").await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), 200_001);
}

#[tokio::test]
async fn cors_with_origins_that_are_not_origins() {
    let (node, _echo) = setup().await;
    route(
        &node,
        "c",
        &[json!({"name": "cors", "config": {"origins": ["https://app\\.example\\.com", "http://a.test"]}})],
    )
    .await;
    let long = format!("http://{}.test", "a".repeat(60_000));
    for origin in [
        "null",
        "",
        "://",
        "http://[::1",
        "http://:80",
        long.as_str(),
    ] {
        let r = client()
            .request(reqwest::Method::OPTIONS, node.proxy_url("/c"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{origin:.40}");
        assert!(
            r.headers().get("access-control-allow-origin").is_none(),
            "{origin:.40} is not allowed"
        );
    }
    // Bytes that are not UTF-8 in Origin.
    let answer = raw(
        &node,
        b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\nOrigin: http://\xff\xfe.test\r\n\r\n"
            .to_vec(),
        false,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        !answer
            .to_ascii_lowercase()
            .contains("access-control-allow-origin"),
        "{answer}"
    );
    still_serving(&node, "/c").await;
}

#[tokio::test]
async fn bodies_are_read_only_after_authentication_and_size_limits() {
    // Kong reads a body in request-transformer's access (priority 801): key-auth (1250) and
    // request-size-limiting (951) answer before any of it is read.
    let (node, _echo) = setup().await;
    route(
        &node,
        "auth",
        &[
            json!({"name": "key-auth"}),
            json!({"name": "request-transformer", "config": {"add": {"body": ["a:b"]}}}),
        ],
    )
    .await;
    route(
        &node,
        "limited",
        &[
            json!({"name": "request-size-limiting", "config": {"allowed_payload_size": 1}}),
            json!({"name": "request-transformer", "config": {"add": {"body": ["a:b"]}}}),
        ],
    )
    .await;
    // The client announces a large body and waits for `100 Continue` before sending it.
    for (path, expected) in [("/auth", "HTTP/1.1 401"), ("/limited", "HTTP/1.1 417")] {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 20000000\r\n\r\n"
        );
        let answer = raw(&node, req.into_bytes(), false).await;
        assert!(answer.starts_with(expected), "{path}: {answer}");
        assert!(
            !answer.contains("100 Continue"),
            "{path}: nothing was read: {answer}"
        );
    }
    // A chunked body past request-size-limiting's limit is the plugin's 413, even when a
    // later plugin reads the body.
    let mut req = b"POST /limited HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..2 {
        req.extend_from_slice(b"100000\r\n");
        req.extend_from_slice(&vec![b' '; 0x100000]);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let answer = raw(&node, req, false).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("Request size limit exceeded"), "{answer}");
}
