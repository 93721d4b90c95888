//! Kong Ingress Controller manifests as configuration, end to end: `tollgate k8s apply` of
//! the Kong-on-Kubernetes seed document's manifests on a three-node cluster gives the
//! document's behaviour, a second apply changes nothing, and bad manifests are refused
//! naming the object, with nothing applied.

mod common;

use std::process::Output;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{client, eventually, ClusterSpec, Echo, Node, BIN};
use serde_json::{json, Value};

// Each test owns its runtime and thread; a cluster at a time on two cores.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const SEED: &str = include_str!("fixtures/k8s/kong-on-kubernetes.yaml");

async fn tollgate(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(BIN)
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// `tollgate k8s apply` of `manifests` through `node`, with the echo backends mapped.
async fn apply(node: &Node, manifests: &str, backends: &[(&str, &Echo)]) -> Output {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), manifests).unwrap();
    let mut args: Vec<String> = ["k8s", "apply", "-f"].map(String::from).to_vec();
    args.push(file.path().display().to_string());
    args.push("--admin".into());
    args.push(node.admin.clone());
    for (svc, echo) in backends {
        args.push("--backend".into());
        args.push(format!("{svc}={}", echo.addr));
    }
    let out = tollgate(args).await;
    drop(file);
    out
}

/// The seed document's two Services, mapped to local echo backends.
fn seed_backends<'a>(echo1: &'a Echo, echo2: &'a Echo) -> [(&'static str, &'a Echo); 2] {
    [
        ("echo-1.api-gateway-demo", echo1),
        ("echo-2.api-gateway-demo", echo2),
    ]
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn get(node: &Node, path: &str, key: Option<&str>) -> (u16, Value) {
    let mut r = client().get(node.proxy_url(path));
    if let Some(k) = key {
        r = r.header("apikey", k);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Waits until a fresh minute has at least `need` seconds left, so that a burst of
/// requests falls in one rate-limiting window.
async fn early_in_a_minute(need: u64) {
    let s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if 60 - s < need {
        tokio::time::sleep(Duration::from_secs(60 - s)).await;
    }
}

/// The rate-limiting plugins as `node` sees them (the apply's tag, KongPlugin rate-limit).
async fn rate_limit_policies(node: &Node) -> Vec<String> {
    let (_, body) = node.get("/plugins?tags=k8s-name:rate-limit").await;
    body["data"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    p["config"]["policy"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

// The seed document (../shared/seeds, "API Gateway (Kong): Deep Dive"): `/echo-1/health`
// reaches echo-1 as `/health`; 401 without a key, 200 with `apikey: my-secret-api-key`; the
// sixth request within a minute is 429. With `policy: local` each of three nodes counts
// alone, as the document warns; with `policy: cluster` the limit holds across the three.
#[tokio::test]
#[allow(clippy::await_holding_lock)]
async fn the_seed_documents_manifests_behave_as_the_document_says_on_three_nodes() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (echo1, echo2) = (Echo::start("echo-1").await, Echo::start("echo-2").await);
    let backends = seed_backends(&echo1, &echo2);
    let nodes = ClusterSpec::new(3).bootstrap(3, &[]).await;
    // Configuration the manifests do not own, which no apply may touch.
    nodes[0]
        .create("/services", json!({"name": "mine", "url": echo1.url()}))
        .await;

    let out = apply(&nodes[0], SEED, &backends).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("created"),
        "{}",
        text(&out.stdout)
    );
    // The ConfigMap is not the controller's business: a warning, not an error.
    assert!(text(&out.stderr).contains("ConfigMap api-gateway-demo/echo-1-config: ignored"));

    for n in &nodes {
        eventually("the manifests are served on every node", || async {
            (get(n, "/echo-1/health", None).await.0 == 401).then_some(())
        })
        .await;
    }
    // key-auth: 401 without a key, on every node.
    for n in &nodes {
        let (status, body) = get(n, "/echo-1/health", None).await;
        assert_eq!(status, 401);
        assert_eq!(body["message"], "No API key found in request");
    }
    let (status, _) = get(&nodes[1], "/echo-1/health", Some("wrong")).await;
    assert_eq!(status, 401);

    // strip-path: /echo-1/health reaches echo-1 as /health (its health answer), and
    // /echo-1/anything as /anything.
    early_in_a_minute(30).await;
    let (status, body) = get(&nodes[0], "/echo-1/health", Some("my-secret-api-key")).await;
    assert_eq!(status, 200);
    assert_eq!(body, json!({"status": "healthy"}));
    let (status, body) = get(&nodes[0], "/echo-1/hello", Some("my-secret-api-key")).await;
    assert_eq!(status, 200);
    assert_eq!(body["name"], "echo-1");
    assert_eq!(body["path"], "/hello");
    // Three more: five in this minute, then the sixth is 429 with Retry-After.
    for _ in 0..3 {
        assert_eq!(
            get(&nodes[0], "/echo-1/health", Some("my-secret-api-key"))
                .await
                .0,
            200
        );
    }
    let resp = client()
        .get(nodes[0].proxy_url("/echo-1/health"))
        .header("apikey", "my-secret-api-key")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.headers().contains_key("retry-after"));
    // policy: local: another node still admits the same consumer (the document's warning).
    assert_eq!(
        get(&nodes[1], "/echo-1/health", Some("my-secret-api-key"))
            .await
            .0,
        200
    );

    // The same manifests with `policy: cluster`: an apply that updates the two plugins.
    let cluster = SEED.replace("policy: local", "policy: cluster");
    let out = apply(&nodes[1], &cluster, &backends).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("2 updated, 0 deleted"),
        "{}",
        text(&out.stdout)
    );
    for n in &nodes {
        eventually("policy cluster everywhere", || async {
            let p = rate_limit_policies(n).await;
            (p.len() == 2 && p.iter().all(|x| x == "cluster")).then_some(())
        })
        .await;
    }
    // /echo-2 has had no traffic. Requests round-robin over the three nodes: five are
    // admitted in the minute, then every node refuses. Near the limit a node admits only its
    // share of what is left until its peers' counts reach it by gossip (cluster/src/gcounter.rs
    // states the bound); such a refusal says `Retry-After: 1`, and the client retries.
    early_in_a_minute(40).await;
    let (mut admitted, mut deferred, mut i) = (0, 0, 0);
    while admitted < 5 {
        assert!(i < 40, "only {admitted} admitted after {i} requests");
        let r = client()
            .get(nodes[i % 3].proxy_url("/echo-2/x"))
            .header("apikey", "my-secret-api-key")
            .send()
            .await
            .unwrap();
        i += 1;
        match r.status().as_u16() {
            200 => {
                admitted += 1;
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["name"], "echo-2");
            }
            429 => {
                assert_eq!(r.headers()["retry-after"], "1", "refused before the limit");
                deferred += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => panic!("status {other}"),
        }
    }
    eprintln!("figure: policy cluster, limit 5/minute over 3 nodes: 5 admitted in {i} requests ({deferred} deferred with Retry-After: 1)");
    // Counts have had time to travel (gossip every 100 ms); the sixth is refused everywhere,
    // until the window moves on.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for n in &nodes {
        let r = client()
            .get(n.proxy_url("/echo-2/x"))
            .header("apikey", "my-secret-api-key")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 429);
        let wait: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(wait > 1, "Retry-After {wait}: the window, not a deferral");
    }

    // Applying the same manifests again changes nothing: no write, same timestamps.
    let (_, before) = nodes[2].get("/routes").await;
    let out = apply(&nodes[2], &cluster, &backends).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("unchanged"),
        "{}",
        text(&out.stdout)
    );
    let (_, after) = nodes[2].get("/routes").await;
    assert_eq!(before, after);
    // What the manifests do not own is still there.
    let (status, _) = nodes[2].get("/services/mine").await;
    assert_eq!(status, 200);
}

// Removing an object from the manifests removes what it made, and nothing else; a bad
// file is refused naming the object, and nothing of it is applied.
#[tokio::test]
#[allow(clippy::await_holding_lock)]
async fn a_later_apply_replaces_what_the_earlier_one_made_and_bad_manifests_change_nothing() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (echo1, echo2) = (Echo::start("echo-1").await, Echo::start("echo-2").await);
    let backends = seed_backends(&echo1, &echo2);
    let node = Node::start().await;
    let out = apply(&node, SEED, &backends).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (_, plugins) = node.get("/plugins").await;
    assert_eq!(plugins["data"].as_array().unwrap().len(), 4);
    // Every entity carries the controller's tags and the apply's own.
    for p in plugins["data"].as_array().unwrap() {
        let tags: Vec<&str> = p["tags"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(tags.contains(&"k8s-namespace:api-gateway-demo"), "{tags:?}");
        assert!(tags.contains(&"k8s-apply:default"), "{tags:?}");
    }

    // The Ingress without key-auth: its two key-auth plugins go, the rest stays.
    let open = SEED.replace(
        "konghq.com/plugins: rate-limit,api-key-auth",
        "konghq.com/plugins: rate-limit",
    );
    let out = apply(&node, &open, &backends).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("2 deleted"),
        "{}",
        text(&out.stdout)
    );
    eventually("key-auth gone", || async {
        (get(&node, "/echo-1/x", None).await.0 == 200).then_some(())
    })
    .await;

    // Bad manifests: each refused with the object named, and nothing changes.
    let (_, before) = node.get("/plugins").await;
    let cases: Vec<(String, &str)> = vec![
        (
            SEED.replace("konghq.com/plugins: rate-limit,api-key-auth", "konghq.com/plugins: rate-limit,no-such-plugin"),
            "Ingress api-gateway-demo/echo-routes: annotation konghq.com/plugins names \"no-such-plugin\"",
        ),
        (
            SEED.replace("    konghq.com/credential: key-auth\n", ""),
            "Secret api-gateway-demo/demo-user-key: used as a credential by KongConsumer api-gateway-demo/demo-user, but it has no konghq.com/credential label",
        ),
        (
            SEED.replace("- demo-user-key", "- missing-key"),
            "KongConsumer api-gateway-demo/demo-user: credentials: Secret api-gateway-demo/missing-key is not in the manifests",
        ),
        (
            SEED.replace("plugin: key-auth", "plugin: no-such-auth"),
            "KongPlugin api-gateway-demo/api-key-auth:",
        ),
        (
            SEED.replace("minute: 5", "minute: -5"),
            "KongPlugin api-gateway-demo/rate-limit:",
        ),
        ("just: text\n".into(), "document 1: not a Kubernetes object: no `kind`"),
        ("- a\n- b\n".into(), "document 1: not a Kubernetes object"),
        ("kind: [\n".into(), "document 1: not YAML"),
        // Everything skipped (a wrong file, a wrong class) would delete the whole set.
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n".into(),
            "the manifests translate to nothing",
        ),
    ];
    for (manifests, expected) in cases {
        let out = apply(&node, &manifests, &backends).await;
        assert!(!out.status.success(), "accepted:\n{manifests}");
        let err = text(&out.stderr);
        assert!(err.contains(expected), "expected {expected:?} in:\n{err}");
    }
    let (_, after) = node.get("/plugins").await;
    assert_eq!(before, after);

    // An unknown kind is skipped with a warning naming it.
    let extra = format!("{open}---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: echo-1\n  namespace: api-gateway-demo\n");
    let out = apply(&node, &extra, &backends).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("warning: Deployment api-gateway-demo/echo-1: ignored"),
        "{}",
        text(&out.stderr)
    );
}

// The Admin API's own checks on `POST /config?owner_tag=` (the CLI checks first, but any
// client can call it): 400 naming the entity, and nothing changes.
#[tokio::test]
async fn owner_tag_loads_refuse_entities_without_an_id_or_the_tag() {
    let node = Node::start().await;
    node.create(
        "/services",
        json!({"name": "mine", "url": "http://127.0.0.1:9"}),
    )
    .await;
    let post = |body: Value| {
        let url = node.admin_url("/config?owner_tag=k8s-apply:t");
        async move {
            let r = client().post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = post(json!({"_format_version": "3.0",
        "services": [{"name": "s", "url": "http://127.0.0.1:9", "tags": ["k8s-apply:t"]}]}))
    .await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("services[0]: every entity of an owner_tag load needs an id"),
        "{body}"
    );
    let (status, body) = post(json!({"_format_version": "3.0",
        "services": [{"id": "6b7ac2a5-4a4b-4c5e-9c1f-2f7a3b6c9d10", "name": "s", "url": "http://127.0.0.1:9"}]}))
    .await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("must carry the tag 'k8s-apply:t'"),
        "{body}"
    );
    // A well-formed load is 201, then 200 unchanged; the untagged service stays.
    let good = json!({"_format_version": "3.0",
        "services": [{"id": "6b7ac2a5-4a4b-4c5e-9c1f-2f7a3b6c9d10", "name": "s", "url": "http://127.0.0.1:9", "tags": ["k8s-apply:t"]}]});
    let (status, body) = post(good.clone()).await;
    assert_eq!((status, body["created"].as_u64()), (201, Some(1)), "{body}");
    let (status, body) = post(good).await;
    assert_eq!(
        (status, body["unchanged"].as_u64()),
        (200, Some(1)),
        "{body}"
    );
    assert_eq!(node.get("/services/mine").await.0, 200);
}
