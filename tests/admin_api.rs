//! The Admin API as a Kong user drives it: shapes, errors, paging, and durability across a
//! restart.

mod common;

use common::{client, Echo, Node};
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn kong_error_shapes() {
    let node = Node::start().await;
    node.create(
        "/services",
        json!({"name": "s1", "url": "http://127.0.0.1:9/"}),
    )
    .await;

    let (s, b) = node
        .post("/services", json!({"name": "bad", "url": "not a url"}))
        .await;
    assert_eq!(s, 400);
    assert_eq!(b["name"], "schema violation");
    // Kong reads it as a bare path: no host, and a path that does not start with `/`.
    assert_eq!(b["fields"]["host"], "required field missing", "{b}");
    assert_eq!(b["fields"]["path"], "should start with: /", "{b}");

    let (s, b) = node
        .post("/services", json!({"name": "s1", "url": "http://x"}))
        .await;
    assert_eq!(s, 409);
    assert_eq!(b["message"], "UNIQUE violation detected on '{name=\"s1\"}'");

    let (s, b) = node
        .post("/services", json!({"host": "x", "bogus": 1}))
        .await;
    assert_eq!(s, 400);
    assert_eq!(b["fields"]["bogus"], "unknown field");

    let (s, b) = node
        .post("/plugins", json!({"name": "no-such-plugin"}))
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        b["fields"]["name"],
        "plugin 'no-such-plugin' not enabled; add it to the 'plugins' configuration property"
    );

    let (s, b) = node
        .post(
            "/plugins",
            json!({"name": "rate-limiting", "config": {"minute": -5}}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        b["fields"]["config"]["minute"],
        "value must be greater than 0"
    );

    let (s, b) = node
        .post(
            "/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 5, "colour": "red"}}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(b["fields"]["config"]["colour"], "unknown field");

    let (s, b) = node
        .post(
            "/plugins",
            json!({"name": "rate-limiting", "config": {"minute": 5, "policy": "memcached"}}),
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        b["fields"]["config"]["policy"]
            .as_str()
            .unwrap()
            .starts_with("expected one of"),
        "{b}"
    );

    let (s, b) = node
        .post(
            "/routes",
            json!({"paths": ["/x"], "service": {"id": "5f1ad4b9-4d3c-4d8e-9b21-1b5cbd6c9a41"}}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(b["name"], "foreign key violation");

    let (s, _) = node.get("/services/does-not-exist").await;
    assert_eq!(s, 404);
    let (s, b) = node.get("/no/such/endpoint").await;
    assert_eq!((s, b), (404, json!({"message": "Not found"})));

    let r = client()
        .post(node.admin_url("/services"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "Cannot parse JSON body"
    );

    // Deleting a service that routes use is refused; deleting twice is fine (Kong's 204).
    node.create(
        "/services/s1/routes",
        json!({"name": "r1", "paths": ["/a"]}),
    )
    .await;
    let (s, b) = node.send(Method::DELETE, "/services/s1", None).await;
    assert_eq!(s, 400);
    assert_eq!(b["fields"]["@referenced_by"], "routes");
    assert_eq!(node.send(Method::DELETE, "/routes/r1", None).await.0, 204);
    assert_eq!(node.send(Method::DELETE, "/routes/r1", None).await.0, 204);
    assert_eq!(node.send(Method::DELETE, "/services/s1", None).await.0, 204);
}

#[tokio::test]
async fn kong_curl_form_bodies_patch_put_and_paging() {
    let node = Node::start().await;
    let c = client();
    // curl -d name=... -d url=...: form encoding, as in Kong's docs.
    let r = c
        .post(node.admin_url("/services"))
        .form(&[
            ("name", "example-service"),
            ("url", "http://httpbin.org:8080/anything"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let svc: Value = r.json().await.unwrap();
    assert_eq!(
        (
            svc["host"].as_str(),
            svc["port"].as_u64(),
            svc["path"].as_str()
        ),
        (Some("httpbin.org"), Some(8080), Some("/anything"))
    );
    assert_eq!(svc["retries"], 5);
    assert_eq!(svc["connect_timeout"], 60000);
    let r = c
        .post(node.admin_url("/services/example-service/routes"))
        .form(&[
            ("name", "r"),
            ("paths[]", "/mock"),
            ("paths[]", "/mock2"),
            ("methods", "GET"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let route: Value = r.json().await.unwrap();
    assert_eq!(route["paths"], json!(["/mock", "/mock2"]));
    assert_eq!(route["strip_path"], true);
    let r = c
        .post(node.admin_url("/routes/r/plugins"))
        .form(&[
            ("name", "rate-limiting"),
            ("config.minute", "5"),
            ("config.policy", "local"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let plugin: Value = r.json().await.unwrap();
    assert_eq!(plugin["config"]["minute"], 5);

    // PATCH merges, including a plugin's config.
    let (s, b) = node
        .send(
            Method::PATCH,
            &format!("/plugins/{}", plugin["id"].as_str().unwrap()),
            Some(json!({"config": {"hour": 100}})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["config"]["minute"].as_u64(), b["config"]["hour"].as_u64()),
        (Some(5), Some(100))
    );
    let (s, b) = node
        .send(
            Method::PATCH,
            "/services/example-service",
            Some(json!({"retries": 2})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(b["retries"], 2);
    assert_eq!(b["created_at"], svc["created_at"]);
    assert_eq!(
        node.send(
            Method::PATCH,
            "/services/ghost",
            Some(json!({"retries": 2}))
        )
        .await
        .0,
        404
    );

    // PUT by name creates, then replaces.
    let (s, b) = node
        .send(
            Method::PUT,
            "/consumers/carol",
            Some(json!({"custom_id": "c-1"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["username"], "carol");
    let id = b["id"].clone();
    let (_, b) = node
        .send(
            Method::PUT,
            "/consumers/carol",
            Some(json!({"custom_id": "c-2"})),
        )
        .await;
    assert_eq!(
        (
            b["id"].clone(),
            b["custom_id"].clone(),
            b["username"].clone()
        ),
        (id, json!("c-2"), json!("carol"))
    );

    // Paging: size and next walk every consumer exactly once.
    for i in 0..7 {
        node.create("/consumers", json!({"username": format!("u{i}")}))
            .await;
    }
    let mut seen = Vec::new();
    let mut next = Some("/consumers?size=3".to_string());
    while let Some(path) = next {
        let (s, page) = node.get(&path).await;
        assert_eq!(s, 200);
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 3);
        seen.extend(
            data.iter()
                .map(|c| c["username"].as_str().unwrap().to_string()),
        );
        next = page["next"].as_str().map(str::to_string);
    }
    seen.sort();
    assert_eq!(seen.len(), 8);
    seen.dedup();
    assert_eq!(seen.len(), 8);
    assert_eq!(node.get("/consumers?size=0").await.0, 400);

    // Key generated when not given; nested lookups check ownership.
    let k = node.create("/consumers/carol/key-auth", json!({})).await;
    assert_eq!(k["key"].as_str().unwrap().len(), 32);
    let path = format!("/consumers/u0/key-auth/{}", k["id"].as_str().unwrap());
    assert_eq!(node.get(&path).await.0, 404);
    let (s, b) = node
        .post("/consumers/carol/key-auth", json!({"key": k["key"]}))
        .await;
    assert_eq!(s, 409, "{b}");
}

#[tokio::test]
async fn configuration_survives_a_restart() {
    let echo = Echo::start("e").await;
    let dir = tempfile::tempdir().unwrap();
    let mut node = Node::start_in(dir.path(), &[]).await;
    node.create("/services", json!({"name": "s", "url": echo.url()}))
        .await;
    node.create("/services/s/routes", json!({"name": "r", "paths": ["/r"]}))
        .await;
    node.create("/consumers", json!({"username": "dave"})).await;
    node.create("/consumers/dave/key-auth", json!({"key": "dave-key"}))
        .await;
    node.create("/routes/r/plugins", json!({"name": "key-auth"}))
        .await;
    let before = node.get("/config").await.1;
    // `GET /`: the plugins in use, and Kong's node_id, a UUID kept in the data dir.
    let root = node.get("/").await.1;
    assert_eq!(root["plugins"]["enabled_in_cluster"], json!(["key-auth"]));
    let node_id = root["node_id"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&node_id).is_ok(), "{root}");
    assert!(
        node.proc.terminate(),
        "node did not stop cleanly on SIGTERM"
    );

    let node = Node::start_in(dir.path(), &[]).await;
    let after = node.get("/config").await.1;
    assert_eq!(before, after);
    assert_eq!(node.get("/").await.1["node_id"], json!(node_id));
    let r = client()
        .get(node.proxy_url("/r"))
        .header("apikey", "dave-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn declarative_file_at_start() {
    let echo = Echo::start("decl").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kong.yaml");
    std::fs::write(
        &file,
        format!(
            r#"_format_version: "3.0"
services:
  - name: example-service
    url: {}
    routes:
      - name: example-route
        paths: [/mock]
        plugins:
          - name: key-auth
consumers:
  - username: erin
    keyauth_credentials:
      - key: erin-key
"#,
            echo.url()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let node = Node::start_in(&data, &["--config", file.to_str().unwrap()]).await;
    assert_eq!(
        client()
            .get(node.proxy_url("/mock"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = client()
        .get(node.proxy_url("/mock"))
        .header("apikey", "erin-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["name"], "decl");
}

#[tokio::test]
async fn admin_token_is_required_when_set() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start_in(dir.path(), &["--admin-token", "s3cret"]).await;
    let c = client();
    assert_eq!(
        c.get(node.admin_url("/services"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let r = c
        .get(node.admin_url("/services"))
        .header("Kong-Admin-Token", "s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn cli_refuses_what_it_cannot_honour() {
    let out = std::process::Command::new(common::BIN)
        .args(["node", "--admin-listen", "0.0.0.0:18001"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin-token"));
    let out = std::process::Command::new(common::BIN)
        .args(["node", "--seeds", "nohost"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // Listening on 0.0.0.0 for peers without saying where peers reach us cannot work.
    let dir = tempfile::tempdir().unwrap();
    let secret = std::process::Command::new(common::BIN)
        .args(["cluster", "secret"])
        .output()
        .unwrap()
        .stdout;
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, secret).unwrap();
    let out = std::process::Command::new(common::BIN)
        .args([
            "node",
            "--proxy-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--proxy-listen-tls",
            "off",
            "--admin-listen-tls",
            "off",
        ])
        .args([
            "--cluster-listen",
            "0.0.0.0:0",
            "--gossip-listen",
            "0.0.0.0:0",
        ])
        .arg("--cluster-secret-file")
        .arg(&secret_file)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("advertise-addr"));
    let out = std::process::Command::new(common::BIN).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
}
