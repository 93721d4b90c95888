//! The `cors` plugin seen from a real browser: a page served from one origin calls an API
//! through Tollgate on another origin, in headless Chromium (Debian's `chromium`), as Kong's
//! users' browser clients do. With the plugin the call, a preflighted POST with credentials,
//! succeeds and the browser sends the API's cookie back; on a route without it, the browser
//! itself blocks the call (CORS is enforced by the browser, not by the gateway).
//!
//! Needs Chromium: `.ci/run` installs it and sets `TOLLGATE_REQUIRE_BROWSER=1`, so CI fails
//! without it; elsewhere the test says it is skipped when no browser is found.

mod common;

use std::time::Duration;

use common::{Echo, Node};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The first Chromium found on the PATH (or named by `CHROMIUM`).
fn chromium() -> Option<String> {
    if let Ok(c) = std::env::var("CHROMIUM") {
        return Some(c);
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|c| {
            std::process::Command::new(c)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(String::from)
}

/// The page: two credentialed, preflighted calls (the first gets the API's cookie, the second
/// sends it back), its outcome written into `#result`.
fn page_html(api: &str) -> String {
    format!(
        r#"<!doctype html><html><body><pre id="result">pending</pre><script>
const call = () => fetch("{api}", {{
  method: "POST", credentials: "include", mode: "cors",
  headers: {{"Content-Type": "application/json", "X-Tollgate-Test": "browser"}},
  body: JSON.stringify({{hello: "world"}})
}}).then(r => r.json());
call().then(() => call()).then(j => {{
  document.getElementById("result").textContent =
    "ok|" + j.headers["x-tollgate-test"] + "|" + (j.headers["cookie"] || "") + "|" + j.body;
}}).catch(e => {{
  document.getElementById("result").textContent = "blocked|" + e;
}});
</script></body></html>"#
    )
}

/// Serves `html` for any request on `listener` (the page's origin).
fn serve_page(listener: tokio::net::TcpListener, html: String) {
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let html = html.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 64 * 1024 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    html.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(html.as_bytes()).await;
            });
        }
    });
}

/// Loads the page in headless Chromium and returns `#result`'s text once its script ran.
async fn run_page(browser: &str, page_port: u16) -> String {
    let profile = tempfile::tempdir().unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                // Virtual time waits for the page's network calls before the DOM is dumped.
                "--virtual-time-budget=15000",
                &format!("--user-data-dir={}", profile.path().display()),
                "--dump-dom",
                &format!("http://127.0.0.1:{page_port}/"),
            ])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("chromium finishes")
    .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout).into_owned();
    let start = dom.find("<pre id=\"result\">").unwrap_or_else(|| {
        panic!(
            "no result in the page: {dom}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let rest = &dom[start + "<pre id=\"result\">".len()..];
    rest[..rest.find("</pre>").unwrap_or(rest.len())].to_string()
}

#[tokio::test]
async fn a_browser_calls_the_api_across_origins_only_with_the_cors_plugin() {
    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("TOLLGATE_REQUIRE_BROWSER").is_none(),
            "TOLLGATE_REQUIRE_BROWSER is set and no Chromium was found"
        );
        eprintln!(
            "skipped: no Chromium on this machine (set CHROMIUM, or install Debian's chromium)"
        );
        return;
    };
    let echo = Echo::start("api").await;
    let node = Node::start().await;
    node.create("/services", json!({"name": "api", "url": echo.url()}))
        .await;

    // The page's origin, named by the plugin.
    let page = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page_port = page.local_addr().unwrap().port();
    let origin = format!("http://127.0.0.1:{page_port}");

    for (name, cors) in [("with-cors", true), ("without-cors", false)] {
        node.create(
            "/services/api/routes",
            json!({"name": name, "paths": [format!("/{name}")]}),
        )
        .await;
        // The API sets a cookie, which a credentialed call sends back.
        node.create(
            &format!("/routes/{name}/plugins"),
            json!({"name": "response-transformer",
                   "config": {"add": {"headers": ["Set-Cookie:tollgate-session=s3cr3t; Path=/"]}}}),
        )
        .await;
        if cors {
            node.create(
                &format!("/routes/{name}/plugins"),
                json!({"name": "cors", "config": {
                    "origins": [origin],
                    "credentials": true,
                    "headers": ["Content-Type", "X-Tollgate-Test"],
                    "max_age": 60,
                }}),
            )
            .await;
        }
    }

    // Outside the browser, both routes answer; only one allows the page's origin. (So a
    // blocked call below is the browser's CORS check, not a route that fails.)
    for (name, allowed) in [("with-cors", true), ("without-cors", false)] {
        let r = common::client()
            .post(node.proxy_url(&format!("/{name}/echo")))
            .header("origin", &origin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{name}");
        assert_eq!(
            r.headers().get("access-control-allow-origin").is_some(),
            allowed,
            "{name}"
        );
    }
    serve_page(page, page_html(&node.proxy_url("/with-cors/echo")));
    let result = run_page(&browser, page_port).await;
    assert_eq!(
        result, "ok|browser|tollgate-session=s3cr3t|{\"hello\":\"world\"}",
        "the cross-origin call with credentials goes through, cookie included"
    );

    // The same call from the same page, on a route without the plugin.
    let other = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let other_port = other.local_addr().unwrap().port();
    serve_page(other, page_html(&node.proxy_url("/without-cors/echo")));
    let blocked = run_page(&browser, other_port).await;
    assert!(
        blocked.starts_with("blocked|TypeError"),
        "the browser blocks the call without the plugin: {blocked}"
    );
}
