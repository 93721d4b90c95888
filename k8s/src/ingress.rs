//! Ingresses as Kong services and routes, as the controller builds them
//! (subtranslator/ingress.go, translate_ingress.go):
//! - one Kong service per (namespace, Service, port): name `<ns>.<svc>.<port>`, host
//!   `<svc>.<ns>.<port>.svc` (also its upstream's name), protocol http, path `/`, retries 5,
//!   timeouts 60000, tagged with the Kubernetes Service;
//! - one route per (Ingress, host, backend): name `<ns>.<ing>.<svc>.<host>.<port>` (`*` in the
//!   host as `_`), every path of that rule to that backend, `strip_path: false`,
//!   `preserve_host: true`, tagged with the Ingress;
//! - the first Ingress with a `defaultBackend` adds a catch-all route `<ns>.<ing>` on `/`.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::class::Selection;
use crate::error::Error;
use crate::objects::{Object, Store};
use crate::{annotations, ids, paths, tags};

/// A Service port as an Ingress backend names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

impl PortRef {
    /// KIC's `PortDef.CanonicalString`.
    pub fn canonical(&self) -> String {
        match self {
            PortRef::Number(n) => n.to_string(),
            PortRef::Name(s) => s.clone(),
        }
    }
}

/// A route being built.
#[derive(Debug, Clone)]
pub struct Route {
    pub name: String,
    /// The Ingress it comes from: `(namespace, name)`.
    pub ingress: (String, String),
    pub fields: Map<String, Value>,
}

/// A Kong service being built, with its routes.
#[derive(Debug, Clone)]
pub struct KongService {
    pub name: String,
    pub namespace: String,
    /// The Kubernetes Service behind it.
    pub svc_name: String,
    pub port: PortRef,
    pub fields: Map<String, Value>,
    pub routes: Vec<Route>,
}

impl KongService {
    /// The upstream's name, which is also the service's `host`.
    pub fn upstream_name(&self) -> String {
        format!(
            "{}.{}.{}.svc",
            self.svc_name,
            self.namespace,
            self.port.canonical()
        )
    }
}

fn backend_of(b: &Value) -> Result<(String, PortRef), String> {
    if b.get("resource").is_some_and(|r| !r.is_null()) {
        let kind = b
            .pointer("/resource/kind")
            .and_then(Value::as_str)
            .unwrap_or("?");
        return Err(format!(
            "backend resource of kind {kind} is not supported (only Services)"
        ));
    }
    let svc = b.get("service").ok_or("backend without a service")?;
    let name = svc
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or("backend service without a name")?;
    let port = match (svc.pointer("/port/number"), svc.pointer("/port/name")) {
        (Some(n), _) if !n.is_null() => PortRef::Number(
            n.as_u64()
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("backend service {name}: port.number {n} is not a port"))?,
        ),
        (_, Some(Value::String(s))) if !s.is_empty() => PortRef::Name(s.clone()),
        _ => {
            return Err(format!(
                "backend service {name}: a port number or name is required"
            ))
        }
    };
    Ok((name.to_string(), port))
}

/// The Service's port number for a backend port (80 when the Service is not in the
/// manifests and the port is named, as the controller's default).
fn service_port(store: &Store, ns: &str, svc: &str, port: &PortRef) -> u16 {
    match port {
        PortRef::Number(n) => *n,
        PortRef::Name(_) => store
            .get("Service", ns, svc)
            .and_then(|s| crate::upstreams::port_entry(s, port))
            .and_then(|p| p.get("port")?.as_u64())
            .and_then(|n| u16::try_from(n).ok())
            .unwrap_or(80),
    }
}

fn new_service(store: &Store, ns: &str, svc: &str, port: &PortRef, with_path: bool) -> KongService {
    let name = format!("{ns}.{svc}.{}", port.canonical());
    let svc_tags = match store.get("Service", ns, svc) {
        Some(o) => tags::of(o),
        None => tags::of_missing("Service", ns, svc),
    };
    let mut ks = KongService {
        name: name.clone(),
        namespace: ns.to_string(),
        svc_name: svc.to_string(),
        port: port.clone(),
        fields: Map::new(),
        routes: Vec::new(),
    };
    let host = ks.upstream_name();
    let f = &mut ks.fields;
    f.insert("id".into(), json!(ids::id("services", &name)));
    f.insert("name".into(), json!(name));
    f.insert("host".into(), json!(host));
    f.insert("port".into(), json!(service_port(store, ns, svc, port)));
    f.insert("protocol".into(), json!("http"));
    if with_path {
        f.insert("path".into(), json!("/"));
    }
    for t in ["connect_timeout", "read_timeout", "write_timeout"] {
        f.insert(t.into(), json!(60000));
    }
    f.insert("retries".into(), json!(5));
    f.insert("tags".into(), json!(svc_tags));
    ks
}

fn new_route(ing: &Object, name: String) -> Route {
    let mut fields = Map::new();
    fields.insert("id".into(), json!(ids::id("routes", &name)));
    fields.insert("name".into(), json!(name));
    fields.insert("strip_path".into(), json!(false));
    fields.insert("preserve_host".into(), json!(true));
    fields.insert("regex_priority".into(), json!(0));
    fields.insert("request_buffering".into(), json!(true));
    fields.insert("response_buffering".into(), json!(true));
    fields.insert("https_redirect_status_code".into(), json!(426));
    fields.insert("path_handling".into(), json!("v0"));
    fields.insert("tags".into(), json!(tags::of(ing)));
    Route {
        name,
        ingress: (ing.namespace.clone(), ing.name.clone()),
        fields,
    }
}

/// Builds the Kong services and routes of every selected Ingress.
pub fn translate(
    store: &Store,
    sel: &Selection,
    errors: &mut Vec<Error>,
    warnings: &mut Vec<String>,
) -> Vec<KongService> {
    let mut services: BTreeMap<String, KongService> = BTreeMap::new();
    let mut default_backend_taken: Option<String> = None;
    for ing in sel.ingresses(store) {
        let res = ing.resource();
        let ns = ing.namespace.as_str();
        let regex_prefix = ing.annotation("konghq.com/regex-prefix").unwrap_or("/~");
        // Routes of this Ingress by name, in the order first met.
        let mut routes: Vec<(String, String, PortRef, Route)> = Vec::new();
        let rules = ing
            .at("/spec/rules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (ri, rule) in rules.iter().enumerate() {
            let host = rule.get("host").and_then(Value::as_str).unwrap_or("");
            let Some(list) = rule.pointer("/http/paths").and_then(Value::as_array) else {
                continue;
            };
            for (pi, p) in list.iter().enumerate() {
                let at = format!("spec.rules[{ri}].http.paths[{pi}]");
                let (svc, port) = match p
                    .get("backend")
                    .ok_or("no backend".to_string())
                    .and_then(backend_of)
                {
                    Ok(b) => b,
                    Err(e) => {
                        errors.push(Error::object(&res, format!("{at}: {e}")));
                        continue;
                    }
                };
                let path = p.get("path").and_then(Value::as_str).unwrap_or("");
                let path_type = p.get("pathType").and_then(Value::as_str);
                let Some(kong_paths) = paths::route_paths(path, path_type, regex_prefix) else {
                    errors.push(Error::object(
                        &res,
                        format!(
                            "{at}: pathType {:?} is not Exact, Prefix or ImplementationSpecific",
                            path_type.unwrap_or("")
                        ),
                    ));
                    continue;
                };
                let name = format!(
                    "{ns}.{}.{svc}.{}.{}",
                    ing.name,
                    host.replace('*', "_"),
                    port.canonical()
                );
                let idx = match routes.iter().position(|(n, ..)| *n == name) {
                    Some(i) => i,
                    None => {
                        let mut r = new_route(ing, name.clone());
                        if !host.is_empty() {
                            r.fields.insert("hosts".into(), json!([host]));
                        }
                        routes.push((name, svc.clone(), port.clone(), r));
                        routes.len() - 1
                    }
                };
                let r = &mut routes[idx].3;
                let list = r.fields.entry("paths").or_insert_with(|| json!([]));
                if let Value::Array(a) = list {
                    a.extend(kong_paths.into_iter().map(Value::String));
                }
            }
        }
        if let Some(b) = ing.at("/spec/defaultBackend") {
            match backend_of(b) {
                Err(e) => errors.push(Error::object(&res, format!("spec.defaultBackend: {e}"))),
                Ok(_) if default_backend_taken.is_some() => warnings.push(format!(
                    "{res}: spec.defaultBackend ignored: {} already gives the default backend (the controller takes the oldest)",
                    default_backend_taken.as_deref().unwrap_or_default()
                )),
                Ok((svc, port)) => {
                    default_backend_taken = Some(res.to_string());
                    let mut r = new_route(ing, format!("{ns}.{}", ing.name));
                    r.fields.insert("paths".into(), json!(["/"]));
                    let name = r.name.clone();
                    routes.push((name, svc, port, r));
                }
            }
        }
        for (name, svc, port, mut route) in routes {
            // The controller's default-backend service has no `path`; a rule's has `/`.
            let from_rule = name != format!("{ns}.{}", ing.name);
            annotations::apply_route_annotations(ing, &mut route, warnings);
            let key = format!("{ns}.{svc}.{}", port.canonical());
            let ks = services
                .entry(key)
                .or_insert_with(|| new_service(store, ns, &svc, &port, from_rule));
            if from_rule {
                ks.fields.entry("path").or_insert_with(|| json!("/"));
            }
            ks.routes.push(route);
        }
    }
    let mut out: Vec<KongService> = services.into_values().collect();
    for s in &mut out {
        s.routes.sort_by(|a, b| a.name.cmp(&b.name));
    }
    out
}

/// The services, with their routes nested, as a declarative file lists them.
pub fn to_json(services: &[KongService]) -> Value {
    Value::Array(
        services
            .iter()
            .map(|s| {
                let mut o = s.fields.clone();
                if !s.routes.is_empty() {
                    o.insert(
                        "routes".into(),
                        Value::Array(
                            s.routes
                                .iter()
                                .map(|r| Value::Object(r.fields.clone()))
                                .collect(),
                        ),
                    );
                }
                Value::Object(o)
            })
            .collect(),
    )
}
