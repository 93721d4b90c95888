//! Upstreams and targets with real backends: how traffic spreads under each algorithm, what
//! a killed or hung backend costs clients, and how health is shared across a cluster.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::backend::{Backend, Mode};
use common::{client, eventually, ClusterSpec, Node};
use reqwest::Method;
use serde_json::{json, Value};

/// An upstream `name` with `body`'s settings, a service on it and a route `/{name}`.
async fn upstream(node: &Node, name: &str, body: Value, extra_service: Value) {
    let mut up = body;
    up["name"] = json!(name);
    node.create("/upstreams", up).await;
    let mut svc = json!({"name": format!("svc-{name}"), "host": name, "port": 1});
    if let (Some(s), Some(e)) = (svc.as_object_mut(), extra_service.as_object()) {
        s.extend(e.clone());
    }
    node.create("/services", svc).await;
    node.create(
        &format!("/services/svc-{name}/routes"),
        json!({"paths": [format!("/{name}")]}),
    )
    .await;
}

async fn target(node: &Node, up: &str, b: &Backend, weight: u32) -> Value {
    node.create(
        &format!("/upstreams/{up}/targets"),
        json!({"target": b.addr.to_string(), "weight": weight}),
    )
    .await
}

/// Each backend a target of `up`, weight 100.
async fn targets(node: &Node, up: &str, backends: &[&Backend]) {
    for b in backends {
        target(node, up, b, 100).await;
    }
}

/// GETs `path` through the proxy with `headers`; the status and the answering backend.
async fn get(node: &Node, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let mut r = client().get(node.proxy_url(path));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    match r.send().await {
        Ok(resp) => {
            let s = resp.status().as_u16();
            (s, resp.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

fn counts(names: impl IntoIterator<Item = String>) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for n in names {
        *m.entry(n).or_insert(0) += 1;
    }
    m
}

#[tokio::test]
async fn round_robin_spreads_evenly_and_by_weight_and_sets_the_targets_host() {
    let node = Node::start().await;
    let bs = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    upstream(&node, "rr.test", json!({}), json!({})).await;
    targets(&node, "rr.test", &bs.iter().collect::<Vec<_>>()).await;
    let mut seen = Vec::new();
    for _ in 0..300 {
        let (s, name) = get(&node, "/rr.test", &[]).await;
        assert_eq!(s, 200, "{name}");
        seen.push(name);
    }
    let c = counts(seen);
    for n in ["a", "b", "c"] {
        // ±5 %: 95..=105 of 100.
        assert!((95..=105).contains(&c[n]), "{c:?}");
    }

    // In proportion to weights 1:2:3, with no burst to one target.
    upstream(&node, "w.test", json!({}), json!({})).await;
    for (b, w) in bs.iter().zip([10, 20, 30]) {
        target(&node, "w.test", b, w).await;
    }
    let mut seen = Vec::new();
    for _ in 0..600 {
        seen.push(get(&node, "/w.test", &[]).await.1);
    }
    let longest_run = seen.chunk_by(|a, b| a == b).map(|r| r.len()).max().unwrap();
    assert!(longest_run <= 2, "smooth: longest run {longest_run}");
    let c = counts(seen);
    for (n, want) in [("a", 100.0), ("b", 200.0), ("c", 300.0)] {
        let got = c[n] as f64;
        assert!((got - want).abs() <= want * 0.05, "{c:?}");
    }

    // Kong's Host: the target's address with its port; `host_header` overrides it.
    let r = client()
        .get(node.proxy_url("/w.test"))
        .send()
        .await
        .unwrap();
    let host = r.headers()["x-backend-host"].to_str().unwrap().to_string();
    assert!(bs.iter().any(|b| b.addr.to_string() == host), "{host}");
    let (s, _) = node
        .send(
            Method::PATCH,
            "/upstreams/w.test",
            Some(json!({"host_header": "api.example.test"})),
        )
        .await;
    assert_eq!(s, 200);
    // Kong adds the target's port to `host_header` too (unless 80).
    let r = client()
        .get(node.proxy_url("/w.test"))
        .send()
        .await
        .unwrap();
    let host = r.headers()["x-backend-host"].to_str().unwrap().to_string();
    let name = r.text().await.unwrap();
    let answered = &bs[["a", "b", "c"].iter().position(|n| *n == name).unwrap()];
    assert_eq!(host, format!("api.example.test:{}", answered.addr.port()));

    // Weight 0 keeps a target but sends it nothing; no target at all is Kong's 503.
    upstream(&node, "none.test", json!({}), json!({})).await;
    let (s, body) = get(&node, "/none.test", &[]).await;
    assert_eq!(s, 503);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["message"], "failure to get a peer from the ring-balancer");
    target(&node, "none.test", &bs[0], 0).await;
    assert_eq!(get(&node, "/none.test", &[]).await.0, 503);
}

#[tokio::test]
async fn consistent_hashing_keeps_most_keys_when_a_target_goes_and_sets_a_cookie() {
    let node = Node::start().await;
    let mut bs = Vec::new();
    for i in 0..10 {
        bs.push(Backend::start(&format!("t{i}")).await);
    }
    upstream(
        &node,
        "ch.test",
        json!({"hash_on": "header", "hash_on_header": "x-user"}),
        json!({}),
    )
    .await;
    let mut ids = Vec::new();
    for b in &bs {
        ids.push(target(&node, "ch.test", b, 100).await["id"].clone());
    }
    let users: Vec<String> = (0..500).map(|i| format!("user-{i}")).collect();
    let mut before = HashMap::new();
    for u in &users {
        let (s, name) = get(&node, "/ch.test", &[("x-user", u)]).await;
        assert_eq!(s, 200);
        // The same key goes to the same target every time.
        assert_eq!(get(&node, "/ch.test", &[("x-user", u)]).await.1, name);
        before.insert(u.clone(), name);
    }
    assert!(counts(before.values().cloned()).len() >= 9, "keys spread");
    let (s, _) = node
        .send(
            Method::DELETE,
            &format!("/upstreams/ch.test/targets/{}", ids[3].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let mut kept = 0;
    for u in &users {
        let (_, name) = get(&node, "/ch.test", &[("x-user", u)]).await;
        assert_ne!(name, "t3");
        // Only the removed target's keys move: every other key stays where it was.
        if before[u] != "t3" {
            assert_eq!(before[u], name, "{u} moved between remaining targets");
        }
        if before[u] == name {
            kept += 1;
        }
    }
    // What moves is the removed target's share: a tenth, give or take sampling.
    assert!(
        kept * 100 >= users.len() * 85,
        "kept {kept} of {}",
        users.len()
    );

    // hash_on cookie: a client without the cookie gets one, and sticks with it.
    upstream(
        &node,
        "cookie.test",
        json!({"hash_on": "cookie", "hash_on_cookie": "sticky", "hash_on_cookie_path": "/app"}),
        json!({}),
    )
    .await;
    targets(&node, "cookie.test", &bs.iter().collect::<Vec<_>>()).await;
    let r = client()
        .get(node.proxy_url("/cookie.test"))
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("sticky=") && cookie.ends_with("; Path=/app; Same-Site=Lax; HttpOnly"),
        "{cookie}"
    );
    let first = r.text().await.unwrap();
    let pair = cookie.split(';').next().unwrap().to_string();
    for _ in 0..10 {
        let r = client()
            .get(node.proxy_url("/cookie.test"))
            .header("cookie", &pair)
            .send()
            .await
            .unwrap();
        assert!(r.headers().get("set-cookie").is_none());
        assert_eq!(r.text().await.unwrap(), first);
    }

    // hash_on uri_capture: a named group of the route's regex path.
    node.create(
        "/upstreams",
        json!({"name": "cap.test", "hash_on": "uri_capture", "hash_on_uri_capture": "user"}),
    )
    .await;
    targets(&node, "cap.test", &bs.iter().collect::<Vec<_>>()).await;
    node.create("/services", json!({"name": "cap", "host": "cap.test"}))
        .await;
    node.create(
        "/services/cap/routes",
        json!({"paths": ["~/cap/(?<user>[a-z0-9]+)"]}),
    )
    .await;
    let mut seen = std::collections::HashSet::new();
    for i in 0..40 {
        let path = format!("/cap/u{i}");
        let first = get(&node, &format!("{path}/a"), &[]).await.1;
        // Only the capture counts: the rest of the path does not move the key.
        assert_eq!(get(&node, &format!("{path}/b?x=1"), &[]).await.1, first);
        seen.insert(first);
    }
    assert!(seen.len() >= 5, "captures spread over {seen:?}");
}

#[tokio::test]
async fn least_connections_favours_an_idle_target_over_a_slow_one() {
    let node = Node::start().await;
    let slow = Backend::start("slow").await;
    let fast = Backend::start("fast").await;
    slow.set(Mode::Slow);
    upstream(
        &node,
        "lc.test",
        json!({"algorithm": "least-connections"}),
        json!({}),
    )
    .await;
    targets(&node, "lc.test", &[&slow, &fast]).await;
    // Eight clients at once, 10 requests each: the slow target holds its requests longer,
    // so new ones go to the fast one.
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let url = node.proxy_url("/lc.test");
        tasks.spawn(async move {
            let c = client();
            let mut names = Vec::new();
            for _ in 0..10 {
                names.push(c.get(&url).send().await.unwrap().text().await.unwrap());
            }
            names
        });
    }
    let mut all = Vec::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.unwrap());
    }
    let c = counts(all);
    assert_eq!(c.values().sum::<usize>(), 80);
    assert!(
        c.get("fast").copied().unwrap_or(0) >= 60,
        "least-connections sent {c:?}"
    );

    // latency: once both are measured, one client at a time goes to the faster.
    upstream(
        &node,
        "lat.test",
        json!({"algorithm": "latency"}),
        json!({}),
    )
    .await;
    targets(&node, "lat.test", &[&slow, &fast]).await;
    let mut names = Vec::new();
    for _ in 0..20 {
        names.push(get(&node, "/lat.test", &[]).await.1);
    }
    let c = counts(names);
    assert!(
        c.get("slow").copied().unwrap_or(0) <= 2,
        "latency sent {c:?}"
    );
}

#[tokio::test]
async fn a_service_host_that_does_not_resolve_is_kongs_503() {
    let node = Node::start().await;
    node.create(
        "/services",
        json!({"name": "nowhere", "host": "nowhere.invalid"}),
    )
    .await;
    node.create("/services/nowhere/routes", json!({"paths": ["/nowhere"]}))
        .await;
    let (s, body) = get(&node, "/nowhere", &[]).await;
    assert_eq!(s, 503, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["message"], "name resolution failed");
}

#[tokio::test]
async fn a_killed_backend_costs_no_failed_get_with_retries() {
    let node = Node::start().await;
    let bs = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    upstream(&node, "kill.test", json!({}), json!({"retries": 2})).await;
    targets(&node, "kill.test", &bs.iter().collect::<Vec<_>>()).await;
    for _ in 0..30 {
        assert_eq!(get(&node, "/kill.test", &[]).await.0, 200);
    }
    bs[1].stop();
    // Stopped for good (its connections closed) before the first request goes out.
    eventually("the port to refuse", || async {
        tokio::net::TcpStream::connect(bs[1].addr)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    let mut failed = 0;
    for _ in 0..300 {
        let (s, name) = get(&node, "/kill.test", &[]).await;
        if s != 200 {
            failed += 1;
        }
        assert_ne!(name, "b");
    }
    assert_eq!(failed, 0, "client-visible failures after a kill");
    // With retries 0, a refused connect reaches the client (Kong's 502).
    upstream(&node, "noretry.test", json!({}), json!({"retries": 0})).await;
    target(&node, "noretry.test", &bs[1], 100).await;
    assert_eq!(get(&node, "/noretry.test", &[]).await.0, 502);
}

#[tokio::test]
async fn a_hung_backend_is_ejected_after_its_timeouts_and_readmitted_by_active_checks() {
    let node = Node::start().await;
    let good = Backend::start("good").await;
    let hung = Backend::start("hung").await;
    let checks = json!({"healthchecks": {
        "passive": {"unhealthy": {"timeouts": 2}},
        "active": {"http_path": "/health", "timeout": 0.5,
                   "healthy": {"successes": 2}, "unhealthy": {"interval": 0.2}}
    }});
    upstream(&node, "hung.test", checks, json!({"read_timeout": 300})).await;
    targets(&node, "hung.test", &[&good, &hung]).await;
    // Kong exports kong_upstream_target_health only once a prometheus instance with
    // upstream_health_metrics has logged a request (kong/plugins/prometheus/exporter.lua,
    // should_export_upstream_health_metrics): the requests below do.
    let (s, _) = node
        .post(
            "/plugins",
            json!({"name": "prometheus", "config": {"upstream_health_metrics": true}}),
        )
        .await;
    assert_eq!(s, 201);
    hung.set(Mode::Hung);
    // Round-robin sends every second request to the hung target until two timed out (504s).
    let started = Instant::now();
    let mut timeouts = 0;
    for _ in 0..10 {
        let (s, _) = get(&node, "/hung.test", &[]).await;
        if s == 504 {
            timeouts += 1;
        } else {
            assert_eq!(s, 200);
        }
    }
    assert_eq!(timeouts, 2, "ejected after its two timeouts");
    let ejected_in = started.elapsed();
    let (_, h) = node.get("/upstreams/hung.test/health").await;
    let hung_health = h["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == hung.addr.to_string())
        .unwrap()["health"]
        .clone();
    assert_eq!(hung_health, "UNHEALTHY");
    // The same on /metrics, in Kong's shape, with the target's failures counted.
    let m = node.metrics().await;
    let h = hung.addr;
    assert!(m.contains(&format!("kong_upstream_target_health{{upstream=\"hung.test\",target=\"{h}\",address=\"{h}\",state=\"unhealthy\",subsystem=\"http\"}} 1")), "{m}");
    assert!(m.contains(&format!("tollgate_upstream_target_failures_total{{upstream=\"hung.test\",target=\"{h}\",address=\"{h}\"}} 2")), "{m}");
    // Back: the active checks (every 0.2 s, two successes) re-admit it.
    hung.set(Mode::Answer);
    eventually("the recovered target to get traffic again", || async {
        let (_, name) = get(&node, "/hung.test", &[]).await;
        (name == "hung").then_some(())
    })
    .await;
    assert!(ejected_in < Duration::from_secs(10));
}

#[tokio::test]
async fn health_marked_through_one_node_applies_on_all_and_probing_moves_when_its_owner_dies() {
    let bs = [Backend::start("a").await, Backend::start("b").await];
    let spec = ClusterSpec::new(3);
    let mut nodes = spec.bootstrap(3, &[]).await;
    // Operator marks on one upstream (passive checks on, for marks to be taken, and no
    // failures to trip them), probes on another.
    let passive = json!({"healthchecks": {"passive": {"unhealthy": {"tcp_failures": 5}}}});
    upstream(&nodes[0], "shared.test", passive, json!({})).await;
    let checks = json!({"healthchecks": {"active": {"http_path": "/health",
        "healthy": {"interval": 0.2, "successes": 1},
        "unhealthy": {"interval": 0.2, "http_failures": 1, "tcp_failures": 1}}}});
    upstream(&nodes[0], "probed.test", checks, json!({})).await;
    for b in &bs {
        target(&nodes[0], "shared.test", b, 100).await;
        target(&nodes[0], "probed.test", b, 100).await;
    }
    for n in &nodes {
        eventually("the route on every node", || async {
            (get(n, "/shared.test", &[]).await.0 == 200).then_some(())
        })
        .await;
    }
    // Marked unhealthy through node 1: nodes 2 and 3 stop sending to it within a second.
    let target_b = format!("/upstreams/shared.test/targets/{}/unhealthy", bs[1].addr);
    let (s, _) = nodes[0].send(Method::PUT, &target_b, None).await;
    assert_eq!(s, 204);
    let marked = Instant::now();
    // Both other nodes watched at once, so that one's wait does not add to the other's.
    let b_addr = bs[1].addr.to_string();
    let took = futures_util::future::join_all(nodes[1..].iter().map(|n| {
        let b_addr = b_addr.clone();
        async move {
            eventually("the mark on every node", || async {
                let (_, h) = n.get("/upstreams/shared.test/health").await;
                let t = h["data"]
                    .as_array()?
                    .iter()
                    .find(|t| t["target"] == b_addr)?
                    .clone();
                (t["health"] == "UNHEALTHY").then(|| marked.elapsed())
            })
            .await
        }
    }))
    .await;
    let slowest = took.iter().max().unwrap();
    assert!(*slowest < Duration::from_secs(1), "took {took:?}");
    for n in &nodes[1..] {
        for _ in 0..6 {
            assert_eq!(get(n, "/shared.test", &[]).await.1, "a");
        }
    }
    // Marked healthy through node 3: back everywhere.
    let healthy = target_b.replace("/unhealthy", "/healthy");
    assert_eq!(nodes[2].send(Method::PUT, &healthy, None).await.0, 204);
    eventually("b back on node 1", || async {
        let names: Vec<String> = futures_util::future::join_all(
            (0..4).map(|_| async { get(&nodes[0], "/shared.test", &[]).await.1 }),
        )
        .await;
        names.iter().any(|x| x == "b").then_some(())
    })
    .await;

    // One node probes each address: probes of `a` come at about 5 a second, not 15.
    let owner_of = |h: &Value, addr: &str| -> u64 {
        h["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["target"] == addr)
            .unwrap()["data"]["addresses"][0]["cluster"]["probed_by"]
            .as_u64()
            .unwrap()
    };
    let a = bs[0].addr.to_string();
    let (_, h) = nodes[1].get("/upstreams/probed.test/health").await;
    let owner = owner_of(&h, &a);
    let p0 = bs[0].probes();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rate = (bs[0].probes() - p0) as f64 / 2.0;
    assert!(
        rate <= 6.0,
        "{rate} probes/s of one address: more than one prober"
    );
    assert!(rate > 2.0, "{rate} probes/s: nobody probes");

    // The owner dies: another node takes its addresses over, and still finds failures.
    nodes[(owner - 1) as usize].proc.kill();
    let alive: Vec<&Node> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as u64 + 1 != owner)
        .map(|(_, n)| n)
        .collect();
    let new_owner = eventually("a live node to own a's probes", || async {
        let (_, h) = alive[0].get("/upstreams/probed.test/health").await;
        let o = owner_of(&h, &a);
        (o != owner).then_some(o)
    })
    .await;
    assert_ne!(new_owner, owner);
    bs[0].stop();
    for n in &alive {
        eventually(
            "a's failure found by the new owner, seen by all",
            || async {
                let (_, h) = n.get("/upstreams/probed.test/health").await;
                let t = h["data"]
                    .as_array()?
                    .iter()
                    .find(|t| t["target"] == a)?
                    .clone();
                (t["health"] == "UNHEALTHY").then_some(())
            },
        )
        .await;
    }
    nodes.clear();
}

#[tokio::test]
async fn https_probes_speak_tls_and_verify_only_when_asked() {
    let node = Node::start().await;
    let b = Backend::start_tls("secure").await;
    let probing = |verify: bool| {
        json!({"healthchecks": {"active": {"type": "https", "http_path": "/health",
            "https_verify_certificate": verify, "timeout": 1,
            "healthy": {"interval": 0.2, "successes": 1},
            "unhealthy": {"interval": 0.2, "http_failures": 1, "tcp_failures": 1}}}})
    };
    upstream(&node, "tls.test", probing(false), json!({})).await;
    target(&node, "tls.test", &b, 100).await;
    let health = |up: &'static str| {
        let node = &node;
        async move {
            let (_, h) = node.get(&format!("/upstreams/{up}/health")).await;
            h["data"][0]["health"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }
    };
    // Answered over TLS (a certificate nobody signed is accepted when not verifying).
    eventually("probes over TLS", || async {
        (b.probes() >= 3).then_some(())
    })
    .await;
    assert_eq!(health("tls.test").await, "HEALTHY");
    // A failing status over TLS takes it out.
    b.set(Mode::Failing);
    eventually("the failing target out", || async {
        (health("tls.test").await == "UNHEALTHY").then_some(())
    })
    .await;
    b.set(Mode::Answer);
    eventually("back", || async {
        (health("tls.test").await == "HEALTHY").then_some(())
    })
    .await;
    // Verifying: the self-signed certificate fails the handshake, a TCP failure.
    upstream(&node, "verify.test", probing(true), json!({})).await;
    target(&node, "verify.test", &b, 100).await;
    eventually("the unverifiable target out", || async {
        (health("verify.test").await == "UNHEALTHY").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_target_change_keeps_the_other_targets_health() {
    let node = Node::start().await;
    let bs = [
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ];
    let passive = json!({"healthchecks": {"passive": {"unhealthy": {"tcp_failures": 5}}}});
    upstream(&node, "keep.test", passive, json!({})).await;
    target(&node, "keep.test", &bs[0], 100).await;
    let b = target(&node, "keep.test", &bs[1], 100).await;
    let (s, _) = node
        .send(
            Method::PUT,
            &format!("/upstreams/keep.test/targets/{}/unhealthy", bs[0].addr),
            None,
        )
        .await;
    assert_eq!(s, 204);
    // Another target's weight changes and a third arrives: `a` stays out.
    let (s, _) = node
        .send(
            Method::PATCH,
            &format!("/upstreams/keep.test/targets/{}", b["id"].as_str().unwrap()),
            Some(json!({"weight": 50})),
        )
        .await;
    assert_eq!(s, 200);
    target(&node, "keep.test", &bs[2], 100).await;
    let mut names = Vec::new();
    for _ in 0..30 {
        names.push(get(&node, "/keep.test", &[]).await.1);
    }
    let c = counts(names);
    assert!(!c.contains_key("a"), "{c:?}");
    assert!(c.contains_key("b") && c.contains_key("c"), "{c:?}");
    let (_, h) = node.get("/upstreams/keep.test/health").await;
    let a = h["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == bs[0].addr.to_string())
        .unwrap()
        .clone();
    assert_eq!(a["health"], "UNHEALTHY", "{a}");
}
