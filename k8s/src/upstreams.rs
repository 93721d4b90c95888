//! One upstream per Kong service, named as the service's host, with the Service's
//! endpoints as targets (translator/translate_upstreams.go):
//! - a `--backend <svc>.<ns>=addr` mapping (Tollgate, for running outside Kubernetes) gives
//!   its addresses;
//! - an `ExternalName` Service gives `externalName:port`;
//! - `ingress.kubernetes.io/service-upstream: "true"` gives `<svc>.<ns>.svc:<port>`, one
//!   target for the cluster's own Service load balancing;
//! - otherwise each ready address of the Service's EndpointSlices (or Endpoints) on the
//!   backend port's target port, `ip:port`;
//! - with none of those, `<svc>.<ns>.svc:<port>` (where the controller would leave the
//!   upstream empty and Kong answer 503, Tollgate lets cluster DNS find the Service).
//!
//! `konghq.com/host-header` on the Service sets the upstream's `host_header`.

use serde_json::{json, Value};

use crate::error::Error;
use crate::ingress::{KongService, PortRef};
use crate::objects::{Object, Store};
use crate::{ids, tags, Options};

/// The Service's port entry an Ingress backend names.
pub(crate) fn port_entry<'a>(svc: &'a Object, port: &PortRef) -> Option<&'a Value> {
    let ports = svc.at("/spec/ports")?.as_array()?;
    ports.iter().find(|p| match port {
        PortRef::Number(n) => p.get("port").and_then(Value::as_u64) == Some(u64::from(*n)),
        // The controller's findPort: the port's name, or a named targetPort.
        PortRef::Name(name) => {
            p.get("name").and_then(Value::as_str) == Some(name)
                || p.get("targetPort").and_then(Value::as_str) == Some(name)
        }
    })
}

fn join(host: &str, port: u64) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The port named `port_name` in an endpoint object's `ports` list, else `target` (the
/// Service's numeric targetPort).
fn port_in(ports: Option<&Value>, port_name: &str, target: Option<u64>) -> Option<u64> {
    ports
        .and_then(Value::as_array)
        .and_then(|ps| {
            ps.iter()
                .find(|p| p.get("name").and_then(Value::as_str).unwrap_or("") == port_name)
        })
        .and_then(|p| p.get("port")?.as_u64())
        .or(target)
}

/// Adds `ip:port` for each address, once.
fn add_targets<'a>(out: &mut Vec<String>, ips: impl Iterator<Item = &'a str>, port: u64) {
    for ip in ips {
        let t = join(ip, port);
        if !out.contains(&t) {
            out.push(t);
        }
    }
}

fn list(v: Option<&Value>) -> impl Iterator<Item = &Value> {
    v.and_then(Value::as_array).into_iter().flatten()
}

/// Ready addresses of the Service's EndpointSlices on the port named `port_name` (or the
/// only port when the Service port is unnamed), as `ip:port`.
fn from_slices(
    store: &Store,
    ns: &str,
    svc: &str,
    port_name: &str,
    target: Option<u64>,
) -> Vec<String> {
    let mut out = Vec::new();
    for slice in store.all("EndpointSlice").filter(|s| {
        s.namespace == ns
            && s.labels
                .get("kubernetes.io/service-name")
                .map(String::as_str)
                == Some(svc)
    }) {
        let Some(port) = port_in(slice.at("/ports"), port_name, target) else {
            continue;
        };
        for ep in list(slice.at("/endpoints")) {
            // Ready unless it says otherwise (the API's rule for a missing condition).
            let ready = ep
                .pointer("/conditions/ready")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            if ready {
                add_targets(
                    &mut out,
                    list(ep.get("addresses")).filter_map(Value::as_str),
                    port,
                );
            }
        }
    }
    out
}

/// The same from a core `Endpoints` object (older clusters, and `kubectl get endpoints`).
fn from_endpoints(
    store: &Store,
    ns: &str,
    svc: &str,
    port_name: &str,
    target: Option<u64>,
) -> Vec<String> {
    let mut out = Vec::new();
    let Some(ep) = store.get("Endpoints", ns, svc) else {
        return out;
    };
    for subset in list(ep.at("/subsets")) {
        let Some(port) = port_in(subset.get("ports"), port_name, target) else {
            continue;
        };
        let ips = list(subset.get("addresses")).filter_map(|a| a.get("ip")?.as_str());
        add_targets(&mut out, ips, port);
    }
    out
}

fn targets_of(
    store: &Store,
    ks: &KongService,
    opts: &Options,
    errors: &mut Vec<Error>,
) -> Vec<String> {
    let (ns, name) = (ks.namespace.as_str(), ks.svc_name.as_str());
    if let Some(addrs) = opts.backends.get(&(ns.to_string(), name.to_string())) {
        return addrs.clone();
    }
    let svc = store.get("Service", ns, name);
    let entry = svc.and_then(|s| port_entry(s, &ks.port));
    let port = match (&ks.port, entry) {
        (PortRef::Number(n), _) => u64::from(*n),
        (PortRef::Name(_), Some(e)) => e.get("port").and_then(Value::as_u64).unwrap_or(80),
        (PortRef::Name(p), None) => {
            let res = crate::Resource {
                kind: "Service".into(),
                namespace: ns.into(),
                name: name.into(),
            };
            errors.push(Error::object(
                &res,
                format!("an Ingress backend names port {p:?}, which the Service does not have (or the Service is not in the manifests)"),
            ));
            return Vec::new();
        }
    };
    let cluster_dns = || vec![format!("{name}.{ns}.svc:{port}")];
    let Some(svc) = svc else { return cluster_dns() };
    if svc.str_at("/spec/type") == Some("ExternalName") {
        if let Some(ext) = svc.str_at("/spec/externalName") {
            return vec![join(ext, port)];
        }
    }
    if svc.annotation("ingress.kubernetes.io/service-upstream") == Some("true") {
        return cluster_dns();
    }
    let port_name = entry
        .and_then(|e| e.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let target = match entry.and_then(|e| e.get("targetPort")) {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(_)) => None,
        _ => Some(port),
    };
    let mut found = from_slices(store, ns, name, port_name, target);
    if found.is_empty() {
        found = from_endpoints(store, ns, name, port_name, target);
    }
    if found.is_empty() {
        cluster_dns()
    } else {
        found
    }
}

/// The upstreams, with their targets nested, for the Kong services built.
pub fn translate(
    store: &Store,
    services: &[KongService],
    opts: &Options,
    errors: &mut Vec<Error>,
    warnings: &mut Vec<String>,
) -> Value {
    let mut out = Vec::new();
    for ks in services {
        let svc = store.get("Service", &ks.namespace, &ks.svc_name);
        let t = match svc {
            Some(o) => tags::of(o),
            None => {
                if !opts
                    .backends
                    .contains_key(&(ks.namespace.clone(), ks.svc_name.clone()))
                {
                    warnings.push(format!(
                        "Service {}/{}: not in the manifests and no --backend for it: its target is {}.{}.svc (cluster DNS)",
                        ks.namespace, ks.svc_name, ks.svc_name, ks.namespace
                    ));
                }
                tags::of_missing("Service", &ks.namespace, &ks.svc_name)
            }
        };
        let name = ks.upstream_name();
        let targets: Vec<Value> = targets_of(store, ks, opts, errors)
            .into_iter()
            .map(|target| {
                json!({
                    "id": ids::id("targets", &format!("{name}/{target}")),
                    "target": target,
                    "weight": 100,
                    "tags": t,
                })
            })
            .collect();
        let mut up = json!({
            "id": ids::id("upstreams", &name),
            "name": name,
            "algorithm": "round-robin",
            "tags": t,
        });
        if let Some(h) = svc.and_then(|s| s.annotation("konghq.com/host-header")) {
            up["host_header"] = json!(h);
        }
        if !targets.is_empty() {
            up["targets"] = Value::Array(targets);
        }
        out.push(up);
    }
    Value::Array(out)
}
