//! The data plane's view of the configuration: an immutable [`Snapshot`] built from the state
//! after every applied change and published through an atomic pointer ([`SnapshotHandle`]).
//!
//! Requests load the current snapshot once and use it to the end, so a request never sees half
//! of a change, and never waits for one. Everything a request needs is prepared here: the
//! compiled router, per-route services and plugin slots (scope precedence worked out ahead),
//! credentials indexed by key hash, upstream connection pools.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tollgate_config::entity::{
    Acl, Consumer, KeyAuthCredential, Plugin as PluginEntity, Protocol, Route, Service,
};
use tollgate_config::router::Router;
use tollgate_config::State;
use uuid::Uuid;

pub use crate::plugins::Deps;
use crate::plugins::{
    error_response, ConsumerInfo, CredentialInfo, Ctx, Directory, Flow, Instance, Plugin, RouteInfo,
};
use crate::proxy::upstream::Pool;
use crate::tls::client::UpstreamTls;
use crate::tls::server::CertStore;

/// Body type sent upstream: the client's streamed body, or a buffered one.
pub use crate::proxy::request_body::UpstreamBody;

/// A service as the proxy uses it.
pub struct ServiceRuntime {
    pub id: Uuid,
    pub label: String,
    /// The Host header sent upstream unless the route preserves the client's.
    pub host_header: HeaderValue,
    pub path: Option<String>,
    pub retries: u32,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub write_timeout: Duration,
    /// Where requests go.
    pub target: ServiceTarget,
    /// For `https` services: how connections are secured, or why they cannot be (requests
    /// then fail closed with a 502).
    pub tls: Option<Result<Arc<UpstreamTls>, String>>,
    /// A gRPC service: requests go upstream over HTTP/2 (h2c for `grpc`, TLS with ALPN `h2`
    /// for `grpcs`).
    pub h2: bool,
}

/// A service's destination.
pub enum ServiceTarget {
    /// Its `host:port`: keep-alive connections shared with the other services that point
    /// there.
    Direct(Arc<Pool>),
    /// An upstream named by its `host`: balanced over the upstream's targets.
    Balanced(Arc<crate::balancer::Balancer>),
}

/// One plugin name on a route, with the instances that may apply, most specific first.
pub struct Slot {
    pub name: String,
    pub priority: u32,
    /// Non-consumer-scoped instances with their precedence rank (lower wins).
    candidates: Vec<(u8, Instance)>,
}

#[cfg(test)]
impl Slot {
    /// A slot holding one instance, for tests that put a plugin on a route by hand.
    pub fn with(instance: Instance) -> Slot {
        Slot {
            name: instance.name().to_string(),
            priority: instance.priority(),
            candidates: vec![(7, instance)],
        }
    }
}

/// A route as the proxy uses it.
pub struct RouteRuntime {
    /// What plugins see of it.
    pub info: RouteInfo,
    pub service_label: String,
    pub strip_path: bool,
    /// Kong's `path_handling: v1` (the traditional router's join); otherwise v0.
    pub path_v1: bool,
    pub preserve_host: bool,
    pub accepts_http: bool,
    /// A gRPC route (`grpc`/`grpcs`): HTTP/2 and a gRPC content type only, streamed both
    /// ways.
    pub grpc: bool,
    /// A gRPC route that takes cleartext (`grpc`).
    pub grpc_plain: bool,
    pub https_redirect_status_code: u16,
    pub service: Option<Arc<ServiceRuntime>>,
    pub slots: Vec<Slot>,
    /// Whether some plugin here needs the request body before access.
    pub needs_body: bool,
    /// Read the request body whole before going upstream (Kong's `request_buffering`).
    pub request_buffering: bool,
    /// Read the response ahead of the client (Kong's `response_buffering`).
    pub response_buffering: bool,
    /// This route's metric series, looked up on its first request (not at build: a route
    /// that never serves a request exports no series, and rebuilds stay cheap).
    pub metrics: std::sync::OnceLock<RouteMetrics>,
    /// The slots (indices into `slots`) of logging plugins; empty for most routes, which
    /// then skip the log phase entirely.
    pub log_slots: Vec<usize>,
    /// The route's part of log records, for routes with logging plugins.
    pub log: Option<Arc<crate::plugins::log_record::RouteLog>>,
}

/// A route's metric handles, so a request does no label lookup.
pub struct RouteMetrics {
    pub latency: prometheus::Histogram,
    pub upstream: prometheus::Histogram,
    /// `tollgate_requests_total` with code 200, the common case.
    pub ok: prometheus::IntCounter,
}

struct ConsumerPlugin {
    name: String,
    route: Option<Uuid>,
    service: Option<Uuid>,
    rank: u8,
    instance: Instance,
}

/// Everything the data plane needs, immutable.
pub struct Snapshot {
    pub router: Arc<Router>,
    /// The [`State::routing_generation`] the router was built for.
    routing_generation: u64,
    pub routes: Vec<RouteRuntime>,
    /// Global plugins, by descending priority (the rewrite phase).
    pub global: Vec<Instance>,
    /// The global logging plugins: they log requests that matched no route.
    pub global_log: Vec<Instance>,
    consumers: HashMap<Uuid, Arc<ConsumerInfo>>,
    /// Consumers by username, for settings that name one (`anonymous`).
    usernames: HashMap<String, Uuid>,
    credentials: HashMap<[u8; 32], (Box<[u8]>, CredentialInfo)>,
    basic_auths: crate::plugins::basic_auth::Index,
    jwt_secrets: crate::plugins::jwt::Index,
    hmac_credentials: crate::plugins::hmac_auth::Index,
    consumer_plugins: HashMap<Uuid, Vec<ConsumerPlugin>>,
    /// Every plugin instance with the stored plugin it was built from: the next snapshot
    /// reuses an instance whose plugin did not change, instead of rebuilding it.
    instances: HashMap<Uuid, (PluginEntity, Instance)>,
    /// Upstream pools by `(host, port, connect_timeout)`, carried over to the next snapshot
    /// so a configuration change keeps warm connections.
    pools: HashMap<(String, u16, u32), Arc<Pool>>,
    /// The certificates the TLS listeners present.
    pub certs: Arc<CertStore>,
    /// Upstream TLS settings by what they are built from, shared by the services with the
    /// same settings and carried over to the next snapshot.
    upstream_tls: HashMap<u64, Arc<UpstreamTls>>,
    /// Index of the configuration command this snapshot reflects.
    pub version: u64,
}

/// A plugin whose stored config could not be read back. It fails closed: a broken
/// authentication plugin must not let requests through.
struct Broken {
    id: Uuid,
    name: &'static str,
}

impl Plugin for Broken {
    fn name(&self) -> &'static str {
        self.name
    }
    fn priority(&self) -> u32 {
        u32::MAX
    }
    fn id(&self) -> Uuid {
        self.id
    }
    fn access(&self, _ctx: &mut Ctx<'_>, _req: &mut http::request::Parts) -> Flow {
        Flow::Respond(error_response(
            http::StatusCode::INTERNAL_SERVER_ERROR,
            "An unexpected error occurred",
        ))
    }
}

fn header(s: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(s).ok()
}

fn key_hash(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

/// Precedence rank of a scope (Kong's order; lower wins).
fn rank(route: bool, service: bool, consumer: bool) -> u8 {
    match (route, service, consumer) {
        (true, true, true) => 0,
        (true, false, true) => 1,
        (false, true, true) => 2,
        (true, true, false) => 3,
        (false, false, true) => 4,
        (true, false, false) => 5,
        (false, true, false) => 6,
        (false, false, false) => 7,
    }
}

impl Snapshot {
    /// Closes idle upstream connections that expired or that their upstream closed.
    pub fn evict_idle_connections(&self) {
        for pool in self.pools.values() {
            pool.evict_expired();
        }
    }

    /// An empty snapshot (before recovery finishes).
    pub fn empty() -> Snapshot {
        Snapshot {
            router: Arc::new(Router::default()),
            routing_generation: 0,
            routes: Vec::new(),
            global: Vec::new(),
            global_log: Vec::new(),
            consumers: HashMap::new(),
            usernames: HashMap::new(),
            credentials: HashMap::new(),
            basic_auths: HashMap::new(),
            jwt_secrets: HashMap::new(),
            hmac_credentials: HashMap::new(),
            consumer_plugins: HashMap::new(),
            instances: HashMap::new(),
            pools: HashMap::new(),
            certs: Arc::new(CertStore::default()),
            upstream_tls: HashMap::new(),
            version: 0,
        }
    }

    /// Builds the snapshot for `state`, reusing `prev`'s upstream pools (and so their idle
    /// connections).
    pub fn build(state: &State, prev: &Snapshot, deps: &Deps, version: u64) -> Snapshot {
        let (consumers, usernames, credentials) = directory(state);
        let (instances, kept) = plugin_instances(state, prev, deps);
        let balancers = deps.balancers.sync(state);
        let (pools, services, upstream_tls) = services(state, prev, &balancers);
        // Certificates are parsed again only when one changed.
        let certs = if prev.certs.built_from(state) {
            prev.certs.clone()
        } else {
            Arc::new(CertStore::build(state, &prev.certs))
        };
        let (consumer_plugins, consumer_plugin_names) = consumer_plugins(&instances);
        // Most changes (consumers, credentials, plugins, service settings) leave routing as it
        // was: the previous router serves as it is, and only a route change rebuilds it.
        let router = if state.routing_generation() == prev.routing_generation {
            prev.router.clone()
        } else {
            Arc::new(Router::build_reusing(state, &prev.router))
        };
        let routes = route_runtimes(
            state,
            &router,
            &instances,
            &services,
            &consumer_plugin_names,
        );
        let global = global_plugins(&instances);
        let global_log = global
            .iter()
            .filter(|i| crate::plugins::is_logging(i.name()))
            .cloned()
            .collect();
        Snapshot {
            router,
            routing_generation: state.routing_generation(),
            routes,
            global,
            global_log,
            consumers,
            usernames,
            credentials,
            basic_auths: crate::plugins::basic_auth::index(state, &prev.basic_auths),
            jwt_secrets: crate::plugins::jwt::index(state, &prev.jwt_secrets),
            hmac_credentials: crate::plugins::hmac_auth::index(state, &prev.hmac_credentials),
            consumer_plugins,
            instances: kept,
            pools,
            certs,
            upstream_tls,
            version,
        }
    }

    /// The instance of `slot` that applies on `route` for `consumer` (most specific scope).
    pub fn resolve<'a>(
        &'a self,
        route: &RouteRuntime,
        slot: &'a Slot,
        consumer: Option<Uuid>,
    ) -> Option<&'a Instance> {
        let mut best = slot.candidates.first().map(|(r, i)| (*r, i));
        if let Some(list) = consumer.and_then(|c| self.consumer_plugins.get(&c)) {
            let sid = route.service.as_ref().map(|s| s.id);
            for cp in list {
                if cp.name != slot.name
                    || cp.route.is_some_and(|r| r != route.info.id)
                    || cp.service.is_some() && cp.service != sid
                {
                    continue;
                }
                if best.map(|(r, _)| cp.rank < r).unwrap_or(true) {
                    best = Some((cp.rank, &cp.instance));
                }
            }
        }
        best.map(|(_, i)| i)
    }

    pub fn consumer(&self, id: Uuid) -> Option<&Arc<ConsumerInfo>> {
        self.consumers.get(&id)
    }

    /// Whether an enabled plugin of this name is configured (Kong's `configure` handler
    /// phase hears of the enabled instances only).
    pub fn has_plugin(&self, name: &str) -> bool {
        self.instances.values().any(|(p, _)| p.name == name)
    }
}

type Credentials = HashMap<[u8; 32], (Box<[u8]>, CredentialInfo)>;

/// Consumers with their upstream headers prepared, consumers by username, and key-auth
/// credentials by key hash.
fn directory(
    state: &State,
) -> (
    HashMap<Uuid, Arc<ConsumerInfo>>,
    HashMap<String, Uuid>,
    Credentials,
) {
    // Groups in the order they were added (Kong lists a consumer's acls by creation).
    let mut acls: Vec<&Acl> = state.all::<Acl>().collect();
    acls.sort_by_key(|a| (a.created_at, a.id));
    let mut groups: HashMap<Uuid, Vec<String>> = HashMap::new();
    for a in acls {
        groups
            .entry(a.consumer.id)
            .or_default()
            .push(a.group.clone());
    }
    let consumers: HashMap<Uuid, Arc<ConsumerInfo>> = state
        .all::<Consumer>()
        .map(|c| {
            let groups = groups.remove(&c.id).unwrap_or_default();
            let info = ConsumerInfo {
                id: c.id,
                id_header: header(&c.id.to_string()).unwrap_or(HeaderValue::from_static("")),
                username: c.username.as_deref().and_then(header),
                custom_id: c.custom_id.as_deref().and_then(header),
                groups_header: (!groups.is_empty())
                    .then(|| header(&groups.join(", ")))
                    .flatten(),
                groups,
            };
            (c.id, Arc::new(info))
        })
        .collect();
    let credentials = state
        .all::<KeyAuthCredential>()
        .map(|k| {
            (
                key_hash(k.key.as_bytes()),
                (
                    k.key.as_bytes().to_vec().into_boxed_slice(),
                    CredentialInfo {
                        id: k.id,
                        consumer: k.consumer.id,
                    },
                ),
            )
        })
        .collect();

    let usernames = state
        .all::<Consumer>()
        .filter_map(|c| c.username.clone().map(|u| (u, c.id)))
        .collect();
    (consumers, usernames, credentials)
}

/// The enabled plugin instances (by id, with the stored plugin), reusing the previous
/// snapshot's instance of every plugin that did not change; and what the next snapshot keeps.
#[allow(clippy::type_complexity)]
fn plugin_instances<'s>(
    state: &'s State,
    prev: &Snapshot,
    deps: &Deps,
) -> (
    BTreeMap<Uuid, (Instance, &'s PluginEntity)>,
    HashMap<Uuid, (PluginEntity, Instance)>,
) {
    let instances: BTreeMap<Uuid, (Instance, &PluginEntity)> = state
        .all::<PluginEntity>()
        .filter(|p| p.enabled && p.protocols.contains(&Protocol::Http))
        .map(|p| {
            let reused = prev
                .instances
                .get(&p.id)
                .filter(|(built_from, _)| built_from == p)
                .map(|(_, i)| i.clone());
            (p.id, (reused.unwrap_or_else(|| instance(p, deps)), p))
        })
        .collect();
    let kept: HashMap<Uuid, (PluginEntity, Instance)> = instances
        .iter()
        .map(|(id, (i, p))| (*id, ((*p).clone(), i.clone())))
        .collect();

    (instances, kept)
}

/// Upstream pools by `(host, port, connect_timeout)`, carried over from `prev` so warm
/// connections survive, and the services as the proxy uses them.
#[allow(clippy::type_complexity)]
fn services(
    state: &State,
    prev: &Snapshot,
    balancers: &HashMap<String, Arc<crate::balancer::Balancer>>,
) -> (
    HashMap<(String, u16, u32), Arc<Pool>>,
    HashMap<Uuid, Arc<ServiceRuntime>>,
    HashMap<u64, Arc<UpstreamTls>>,
) {
    let mut pools: HashMap<(String, u16, u32), Arc<Pool>> = HashMap::new();
    let mut services: HashMap<Uuid, Arc<ServiceRuntime>> = HashMap::new();
    let mut tls_settings: HashMap<u64, Arc<UpstreamTls>> = HashMap::new();
    for s in state.all::<Service>() {
        let tls = matches!(s.protocol, Protocol::Https | Protocol::Grpcs).then(|| {
            let key = tls_key(state, s);
            let known = tls_settings
                .get(&key)
                .or_else(|| prev.upstream_tls.get(&key))
                .cloned();
            if let Some(t) = known {
                tls_settings.insert(key, t.clone());
                return Ok(t);
            }
            match crate::tls::client::for_service(state, s) {
                Ok(t) => {
                    let t = Arc::new(t);
                    tls_settings.insert(key, t.clone());
                    Ok(t)
                }
                Err(e) => {
                    tracing::error!(service = %s.id, error = %e, "upstream TLS settings unusable");
                    Err(e.to_string())
                }
            }
        });
        let key = (s.host.clone(), s.port, s.connect_timeout);
        // Kong: a host that names an upstream is balanced, and the service's port ignored.
        let target = match balancers.get(&s.host) {
            Some(b) => ServiceTarget::Balanced(b.clone()),
            None => ServiceTarget::Direct(
                pools
                    .entry(key)
                    .or_insert_with_key(|k| {
                        prev.pools.get(k).cloned().unwrap_or_else(|| {
                            Pool::new(
                                &s.host,
                                s.port,
                                Duration::from_millis(s.connect_timeout.into()),
                            )
                        })
                    })
                    .clone(),
            ),
        };
        // An IPv6 literal is bracketed in a Host header, as in a URI.
        let host = if s.host.contains(':') {
            format!("[{}]", s.host)
        } else {
            s.host.clone()
        };
        let host_header = if s.port == s.protocol.default_port() {
            host
        } else {
            format!("{host}:{}", s.port)
        };
        services.insert(
            s.id,
            Arc::new(ServiceRuntime {
                id: s.id,
                label: s.name.clone().unwrap_or_else(|| s.id.to_string()),
                host_header: header(&host_header).unwrap_or(HeaderValue::from_static("")),
                path: s.path.clone(),
                retries: s.retries,
                connect_timeout: Duration::from_millis(s.connect_timeout.into()),
                read_timeout: Duration::from_millis(s.read_timeout.into()),
                write_timeout: Duration::from_millis(s.write_timeout.into()),
                target,
                tls,
                h2: matches!(s.protocol, Protocol::Grpc | Protocol::Grpcs),
            }),
        );
    }

    (pools, services, tls_settings)
}

fn is_grpc(r: &Route) -> bool {
    r.protocols
        .iter()
        .any(|p| matches!(p, Protocol::Grpc | Protocol::Grpcs))
}

/// What a service's upstream TLS settings are built from, hashed: the settings, and the
/// content of the CA certificates and client certificate they name.
fn tls_key(state: &State, s: &Service) -> u64 {
    use tollgate_config::entities::{CaCertificate, Certificate};
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&[
        s.tls_verify.map_or(2, u8::from),
        s.tls_verify_depth.map_or(255, |d| d),
        // grpcs offers ALPN h2, https does not: never the same settings.
        u8::from(s.protocol == Protocol::Grpcs),
    ]);
    for id in s.ca_certificates.iter().flatten() {
        h.update(id.as_bytes());
        if let Some(ca) = state.one::<CaCertificate>(*id) {
            h.update(ca.cert_digest.as_bytes());
        }
    }
    if let Some(id) = crate::tls::client::client_certificate(state, s) {
        h.update(id.as_bytes());
        if let Some(c) = state.one::<Certificate>(id) {
            h.update(c.cert.as_bytes());
            h.update(c.key.as_bytes());
        }
    }
    h.digest()
}

/// Consumer-scoped instances by consumer, and the names (with priorities) of the plugins
/// that have any: every route gets a slot for those, filled per request once the consumer
/// is known.
fn consumer_plugins(
    instances: &BTreeMap<Uuid, (Instance, &PluginEntity)>,
) -> (HashMap<Uuid, Vec<ConsumerPlugin>>, BTreeMap<String, u32>) {
    let mut consumer_plugins: HashMap<Uuid, Vec<ConsumerPlugin>> = HashMap::new();
    let mut consumer_plugin_names: BTreeMap<String, u32> = BTreeMap::new();
    for (inst, p) in instances.values() {
        if let Some(c) = p.consumer {
            consumer_plugin_names.insert(p.name.clone(), inst.priority());
            consumer_plugins
                .entry(c.id)
                .or_default()
                .push(ConsumerPlugin {
                    name: p.name.clone(),
                    route: p.route.map(|f| f.id),
                    service: p.service.map(|f| f.id),
                    rank: rank(p.route.is_some(), p.service.is_some(), true),
                    instance: inst.clone(),
                });
        }
    }

    (consumer_plugins, consumer_plugin_names)
}

/// The routes as the router indexes them, each with its service and its plugin slots
/// (scope precedence worked out ahead, by descending priority).
fn route_runtimes(
    state: &State,
    router: &Router,
    instances: &BTreeMap<Uuid, (Instance, &PluginEntity)>,
    services: &HashMap<Uuid, Arc<ServiceRuntime>>,
    consumer_plugin_names: &BTreeMap<String, u32>,
) -> Vec<RouteRuntime> {
    // Plugins by scope, so each route looks only at its own, its service's and the
    // global ones (not every plugin: configs with a plugin per route are common).
    type Scoped<'a> = Vec<(&'a Uuid, &'a (Instance, &'a PluginEntity))>;
    let mut by_route: HashMap<Uuid, Scoped> = HashMap::new();
    let mut by_service: HashMap<Uuid, Scoped> = HashMap::new();
    let mut everywhere: Scoped = Vec::new();
    for (id, entry) in instances.iter().filter(|(_, (_, p))| p.consumer.is_none()) {
        let p = entry.1;
        match (p.route, p.service) {
            (Some(r), _) => by_route.entry(r.id).or_default().push((id, entry)),
            (None, Some(s)) => by_service.entry(s.id).or_default().push((id, entry)),
            (None, None) => everywhere.push((id, entry)),
        }
    }
    let none: Scoped = Vec::new();
    // Services as log records print them, built once for the routes that log.
    let mut service_json: HashMap<Uuid, Option<serde_json::Value>> = HashMap::new();
    router
        .routes()
        .iter()
        .enumerate()
        .map(|(index, rid)| {
            let Some(r) = state.one::<Route>(*rid) else {
                unreachable!("the router holds only routes of this state")
            };
            let sid = r.service.map(|f| f.id);
            let mut slots: BTreeMap<String, Slot> = BTreeMap::new();
            for (name, prio) in consumer_plugin_names {
                slots.insert(
                    name.clone(),
                    Slot {
                        name: name.clone(),
                        priority: *prio,
                        candidates: Vec::new(),
                    },
                );
            }
            let mut mine: Scoped = by_route
                .get(&r.id)
                .unwrap_or(&none)
                .iter()
                .chain(sid.and_then(|s| by_service.get(&s)).unwrap_or(&none))
                .chain(&everywhere)
                .copied()
                .collect();
            // The order a walk over every plugin (by id) would see them in.
            mine.sort_by_key(|(id, _)| **id);
            for (_, (inst, p)) in mine {
                let pr = p.route.map(|f| f.id);
                let ps = p.service.map(|f| f.id);
                if pr.is_some() && pr != Some(r.id) || ps.is_some() && ps != sid {
                    continue;
                }
                let slot = slots.entry(p.name.clone()).or_insert_with(|| Slot {
                    name: p.name.clone(),
                    priority: inst.priority(),
                    candidates: Vec::new(),
                });
                slot.candidates
                    .push((rank(pr.is_some(), ps.is_some(), false), inst.clone()));
            }
            let mut slots: Vec<Slot> = slots.into_values().collect();
            for s in &mut slots {
                s.candidates.sort_by_key(|(rank, _)| *rank);
            }
            slots.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(&b.name)));
            let needs_body = slots
                .iter()
                .any(|s| s.candidates.iter().any(|(_, i)| i.needs_body()));
            let service = sid.and_then(|id| services.get(&id).cloned());
            let log_slots: Vec<usize> = slots
                .iter()
                .enumerate()
                .filter(|(_, s)| crate::plugins::is_logging(&s.name))
                .map(|(i, _)| i)
                .collect();
            let log = (!log_slots.is_empty()).then(|| {
                let svc = sid.and_then(|id| state.one::<Service>(id));
                let json = sid.and_then(|id| {
                    service_json
                        .entry(id)
                        .or_insert_with(|| {
                            svc.map(|s| tollgate_config::entity::Entity::from(s.clone()).to_json())
                        })
                        .clone()
                });
                let route_json = tollgate_config::entity::Entity::from(r.clone()).to_json();
                let mut entities_text = format!("\"route\":{route_json}");
                if let Some(s) = &json {
                    entities_text.push_str(&format!(",\"service\":{s}"));
                }
                Arc::new(crate::plugins::log_record::RouteLog {
                    route_json,
                    entities_text: bytes::Bytes::from(entities_text),
                    service_json: json,
                    service_label: svc
                        .map(|s| s.name.clone().unwrap_or_else(|| s.host.clone()))
                        .unwrap_or_default(),
                    route_label: r.name.clone().unwrap_or_else(|| r.id.to_string()),
                    series: Default::default(),
                })
            });
            RouteRuntime {
                log_slots,
                log,
                info: RouteInfo {
                    id: r.id,
                    label: r.name.clone().unwrap_or_else(|| r.id.to_string()),
                    service: sid,
                    index,
                    entity: Arc::new(r.clone()),
                    service_entity: sid
                        .and_then(|id| state.one::<Service>(id))
                        .map(|s| Arc::new(s.clone())),
                },
                service_label: service
                    .as_ref()
                    .map(|s| s.label.clone())
                    .unwrap_or_default(),
                strip_path: r.strip_path,
                path_v1: r.path_handling == "v1",
                preserve_host: r.preserve_host,
                // Only an https route without http redirects plain requests (Kong).
                accepts_http: r.protocols.contains(&Protocol::Http)
                    || !r.protocols.contains(&Protocol::Https),
                grpc_plain: r.protocols.contains(&Protocol::Grpc),
                grpc: r
                    .protocols
                    .iter()
                    .any(|p| matches!(p, Protocol::Grpc | Protocol::Grpcs)),
                https_redirect_status_code: r.https_redirect_status_code,
                service,
                slots,
                needs_body,
                // gRPC streams: nothing is read ahead (nginx's grpc_pass does not buffer).
                request_buffering: r.request_buffering && !is_grpc(r),
                response_buffering: r.response_buffering && !is_grpc(r),
                metrics: std::sync::OnceLock::new(),
            }
        })
        .collect()
}

/// Global plugins, by descending priority (the rewrite phase runs them).
fn global_plugins(instances: &BTreeMap<Uuid, (Instance, &PluginEntity)>) -> Vec<Instance> {
    let mut global: Vec<Instance> = instances
        .values()
        .filter(|(_, p)| p.route.is_none() && p.service.is_none() && p.consumer.is_none())
        .map(|(i, _)| i.clone())
        .collect();
    global.sort_by_key(|p| std::cmp::Reverse(p.priority()));
    global
}

impl Directory for Snapshot {
    /// The credential owning `key` and its consumer. The map is keyed by a hash of the key, and
    /// the key itself is compared in constant time, so timing reveals nothing about stored keys.
    fn find_credential(&self, key: &str) -> Option<(CredentialInfo, Arc<ConsumerInfo>)> {
        let (stored, cred) = self.credentials.get(&key_hash(key.as_bytes()))?;
        if !bool::from(stored.as_ref().ct_eq(key.as_bytes())) {
            return None;
        }
        let consumer = self.consumers.get(&cred.consumer)?.clone();
        Some((*cred, consumer))
    }

    fn consumer(&self, id: Uuid) -> Option<&Arc<ConsumerInfo>> {
        self.consumers.get(&id)
    }

    fn basic_auth(&self, username: &str) -> Option<&Arc<crate::plugins::basic_auth::Entry>> {
        self.basic_auths.get(username)
    }

    fn jwt_secret(&self, key: &str) -> Option<&Arc<crate::plugins::jwt::Entry>> {
        self.jwt_secrets.get(key)
    }

    fn hmac_credential(&self, username: &str) -> Option<&Arc<crate::plugins::hmac_auth::Entry>> {
        self.hmac_credentials.get(username)
    }

    fn uri_captures(&self, route: &RouteInfo, path: &str) -> crate::plugins::UriCaptures {
        let mut out = crate::plugins::UriCaptures::default();
        let Some((caps, names)) = self.router.named_captures(route.index, path) else {
            return out;
        };
        out.whole = caps.get(0).map(|m| m.as_str().to_string());
        for (i, m) in caps.iter().enumerate().skip(1) {
            let text = m.map(|m| m.as_str()).unwrap_or_default();
            out.unnamed.push(text.to_string());
            if let Some(Some(name)) = names.get(i) {
                out.named.push((name.to_string(), text.to_string()));
            }
        }
        out
    }

    /// A consumer named by id or username, as Kong's `anonymous` settings name one.
    fn consumer_by_ref(&self, who: &str) -> Option<&Arc<ConsumerInfo>> {
        let id = Uuid::parse_str(who)
            .ok()
            .filter(|id| self.consumers.contains_key(id))
            .or_else(|| self.usernames.get(who).copied())?;
        self.consumers.get(&id)
    }
}

/// Builds an instance with its plugin's handler; one that cannot be built fails closed.
fn instance(p: &PluginEntity, deps: &Deps) -> Instance {
    let handler = crate::plugins::handler(&p.name);
    // A plugin that panics while being built must not take the configuration's apply down
    // with it: it fails closed like one that cannot be read.
    let built = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        handler.and_then(|h| (h.build)(p, deps))
    }))
    .unwrap_or(None);
    match built {
        Some(i) => i,
        None => {
            tracing::error!(plugin = %p.id, name = %p.name, "stored plugin config unreadable; failing closed");
            let name = handler.map_or("unknown", |h| h.schema.name);
            Arc::new(Broken { id: p.id, name })
        }
    }
}

/// The published snapshot. `load` is wait-free for readers.
pub struct SnapshotHandle(ArcSwap<Snapshot>);

impl SnapshotHandle {
    pub fn new(s: Snapshot) -> Self {
        SnapshotHandle(ArcSwap::from_pointee(s))
    }

    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.0.load()
    }

    pub fn load_full(&self) -> Arc<Snapshot> {
        self.0.load_full()
    }

    pub fn store(&self, s: Snapshot) {
        self.0.store(Arc::new(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::ratelimit::GCounters;
    use tollgate_config::declarative::{self, Sequence};
    use tollgate_config::router::RequestView;
    use tollgate_config::{input, Command, PutMode};

    fn deps() -> Deps {
        Deps {
            counters: Arc::new(crate::ratelimit::local_counters(100)),
            cluster_counters: Arc::new(GCounters::new(1, 100)),
            metrics: Arc::new(Metrics::new()),
            balancers: Arc::default(),
        }
    }

    fn state(routes: &[&str]) -> State {
        let paths: Vec<String> = routes.iter().map(|p| format!("[\"{p}\"]")).collect();
        let routes: Vec<String> = paths.iter().map(|p| format!("{{paths: {p}}}")).collect();
        let doc = format!(
            "_format_version: \"3.0\"\nservices: [{{name: s, url: \"http://127.0.0.1:9\", routes: [{}]}}]\n",
            routes.join(", ")
        );
        State::from_data(declarative::parse(&doc, &mut Sequence(0)).unwrap()).unwrap()
    }

    fn routes_to(snap: &Snapshot, path: &str) -> bool {
        let headers = http::HeaderMap::new();
        snap.router
            .find(&RequestView {
                method: "GET",
                host: "x",
                port: None,
                path,
                headers: &crate::proxy::headers::Lookup(&headers),
                sni: None,
                tls: false,
            })
            .is_some()
    }

    #[test]
    fn the_router_is_rebuilt_only_when_routing_changes() {
        let deps = deps();
        let mut st = state(&["/a"]);
        let first = Snapshot::build(&st, &Snapshot::empty(), &deps, 1);
        assert!(routes_to(&first, "/a"));

        // A consumer leaves routing alone: the same router serves.
        let stamp = input::Stamp {
            id: Uuid::from_u128(99),
            now: 1,
            now_ms: 1000,
            created_at: None,
            generated_key: String::new(),
            generated_secret: String::new(),
        };
        let consumer = input::consumer(&serde_json::json!({"username": "u"}), &stamp).unwrap();
        st.apply(Command::Put {
            entity: tollgate_config::entity::Entity::Consumer(consumer),
            mode: PutMode::Create,
        })
        .unwrap();
        let second = Snapshot::build(&st, &first, &deps, 2);
        assert!(Arc::ptr_eq(&first.router, &second.router));
        assert_eq!(second.consumers.len(), 1);

        // New routes: a new router that finds them.
        let st = state(&["/a", "/b"]);
        let third = Snapshot::build(&st, &second, &deps, 3);
        assert!(!Arc::ptr_eq(&second.router, &third.router));
        assert!(routes_to(&third, "/b"));
        assert_eq!(third.routes.len(), 2);
    }

    #[test]
    fn a_write_rebuilds_only_the_plugin_instances_it_changes() {
        let doc = "_format_version: \"3.0\"\nservices: [{name: s, url: \"http://127.0.0.1:9\", routes: [{paths: [\"/\"]}]}]\nplugins:\n- {name: key-auth}\n- {name: rate-limiting, config: {minute: 5}}\n";
        let deps = deps();
        let mut st = State::from_data(declarative::parse(doc, &mut Sequence(0)).unwrap()).unwrap();
        let first = Snapshot::build(&st, &Snapshot::empty(), &deps, 1);
        let instance = |snap: &Snapshot, name: &str| {
            snap.global
                .iter()
                .find(|i| i.name() == name)
                .cloned()
                .unwrap()
        };
        // A consumer changes nothing a plugin was built from.
        let stamp = input::Stamp {
            id: Uuid::from_u128(99),
            now: 1,
            now_ms: 1000,
            created_at: None,
            generated_key: String::new(),
            generated_secret: String::new(),
        };
        let consumer = input::consumer(&serde_json::json!({"username": "u"}), &stamp).unwrap();
        st.apply(Command::Put {
            entity: consumer.into(),
            mode: PutMode::Create,
        })
        .unwrap();
        let second = Snapshot::build(&st, &first, &deps, 2);
        for name in ["key-auth", "rate-limiting"] {
            assert!(Arc::ptr_eq(
                &instance(&first, name),
                &instance(&second, name)
            ));
        }
        // A changed config rebuilds that instance only.
        let mut rl = st
            .all::<PluginEntity>()
            .find(|p| p.name == "rate-limiting")
            .unwrap()
            .clone();
        rl.config.0["minute"] = serde_json::json!(6);
        st.apply(Command::Put {
            entity: rl.into(),
            mode: PutMode::Update,
        })
        .unwrap();
        let third = Snapshot::build(&st, &second, &deps, 3);
        assert!(Arc::ptr_eq(
            &instance(&second, "key-auth"),
            &instance(&third, "key-auth")
        ));
        assert!(!Arc::ptr_eq(
            &instance(&second, "rate-limiting"),
            &instance(&third, "rate-limiting")
        ));
    }

    #[test]
    fn an_ipv6_service_host_is_bracketed_in_the_host_header() {
        let doc = "_format_version: \"3.0\"\nservices:\n- {name: v6, url: \"http://[::1]:8080\", routes: [{paths: [\"/\"]}]}\n- {name: v6-default-port, url: \"http://[::1]\", routes: [{paths: [\"/d\"]}]}\n";
        let st = State::from_data(declarative::parse(doc, &mut Sequence(0)).unwrap()).unwrap();
        let snap = Snapshot::build(&st, &Snapshot::empty(), &deps(), 1);
        let mut hosts: Vec<String> = snap
            .routes
            .iter()
            .map(|r| {
                let s = r.service.as_ref().unwrap();
                s.host_header.to_str().unwrap().to_string()
            })
            .collect();
        hosts.sort();
        assert_eq!(hosts, ["[::1]", "[::1]:8080"]);
    }
}
