//! The gateway seen from outside: a real node and real echo backends, driven only through the
//! Admin API and the proxy port.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{client, raw, Echo, Node};
use serde_json::{json, Value};

async fn proxy_get(node: &Node, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut rb = client().get(node.proxy_url(path));
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap()
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    r.headers().get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test]
async fn key_auth_and_rate_limiting_request_flow() {
    let echo = Echo::start("echo-1").await;
    let node = Node::start().await;
    node.create(
        "/services",
        json!({"name": "example-service", "url": echo.url()}),
    )
    .await;
    node.create(
        "/services/example-service/routes",
        json!({"name": "mock", "paths": ["/mock"]}),
    )
    .await;
    node.create("/routes/mock/plugins", json!({"name": "key-auth"}))
        .await;
    node.create(
        "/routes/mock/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 5, "policy": "local"}}),
    )
    .await;
    let alice = node
        .create("/consumers", json!({"username": "alice"}))
        .await;
    node.create("/consumers/alice/key-auth", json!({"key": "alice-secret"}))
        .await;

    // Without a key, and with a wrong one: 401 with Kong's messages. Neither spends quota.
    for _ in 0..3 {
        let r = proxy_get(&node, "/mock/hello", &[]).await;
        assert_eq!(r.status(), 401);
        assert_eq!(header(&r, "www-authenticate"), Some("Key"));
        assert_eq!(
            r.json::<Value>().await.unwrap()["message"],
            "No API key found in request"
        );
        let r = proxy_get(&node, "/mock/hello", &[("apikey", "nope")]).await;
        assert_eq!(r.status(), 401);
        assert_eq!(r.json::<Value>().await.unwrap()["message"], "Unauthorized");
    }

    for expected in [4, 3, 2, 1, 0] {
        let r = proxy_get(&node, "/mock/hello?q=1", &[("apikey", "alice-secret")]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-ratelimit-limit-minute"), Some("5"));
        assert_eq!(
            header(&r, "x-ratelimit-remaining-minute"),
            Some(expected.to_string().as_str())
        );
        assert_eq!(header(&r, "ratelimit-limit"), Some("5"));
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["name"], "echo-1");
        // strip_path removed /mock; the query is kept.
        assert_eq!(body["path"], "/hello?q=1");
        assert_eq!(body["headers"]["x-consumer-username"], "alice");
        assert_eq!(body["headers"]["x-consumer-id"], alice["id"]);
        assert!(body["headers"]["x-credential-identifier"].is_string());
        assert_eq!(body["headers"]["x-forwarded-prefix"], "/mock");
    }
    let r = proxy_get(&node, "/mock/hello", &[("apikey", "alice-secret")]).await;
    assert_eq!(r.status(), 429);
    assert_eq!(header(&r, "x-ratelimit-remaining-minute"), Some("0"));
    let retry: u64 = header(&r, "retry-after").unwrap().parse().unwrap();
    // Sliding window: the full minute's 5 still weigh on the next window, so the wait may run
    // past the window's end (up to 72 s here), never past two periods.
    assert!((1..=120).contains(&retry), "retry-after {retry}");
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "API rate limit exceeded"
    );

    // The rejection is counted in /metrics.
    let m = node.metrics().await;
    assert!(
        m.contains("tollgate_rate_limit_rejections_total{policy=\"local\",route=\"mock\"} 1"),
        "{m}"
    );
    assert!(m.contains(
        "tollgate_http_requests_total{code=\"429\",route=\"mock\",service=\"example-service\"} 1"
    ));
}

#[tokio::test]
async fn route_precedence_through_the_proxy() {
    let a = Echo::start("a").await;
    let b = Echo::start("b").await;
    let node = Node::start().await;
    node.create("/services", json!({"name": "a", "url": a.url()}))
        .await;
    node.create("/services", json!({"name": "b", "url": b.url()}))
        .await;
    let route = |svc: &str, body: Value| {
        let node = &node;
        let path = format!("/services/{svc}/routes");
        async move { node.create(&path, body).await }
    };
    route(
        "a",
        json!({"name": "root", "paths": ["/"], "strip_path": false}),
    )
    .await;
    route(
        "b",
        json!({"name": "api", "paths": ["/api"], "strip_path": false}),
    )
    .await;
    route("a", json!({"name": "api-host", "paths": ["/api"], "hosts": ["example.com"], "strip_path": false})).await;
    route(
        "b",
        json!({"name": "wild", "hosts": ["*.wild.test"], "paths": ["/"]}),
    )
    .await;
    route("a", json!({"name": "users-re", "paths": ["~/users/\\d+$"], "regex_priority": 5, "strip_path": false})).await;
    route("b", json!({"name": "v2", "paths": ["/"], "headers": {"x-version": ["v2"]}, "strip_path": false})).await;
    route(
        "a",
        json!({"name": "posts", "paths": ["/posts"], "methods": ["POST"], "strip_path": false}),
    )
    .await;

    let who = |path: &'static str, hdrs: Vec<(&'static str, &'static str)>| {
        let node = &node;
        async move {
            let r = proxy_get(node, path, &hdrs).await;
            assert_eq!(r.status(), 200, "{path}");
            let v: Value = r.json().await.unwrap();
            (
                v["name"].as_str().unwrap().to_string(),
                v["path"].as_str().unwrap().to_string(),
            )
        }
    };
    assert_eq!(who("/api/x", vec![]).await, ("b".into(), "/api/x".into()));
    // More criteria (host + path) beat a path alone.
    assert_eq!(who("/api/x", vec![("host", "example.com")]).await.0, "a");
    assert_eq!(who("/other", vec![]).await.0, "a");
    assert_eq!(who("/anything", vec![("host", "x.wild.test")]).await.0, "b");
    assert_eq!(who("/users/42", vec![]).await.0, "a");
    assert_eq!(who("/x", vec![("x-version", "v2")]).await.0, "b");
    // Normalisation happens before routing: dot segments and encoded letters reach /users/42.
    assert_eq!(
        who("/api/../users/42", vec![]).await,
        ("a".into(), "/users/42".into())
    );
    assert_eq!(
        who("/%75sers/42", vec![]).await,
        ("a".into(), "/users/42".into())
    );
    let r = client()
        .post(node.proxy_url("/posts"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["name"], "a");
}

#[tokio::test]
async fn forwarding_headers_preserve_host_and_service_path() {
    let echo = Echo::start("e").await;
    let node = Node::start().await;
    node.create(
        "/services",
        json!({"name": "s", "url": format!("{}/base", echo.url())}),
    )
    .await;
    node.create("/services/s/routes", json!({"name": "r", "paths": ["/r"]}))
        .await;
    node.create(
        "/services/s/routes",
        json!({"name": "keep", "paths": ["/keep"], "preserve_host": true, "strip_path": false}),
    )
    .await;

    let r = proxy_get(
        &node,
        "/r/x",
        &[
            ("x-forwarded-for", "10.9.8.7"),
            ("connection", "keep-alive, x-drop"),
            ("x-drop", "1"),
        ],
    )
    .await;
    assert!(header(&r, "via").unwrap().contains("tollgate"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["path"], "/base/x");
    let h = &v["headers"];
    assert_eq!(h["host"], echo.addr.to_string());
    assert_eq!(h["x-forwarded-for"], "10.9.8.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert!(h["via"].as_str().unwrap().contains("tollgate"));
    assert!(
        h.get("x-drop").is_none(),
        "connection-listed header forwarded: {h}"
    );

    let v: Value = proxy_get(&node, "/keep/y", &[("host", "client.example")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["headers"]["host"], "client.example");
    assert_eq!(v["path"], "/base/keep/y");
}

#[tokio::test]
async fn proxy_errors_are_json_and_never_crash_the_node() {
    let node = Node::start().await;
    let r = proxy_get(&node, "/nothing", &[]).await;
    assert_eq!(r.status(), 404);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "no Route matched with those values"
    );

    // Unreachable upstream: 502.
    let closed = common::free_port();
    node.create(
        "/services",
        json!({"name": "down", "url": format!("http://127.0.0.1:{closed}"), "retries": 1}),
    )
    .await;
    node.create("/services/down/routes", json!({"paths": ["/down"]}))
        .await;
    let r = proxy_get(&node, "/down", &[]).await;
    assert_eq!(r.status(), 502);
    assert!(r.json::<Value>().await.unwrap()["message"].is_string());

    // An upstream that accepts and never answers: 504 after read_timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    node.create(
        "/services",
        json!({"name": "slow", "url": format!("http://{silent_addr}"), "read_timeout": 300, "connect_timeout": 1000}),
    )
    .await;
    node.create("/services/slow/routes", json!({"paths": ["/slow"]}))
        .await;
    let r = proxy_get(&node, "/slow", &[]).await;
    assert_eq!(r.status(), 504);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "The upstream server is timing out"
    );
    drop(silent);

    // An upstream that stalls mid-body is cut off after read_timeout. Streamed
    // (response_buffering off), the client sees the body end with an error, not a hang;
    // buffered (the default), a small body is read whole first, so the client gets a 504.
    let stalling = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let stalling_addr = stalling.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in stalling.incoming().take(2) {
            let mut conn = conn.unwrap();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789");
            std::thread::sleep(Duration::from_secs(20));
        }
    });
    node.create(
        "/services",
        json!({"name": "stall", "url": format!("http://{stalling_addr}"), "read_timeout": 300}),
    )
    .await;
    node.create(
        "/services/stall/routes",
        json!({"paths": ["/stall"], "response_buffering": false}),
    )
    .await;
    node.create(
        "/services/stall/routes",
        json!({"paths": ["/stall-buffered"]}),
    )
    .await;
    let r = proxy_get(&node, "/stall", &[]).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().await.is_err(),
        "a stalled body must end in an error"
    );
    assert_eq!(proxy_get(&node, "/stall-buffered", &[]).await.status(), 504);

    // A route that accepts only https answers 426 on the plain listener.
    let echo = Echo::start("e").await;
    node.create("/services", json!({"name": "tls-only", "url": echo.url()}))
        .await;
    node.create(
        "/services/tls-only/routes",
        json!({"paths": ["/secure"], "protocols": ["https"]}),
    )
    .await;
    assert_eq!(proxy_get(&node, "/secure", &[]).await.status(), 426);

    // Garbage, an oversized head and a stalled client: each gets its answer or times out alone.
    let addr = node.proxy.trim_start_matches("http://").to_string();
    let stalled = std::net::TcpStream::connect(&addr).unwrap();
    (&stalled)
        .write_all(b"GET /slowloris HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let garbage = raw(&node.proxy, b"\x16\x03\x01garbage\r\n\r\n".to_vec()).await;
    assert!(garbage.starts_with("HTTP/1.1 400"), "{garbage}");
    let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 200 * 1024));
    big.extend(b"\r\n\r\n");
    let oversized = raw(&node.proxy, big).await;
    assert!(
        oversized.starts_with("HTTP/1.1 431"),
        "{}",
        &oversized[..oversized.len().min(100)]
    );
    // The stalled connection does not block anyone.
    assert_eq!(proxy_get(&node, "/nothing", &[]).await.status(), 404);
    drop(stalled);
}

#[tokio::test]
async fn echo_backend_reports_what_it_received() {
    let echo = Echo::start("echo-7").await;
    let c = client();
    let v: Value = c
        .post(format!("{}/a/b?x=1", echo.url()))
        .header("x-test", "yes")
        .body("12345")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["name"], "echo-7");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["path"], "/a/b?x=1");
    assert_eq!(v["headers"]["x-test"], "yes");
    assert_eq!(v["body_bytes"], 5);
    let h: Value = c
        .get(format!("{}/health", echo.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(h, json!({"status": "healthy"}));
}

#[tokio::test]
async fn hide_credentials_and_key_in_query_and_anonymous() {
    let echo = Echo::start("e").await;
    let node = Node::start().await;
    node.create("/services", json!({"name": "s", "url": echo.url()}))
        .await;
    node.create("/services/s/routes", json!({"name": "r", "paths": ["/r"]}))
        .await;
    node.create(
        "/services/s/routes",
        json!({"name": "open", "paths": ["/open"]}),
    )
    .await;
    node.create("/consumers", json!({"username": "bob"})).await;
    node.create("/consumers", json!({"username": "guest"}))
        .await;
    node.create("/consumers/bob/key-auth", json!({"key": "bob-key"}))
        .await;
    node.create("/routes/r/plugins", json!({"name": "key-auth", "config": {"hide_credentials": true, "key_names": ["apikey", "x-api-key"]}})).await;
    node.create(
        "/routes/open/plugins",
        json!({"name": "key-auth", "config": {"anonymous": "guest"}}),
    )
    .await;

    let v: Value = proxy_get(&node, "/r/p?apikey=bob-key&keep=1", &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["path"], "/p?keep=1");
    assert_eq!(v["headers"]["x-consumer-username"], "bob");
    let v: Value = proxy_get(&node, "/r/p", &[("x-api-key", "bob-key")])
        .await
        .json()
        .await
        .unwrap();
    assert!(v["headers"].get("x-api-key").is_none());

    // A key in a form body is found and, with hide_credentials, removed from what is forwarded.
    node.create(
        "/services/s/routes",
        json!({"name": "body", "paths": ["/body"]}),
    )
    .await;
    node.create(
        "/routes/body/plugins",
        json!({"name": "key-auth", "config": {"key_in_body": true, "key_in_header": false, "key_in_query": false, "hide_credentials": true}}),
    )
    .await;
    let r = client()
        .post(node.proxy_url("/body"))
        .form(&[("apikey", "bob-key"), ("x", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["body_bytes"], 3, "{v}");
    assert_eq!(v["headers"]["x-consumer-username"], "bob");
    let r = client()
        .post(node.proxy_url("/body"))
        .form(&[("x", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Anonymous fallback, and a spoofed consumer header is overwritten.
    let v: Value = proxy_get(&node, "/open", &[("x-consumer-username", "admin")])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["headers"]["x-consumer-username"], "guest");
    assert_eq!(v["headers"]["x-anonymous-consumer"], "true");
}

#[tokio::test]
async fn consumer_scoped_plugin_overrides_route_plugin() {
    let echo = Echo::start("e").await;
    let node = Node::start().await;
    node.create("/services", json!({"name": "s", "url": echo.url()}))
        .await;
    node.create("/services/s/routes", json!({"name": "r", "paths": ["/r"]}))
        .await;
    node.create("/consumers", json!({"username": "gold"})).await;
    node.create("/consumers", json!({"username": "basic"}))
        .await;
    node.create("/consumers/gold/key-auth", json!({"key": "g"}))
        .await;
    node.create("/consumers/basic/key-auth", json!({"key": "b"}))
        .await;
    node.create("/routes/r/plugins", json!({"name": "key-auth"}))
        .await;
    node.create(
        "/routes/r/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 2}}),
    )
    .await;
    node.create(
        "/consumers/gold/plugins",
        json!({"name": "rate-limiting", "config": {"minute": 100}}),
    )
    .await;

    let lim = |key: &'static str| {
        let node = &node;
        async move {
            let r = proxy_get(node, "/r", &[("apikey", key)]).await;
            header(&r, "x-ratelimit-limit-minute").map(str::to_string)
        }
    };
    assert_eq!(lim("b").await.as_deref(), Some("2"));
    assert_eq!(lim("g").await.as_deref(), Some("100"));
}

/// A raw HTTP/1.1 upstream on its own thread: answers every request head with `reply` and
/// counts the connections it accepted. With `close`, it closes each connection after answering.
fn counting_upstream(
    reply: &'static [u8],
    close: bool,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let n = match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        if conn.write_all(reply).is_err() || close {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn upstream_connections_are_reused_and_closed_ones_never_are() {
    use std::sync::atomic::Ordering;
    let node = Node::start().await;
    let (keep, keep_accepted) =
        counting_upstream(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nkept", false);
    let (close, close_accepted) = counting_upstream(
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 6\r\n\r\nclosed",
        true,
    );
    for (name, addr) in [("keep", keep), ("close", close)] {
        node.create(
            "/services",
            json!({"name": name, "url": format!("http://{addr}")}),
        )
        .await;
        node.create(
            &format!("/services/{name}/routes"),
            json!({"paths": [format!("/{name}")]}),
        )
        .await;
    }
    common::eventually("both routes to serve", || async {
        let a = proxy_get(&node, "/keep", &[]).await.status() == 200;
        let b = proxy_get(&node, "/close", &[]).await.status() == 200;
        (a && b).then_some(())
    })
    .await;
    let (keep_before, close_before) = (
        keep_accepted.load(Ordering::SeqCst),
        close_accepted.load(Ordering::SeqCst),
    );

    for _ in 0..20 {
        let r = proxy_get(&node, "/keep", &[]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "kept");
        let r = proxy_get(&node, "/close", &[]).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "closed");
    }
    // Sequential requests reuse the one warm connection; an upstream that closes after every
    // response gets a new connection each time, and no request failed on a closed one.
    assert_eq!(keep_accepted.load(Ordering::SeqCst), keep_before);
    assert_eq!(close_accepted.load(Ordering::SeqCst), close_before + 20);
}

/// The value of `header` the upstream received for a GET of `path`.
async fn sent_id(node: &Node, path: &str, headers: &[(&str, &str)], header: &str) -> String {
    let v: Value = proxy_get(node, path, headers).await.json().await.unwrap();
    v["headers"][header].as_str().unwrap_or("").to_string()
}

// Ported from Kong's spec/03-plugins/11-correlation-id/01-access_spec.lua: the three
// generators' shapes and uniqueness, the counter counting, a custom header, an incoming id kept
// (and an empty or blank one replaced), echo_downstream on success and on an upstream failure,
// and no echo unless asked.
#[tokio::test]
async fn correlation_id_gives_every_request_an_id() {
    let echo = Echo::start("echo-ci").await;
    let node = Node::start().await;
    node.create("/services", json!({"name": "s", "url": echo.url()}))
        .await;
    node.create(
        "/services",
        json!({"name": "down", "url": format!("http://127.0.0.1:{}", common::free_port())}),
    )
    .await;
    for (path, service, config) in [
        ("/counter", "s", json!({})),
        ("/uuid", "s", json!({"generator": "uuid"})),
        ("/tracker", "s", json!({"generator": "tracker"})),
        ("/custom", "s", json!({"header_name": "Foo-Bar-Id"})),
        (
            "/echo",
            "s",
            json!({"generator": "uuid", "echo_downstream": true}),
        ),
        (
            "/down",
            "down",
            json!({"generator": "uuid", "echo_downstream": true}),
        ),
    ] {
        let name = path.trim_start_matches('/');
        node.create(
            &format!("/services/{service}/routes"),
            json!({"name": name, "paths": [path]}),
        )
        .await;
        node.create(
            &format!("/routes/{name}/plugins"),
            json!({"name": "correlation-id", "config": config}),
        )
        .await;
    }
    let upstream_id = |v: &Value, h: &str| v["headers"][h].as_str().unwrap_or("").to_string();
    let uuid = |s: &str| uuid::Uuid::parse_str(s).is_ok();

    // uuid#counter: the process's UUID, then a counter that goes up by one.
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = proxy_get(&node, "/counter", &[]).await;
        assert_eq!(r.status(), 200);
        assert!(
            header(&r, "kong-request-id").is_none(),
            "no echo unless asked"
        );
        ids.push(upstream_id(&r.json().await.unwrap(), "kong-request-id"));
    }
    let parts: Vec<(&str, u64)> = ids
        .iter()
        .map(|id| {
            let (u, n) = id.split_once('#').unwrap();
            (u, n.parse().unwrap())
        })
        .collect();
    assert!(uuid(parts[0].0) && parts[0].0 == parts[1].0, "{ids:?}");
    assert_eq!(parts[1].1, parts[0].1 + 1);

    // uuid: a new one each time.
    let a = sent_id(&node, "/uuid", &[], "kong-request-id").await;
    let b = sent_id(&node, "/uuid", &[], "kong-request-id").await;
    assert!(uuid(&a) && uuid(&b) && a != b);

    // tracker: address-port-pid-connection-requests-seconds.millis, different each time.
    let t1 = sent_id(&node, "/tracker", &[], "kong-request-id").await;
    let t2 = sent_id(&node, "/tracker", &[], "kong-request-id").await;
    let shape = |t: &str| {
        let f: Vec<&str> = t.split('-').collect();
        f.len() == 6
            && f[0].parse::<std::net::IpAddr>().is_ok()
            && f[1..5].iter().all(|x| x.parse::<u64>().is_ok())
            && f[5]
                .split_once('.')
                .is_some_and(|(s, ms)| s.len() == 10 && ms.len() == 3)
    };
    assert!(shape(&t1) && shape(&t2) && t1 != t2, "{t1} {t2}");

    // A custom header name.
    assert!(sent_id(&node, "/custom", &[], "foo-bar-id")
        .await
        .contains('#'));

    // An incoming id is kept; an empty or blank one is not.
    let kept = sent_id(
        &node,
        "/uuid",
        &[("kong-request-id", "foobar")],
        "kong-request-id",
    );
    assert_eq!(kept.await, "foobar");
    for blank in ["", " "] {
        let h = [("kong-request-id", blank)];
        let id = sent_id(&node, "/uuid", &h, "kong-request-id").await;
        assert!(uuid(&id), "{id:?}");
    }

    // echo_downstream: the client gets the id the upstream got, even when the upstream fails.
    let r = proxy_get(&node, "/echo", &[]).await;
    let echoed = header(&r, "kong-request-id").unwrap().to_string();
    let v: Value = r.json().await.unwrap();
    assert_eq!(upstream_id(&v, "kong-request-id"), echoed);
    let r = proxy_get(&node, "/down", &[]).await;
    assert_eq!(r.status(), 502);
    assert!(uuid(header(&r, "kong-request-id").unwrap()));
}
