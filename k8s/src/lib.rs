//! Kubernetes manifests as Tollgate configuration, translated as the Kong Ingress Controller
//! (KIC 3.x) translates them: `Ingress`, `Service`, `EndpointSlice`/`Endpoints`,
//! `KongPlugin`, `KongClusterPlugin`, `KongConsumer`, credential and TLS `Secret`s in; a Kong
//! declarative file (`_format_version: "3.0"`) out, with the controller's names, ids, tags
//! and defaults, so that what the controller would give Kong is what Tollgate loads.
//!
//! Pure: the caller reads the manifests and decides where the output goes
//! (`tollgate k8s translate` prints it, `tollgate k8s apply` sends it to the Admin API).
//!
//! One idea per module: [`objects`] reads the YAML, [`class`] selects by ingress class,
//! [`paths`] and [`annotations`] carry the controller's per-field rules, [`ingress`] builds
//! services and routes, [`upstreams`] their targets, [`plugins`] attaches `KongPlugin`s,
//! [`consumers`] reads `KongConsumer`s and credential Secrets, [`tls`] certificates, [`ids`]
//! and [`tags`] give every entity the controller's identity, and [`translate`] (here) puts
//! them together.

pub mod annotations;
pub mod class;
pub mod consumers;
pub mod error;
pub mod ids;
pub mod ingress;
pub mod objects;
pub mod paths;
pub mod plugins;
pub mod tags;
pub mod tls;
pub mod upstreams;

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

pub use error::{Error, Errors, Resource};
pub use objects::Object;

/// The largest manifest file read (the Admin API reads network input through here too).
pub const MAX_MANIFEST_BYTES: usize = 8 << 20;
/// The most objects in one file.
pub const MAX_OBJECTS: usize = 10_000;

/// How to translate.
#[derive(Debug, Clone)]
pub struct Options {
    /// The ingress class this "controller" serves (the controller's `--ingress-class`).
    pub ingress_class: String,
    /// Addresses standing in for a Kubernetes Service outside Kubernetes, keyed by
    /// `(namespace, service)`: each becomes a target instead of the Service's endpoints.
    pub backends: BTreeMap<(String, String), Vec<String>>,
    /// A tag put on every entity made, naming what an apply owns (see [`apply_tag`]); `None`
    /// gives the controller's output exactly.
    pub owner_tag: Option<String>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            ingress_class: "kong".into(),
            backends: BTreeMap::new(),
            owner_tag: None,
        }
    }
}

impl Options {
    /// Reads a `--backend` value: `<service>.<namespace>=<host:port>[,<host:port>…]`.
    pub fn add_backend(&mut self, spec: &str) -> Result<(), String> {
        let (svc, addrs) = spec.split_once('=').ok_or_else(|| {
            format!("--backend {spec:?}: expected <service>.<namespace>=<host:port>")
        })?;
        let (name, ns) = svc.split_once('.').ok_or_else(|| {
            format!("--backend {spec:?}: expected <service>.<namespace> before '='")
        })?;
        let addrs: Vec<String> = addrs
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        if name.is_empty() || ns.is_empty() || addrs.is_empty() {
            return Err(format!(
                "--backend {spec:?}: expected <service>.<namespace>=<host:port>"
            ));
        }
        for a in &addrs {
            let port = a.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
            if !matches!(port, Some(Ok(_))) {
                return Err(format!("--backend {spec:?}: {a:?} is not <host:port>"));
            }
        }
        self.backends
            .insert((ns.to_string(), name.to_string()), addrs);
        Ok(())
    }
}

/// The tag an apply puts on everything it makes, so that the next apply of the same set
/// replaces exactly that (`k8s-apply:<set>`).
pub fn apply_tag(set: &str) -> String {
    format!("k8s-apply:{set}")
}

/// What a translation gives: the declarative file and what was skipped on the way.
#[derive(Debug)]
pub struct Translation {
    pub config: Value,
    /// Objects ignored (unknown kinds, other ingress classes) and annotation values the
    /// controller would ignore, each naming its resource.
    pub warnings: Vec<String>,
}

/// Translates a multi-document YAML file of Kubernetes objects. Every problem the
/// controller would refuse an object for is collected and returned together; nothing is
/// returned half-translated.
pub fn translate(text: &str, opts: &Options) -> Result<Translation, Errors> {
    let mut warnings = Vec::new();
    let store = objects::Store::load(text, &mut warnings).map_err(|e| Errors(vec![e]))?;
    let mut errors = Vec::new();
    let selected = class::Selection::new(&store, &opts.ingress_class, &mut warnings);

    let mut built = ingress::translate(&store, &selected, &mut errors, &mut warnings);
    annotations::apply_service_annotations(&store, &mut built, &mut warnings, &mut errors);
    let upstreams = upstreams::translate(&store, &built, opts, &mut errors, &mut warnings);
    let consumers = consumers::translate(&store, &selected, &mut errors, &mut warnings);
    let plugins = plugins::translate(&store, &selected, &built, &consumers, &mut errors);
    let certificates = tls::translate(&store, &selected, &mut errors, &mut warnings);

    if !errors.is_empty() {
        return Err(Errors(errors));
    }
    let mut doc = Map::new();
    doc.insert("_format_version".into(), json!("3.0"));
    let sections = [
        ("services", ingress::to_json(&built)),
        ("upstreams", upstreams),
        ("consumers", consumers.json),
        ("plugins", plugins),
        ("certificates", certificates),
    ];
    for (key, list) in sections {
        if list.as_array().is_some_and(|a| !a.is_empty()) {
            doc.insert(key.into(), list);
        }
    }
    let mut config = Value::Object(doc);
    if let Some(tag) = &opts.owner_tag {
        tags::add_everywhere(&mut config, tag);
    }
    Ok(Translation { config, warnings })
}
