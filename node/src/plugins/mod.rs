//! The plugin interface: one trait whose methods are Kong's request phases.
//!
//! For each request the proxy resolves, per plugin name, the one configured instance that
//! applies (the most specific scope wins, as Kong: route+service+consumer, route+consumer,
//! service+consumer, route+service, consumer, route, service, global), then runs the phases in
//! order, plugins within a phase by descending [`Plugin::priority`]:
//!
//! 1. [`Plugin::rewrite`] — global plugins only, before routing (the route is not known yet).
//! 2. [`Plugin::access`] — after routing, before the upstream is contacted. Authentication
//!    plugins run first (higher priority) and identify the consumer; plugins after them are
//!    re-resolved with that consumer, so consumer-scoped configs apply. A plugin that must
//!    wait (a key-set fetch, an external authorisation call) says so with
//!    [`Plugin::is_async`] and is awaited through [`Plugin::access_async`], in its turn; the
//!    others are called directly, at no cost.
//! 3. [`Plugin::header_filter`] — on the response head, upstream's or a short-circuit's. It
//!    may replace the body too ([`Ctx::replace_body`]).
//! 4. [`Plugin::response_body`] — on the whole upstream response body, for plugins that ask
//!    for it ([`Plugin::needs_response_body`]); the proxy then buffers the response.
//! 5. [`Plugin::log`] — once the response has been sent (its body dropped), with what was
//!    served ([`log_record::Served`]). Only the logging plugins ([`LOGGING`]) have one; a
//!    route without them pays nothing for this phase. As Kong, they run for every request
//!    the route saw, also one an earlier plugin ended, and global ones for requests that
//!    matched no route.
//!
//! Any phase before the upstream call may end the request by returning [`Flow::Respond`].
//! Plugins see a narrow [`Ctx`]: the request's facts, the matched route's identity, and a
//! [`Directory`] of consumers and credentials — not the proxy's snapshot.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use uuid::Uuid;

use tollgate_config::entity::Plugin as PluginEntity;
use tollgate_config::plugins::PluginSchema;

use crate::metrics::Metrics;
use crate::ratelimit::{GCounters, LocalCounters};
use crate::serve::Peer;

/// What plugins may look up in the configuration a request is served with.
pub trait Directory: Sync {
    /// The key-auth credential owning `key` and its consumer (compared in constant time).
    fn find_credential(&self, key: &str) -> Option<(CredentialInfo, Arc<ConsumerInfo>)>;
    /// A consumer named by id or username.
    fn consumer_by_ref(&self, who: &str) -> Option<&Arc<ConsumerInfo>>;
    /// A consumer by id.
    fn consumer(&self, id: Uuid) -> Option<&Arc<ConsumerInfo>>;
    /// The basic-auth credential of `username`.
    fn basic_auth(&self, username: &str) -> Option<&Arc<basic_auth::Entry>>;
    /// The jwt credential of `key`.
    fn jwt_secret(&self, key: &str) -> Option<&Arc<jwt::Entry>>;
    /// The hmac-auth credential of `username`.
    fn hmac_credential(&self, username: &str) -> Option<&Arc<hmac_auth::Entry>>;
    /// The captures of route `route`'s regex path on `path` (Kong's `uri_captures`); empty
    /// when the route matched without a regex.
    fn uri_captures(&self, route: &RouteInfo, path: &str) -> UriCaptures;
}

/// Kong's `uri_captures`: a regex path's groups, by name and by position (the whole match is
/// not one of them).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UriCaptures {
    /// The whole match (templates' `uri_captures[0]`).
    pub whole: Option<String>,
    pub named: Vec<(String, String)>,
    /// Groups 1, 2, …; a group that did not take part is empty.
    pub unnamed: Vec<String>,
}

impl UriCaptures {
    /// Kong's `{named = {...}, unnamed = [...]}` (an empty `named` is an object).
    pub fn to_json(&self) -> serde_json::Value {
        let named: serde_json::Map<String, serde_json::Value> = self
            .named
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
            .collect();
        serde_json::json!({ "named": named, "unnamed": self.unnamed })
    }
}

/// Set in [`Ctx::state`] by a plugin that names the upstream `Host` itself (Kong's
/// `kong.service.request.set_header("host", ...)`): it wins over the route's and service's.
#[derive(Debug, Clone)]
pub struct UpstreamHost(pub HeaderValue);

/// Set in [`Ctx::state`] by a plugin that names the whole upstream path (Kong's
/// `kong.service.request.set_path`): the service's path and the route's stripping no longer
/// apply; the query string still does.
#[derive(Debug, Clone)]
pub struct UpstreamPath(pub String);

/// This node's UUID (Kong's `kong.node.get_id()`), set once at start.
pub static NODE_ID: std::sync::OnceLock<Uuid> = std::sync::OnceLock::new();

/// The matched route as plugins see it.
#[derive(Debug)]
pub struct RouteInfo {
    pub id: Uuid,
    /// Its name, or its id when unnamed (metric labels).
    pub label: String,
    pub service: Option<Uuid>,
    /// Its position in the snapshot's routes (what the router's captures are keyed by).
    pub index: usize,
    /// The route and its service as stored (Kong's `kong.router.get_route()` /
    /// `get_service()`), shared with the configuration they were built from.
    pub entity: Arc<tollgate_config::entity::Route>,
    pub service_entity: Option<Arc<tollgate_config::entity::Service>>,
}

/// A bundled plugin's handler: its schema (from the same folder, `plugins/<name>/`) and how an
/// instance is made from a stored plugin.
pub struct Handler {
    pub schema: &'static PluginSchema,
    /// Builds an instance; `None` when the stored config cannot be read back (the instance
    /// then fails closed).
    pub build: fn(&PluginEntity, &Deps) -> Option<Instance>,
}

/// Long-lived things plugin instances point to.
pub struct Deps {
    pub counters: Arc<LocalCounters>,
    pub cluster_counters: Arc<GCounters>,
    pub metrics: Arc<Metrics>,
    /// Every upstream's balancer, kept across configurations.
    pub balancers: Arc<crate::balancer::Balancers>,
}

/// A bundled plugin's `name`, `priority` (from its folder's `SCHEMA`) and `id` (its `id`
/// field): the same three methods in every handler.
macro_rules! identity {
    () => {
        fn name(&self) -> &'static str {
            SCHEMA.name
        }

        fn priority(&self) -> u32 {
            SCHEMA.priority
        }

        fn id(&self) -> Uuid {
            self.id
        }
    };
}
pub(crate) use identity;

macro_rules! handlers {
    ($($module:ident at $path:literal),* $(,)?) => {
        $(
            #[path = $path]
            pub mod $module;
        )*

        /// Every bundled plugin's handler.
        pub const HANDLERS: &[&Handler] = &[$(&$module::HANDLER),*];
    };
}

handlers! {
    key_auth at "../../../plugins/key_auth/handler.rs",
    rate_limiting at "../../../plugins/rate_limiting/handler.rs",
    correlation_id at "../../../plugins/correlation_id/handler.rs",
    basic_auth at "../../../plugins/basic_auth/handler.rs",
    jwt at "../../../plugins/jwt/handler.rs",
    hmac_auth at "../../../plugins/hmac_auth/handler.rs",
    acl at "../../../plugins/acl/handler.rs",
    ip_restriction at "../../../plugins/ip_restriction/handler.rs",
    bot_detection at "../../../plugins/bot_detection/handler.rs",
    request_termination at "../../../plugins/request_termination/handler.rs",
    request_size_limiting at "../../../plugins/request_size_limiting/handler.rs",
    cors at "../../../plugins/cors/handler.rs",
    request_transformer at "../../../plugins/request_transformer/handler.rs",
    response_ratelimiting at "../../../plugins/response_ratelimiting/handler.rs",
    file_log at "../../../plugins/file_log/handler.rs",
    http_log at "../../../plugins/http_log/handler.rs",
    prometheus at "../../../plugins/prometheus/handler.rs",
    response_transformer at "../../../plugins/response_transformer/handler.rs",
    proxy_cache at "../../../plugins/proxy_cache/handler.rs",
}

pub mod auth;
pub mod log_record;
pub mod request_data;

/// The plugins with a log phase: a route runs it only when one of these is configured on it.
pub const LOGGING: &[&str] = &["file-log", "http-log", "prometheus"];

/// Whether the plugin named `name` has a log phase.
pub fn is_logging(name: &str) -> bool {
    LOGGING.contains(&name)
}

/// The handler of the plugin named `name`.
pub fn handler(name: &str) -> Option<&'static Handler> {
    HANDLERS.iter().copied().find(|h| h.schema.name == name)
}

/// A consumer as the data plane needs it, with its upstream header values prepared.
#[derive(Debug)]
pub struct ConsumerInfo {
    pub id: Uuid,
    pub id_header: HeaderValue,
    pub username: Option<HeaderValue>,
    pub custom_id: Option<HeaderValue>,
    /// Its ACL groups, in the order they were added.
    pub groups: Vec<String>,
    /// The groups as `X-Consumer-Groups` carries them (`a, b`), when it has any.
    pub groups_header: Option<HeaderValue>,
}

/// The credential that authenticated the request.
#[derive(Debug, Clone, Copy)]
pub struct CredentialInfo {
    pub id: Uuid,
    pub consumer: Uuid,
}

/// Per-request state shared by the phases.
pub struct Ctx<'a> {
    /// Consumers and credentials of the configuration this request is served with.
    pub config: &'a dyn Directory,
    /// The matched route (`None` during rewrite).
    pub route: Option<&'a RouteInfo>,
    /// The client's address (Kong's forwarded IP with no trusted proxies).
    pub client_ip: IpAddr,
    /// The connection the request came on.
    pub peer: &'a Peer,
    /// Unix time in seconds, read once per request.
    pub now: f64,
    /// The request path after normalisation (what routing saw).
    pub path: &'a str,
    pub consumer: Option<Arc<ConsumerInfo>>,
    pub credential: Option<CredentialInfo>,
    /// The request body, when a plugin asked for it ([`Plugin::needs_body`]).
    pub body: Option<Bytes>,
    /// Headers added to the response to the client, whatever produced it.
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    /// The client sends a body without a declared length (chunked, in HTTP/1.1's terms; the
    /// `Transfer-Encoding` header itself is gone by the time plugins run).
    pub body_unsized: bool,
    /// The most request body bytes that may go upstream, counted as the body is read or
    /// streamed (request-size-limiting sets it when the length is not known in advance).
    pub body_limit: Option<BodyLimit>,
    /// What a plugin keeps between its phases for this request (Kong's `kong.ctx.plugin`),
    /// by type: each plugin keeps its own private type. Allocated only when one stores
    /// something.
    pub state: http::Extensions,
    /// Set by a header_filter that turns the response into its own (Kong's
    /// `kong.response.exit` in header_filter): the body sent instead of the upstream's, which
    /// is dropped unread.
    pub replace_body: Option<Bytes>,
    /// Set by a header_filter that wants a copy of the body sent to the client (proxy-cache
    /// storing a response): the body is streamed as usual and handed to the sink once it was
    /// sent whole, if it stayed within the sink's bound.
    pub body_sink: Option<Box<dyn BodySink>>,
}

/// Receives a copy of a response body once it has been sent to the client whole (see
/// [`Ctx::body_sink`]). Never called for a body cut short, failed, or larger than
/// [`BodySink::max_bytes`] (copying stops there, the client still gets everything).
pub trait BodySink: Send {
    /// The most bytes worth copying.
    fn max_bytes(&self) -> usize;
    /// The whole body, once sent.
    fn complete(self: Box<Self>, body: Bytes);
}

/// A cap on the request body and the answer past it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    pub max: u64,
    pub status: StatusCode,
    pub message: &'static str,
}

impl BodyLimit {
    pub fn response(&self) -> Response<Full<Bytes>> {
        error_response(self.status, self.message)
    }
}

/// Whether a phase lets the request go on.
pub enum Flow {
    Continue,
    /// End the request with this response (it still gets `response_headers` and
    /// header_filter).
    Respond(Response<Full<Bytes>>),
}

/// A configured plugin instance. Instances are immutable and built with each configuration
/// snapshot; state that must outlive a snapshot (counters) lives in stores they point to.
pub trait Plugin: Send + Sync {
    /// Kong's plugin name, e.g. `key-auth`.
    fn name(&self) -> &'static str;

    /// Static priority: higher runs first (key-auth 1250 before rate-limiting 910).
    fn priority(&self) -> u32;

    /// The database id of this instance.
    fn id(&self) -> Uuid;

    /// Whether access needs the request body in [`Ctx::body`]. The proxy then reads it (up to
    /// a bound) before the access phase instead of streaming it.
    fn needs_body(&self) -> bool {
        false
    }

    /// Runs before routing, for global plugins only. May change the request's path and
    /// headers, which routing then sees.
    fn rewrite(&self, _ctx: &mut Ctx<'_>, _req: &mut http::request::Parts) -> Flow {
        Flow::Continue
    }

    /// Runs after routing. May authenticate (set `ctx.consumer`), change what is sent
    /// upstream, add response headers, or answer directly.
    fn access(&self, _ctx: &mut Ctx<'_>, _req: &mut http::request::Parts) -> Flow {
        Flow::Continue
    }

    /// Whether access must wait on something: the proxy then awaits
    /// [`Plugin::access_async`] instead of calling [`Plugin::access`].
    fn is_async(&self) -> bool {
        false
    }

    /// Access for plugins that must wait. Same contract as [`Plugin::access`].
    fn access_async<'s>(
        &'s self,
        ctx: &'s mut Ctx<'_>,
        req: &'s mut http::request::Parts,
    ) -> Pin<Box<dyn Future<Output = Flow> + Send + 's>> {
        let flow = self.access(ctx, req);
        Box::pin(std::future::ready(flow))
    }

    /// Runs on the response head before it is sent to the client. May change status and
    /// headers, and replace the body whole ([`Ctx::replace_body`]).
    fn header_filter(&self, _ctx: &mut Ctx<'_>, _resp: &mut http::response::Parts) {}

    /// Whether [`Plugin::response_body`] must see the upstream's response body. The proxy
    /// then reads it whole (up to a bound) instead of streaming it.
    fn needs_response_body(&self) -> bool {
        false
    }

    /// Whether this response's body must be read whole for [`Plugin::response_body`], once
    /// its head is known (a plugin may want only some content types). At most what
    /// [`Plugin::needs_response_body`] says.
    fn wants_response_body(&self, _head: &http::response::Parts) -> bool {
        self.needs_response_body()
    }

    /// Runs after header_filter on the whole upstream response body and returns the body to
    /// send (the proxy sets `Content-Length` to match).
    fn response_body(
        &self,
        _ctx: &mut Ctx<'_>,
        _resp: &mut http::response::Parts,
        body: Bytes,
    ) -> Bytes {
        body
    }

    /// Runs once the response has been sent. Observes only. Only plugins named in
    /// [`LOGGING`] are called.
    fn log(&self, _served: &log_record::Served) {}
}

/// The JSON error response Kong's plugins and proxy send: `{"message": "..."}`.
pub fn error_response(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "message": message }).to_string();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// A plugin that applies to a request, resolved by scope.
pub type Instance = Arc<dyn Plugin>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundled_plugin_has_one_handler() {
        for p in tollgate_config::plugins::ALL {
            let h = handler(p.name).unwrap_or_else(|| panic!("{} has no handler", p.name));
            assert_eq!(h.schema.priority, p.priority);
        }
        assert_eq!(HANDLERS.len(), tollgate_config::plugins::ALL.len());
    }
}
