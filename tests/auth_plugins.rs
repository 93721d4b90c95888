//! The authentication plugins against hostile input, on one real node: forged identity
//! headers, malformed `Authorization` values, JWTs with `alg: none`, the wrong key type or an
//! oversized body, broken HMAC parameters. Each is refused with Kong's status and message,
//! none authenticates, and the node keeps serving. Kong's own cases are in
//! `tests/conformance/{basic_auth,jwt,hmac_auth,acl,ip_restriction,bot_detection}*.yaml`.

mod common;

use base64::Engine;
use common::{client, Echo, Node};
use serde_json::{json, Value};

const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAxQVq3dnqjWIgSfWqsZW3
qZBXsf6BwRr4708reknh4DfPIADOsZvwNtUOkrqjGkrZtCWRLyYcLDVSlwe3cB6c
W+OYMXov+tkyZJTpm+dqlCb+BpiQsTvv8Cr+8WJafjFtaXT5KS9wdUJMVtoCUF9n
ia0UugjnO3GcdnG2NxAbQn/7g/DvpdfxYbXr3L41+kV7RNh32veSv5BE64LwExkb
fcI7IgUR4ze0O4Ew3QzpCRrF8B6J4GCf7t0ZyqApdVMTyvEXEpjQJNewWMYvP4y7
HkIi3NyV693hsCm1rKxjme8qyTkfP6Ec/sPqeWU8cn6OyYdoJJwHbpNKQ6qKlfIl
LQIDAQAB
-----END PUBLIC KEY-----";

fn b64url(s: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

fn hs256(secret: &[u8], header: &Value, payload: &Value) -> String {
    use hmac::Mac;
    let signed = format!(
        "{}.{}",
        b64url(&header.to_string()),
        b64url(&payload.to_string())
    );
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    m.update(signed.as_bytes());
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{signed}.{sig}")
}

/// A node and backend with a route per plugin under test.
async fn setup() -> (Node, Echo) {
    let echo = Echo::start("auth").await;
    let node = Node::start().await;
    node.create("/services", json!({"name": "s", "url": echo.url()}))
        .await;
    node.create(
        "/consumers",
        json!({"username": "alice", "custom_id": "a-1"}),
    )
    .await;
    node.create("/consumers/alice/key-auth", json!({"key": "alice-key"}))
        .await;
    node.create(
        "/consumers/alice/basic-auth",
        json!({"username": "alice", "password": "alice-password"}),
    )
    .await;
    node.create(
        "/consumers/alice/jwt",
        json!({"key": "hs-iss", "secret": "hs-secret"}),
    )
    .await;
    node.create(
        "/consumers/alice/jwt",
        json!({"key": "rs-iss", "algorithm": "RS256", "rsa_public_key": RSA_PUBLIC}),
    )
    .await;
    node.create(
        "/consumers/alice/hmac-auth",
        json!({"username": "alice", "secret": "hmac-secret"}),
    )
    .await;
    for (path, plugin) in [
        ("/open", None),
        ("/key", Some("key-auth")),
        ("/basic", Some("basic-auth")),
        ("/jwt", Some("jwt")),
        ("/hmac", Some("hmac-auth")),
    ] {
        let r = node
            .create("/services/s/routes", json!({"paths": [path]}))
            .await;
        if let Some(name) = plugin {
            node.create(
                &format!("/routes/{}/plugins", r["id"].as_str().unwrap()),
                json!({"name": name}),
            )
            .await;
        }
    }
    (node, echo)
}

async fn proxy(node: &Node, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut rq = client().get(node.proxy_url(path));
    for (k, v) in headers {
        rq = rq.header(*k, *v);
    }
    let r = rq.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

const FORGED: &[(&str, &str)] = &[
    ("X-Consumer-ID", "00000000-0000-0000-0000-000000000001"),
    ("X-Consumer-Username", "root"),
    ("X-Consumer-Custom-ID", "root"),
    ("X-Credential-Identifier", "forged"),
    ("X-Anonymous-Consumer", "false"),
    ("X-Consumer-Groups", "admin"),
    ("X-Authenticated-Groups", "admin"),
    ("X-Authenticated-Userid", "root"),
];

#[tokio::test]
async fn identity_headers_from_clients_never_reach_the_upstream() {
    let (node, _echo) = setup().await;
    // No plugin on the route: none of them passes.
    let (s, b) = proxy(&node, "/open", FORGED).await;
    assert_eq!(s, 200);
    for (name, _) in FORGED {
        assert!(
            b["headers"][name.to_ascii_lowercase()].is_null(),
            "{name} reached the upstream: {b}"
        );
    }
    // With key-auth, the upstream sees the gateway's values only.
    let mut h = FORGED.to_vec();
    h.push(("apikey", "alice-key"));
    let (s, b) = proxy(&node, "/key", &h).await;
    assert_eq!(s, 200);
    assert_eq!(b["headers"]["x-consumer-username"], "alice");
    assert_eq!(b["headers"]["x-consumer-custom-id"], "a-1");
    assert_ne!(b["headers"]["x-consumer-id"], FORGED[0].1);
    assert!(b["headers"]["x-consumer-groups"].is_null(), "{b}");
    assert!(b["headers"]["x-anonymous-consumer"].is_null(), "{b}");
    // Spelled with underscores or in another case, they are still not believed.
    let (_, b) = proxy(
        &node,
        "/open",
        &[
            ("x_consumer_username", "root"),
            ("X-CONSUMER-USERNAME", "root"),
        ],
    )
    .await;
    assert!(b["headers"]["x-consumer-username"].is_null(), "{b}");
    assert!(b["headers"]["x_consumer_username"].is_null(), "{b}");
}

#[tokio::test]
async fn malformed_basic_credentials_are_refused_and_passwords_never_shown() {
    let (node, _echo) = setup().await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let huge = format!("Basic {}", "QUFB".repeat(4000));
    let cases = [
        "Basic".to_string(),
        "Basic ".to_string(),
        "Basic !!!!".to_string(),
        format!("Basic {}", b64("alice")),
        format!("Basic {}", b64(":alice-password")),
        format!("Basic {}", b64("alice:wrong")),
        format!("Basic {}", b64("alice:alice-password ")),
        format!("Basic {}", b64("nobody:alice-password")),
        format!("Bearer {}", b64("alice:alice-password")),
        huge,
    ];
    for v in &cases {
        let (s, b) = proxy(&node, "/basic", &[("Authorization", v)]).await;
        assert_eq!(s, 401, "{v:.40}: {b}");
        assert_eq!(b["message"], "Unauthorized");
    }
    // Bytes that are not text.
    let r = client()
        .get(node.proxy_url("/basic"))
        .header(
            "Authorization",
            reqwest::header::HeaderValue::from_bytes(b"Basic \xff\xfe").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The right one, twice: the second is served from the verified cache.
    let good = format!("Basic {}", b64("alice:alice-password"));
    for _ in 0..2 {
        let (s, b) = proxy(&node, "/basic", &[("Authorization", &good)]).await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["headers"]["x-credential-identifier"], "alice");
    }
    let (s, b) = proxy(&node, "/basic", &[("Authorization", &cases[5])]).await;
    assert_eq!((s, &b["message"]), (401, &json!("Unauthorized")));
    // The Admin API and the export hold a hash, never the password.
    let (_, list) = node.get("/basic-auths").await;
    let stored = list["data"][0]["password"].as_str().unwrap().to_string();
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    let (_, export) = node.get("/config").await;
    let text = export.to_string();
    assert!(!text.contains("alice-password"));
    assert!(!list.to_string().contains("alice-password"));
    // Exported and loaded back (a backup restored): the hash is taken as it is, and the
    // password still works.
    let file = client()
        .get(node.admin_url("/config?format=json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(file.contains("\"_transform\":false"), "{file:.200}");
    let r = client()
        .post(node.admin_url("/config"))
        .header("content-type", "application/json")
        .body(file)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let (_, list) = node.get("/basic-auths").await;
    assert_eq!(list["data"][0]["password"].as_str(), Some(stored.as_str()));
    let (s, b) = proxy(&node, "/basic", &[("Authorization", &good)]).await;
    assert_eq!(s, 200, "{b}");
    // A stored hash that asks for unbounded work is refused when imported.
    let greedy = stored.replace("m=19456", "m=4294967295");
    let doc = json!({"_format_version": "3.0", "_transform": false,
        "consumers": [{"username": "x", "basicauth_credentials": [{"username": "x", "password": greedy}]}]});
    let r = client()
        .post(node.admin_url("/config"))
        .json(&doc)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn hostile_jwts_are_refused_with_kongs_messages() {
    let (node, _echo) = setup().await;
    let bearer = |t: &str| format!("Bearer {t}");
    let claims = json!({"iss": "hs-iss"});
    // alg none, unsigned and with an empty signature.
    let none = format!(
        "{}.{}.",
        b64url(r#"{"alg":"none","typ":"JWT"}"#),
        b64url(&claims.to_string())
    );
    let expect = |t: String, msg: &'static str| (bearer(&t), msg);
    let rs_claims = json!({"iss": "rs-iss"});
    let cases = vec![
        expect(none.clone(), "Bad token; invalid alg"),
        expect(
            none.trim_end_matches('.').to_string(),
            "Bad token; invalid JSON",
        ),
        // HS256 against the RS256 credential, signed with its public key as the HMAC secret
        // (the key confusion attack): the credential's algorithm decides.
        expect(
            hs256(RSA_PUBLIC.as_bytes(), &json!({"alg": "HS256"}), &rs_claims),
            "Invalid algorithm",
        ),
        // RS256 claimed for the HS256 credential.
        expect(
            hs256(b"hs-secret", &json!({"alg": "RS256"}), &claims),
            "Invalid algorithm",
        ),
        // RS256 with a signature that is not one.
        expect(
            hs256(b"x", &json!({"alg": "RS256"}), &rs_claims),
            "Invalid signature",
        ),
        expect(
            hs256(b"wrong", &json!({"alg": "HS256"}), &claims),
            "Invalid signature",
        ),
        expect(
            hs256(b"hs-secret", &json!({"alg": "HS256"}), &json!({"sub": "x"})),
            "No mandatory 'iss' in claims",
        ),
        expect(
            hs256(
                b"hs-secret",
                &json!({"alg": "HS256"}),
                &json!({"iss": "nobody"}),
            ),
            "No credentials found for given 'iss'",
        ),
        expect(
            format!("{}.{}.c2ln", b64url("[1,2]"), b64url(&claims.to_string())),
            "Bad token; invalid JSON",
        ),
        expect("a.b.c.d.e".into(), "Bad token; invalid JSON"),
        expect(
            hs256(
                b"hs-secret",
                &json!({"alg": "HS256"}),
                &json!({"iss": "hs-iss", "pad": "x".repeat(20_000)}),
            ),
            "Bad token; too large",
        ),
    ];
    for (auth, msg) in &cases {
        let (s, b) = proxy(&node, "/jwt", &[("Authorization", auth)]).await;
        assert_eq!(s, 401, "{msg}: {b}");
        assert_eq!(b["message"], *msg, "{auth:.60}");
    }
    // Two different tokens.
    let good = hs256(b"hs-secret", &json!({"alg": "HS256"}), &claims);
    let r = client()
        .get(format!("{}?jwt={}", node.proxy_url("/jwt"), none))
        .header("Authorization", bearer(&good))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<Value>().await.unwrap()["message"],
        "Multiple tokens provided"
    );
    // And the good one still works: nothing above broke the node.
    let (s, b) = proxy(&node, "/jwt", &[("Authorization", &bearer(&good))]).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["headers"]["x-credential-identifier"], "hs-iss");
    // A credential with a public key that is not one is refused when written.
    let (s, b) = node
        .post(
            "/consumers/alice/jwt",
            json!({"key": "bad", "algorithm": "RS256", "rsa_public_key": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["fields"]["rsa_public_key"], "invalid key");
    let (s, _) = node
        .post(
            "/consumers/alice/jwt",
            json!({"key": "big", "algorithm": "RS256", "rsa_public_key": "A".repeat(20_000)}),
        )
        .await;
    assert_eq!(s, 400);
}

#[tokio::test]
async fn broken_hmac_parameters_are_refused() {
    let (node, _echo) = setup().await;
    let date = httpdate::fmt_http_date(std::time::SystemTime::now());
    let sign = |s: &str| {
        use hmac::Mac;
        let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"hmac-secret").unwrap();
        m.update(s.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
    };
    let good_sig = sign(&format!("date: {date}"));
    let header = |user: &str, alg: &str, sig: &str| {
        format!(r#"hmac username="{user}", algorithm="{alg}", headers="date", signature="{sig}""#)
    };
    let cases = [
        (header("alice", "hmac-sha256", &good_sig), "Thu, 01 Jan 1970 00:00:00 GMT", "HMAC signature cannot be verified, a valid date or x-date header is required for HMAC Authentication"),
        (header("alice", "hmac-sha256", &good_sig), "not a date", "HMAC signature cannot be verified, a valid date or x-date header is required for HMAC Authentication"),
        ("hmac garbage".to_string(), date.as_str(), "HMAC signature cannot be verified"),
        (header("alice", "hmac-md5", &good_sig), date.as_str(), "HMAC signature cannot be verified"),
        (header("nobody", "hmac-sha256", &good_sig), date.as_str(), "HMAC signature cannot be verified"),
        (header("alice", "hmac-sha256", "!!!"), date.as_str(), "HMAC signature does not match"),
        (header("alice", "hmac-sha512", &good_sig), date.as_str(), "HMAC signature does not match"),
    ];
    for (auth, d, msg) in &cases {
        let (s, b) = proxy(&node, "/hmac", &[("Authorization", auth), ("Date", d)]).await;
        assert_eq!(s, 401, "{msg}: {b}");
        assert_eq!(b["message"], *msg, "{auth}");
    }
    let (s, b) = proxy(
        &node,
        "/hmac",
        &[
            ("Authorization", &header("alice", "hmac-sha256", &good_sig)),
            ("Date", &date),
        ],
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["headers"]["x-credential-identifier"], "alice");
}

#[tokio::test]
async fn a_flood_of_wrong_passwords_is_refused_without_harm() {
    let (node, _echo) = setup().await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    // Before any success every wrong password needs the slow hash: at most two run at once,
    // a bounded number wait, the rest are refused at once. All are 401s.
    let mut tasks = Vec::new();
    for i in 0..150 {
        let url = node.proxy_url("/basic");
        let auth = format!("Basic {}", b64(&format!("alice:wrong-{i}")));
        tasks.push(tokio::spawn(async move {
            client()
                .get(url)
                .header("authorization", auth)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), 401);
    }
    let good = format!("Basic {}", b64("alice:alice-password"));
    let (s, b) = proxy(&node, "/basic", &[("Authorization", &good)]).await;
    assert_eq!(s, 200, "{b}");
}
