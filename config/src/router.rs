//! The router's compiled form: routes turned into matchers sorted once by Kong's precedence, so
//! that matching a request is a walk to the first matcher that accepts it.
//!
//! Precedence (Kong 3.x `traditional_compatible`), highest first:
//! 1. number of criteria set (methods, hosts, headers, paths);
//! 2. routes that have hosts, all of them plain, before the rest (a route without hosts does
//!    not get this bonus: otherwise a public `paths: ["/"]` route would outrank a hosts-only
//!    route with authentication, as Kong's `get_priority` in `kong/router/transform.lua` does
//!    not allow);
//! 3. number of headers;
//! 4. a regex path before a prefix path;
//! 5. for regex paths, `regex_priority` (higher first);
//! 6. for prefix paths, the longer prefix;
//! 7. the older route (`created_at`), then the id, so the order is total and deterministic.
//!
//! A route with several paths becomes one matcher per path, each ranked on its own, as Kong
//! splits such routes. Routes of disabled services are left out.
//!
//! Matching does not walk every matcher: an index narrows the candidates to the matchers whose
//! prefix path is a prefix of the request path (one hash lookup per distinct prefix length),
//! those whose exact hosts include the request host, and the few that no index can narrow
//! (regex paths, wildcard hosts, routes on methods or headers only). Each candidate list is in
//! precedence order, so the answer is the best first-accepting candidate across the lists:
//! the same route the full walk finds.

use std::collections::HashMap;

use regex::Regex;
use uuid::Uuid;

use crate::entity::{Route, Service};
use crate::state::State;

/// What the router needs to know about a request. Paths must already be normalised
/// ([`crate::normalize::normalize_path`]); hosts lower-cased, without the port.
pub struct RequestView<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub port: Option<u16>,
    pub path: &'a str,
    pub headers: &'a dyn HeaderLookup,
    /// The TLS server name the client sent (lower-case), if any.
    pub sni: Option<&'a str>,
    /// Whether the request came over TLS. Kong ignores a route's `snis` for other requests
    /// (they then match on the rest, and an https-only route answers with its redirect).
    pub tls: bool,
}

/// Header access for the router, so this crate needs no HTTP library.
pub trait HeaderLookup {
    /// Calls `f` on each value of header `name` (lower-case) until it returns true.
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool;
}

#[derive(Debug, Clone)]
enum HostRule {
    Exact(String),
    /// `*.example.com`: the stored suffix is `.example.com`.
    Suffix(String),
    /// `example.*`: the stored prefix is `example.`.
    Prefix(String),
}

#[derive(Debug, Clone)]
struct HostMatcher {
    rule: HostRule,
    port: Option<u16>,
}

impl HostMatcher {
    fn parse(h: &str) -> HostMatcher {
        let (name, port) = match h.rsplit_once(':') {
            Some((n, p)) if !n.contains(':') => (n, p.parse().ok()),
            _ => (h, None),
        };
        let rule = if let Some(s) = name.strip_prefix('*') {
            HostRule::Suffix(s.to_string())
        } else if let Some(p) = name.strip_suffix('*') {
            HostRule::Prefix(p.to_string())
        } else {
            HostRule::Exact(name.to_string())
        };
        HostMatcher { rule, port }
    }

    fn matches(&self, host: &str, port: Option<u16>) -> bool {
        if self.port.is_some() && self.port != port {
            return false;
        }
        match &self.rule {
            HostRule::Exact(h) => h == host,
            HostRule::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
            HostRule::Prefix(p) => host.len() > p.len() && host.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug)]
enum PathRule {
    Any,
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug, Clone)]
enum ValueRule {
    /// Compared case-insensitively.
    Plain(String),
    Regex(Regex),
}

#[derive(Debug)]
struct Matcher {
    route: usize,
    methods: Vec<String>,
    hosts: Vec<HostMatcher>,
    /// Server names, matched as hosts are (`*.x.test`, `x.*`), against the TLS SNI.
    snis: Vec<HostMatcher>,
    headers: Vec<(String, Vec<ValueRule>)>,
    path: PathRule,
    rank: Rank,
}

/// Sort key; compared in descending order of precedence.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rank {
    criteria: u8,
    plain_hosts: bool,
    headers: u8,
    regex: bool,
    regex_priority: i64,
    prefix_len: usize,
    // Older first: stored negated so that "greater" means "earlier".
    neg_created_at: i64,
    id: std::cmp::Reverse<Uuid>,
}

/// A successful match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Match {
    /// Index into [`Router::routes`].
    pub route: usize,
    /// How many bytes of the normalised path the matched path covered (what `strip_path`
    /// removes).
    pub matched_len: usize,
}

/// Compiled routes, immutable once built.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Uuid>,
    matchers: Vec<Matcher>,
    index: Index,
    /// Per route, the positions of its regex-path matchers (for [`Router::captures`]).
    regex_matchers: HashMap<usize, Vec<usize>>,
}

/// Candidate lists of matcher positions, each ascending (= precedence order).
#[derive(Debug, Default)]
struct Index {
    /// Matchers with a prefix path, by the prefix's bytes.
    by_prefix: HashMap<Box<[u8]>, Vec<u32>>,
    /// The distinct prefix lengths, ascending.
    prefix_lens: Vec<usize>,
    /// Matchers without a prefix path whose hosts are all exact names, by host name.
    by_host: HashMap<String, Vec<u32>>,
    /// Every other matcher: always a candidate.
    always: Vec<u32>,
}

impl Index {
    fn build(matchers: &[Matcher]) -> Index {
        let mut ix = Index::default();
        for (i, m) in matchers.iter().enumerate() {
            let i = i as u32;
            let exact_hosts: Option<Vec<&str>> = (!m.hosts.is_empty())
                .then(|| {
                    m.hosts
                        .iter()
                        .map(|h| match &h.rule {
                            HostRule::Exact(name) => Some(name.as_str()),
                            _ => None,
                        })
                        .collect()
                })
                .flatten();
            let regex_prefix = match &m.path {
                PathRule::Regex(re) => literal_prefix(re.as_str()),
                _ => "",
            };
            match (&m.path, exact_hosts) {
                (PathRule::Prefix(p), _) => {
                    ix.by_prefix.entry(p.as_bytes().into()).or_default().push(i)
                }
                // Regex paths are anchored: the path must start with the literal text the
                // regex starts with.
                (PathRule::Regex(_), _) if regex_prefix.len() > 1 => ix
                    .by_prefix
                    .entry(regex_prefix.as_bytes().into())
                    .or_default()
                    .push(i),
                (_, Some(hosts)) => {
                    let mut hosts = hosts;
                    hosts.dedup();
                    for h in hosts {
                        ix.by_host.entry(h.to_string()).or_default().push(i);
                    }
                }
                _ => ix.always.push(i),
            }
        }
        let mut lens: Vec<usize> = ix.by_prefix.keys().map(|k| k.len()).collect();
        lens.sort_unstable();
        lens.dedup();
        ix.prefix_lens = lens;
        ix
    }
}

/// The literal text every match of a compiled, anchored regex path starts with: the
/// characters before the first metacharacter, less the last one if a quantifier follows it;
/// nothing when the regex has an alternation at its top level.
fn literal_prefix(compiled: &str) -> &str {
    let Some(body) = compiled
        .strip_prefix("^(?:")
        .and_then(|b| b.strip_suffix(')'))
    else {
        return "";
    };
    let (mut depth, mut escaped, mut class) = (0i32, false, false);
    for c in body.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '[' => class = true,
            ']' => class = false,
            '(' if !class => depth += 1,
            ')' if !class => depth -= 1,
            '|' if !class && depth == 0 => return "",
            _ => {}
        }
    }
    let mut end = body
        .find(|c: char| "\\.+*?()|[]{}^$ \t\n".contains(c))
        .unwrap_or(body.len());
    if body[end..].starts_with(['*', '?', '{']) {
        end = body[..end]
            .char_indices()
            .last()
            .map(|(i, _)| i)
            .unwrap_or(0);
    }
    &body[..end]
}

/// Kong anchors regex paths at the start of the path.
fn anchored(re: &str) -> String {
    format!("^(?:{re})")
}

fn compile_regex(re: &str) -> Option<Regex> {
    Regex::new(&anchored(re)).ok()
}

impl Router {
    /// The captures of the matched route's regex path on `path` (Kong's `uri_captures`), if
    /// the route matched by a regex path.
    pub fn captures<'p>(&self, route: usize, path: &'p str) -> Option<regex::Captures<'p>> {
        self.regex_matchers
            .get(&route)?
            .iter()
            .find_map(|i| match &self.matchers[*i].path {
                PathRule::Regex(re) => re.captures(path),
                _ => None,
            })
    }

    /// [`Router::captures`] with the matching regex's group names (index 0 is the whole
    /// match).
    pub fn named_captures<'p>(
        &self,
        route: usize,
        path: &'p str,
    ) -> Option<(regex::Captures<'p>, Vec<Option<&str>>)> {
        self.regex_matchers
            .get(&route)?
            .iter()
            .find_map(|i| match &self.matchers[*i].path {
                PathRule::Regex(re) => re.captures(path).map(|c| (c, re.capture_names().collect())),
                _ => None,
            })
    }

    /// Compiles every route of `state` whose service is enabled.
    pub fn build(state: &State) -> Router {
        Router::build_reusing(state, &Router::default())
    }

    /// [`Router::build`], taking the compiled regexes `prev` already has (compiling regexes is
    /// most of a rebuild when many routes use them).
    pub fn build_reusing(state: &State, prev: &Router) -> Router {
        let known: HashMap<&str, &Regex> = prev
            .matchers
            .iter()
            .filter_map(|m| match &m.path {
                PathRule::Regex(re) => Some((re.as_str(), re)),
                _ => None,
            })
            .collect();
        let regex = |re: &str| {
            let anchored = anchored(re);
            match known.get(anchored.as_str()) {
                Some(r) => Some((*r).clone()),
                None => Regex::new(&anchored).ok(),
            }
        };
        let mut routes = Vec::new();
        let mut matchers = Vec::new();
        for r in state.all::<Route>() {
            let enabled = match r.service {
                Some(fk) => state
                    .one::<Service>(fk.id)
                    .map(|s| s.enabled)
                    .unwrap_or(false),
                None => true,
            };
            if !enabled {
                continue;
            }
            let idx = routes.len();
            routes.push(r.id);
            compile_route(r, idx, &mut matchers, &regex);
        }
        matchers.sort_by(|a, b| b.rank.cmp(&a.rank));
        let index = Index::build(&matchers);
        let mut regex_matchers: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, m) in matchers.iter().enumerate() {
            if matches!(m.path, PathRule::Regex(_)) {
                regex_matchers.entry(m.route).or_default().push(i);
            }
        }
        Router {
            routes,
            matchers,
            index,
            regex_matchers,
        }
    }

    /// Route ids, in the order [`Match::route`] indexes.
    pub fn routes(&self) -> &[Uuid] {
        &self.routes
    }

    /// Number of matchers (paths across routes).
    pub fn len(&self) -> usize {
        self.matchers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.matchers.is_empty()
    }

    /// The highest-precedence route accepting the request.
    pub fn find(&self, req: &RequestView<'_>) -> Option<Match> {
        let mut best: Option<(u32, usize)> = None;
        let mut consider = |list: &[u32]| {
            for &i in list {
                if best.is_some_and(|(b, _)| b < i) {
                    return;
                }
                if let Some(len) = self.matchers[i as usize].accepts(req) {
                    best = Some((i, len));
                    return;
                }
            }
        };
        let path = req.path.as_bytes();
        for &len in &self.index.prefix_lens {
            if len > path.len() {
                break;
            }
            if let Some(list) = self.index.by_prefix.get(&path[..len]) {
                consider(list);
            }
        }
        if let Some(list) = self.index.by_host.get(req.host) {
            consider(list);
        }
        consider(&self.index.always);
        best.map(|(i, matched_len)| Match {
            route: self.matchers[i as usize].route,
            matched_len,
        })
    }

    /// The full walk the index stands in for (tests compare the two).
    #[cfg(test)]
    fn find_linear(&self, req: &RequestView<'_>) -> Option<Match> {
        self.matchers.iter().find_map(|m| {
            m.accepts(req).map(|matched_len| Match {
                route: m.route,
                matched_len,
            })
        })
    }
}

impl Matcher {
    /// Whether the request meets every criterion; the matched path length if so.
    fn accepts(&self, req: &RequestView<'_>) -> Option<usize> {
        if !self.methods.is_empty() && !self.methods.iter().any(|x| x == req.method) {
            return None;
        }
        if !self.hosts.is_empty() && !self.hosts.iter().any(|h| h.matches(req.host, req.port)) {
            return None;
        }
        if req.tls
            && !self.snis.is_empty()
            && !req
                .sni
                .is_some_and(|sni| self.snis.iter().any(|h| h.matches(sni, None)))
        {
            return None;
        }
        let matched_len = match &self.path {
            PathRule::Any => 0,
            PathRule::Prefix(p) => {
                if !req.path.starts_with(p.as_str()) {
                    return None;
                }
                p.len()
            }
            PathRule::Regex(re) => re.find(req.path)?.end(),
        };
        let headers_ok = self.headers.iter().all(|(name, rules)| {
            req.headers.any_value(name, &mut |v| {
                rules.iter().any(|r| match r {
                    ValueRule::Plain(p) => p.eq_ignore_ascii_case(v.trim()),
                    ValueRule::Regex(re) => re.is_match(v),
                })
            })
        });
        headers_ok.then_some(matched_len)
    }
}

/// A route's list field when it holds something.
fn set(v: &Option<Vec<String>>) -> Option<&Vec<String>> {
    v.as_ref().filter(|v| !v.is_empty())
}

fn compile_route(
    r: &Route,
    idx: usize,
    out: &mut Vec<Matcher>,
    path_regex: &dyn Fn(&str) -> Option<Regex>,
) {
    let methods = r.methods.clone().unwrap_or_default();
    let hosts: Vec<HostMatcher> = r
        .hosts
        .iter()
        .flatten()
        .map(|h| HostMatcher::parse(h))
        .collect();
    let snis: Vec<HostMatcher> = r
        .snis
        .iter()
        .flatten()
        .filter(|n| n.as_str() != "*")
        .map(|n| HostMatcher::parse(n))
        .collect();
    // Kong: `plain_host_only = type(hosts) == "table"` and then no `*` in any of them.
    let plain_hosts = set(&r.hosts).is_some_and(|hs| hs.iter().all(|h| !h.contains('*')));
    let headers: Vec<(String, Vec<ValueRule>)> = r
        .headers
        .iter()
        .flatten()
        .map(|(name, vals)| {
            let rules = vals
                .iter()
                .filter_map(|v| match v.strip_prefix("~*") {
                    Some(re) => compile_regex(re).map(ValueRule::Regex),
                    None => Some(ValueRule::Plain(v.clone())),
                })
                .collect();
            (name.to_ascii_lowercase(), rules)
        })
        .collect();
    // An empty list is stored as given (Kong answers `[]`) but is no criterion.
    let criteria = [
        set(&r.methods).is_some(),
        set(&r.hosts).is_some(),
        r.headers.as_ref().is_some_and(|h| !h.is_empty()),
        set(&r.paths).is_some(),
        !snis.is_empty(),
    ]
    .iter()
    .filter(|x| **x)
    .count() as u8;
    let base = |path: PathRule, regex: bool, regex_priority: i64, prefix_len: usize| Matcher {
        route: idx,
        methods: methods.clone(),
        hosts: hosts.clone(),
        snis: snis.clone(),
        headers: headers.clone(),
        path,
        rank: Rank {
            criteria,
            plain_hosts,
            headers: headers.len().min(255) as u8,
            regex,
            regex_priority,
            prefix_len,
            neg_created_at: -r.created_at,
            id: std::cmp::Reverse(r.id),
        },
    };
    match set(&r.paths) {
        None => out.push(base(PathRule::Any, false, 0, 0)),
        Some(paths) => {
            for p in paths {
                match p.strip_prefix('~') {
                    Some(re) => {
                        if let Some(re) = path_regex(re) {
                            out.push(base(PathRule::Regex(re), true, r.regex_priority, 0));
                        }
                    }
                    None => out.push(base(PathRule::Prefix(p.clone()), false, 0, p.len())),
                }
            }
        }
    }
}

/// Header lookup over a plain map, for tests and tools.
impl HeaderLookup for HashMap<String, Vec<String>> {
    fn any_value(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.get(name)
            .map(|vs| vs.iter().any(|v| f(v)))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, PutMode};
    use crate::entity::{Entity, Protocol, Service};
    use std::collections::BTreeMap;

    struct Fixture {
        state: State,
        n: u128,
    }

    impl Fixture {
        fn new() -> Fixture {
            let mut state = State::default();
            state
                .apply(Command::Put {
                    entity: Entity::Service(Service {
                        id: Uuid::from_u128(1),
                        name: Some("s".into()),
                        protocol: Protocol::Http,
                        host: "h".into(),
                        port: 80,
                        path: None,
                        retries: 5,
                        connect_timeout: 1,
                        write_timeout: 1,
                        read_timeout: 1,
                        enabled: true,
                        tags: None,
                        created_at: 0,
                        updated_at: 0,
                        client_certificate: None,
                        tls_verify: None,
                        tls_verify_depth: None,
                        ca_certificates: None,
                    }),
                    mode: PutMode::Create,
                })
                .unwrap();
            Fixture { state, n: 100 }
        }

        fn add(&mut self, name: &str, f: impl FnOnce(&mut Route)) {
            self.n += 1;
            let mut r = Route {
                id: Uuid::from_u128(self.n),
                name: Some(name.into()),
                protocols: vec![Protocol::Http],
                methods: None,
                hosts: None,
                paths: None,
                headers: None,
                https_redirect_status_code: 426,
                regex_priority: 0,
                strip_path: true,
                path_handling: "v0".into(),
                preserve_host: false,
                request_buffering: true,
                response_buffering: true,
                service: Some(Uuid::from_u128(1).into()),
                tags: None,
                created_at: self.n as i64,
                updated_at: 0,
                snis: None,
            };
            f(&mut r);
            self.state
                .apply(Command::Put {
                    entity: Entity::Route(r),
                    mode: PutMode::Create,
                })
                .unwrap();
        }

        fn find(
            &self,
            method: &str,
            host: &str,
            path: &str,
            hdrs: &[(&str, &str)],
        ) -> Option<String> {
            let router = Router::build(&self.state);
            let mut h: HashMap<String, Vec<String>> = HashMap::new();
            for (k, v) in hdrs {
                h.entry(k.to_string()).or_default().push(v.to_string());
            }
            let m = router.find(&RequestView {
                method,
                host,
                port: None,
                path,
                headers: &h,
                sni: None,
                tls: false,
            })?;
            let id = router.routes()[m.route];
            self.state.one::<Route>(id).unwrap().name.clone()
        }
    }

    /// A seeded xorshift: `next(n)` is in `0..n`, the same sequence every run.
    fn xorshift(mut seed: u64) -> impl FnMut(usize) -> usize {
        move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        }
    }

    #[test]
    fn regex_literal_prefixes() {
        let p = |re: &str| literal_prefix(compile_regex(re).unwrap().as_str()).to_string();
        assert_eq!(p("/re-1/v[0-9]+"), "/re-1/v");
        assert_eq!(p("/ab?c"), "/a");
        assert_eq!(p("/a/\\d+"), "/a/");
        assert_eq!(p("(?i)/a"), "");
        assert_eq!(p("/x|/y"), "");
        assert_eq!(p("/a/(b|c)"), "/a/");
        assert_eq!(p("/files.json"), "/files");
    }

    #[test]
    fn the_index_finds_what_the_full_walk_finds() {
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15_u64);
        let paths = [
            "/",
            "/a",
            "/ab",
            "/a/b",
            "/b",
            "~/a/\\d+",
            "~/b.*",
            "/a/b/c",
            "~/ab?c",
            "~/a|/b",
            "~/a/(1|b)",
        ];
        let hosts = ["x.com", "y.com", "*.x.com", "x.*"];
        let mut f = Fixture::new();
        for i in 0..400 {
            let (np, nh, nm) = (next(3), next(3), next(3));
            let p: Vec<String> = (0..np).map(|_| paths[next(paths.len())].into()).collect();
            let h: Vec<String> = (0..nh).map(|_| hosts[next(hosts.len())].into()).collect();
            let method = ["GET", "POST"][next(2)];
            let header = next(4) == 0;
            f.add(&format!("r{i}"), |r| {
                r.paths = (!p.is_empty()).then_some(p);
                r.hosts = (!h.is_empty()).then_some(h);
                r.methods = (nm == 0).then(|| vec![method.to_string()]);
                if header {
                    r.headers = Some(BTreeMap::from([("x-v".to_string(), vec!["1".to_string()])]));
                }
            });
        }
        let router = Router::build(&f.state);
        let req_paths = [
            "/", "/a", "/ab/c", "/a/b/c", "/a/12", "/b/z", "/c", "/abc", "/ac", "/a/1x",
        ];
        let req_hosts = ["x.com", "y.com", "a.x.com", "x.org", "z.net"];
        let mut with = HashMap::new();
        with.insert("x-v".to_string(), vec!["1".to_string()]);
        let without: HashMap<String, Vec<String>> = HashMap::new();
        for _ in 0..5000 {
            let req = RequestView {
                method: ["GET", "POST", "PUT"][next(3)],
                host: req_hosts[next(req_hosts.len())],
                port: None,
                path: req_paths[next(req_paths.len())],
                headers: if next(2) == 0 { &with } else { &without },
                sni: None,
                tls: false,
            };
            assert_eq!(router.find(&req), router.find_linear(&req), "{}", req.path);
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let mut f = Fixture::new();
        f.add("root", |r| r.paths = Some(vec!["/".into()]));
        f.add("api", |r| r.paths = Some(vec!["/api".into()]));
        f.add("api-v1", |r| r.paths = Some(vec!["/api/v1".into()]));
        assert_eq!(
            f.find("GET", "x", "/api/v1/users", &[]).as_deref(),
            Some("api-v1")
        );
        assert_eq!(f.find("GET", "x", "/api/v2", &[]).as_deref(), Some("api"));
        assert_eq!(f.find("GET", "x", "/other", &[]).as_deref(), Some("root"));
    }

    #[test]
    fn more_criteria_win_over_longer_paths() {
        let mut f = Fixture::new();
        f.add("long-path", |r| {
            r.paths = Some(vec!["/api/v1/users".into()])
        });
        f.add("host-and-path", |r| {
            r.paths = Some(vec!["/api".into()]);
            r.hosts = Some(vec!["example.com".into()]);
        });
        assert_eq!(
            f.find("GET", "example.com", "/api/v1/users", &[])
                .as_deref(),
            Some("host-and-path")
        );
        assert_eq!(
            f.find("GET", "other.com", "/api/v1/users", &[]).as_deref(),
            Some("long-path")
        );
    }

    #[test]
    fn plain_hosts_before_wildcards() {
        let mut f = Fixture::new();
        f.add("wild", |r| r.hosts = Some(vec!["*.example.com".into()]));
        f.add("plain", |r| r.hosts = Some(vec!["api.example.com".into()]));
        f.add("tld", |r| r.hosts = Some(vec!["example.*".into()]));
        assert_eq!(
            f.find("GET", "api.example.com", "/", &[]).as_deref(),
            Some("plain")
        );
        assert_eq!(
            f.find("GET", "www.example.com", "/", &[]).as_deref(),
            Some("wild")
        );
        assert_eq!(
            f.find("GET", "example.org", "/", &[]).as_deref(),
            Some("tld")
        );
        assert_eq!(
            f.find("GET", "example.com", "/", &[]).as_deref(),
            Some("tld")
        );
        assert_eq!(f.find("GET", "foo.com", "/", &[]), None);
    }

    #[test]
    fn regex_paths_by_priority_and_before_prefixes() {
        let mut f = Fixture::new();
        f.add("prefix", |r| r.paths = Some(vec!["/users/123".into()]));
        f.add("re-low", |r| r.paths = Some(vec![r"~/users/\d+".into()]));
        f.add("re-high", |r| {
            r.paths = Some(vec![r"~/users/1\d*".into()]);
            r.regex_priority = 10;
        });
        assert_eq!(
            f.find("GET", "x", "/users/123", &[]).as_deref(),
            Some("re-high")
        );
        assert_eq!(
            f.find("GET", "x", "/users/923", &[]).as_deref(),
            Some("re-low")
        );
        // Anchored: a regex path does not match in the middle.
        assert_eq!(f.find("GET", "x", "/x/users/923", &[]), None);
    }

    #[test]
    fn methods_and_headers() {
        let mut f = Fixture::new();
        f.add("any", |r| r.paths = Some(vec!["/".into()]));
        f.add("post", |r| {
            r.paths = Some(vec!["/".into()]);
            r.methods = Some(vec!["POST".into()]);
        });
        f.add("v2", |r| {
            r.paths = Some(vec!["/".into()]);
            r.headers = Some(BTreeMap::from([("x-version".into(), vec!["v2".into()])]));
        });
        f.add("beta", |r| {
            r.paths = Some(vec!["/".into()]);
            r.headers = Some(BTreeMap::from([(
                "x-tier".into(),
                vec!["~*^beta-\\d$".into()],
            )]));
        });
        assert_eq!(f.find("POST", "x", "/a", &[]).as_deref(), Some("post"));
        assert_eq!(
            f.find("GET", "x", "/a", &[("x-version", "V2")]).as_deref(),
            Some("v2")
        );
        assert_eq!(
            f.find("GET", "x", "/a", &[("x-tier", "beta-1")]).as_deref(),
            Some("beta")
        );
        assert_eq!(
            f.find("GET", "x", "/a", &[("x-version", "v3")]).as_deref(),
            Some("any")
        );
    }

    /// Security finding: a hosts-only route (with authentication on it) lost to a public
    /// `paths: ["/"]` or methods-only route, so `Host: api.example.com` skipped key-auth.
    #[test]
    fn a_hosts_only_route_beats_a_public_catch_all() {
        let mut f = Fixture::new();
        f.add("public-root", |r| r.paths = Some(vec!["/".into()]));
        f.add("public-get", |r| r.methods = Some(vec!["GET".into()]));
        f.add("private-host", |r| {
            r.hosts = Some(vec!["api.example.com".into()])
        });
        assert_eq!(
            f.find("GET", "api.example.com", "/anything", &[])
                .as_deref(),
            Some("private-host")
        );
        // Among the public routes, the path's length (1) ranks above no path at all.
        assert_eq!(
            f.find("GET", "other.example.com", "/anything", &[])
                .as_deref(),
            Some("public-root")
        );
        assert_eq!(
            f.find("POST", "api.example.com", "/x", &[]).as_deref(),
            Some("private-host")
        );
    }

    /// Kong's precedence written out directly from `get_priority` and
    /// `split_routes_and_services_by_path` (kong/router/transform.lua, 3.9.3): each route is
    /// split into one group per prefix length plus one for its regexes, each group gets a
    /// 64-bit priority, and the first group by priority (then age) that matches wins.
    mod kong_reference {
        use super::super::*;

        pub struct Group {
            pub route: Uuid,
            pub priority: u64,
            pub created_at: i64,
            methods: Option<Vec<String>>,
            hosts: Option<Vec<String>>,
            headers: Option<Vec<(String, Vec<String>)>>,
            paths: Option<Vec<(String, Option<Regex>)>>,
        }

        pub fn groups(r: &Route) -> Vec<Group> {
            let path_groups: Vec<Option<Vec<String>>> = match &r.paths {
                None => vec![None],
                Some(ps) => {
                    let mut out: Vec<(usize, Vec<String>)> = Vec::new();
                    for p in ps {
                        let k = if p.starts_with('~') { 0 } else { p.len() };
                        match out.iter_mut().find(|(key, _)| *key == k) {
                            Some((_, g)) => g.push(p.clone()),
                            None => out.push((k, vec![p.clone()])),
                        }
                    }
                    out.into_iter().map(|(_, g)| Some(g)).collect()
                }
            };
            path_groups
                .into_iter()
                .map(|paths| {
                    let mut weight = 0u64;
                    weight += r.methods.is_some() as u64;
                    weight += r.hosts.is_some() as u64;
                    let headers = r.headers.as_ref().map(|h| h.len()).unwrap_or(0) as u64;
                    weight += (headers > 0) as u64;
                    let plain = r
                        .hosts
                        .as_ref()
                        .is_some_and(|hs| hs.iter().all(|h| !h.contains('*')));
                    let (mut regex, mut len) = (false, 0u64);
                    if let Some(ps) = &paths {
                        weight += 1;
                        regex = ps[0].starts_with('~');
                        if !regex {
                            len = ps[0].len() as u64;
                        }
                    }
                    let regex_priority = if regex { r.regex_priority as u64 } else { 0 };
                    let priority = (weight << 61)
                        | ((plain as u64) << 60)
                        | (headers.min(255) << 52)
                        | ((regex as u64) << 51)
                        | (regex_priority << 19)
                        | (len & 0x7FFFF);
                    Group {
                        route: r.id,
                        priority,
                        created_at: r.created_at,
                        methods: r.methods.clone(),
                        hosts: r.hosts.clone(),
                        headers: r
                            .headers
                            .as_ref()
                            .map(|h| h.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
                        paths: paths.map(|ps| {
                            ps.into_iter()
                                .map(|p| {
                                    let re = p
                                        .strip_prefix('~')
                                        .map(|re| Regex::new(&format!("^(?:{re})")).unwrap());
                                    (p, re)
                                })
                                .collect()
                        }),
                    }
                })
                .collect()
        }

        impl Group {
            pub fn matches(
                &self,
                method: &str,
                host: &str,
                path: &str,
                hdrs: &[(&str, &str)],
            ) -> bool {
                if let Some(ms) = &self.methods {
                    if !ms.iter().any(|m| m == method) {
                        return false;
                    }
                }
                if let Some(hs) = &self.hosts {
                    let ok = hs.iter().any(|h| {
                        if let Some(suffix) = h.strip_prefix('*') {
                            host.len() > suffix.len() && host.ends_with(suffix)
                        } else if let Some(prefix) = h.strip_suffix('*') {
                            host.len() > prefix.len() && host.starts_with(prefix)
                        } else {
                            h == host
                        }
                    });
                    if !ok {
                        return false;
                    }
                }
                if let Some(hh) = &self.headers {
                    for (name, values) in hh {
                        let ok = hdrs.iter().any(|(n, v)| {
                            n.eq_ignore_ascii_case(name)
                                && values.iter().any(|want| want.eq_ignore_ascii_case(v))
                        });
                        if !ok {
                            return false;
                        }
                    }
                }
                match &self.paths {
                    None => true,
                    Some(ps) => ps.iter().any(|(p, re)| match re {
                        Some(re) => re.is_match(path),
                        None => path.starts_with(p.as_str()),
                    }),
                }
            }
        }
    }

    #[test]
    fn the_router_agrees_with_kongs_precedence_on_random_route_sets() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d_u64);
        let paths = [
            "/", "/a", "/ab", "/a/b", "/b", "~/a/\\d+", "~/b.*", "/a/b/c",
        ];
        let hosts = ["x.com", "y.com", "*.x.com", "x.*"];
        let req_paths = ["/", "/a", "/ab/c", "/a/b/c", "/a/12", "/b/z", "/c"];
        let req_hosts = ["x.com", "y.com", "a.x.com", "x.org", "z.net"];
        for set in 0..60 {
            let mut f = Fixture::new();
            let n = 2 + next(12);
            for i in 0..n {
                // Shapes: hosts-only, methods-only, headers-only, paths-only, or a random mix.
                let shape = next(5);
                let pick = |k: usize, next: &mut dyn FnMut(usize) -> usize| -> bool {
                    shape == k || (shape == 4 && next(2) == 0)
                };
                let with_hosts = pick(0, &mut next);
                let with_methods = pick(1, &mut next);
                let with_headers = pick(2, &mut next);
                let mut with_paths = pick(3, &mut next);
                if !(with_hosts || with_methods || with_headers || with_paths) {
                    with_paths = true;
                }
                let h: Vec<String> = (0..1 + next(2))
                    .map(|_| hosts[next(hosts.len())].into())
                    .collect();
                let p: Vec<String> = (0..1 + next(2))
                    .map(|_| paths[next(paths.len())].into())
                    .collect();
                let method = ["GET", "POST"][next(2)].to_string();
                let version = ["1", "2"][next(2)].to_string();
                let regex_priority = next(3) as i64;
                f.add(&format!("s{set}r{i}"), |r| {
                    r.hosts = with_hosts.then_some(h);
                    r.paths = with_paths.then_some(p);
                    r.methods = with_methods.then(|| vec![method]);
                    r.headers =
                        with_headers.then(|| BTreeMap::from([("x-v".to_string(), vec![version])]));
                    r.regex_priority = regex_priority;
                });
            }
            let router = Router::build(&f.state);
            let mut reference: Vec<kong_reference::Group> = f
                .state
                .all::<Route>()
                .flat_map(kong_reference::groups)
                .collect();
            reference.sort_by(|a, b| {
                b.priority
                    .cmp(&a.priority)
                    .then(a.created_at.cmp(&b.created_at))
                    .then(a.route.cmp(&b.route))
            });
            for _ in 0..200 {
                let method = ["GET", "POST", "PUT"][next(3)];
                let host = req_hosts[next(req_hosts.len())];
                let path = req_paths[next(req_paths.len())];
                let hv = ["1", "2", "3"][next(3)];
                let hdrs: Vec<(&str, &str)> = if next(2) == 0 {
                    vec![("x-v", hv)]
                } else {
                    vec![]
                };
                let want = reference
                    .iter()
                    .find(|g| g.matches(method, host, path, &hdrs))
                    .map(|g| g.route);
                let mut hm: HashMap<String, Vec<String>> = HashMap::new();
                for (k, v) in &hdrs {
                    hm.entry(k.to_string()).or_default().push(v.to_string());
                }
                let got = router
                    .find(&RequestView {
                        method,
                        host,
                        port: None,
                        path,
                        headers: &hm,
                        sni: None,
                        tls: false,
                    })
                    .map(|m| router.routes()[m.route]);
                assert_eq!(got, want, "set {set}: {method} {host}{path} {hdrs:?}");
            }
        }
    }

    #[test]
    fn ties_go_to_the_older_route() {
        let mut f = Fixture::new();
        f.add("first", |r| r.paths = Some(vec!["/same".into()]));
        f.add("second", |r| r.paths = Some(vec!["/same".into()]));
        assert_eq!(f.find("GET", "x", "/same", &[]).as_deref(), Some("first"));
    }

    #[test]
    fn host_with_port() {
        let mut f = Fixture::new();
        f.add("p", |r| r.hosts = Some(vec!["example.com:8000".into()]));
        let router = Router::build(&f.state);
        let h: HashMap<String, Vec<String>> = HashMap::new();
        let view = |port| RequestView {
            method: "GET",
            host: "example.com",
            port,
            path: "/",
            headers: &h,
            sni: None,
            tls: false,
        };
        assert!(router.find(&view(Some(8000))).is_some());
        assert!(router.find(&view(Some(9000))).is_none());
    }

    #[test]
    fn snis_match_the_tls_server_name_and_count_as_a_criterion() {
        use crate::schema::FieldRef;
        use crate::EntityKind;
        let mut f = Fixture::new();
        f.add("plain", |r| r.paths = Some(vec!["/".into()]));
        f.add("sni", |r| {
            r.paths = Some(vec!["/".into()]);
            r.protocols = vec![Protocol::Https];
            r.snis = Some(vec!["*.sni.test".into()]);
        });
        let router = Router::build(&f.state);
        let h: HashMap<String, Vec<String>> = HashMap::new();
        let name = |sni, tls| {
            router
                .find(&RequestView {
                    method: "GET",
                    host: "x",
                    port: None,
                    path: "/",
                    headers: &h,
                    sni,
                    tls,
                })
                .map(|m| {
                    f.state
                        .get(EntityKind::Route, router.routes()[m.route])
                        .unwrap()
                        .field("name")
                })
        };
        assert_eq!(name(Some("a.sni.test"), true), Some(FieldRef::Str("sni")));
        assert_eq!(name(Some("other.test"), true), Some(FieldRef::Str("plain")));
        assert_eq!(name(None, true), Some(FieldRef::Str("plain")));
        // Kong ignores snis for a request that is not TLS (#6425): the route matches on the
        // rest, and its https-only protocols then redirect.
        assert_eq!(name(None, false), Some(FieldRef::Str("sni")));
    }
}
