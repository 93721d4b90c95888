//! The controller's annotations, each applied as it applies them (kongstate/route.go,
//! kongstate/service.go, internal/annotations/annotations.go). A value the controller
//! ignores (a non-numeric timeout, an unknown protocol) is ignored here too, with a warning
//! naming the object, so that manifests that work with the controller work here.

use serde_json::{json, Map, Value};

use crate::error::Error;
use crate::ingress::{KongService, Route};
use crate::objects::{Object, Store};

pub const PREFIX: &str = "konghq.com/";

/// A comma-separated annotation value, trimmed, empties dropped.
pub fn csv(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
        .collect()
}

fn ann<'a>(obj: &'a Object, key: &str) -> Option<&'a str> {
    obj.annotation(&format!("{PREFIX}{key}"))
}

const PROTOCOLS: &[&str] = &[
    "http",
    "https",
    "grpc",
    "grpcs",
    "tcp",
    "tls",
    "tls_passthrough",
    "ws",
    "wss",
];

fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "1" | "t" => Some(true),
        "false" | "0" | "f" => Some(false),
        _ => None,
    }
}

fn valid_host(h: &str, wildcards: bool) -> bool {
    let core = if wildcards {
        h.strip_prefix("*.")
            .or_else(|| h.strip_suffix(".*"))
            .unwrap_or(h)
    } else {
        h
    };
    !core.is_empty()
        && core.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && !label.contains("--")
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Applies an Ingress's annotations to one of its routes.
pub fn apply_route_annotations(ing: &Object, route: &mut Route, warnings: &mut Vec<String>) {
    let r = &mut route.fields;
    let res = ing.resource();
    let mut warn = |what: &str, v: &str| {
        warnings.push(format!(
            "{res}: annotation {PREFIX}{what}: {v:?} ignored, as the controller ignores it"
        ))
    };
    if let Some(v) = ann(ing, "strip-path") {
        match parse_bool_strict(v) {
            Some(b) => {
                r.insert("strip_path".into(), json!(b));
            }
            None => warn("strip-path", v),
        }
    }
    if ing.annotation("ingress.kubernetes.io/force-ssl-redirect") == Some("true") {
        r.insert("https_redirect_status_code".into(), json!(302));
        let current: Vec<String> = protocols_of(r);
        r.insert("protocols".into(), json!(ssl_protocols(&current)));
    }
    if let Some(v) = ann(ing, "https-redirect-status-code") {
        match v.parse::<u16>() {
            Ok(code @ (426 | 301 | 302 | 307 | 308)) => {
                r.insert("https_redirect_status_code".into(), json!(code));
            }
            _ => warn("https-redirect-status-code", v),
        }
    }
    if let Some(v) = ann(ing, "preserve-host") {
        match parse_bool_strict(v) {
            Some(b) => {
                r.insert("preserve_host".into(), json!(b));
            }
            None => warn("preserve-host", v),
        }
    }
    for (key, field) in [
        ("request-buffering", "request_buffering"),
        ("response-buffering", "response_buffering"),
    ] {
        if let Some(v) = ann(ing, key) {
            match parse_bool(v) {
                Some(b) => {
                    r.insert(field.into(), json!(b));
                }
                None => warn(key, v),
            }
        }
    }
    if let Some(v) = ann(ing, "protocols") {
        let list = csv(v);
        if !list.is_empty() {
            if list.iter().all(|p| PROTOCOLS.contains(&p.as_str())) {
                r.insert("protocols".into(), json!(list));
            } else {
                warn("protocols", v);
            }
        }
    }
    if let Some(v) = ann(ing, "regex-priority") {
        match v.parse::<i64>() {
            Ok(n) => {
                r.insert("regex_priority".into(), json!(n));
            }
            Err(_) => warn("regex-priority", v),
        }
    }
    if let Some(v) = ann(ing, "methods") {
        let list: Vec<String> = csv(v).into_iter().map(|m| m.to_ascii_uppercase()).collect();
        if !list.is_empty() {
            if list
                .iter()
                .all(|m| m.chars().all(|c| c.is_ascii_uppercase()))
            {
                r.insert("methods".into(), json!(list));
            } else {
                warn("methods", v);
            }
        }
    }
    if let Some(v) = ann(ing, "snis") {
        let list = csv(v);
        if list.iter().all(|h| valid_host(h, false)) {
            r.insert("snis".into(), json!(list));
        } else {
            warn("snis", v);
        }
    }
    if let Some(v) = ann(ing, "host-aliases").filter(|v| !v.is_empty()) {
        let aliases = csv(v);
        if aliases.iter().all(|h| valid_host(h, true)) {
            let mut hosts: Vec<String> = r
                .get("hosts")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|h| h.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            for a in aliases {
                if !hosts.contains(&a) {
                    hosts.push(a);
                }
            }
            r.insert("hosts".into(), json!(hosts));
        } else {
            warn("host-aliases", v);
        }
    }
    let separator = ann(ing, "headers-separator")
        .filter(|s| !s.is_empty())
        .unwrap_or(",");
    let mut headers = Map::new();
    for (k, v) in &ing.annotations {
        if let Some(h) = k.strip_prefix("konghq.com/headers.") {
            if h.is_empty() || v.is_empty() {
                continue;
            }
            let values: Vec<&str> = v.split(separator).map(str::trim).collect();
            headers.insert(h.to_string(), json!(values));
        }
    }
    if !headers.is_empty() {
        r.insert("headers".into(), Value::Object(headers));
    }
    if let Some(v) = ann(ing, "path-handling") {
        if v.len() >= 2 && v.starts_with('v') && v[1..].chars().all(|c| c.is_ascii_digit()) {
            r.insert("path_handling".into(), json!(v));
        } else {
            warn("path-handling", v);
        }
    }
    // A route speaking gRPC does not strip paths (kongstate/route.go normalizeProtocols).
    let protocols = protocols_of(r);
    let grpc = protocols.iter().any(|p| p.contains("grpc"));
    let http = protocols
        .iter()
        .any(|p| p.contains("http") || !PROTOCOLS.contains(&p.as_str()));
    if grpc && http {
        r.insert("protocols".into(), json!(["http", "https"]));
    }
    if grpc {
        r.remove("strip_path");
    }
}

fn parse_bool_strict(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn protocols_of(r: &Map<String, Value>) -> Vec<String> {
    r.get("protocols")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| p.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// `force-ssl-redirect`: the route answers only over TLS (kongstate/route.go useSSLProtocol).
fn ssl_protocols(current: &[String]) -> Vec<&'static str> {
    let grpc = current.iter().any(|p| p.contains("grpc"));
    let http = current.iter().any(|p| p.contains("http"));
    let mut out = Vec::new();
    if grpc {
        out.push("grpcs");
    }
    if http || !grpc {
        out.push("https");
    }
    out
}

/// Applies each Kubernetes Service's annotations to the Kong services made for it, and
/// refuses what the controller refuses (an unknown `konghq.com/protocol`).
pub fn apply_service_annotations(
    store: &Store,
    services: &mut [KongService],
    warnings: &mut Vec<String>,
    errors: &mut Vec<Error>,
) {
    for ks in services.iter_mut() {
        let Some(svc) = store.get("Service", &ks.namespace, &ks.svc_name) else {
            continue;
        };
        let res = svc.resource();
        let s = &mut ks.fields;
        if let Some(p) = ann(svc, "protocol") {
            if PROTOCOLS.contains(&p) {
                s.insert("protocol".into(), json!(p));
            } else {
                errors.push(Error::object(
                    &res,
                    format!("annotation {PREFIX}protocol has invalid value: {p}"),
                ));
            }
        }
        if let Some(p) = ann(svc, "path") {
            if p.starts_with('/') {
                s.insert("path".into(), json!(p));
            } else {
                warnings.push(format!(
                    "{res}: annotation {PREFIX}path: {p:?} ignored: it must start with /"
                ));
            }
        }
        for (key, field) in [
            ("connect-timeout", "connect_timeout"),
            ("write-timeout", "write_timeout"),
            ("read-timeout", "read_timeout"),
            ("retries", "retries"),
            ("tls-verify-depth", "tls_verify_depth"),
        ] {
            if let Some(v) = ann(svc, key) {
                match v.parse::<i64>() {
                    Ok(n) => {
                        s.insert(field.into(), json!(n));
                    }
                    Err(_) => warnings.push(format!(
                        "{res}: annotation {PREFIX}{key}: {v:?} ignored: not an integer"
                    )),
                }
            }
        }
        if let Some(v) = ann(svc, "tls-verify") {
            match parse_bool(v) {
                Some(b) => {
                    s.insert("tls_verify".into(), json!(b));
                }
                None => warnings.push(format!(
                    "{res}: annotation {PREFIX}tls-verify: {v:?} ignored"
                )),
            }
        }
        for key in [
            "client-cert",
            "ca-certificates-secrets",
            "ca-certificates-configmaps",
        ] {
            if ann(svc, key).is_some() {
                errors.push(Error::object(
                    &res,
                    format!("annotation {PREFIX}{key} is not translated by Tollgate yet; load the certificate through the Admin API and set the service's field there"),
                ));
            }
        }
        // Upstream settings from KongUpstreamPolicy or KongIngress: not read here, so refused
        // rather than dropped (the upstream would silently be plain round-robin).
        for key in ["konghq.com/upstream-policy", "konghq.com/override"] {
            if svc.annotation(key).is_some() {
                errors.push(Error::object(
                    &res,
                    format!("annotation {key}: KongUpstreamPolicy and KongIngress are not translated by Tollgate; set the upstream's algorithm and health checks through the Admin API (/upstreams)"),
                ));
            }
        }
        if matches!(
            s.get("protocol").and_then(Value::as_str),
            Some("grpc" | "grpcs")
        ) {
            s.remove("path");
        }
    }
}
