//! `tollgate echo`: a small backend that answers JSON naming itself, the method, the path and
//! query it received and the request headers; `/health` answers `{"status":"healthy"}`;
//! `/response-headers?name=value` also sends each query argument back as a response header
//! and `/status/<code>` answers with that status (both as Kong's mock upstream). It is the stand-in for real backends in demos, docker-compose and
//! tests.
//!
//! SIGUSR1 turns slow mode on and off: every answer then waits `--slow-ms` first (the
//! fault-injection harness makes a backend slow this way, as it kills or freezes one).

use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;

use crate::cli::EchoArgs;

/// Largest body the echo reads (it reports the size, not the content).
const MAX_BODY: usize = 16 * 1024 * 1024;

pub async fn run(args: EchoArgs) -> anyhow::Result<()> {
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    tracing::info!(listen = %args.listen, name = %args.name, "echo backend ready");
    let name: std::sync::Arc<str> = args.name.into();
    let slow = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let toggled = slow.clone();
    let mut usr1 = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            let was = toggled.fetch_xor(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(slow = !was, "slow mode switched");
        }
    });
    let delay = std::time::Duration::from_millis(args.slow_ms);
    let shutdown = crate::node::shutdown_signal();
    crate::serve::serve(
        listener,
        move |req, peer: &crate::serve::Peer| {
            let (name, slow, peer_addr) = (name.clone(), slow.clone(), peer.addr);
            async move {
                if slow.load(std::sync::atomic::Ordering::Relaxed) {
                    tokio::time::sleep(delay).await;
                }
                handle(req, peer_addr, name).await
            }
        },
        shutdown,
        "echo",
        None,
        None,
    )
    .await;
    Ok(())
}

/// The largest request body echoed back as text (`body`); larger ones only by size.
const ECHOED_BODY: usize = 64 * 1024;

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    name: std::sync::Arc<str>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    if parts.uri.path() == "/health" {
        return json_response(StatusCode::OK, json!({"status": "healthy"}));
    }
    let mut headers = Map::new();
    for (k, v) in &parts.headers {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        match headers.get_mut(k.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                headers.insert(k.as_str().to_string(), Value::String(v));
            }
        }
    }
    let body = match http_body_util::Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                json!({"message": "body too large"}),
            )
        }
    };
    let mut answer = json!({
        "name": &*name,
        "method": parts.method.as_str(),
        "path": path,
        "headers": headers,
        "body_bytes": body.len(),
        "client": peer.to_string(),
    });
    // What a request-transforming plugin sent is visible: a small body comes back as text.
    if !body.is_empty() && body.len() <= ECHOED_BODY {
        answer["body"] = Value::String(String::from_utf8_lossy(&body).into_owned());
    }
    // `/status/<code>` answers with that status (Kong's mock upstream).
    let status = parts
        .uri
        .path()
        .strip_prefix("/status/")
        .and_then(|c| c.parse::<u16>().ok())
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    let mut r = json_response(status, answer);
    if parts.uri.path() == "/response-headers" {
        add_response_headers(r.headers_mut(), parts.uri.query().unwrap_or(""));
    }
    r
}

/// Most headers `/response-headers` adds.
const MAX_ASKED_HEADERS: usize = 64;

/// `/response-headers?name=value`: each query argument becomes a response header, as Kong's
/// mock upstream does (`spec/fixtures/mock_upstream.lua` `send_text_response`): a name given
/// more than once gets one header with the values joined by `, `. Names or values that cannot
/// be a header are skipped.
fn add_response_headers(headers: &mut header::HeaderMap, query: &str) {
    let mut asked: Vec<(String, String)> = Vec::new();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if let Some((_, joined)) = asked.iter_mut().find(|(n, _)| n.eq_ignore_ascii_case(&k)) {
            joined.push_str(", ");
            joined.push_str(&v);
        } else if asked.len() < MAX_ASKED_HEADERS {
            asked.push((k.into_owned(), v.into_owned()));
        }
    }
    for (k, v) in asked {
        if let (Ok(k), Ok(v)) = (
            header::HeaderName::from_bytes(k.as_bytes()),
            header::HeaderValue::from_str(&v),
        ) {
            headers.insert(k, v);
        }
    }
}

fn json_response(status: StatusCode, v: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}
