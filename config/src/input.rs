//! Admin API input: JSON (or form bodies turned into JSON) becomes a fully built, validated
//! entity, with Kong's defaults and Kong's per-field messages.
//!
//! Building needs what the caller decided beforehand ([`Stamp`]: id, time, generated key) and
//! read access to the current [`State`] only to resolve foreign keys given by name. The result
//! goes into a [`crate::Command`]; `State::apply` re-checks everything that depends on state.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::entity::*;
use crate::error::{ApplyError, FieldErrors};
use crate::lenient;
use crate::plugins;
use crate::state::State;

/// The non-deterministic parts of a new or updated entity, decided by the caller.
#[derive(Debug, Clone, Default)]
pub struct Stamp {
    /// The id to use when the body names none.
    pub id: Uuid,
    pub now: Timestamp,
    /// The same instant in milliseconds: targets keep Kong's millisecond timestamps.
    pub now_ms: i64,
    /// `created_at` of the entity being replaced, if any.
    pub created_at: Option<Timestamp>,
    /// A fresh key for credentials created without one.
    pub generated_key: String,
    /// A fresh secret for credentials created without one (never the same as the key).
    pub generated_secret: String,
}

fn parse<T: DeserializeOwned>(v: &Value) -> Result<T, FieldErrors> {
    if !v.is_object() {
        return Err(FieldErrors::single("@entity", "expected a JSON object"));
    }
    // Kong names each tag that is not a string by its position (`tags.3`).
    if let Some(Value::Array(tags)) = v.get("tags") {
        let mut errs = FieldErrors::new();
        for (i, _) in tags.iter().enumerate().filter(|(_, t)| !t.is_string()) {
            errs.add(&format!("tags.{}", i + 1), "expected a string");
        }
        errs.into_result()?;
    }
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        plugins::serde_error_to_field("", &path, &e.inner().to_string())
    })
}

/// Kong's PATCH: the patch's top-level fields replace the entity's, and a plugin's `config`
/// is merged key by key.
pub fn merge_patch(base: &Value, patch: &Value) -> Value {
    let (Some(b), Some(p)) = (base.as_object(), patch.as_object()) else {
        return patch.clone();
    };
    let mut out: Map<String, Value> = b.clone();
    if p.contains_key("url") {
        for k in ["protocol", "host", "port", "path"] {
            out.remove(k);
        }
    }
    for (k, v) in p {
        match (k.as_str(), out.get(k), v) {
            ("config", Some(Value::Object(old)), Value::Object(new)) => {
                let mut merged = old.clone();
                for (ck, cv) in new {
                    merged.insert(ck.clone(), cv.clone());
                }
                out.insert(k.clone(), Value::Object(merged));
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    Value::Object(out)
}

/// A foreign key in input: `{"id": ...}` or `{"name": ...}` (`{"username": ...}` for consumers),
/// resolved by [`crate::schema::FkInput::resolve`].
#[derive(Debug, Deserialize)]
#[serde(transparent)]
struct FkInput(Value);

/// Kong's protocols (`kong/constants.lua`, OSS): the message for a name outside them, and a
/// plain "not supported yet" for the stream ones Tollgate does not serve.
pub(crate) const KONG_PROTOCOLS: &str =
    "expected one of: grpc, grpcs, http, https, tcp, tls, tls_passthrough, udp";

fn unknown_protocol(p: &str) -> String {
    match p {
        "tcp" | "tls" | "tls_passthrough" | "udp" => format!("protocol '{p}' is not supported yet"),
        _ => KONG_PROTOCOLS.to_string(),
    }
}

fn resolve_fk(
    state: &State,
    kind: EntityKind,
    field: &str,
    fk: Option<FkInput>,
    errs: &mut FieldErrors,
) -> Option<ForeignKey> {
    let fk = fk?;
    crate::schema::FkInput::resolve(state, field, kind, &fk.0, errs).map(|id| ForeignKey { id })
}

/// Longest name, username, custom_id or key (characters). Kong sets none; without one a 1 MB
/// name was stored, replicated and echoed in errors.
pub const MAX_NAME_LEN: usize = 512;
/// Most tags on one entity, and the longest tag (characters).
pub const MAX_TAGS: usize = 128;
pub const MAX_TAG_LEN: usize = 512;

/// Refuses a string field longer than `max` characters; true if it was refused.
pub(crate) fn check_len(field: &str, v: Option<&str>, max: usize, errs: &mut FieldErrors) -> bool {
    let over = v.is_some_and(|v| v.len() > max && v.chars().nth(max).is_some());
    if over {
        errs.add(field, format!("length must be at most {max}"));
    }
    over
}

/// Kong's `utf8_name` (service and route names, plugin instance names): any non-ASCII
/// character, and of ASCII only alphanumerics and `.-_~`.
pub(crate) fn check_utf8_name(field: &str, name: &Option<String>, errs: &mut FieldErrors) {
    if check_len(field, name.as_deref(), MAX_NAME_LEN, errs) {
        return;
    }
    if let Some(n) = name {
        let ok = |c: char| {
            !c.is_ascii() || c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '~')
        };
        if n.is_empty() || !n.chars().all(ok) {
            errs.add(
                field,
                format!("invalid value '{n}': the only accepted ascii characters are alphanumerics or ., -, _, and ~"),
            );
        }
    }
}

pub(crate) fn check_name(field: &str, name: &Option<String>, errs: &mut FieldErrors) {
    if check_len(field, name.as_deref(), MAX_NAME_LEN, errs) {
        return;
    }
    if let Some(n) = name {
        if n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '~'))
        {
            errs.add(
                field,
                format!("invalid value '{n}': it must only contain alphanumeric and '., -, _, ~' characters"),
            );
        }
    }
}

pub(crate) fn check_tags(tags: &Option<Vec<String>>, errs: &mut FieldErrors) {
    if tags.as_ref().is_some_and(|t| t.len() > MAX_TAGS) {
        errs.add("tags", format!("length must be at most {MAX_TAGS}"));
        return;
    }
    for t in tags.iter().flatten() {
        if check_len("tags", Some(t), MAX_TAG_LEN, errs) {
            return;
        }
        if t.is_empty() || t.contains(',') || t.contains('/') || t.chars().any(|c| c.is_control()) {
            errs.add("tags", format!("invalid tag '{t}': expected printable ascii (except `,` and `/`) or valid utf-8 sequences"));
        }
    }
}

fn check_id(body_id: &Option<String>, stamp: &Stamp, errs: &mut FieldErrors) -> Uuid {
    match body_id {
        None => stamp.id,
        Some(s) => match Uuid::parse_str(s) {
            Ok(id) => id,
            Err(_) => {
                errs.add("id", "expected a valid UUID");
                stamp.id
            }
        },
    }
}

fn range<T: PartialOrd + Copy + std::fmt::Display>(
    field: &str,
    v: Option<T>,
    lo: T,
    hi: T,
    def: T,
    errs: &mut FieldErrors,
) -> T {
    match v {
        None => def,
        Some(x) if x < lo || x > hi => {
            errs.add(field, format!("value should be between {lo} and {hi}"));
            def
        }
        Some(x) => x,
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceInput {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    url: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    protocol: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    host: Option<String>,
    #[serde(default)]
    port: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    path: Option<String>,
    #[serde(default)]
    retries: Option<i64>,
    #[serde(default)]
    connect_timeout: Option<i64>,
    #[serde(default)]
    write_timeout: Option<i64>,
    #[serde(default)]
    read_timeout: Option<i64>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_string_list")]
    tags: Option<Vec<String>>,
    #[serde(default)]
    created_at: Option<i64>,
    // Accepted because GET output may be sent back as input; the server sets it.
    #[serde(default, rename = "updated_at")]
    _updated_at: Option<i64>,
    #[serde(default)]
    client_certificate: Option<FkInput>,
    #[serde(default)]
    tls_verify: Option<bool>,
    #[serde(default)]
    tls_verify_depth: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_string_list")]
    ca_certificates: Option<Vec<String>>,
}

fn valid_host(h: &str) -> bool {
    if h.is_empty() || h.len() > 253 {
        return false;
    }
    if h.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    h.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Builds a service from an Admin API body.
pub fn service(v: &Value, stamp: &Stamp, state: &State) -> Result<Service, FieldErrors> {
    let inp: ServiceInput = parse(v).map_err(|mut e| {
        // A type error stops the reading; the missing host is still worth naming, as Kong does.
        if v.get("host").is_none_or(Value::is_null) && v.get("url").is_none_or(Value::is_null) {
            e.add("host", "required field missing");
        }
        e
    })?;
    let mut errs = FieldErrors::new();
    let id = check_id(&inp.id, stamp, &mut errs);
    check_utf8_name("name", &inp.name, &mut errs);
    check_tags(&inp.tags, &mut errs);

    let (mut protocol, mut host, mut port, mut path) = (
        inp.protocol.clone(),
        inp.host.clone(),
        inp.port,
        inp.path.clone(),
    );
    if let Some(u) = &inp.url {
        match url::Url::parse(u) {
            Ok(parsed) if parsed.host_str().is_some() => {
                protocol = Some(parsed.scheme().to_string());
                host = parsed
                    .host_str()
                    .map(|h| h.trim_matches(['[', ']']).to_string());
                port = parsed.port().map(i64::from);
                // `http://host:80` has no path; `http://host:80/` has "/".
                let after_scheme = u.split_once("://").map(|x| x.1).unwrap_or(u);
                let has_path = after_scheme.contains('/');
                path = match parsed.path() {
                    "" => None,
                    "/" if !has_path => None,
                    p => Some(p.to_string()),
                };
                if parsed.query().is_some() || parsed.fragment().is_some() {
                    errs.add("url", "must not have a query string or fragment");
                }
            }
            // Kong parses `invalid url` as a bare path: no host, and a path without `/`.
            _ if !u.contains("://") => {
                errs.add("host", "required field missing");
                if !u.starts_with('/') {
                    errs.add("path", "should start with: /");
                }
            }
            _ => errs.add("url", format!("invalid url: '{u}'")),
        }
    }
    let protocol = match protocol.as_deref() {
        None => Protocol::Http,
        Some(p) => match Protocol::parse(p) {
            Some(pr) => pr,
            None => {
                errs.add("protocol", unknown_protocol(p));
                Protocol::Http
            }
        },
    };
    let host = match host {
        None => {
            if inp.url.is_none() {
                errs.add("host", "required field missing");
            }
            String::new()
        }
        Some(h) if !valid_host(&h) => {
            errs.add("host", format!("invalid value: {h}"));
            h
        }
        Some(h) => h.to_ascii_lowercase(),
    };
    let port = range(
        "port",
        port,
        0,
        65535,
        i64::from(protocol.default_port()),
        &mut errs,
    ) as u16;
    if matches!(protocol, Protocol::Grpc | Protocol::Grpcs) && path.is_some() {
        errs.add_entity("failed conditional validation given value of field 'protocol'");
        errs.add("path", "value must be null");
    }
    if let Some(p) = &path {
        if !p.starts_with('/') {
            errs.add("path", "should start with: /");
        } else if p.contains("//") || p.contains('?') || p.contains('#') {
            errs.add(
                "path",
                "must not have empty segments, a query or a fragment",
            );
        }
    }
    let to = |f: &str, v: Option<i64>, errs: &mut FieldErrors| {
        range(f, v, 1, 2_147_483_646, 60_000, errs) as u32
    };
    let connect_timeout = to("connect_timeout", inp.connect_timeout, &mut errs);
    let write_timeout = to("write_timeout", inp.write_timeout, &mut errs);
    let read_timeout = to("read_timeout", inp.read_timeout, &mut errs);
    let retries = range("retries", inp.retries, 0, 32767, 5, &mut errs) as u32;
    let tls_verify_depth = inp
        .tls_verify_depth
        .map(|d| range("tls_verify_depth", Some(d), 0, 64, 0, &mut errs) as u8);
    let mut ca_certificates = None;
    if let Some(list) = &inp.ca_certificates {
        let mut ids = Vec::new();
        for (i, s) in list.iter().enumerate() {
            match Uuid::parse_str(s) {
                Ok(id) => ids.push(id),
                Err(_) => errs.add(
                    &format!("ca_certificates.{}", i + 1),
                    "expected a valid UUID",
                ),
            }
        }
        ca_certificates = Some(ids);
    }
    let client_certificate = resolve_fk(
        state,
        EntityKind::Certificate,
        "client_certificate",
        inp.client_certificate,
        &mut errs,
    );
    // Kong's conditional checks: these only mean something to a TLS upstream.
    if protocol != Protocol::Https {
        for (f, set) in [
            ("client_certificate", client_certificate.is_some()),
            ("tls_verify", inp.tls_verify.is_some()),
            ("tls_verify_depth", tls_verify_depth.is_some()),
            ("ca_certificates", ca_certificates.is_some()),
        ] {
            if set {
                errs.add(f, "value must be null");
            }
        }
    }
    if let Some(ids) = &ca_certificates {
        for id in ids {
            if state.get(EntityKind::CaCertificate, *id).is_none() {
                errs.add(
                    "ca_certificates",
                    format!("the CA certificate '{id}' does not exist"),
                );
            }
        }
    }
    errs.into_result()?;
    Ok(Service {
        id,
        name: inp.name,
        protocol,
        host,
        port,
        path,
        retries,
        connect_timeout,
        write_timeout,
        read_timeout,
        enabled: inp.enabled.unwrap_or(true),
        tags: inp.tags,
        created_at: stamp.created_at.or(inp.created_at).unwrap_or(stamp.now),
        updated_at: stamp.now,
        client_certificate,
        tls_verify: inp.tls_verify,
        tls_verify_depth,
        ca_certificates,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteInput {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string_list")]
    protocols: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::opt_string_list")]
    methods: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::opt_string_list")]
    hosts: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient::opt_string_list")]
    paths: Option<Vec<String>>,
    #[serde(default)]
    headers: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    https_redirect_status_code: Option<i64>,
    #[serde(default)]
    regex_priority: Option<i64>,
    #[serde(default)]
    strip_path: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    path_handling: Option<String>,
    #[serde(default)]
    preserve_host: Option<bool>,
    #[serde(default)]
    request_buffering: Option<bool>,
    #[serde(default)]
    response_buffering: Option<bool>,
    #[serde(default)]
    service: Option<FkInput>,
    #[serde(default, deserialize_with = "lenient::opt_string_list")]
    tags: Option<Vec<String>>,
    #[serde(default)]
    created_at: Option<i64>,
    // Accepted because GET output may be sent back as input; the server sets it.
    #[serde(default, rename = "updated_at")]
    _updated_at: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_string_list")]
    snis: Option<Vec<String>>,
    // Stream matching fields Kong prints; only null until stream listeners exist.
    #[serde(default)]
    sources: Option<Value>,
    #[serde(default)]
    destinations: Option<Value>,
}

/// Checks one route host: a name with an optional port, and at most one wildcard label at the
/// leftmost or rightmost position.
fn check_route_host(h: &str) -> Result<(), String> {
    let name = match h.rsplit_once(':') {
        Some((n, p)) if !n.contains(':') => {
            if p.parse::<u16>().is_err() {
                return Err(format!("invalid port number: {h}"));
            }
            n
        }
        _ => h,
    };
    let stars = name.matches('*').count();
    if stars > 1 {
        return Err("only one wildcard must be specified".into());
    }
    if stars == 1 && !(name.starts_with("*.") || name.ends_with(".*")) {
        return Err("invalid wildcard: must be placed at leftmost or rightmost label".into());
    }
    let bare = name.trim_start_matches("*.").trim_end_matches(".*");
    if !valid_host(bare) {
        return Err(format!("invalid value: {h}"));
    }
    Ok(())
}

/// Builds a route from an Admin API body. `service` is the service from the URL
/// (`/services/{s}/routes`), which wins over one in the body.
pub fn route(
    v: &Value,
    stamp: &Stamp,
    state: &State,
    service: Option<Uuid>,
) -> Result<Route, FieldErrors> {
    let inp: RouteInput = parse(v)?;
    let mut errs = FieldErrors::new();
    let id = check_id(&inp.id, stamp, &mut errs);
    check_utf8_name("name", &inp.name, &mut errs);
    check_tags(&inp.tags, &mut errs);
    for (f, val) in [
        ("sources", &inp.sources),
        ("destinations", &inp.destinations),
    ] {
        if matches!(val, Some(v) if !v.is_null() && v.as_array().map(|a| !a.is_empty()).unwrap_or(true))
        {
            errs.add(
                f,
                "not supported yet (needs the stream listeners); only null is accepted",
            );
        }
    }
    let protocols: Vec<Protocol> = match inp.protocols {
        None => vec![Protocol::Http, Protocol::Https],
        Some(ps) => {
            let mut out = Vec::new();
            for (i, p) in ps.iter().enumerate() {
                let at = format!("protocols.{}", i + 1);
                match Protocol::parse(p) {
                    Some(pr) => out.push(pr),
                    None => errs.add(&at, unknown_protocol(p)),
                }
            }
            if out.is_empty() {
                errs.add("protocols", "length must be at least 1");
            }
            let web = out
                .iter()
                .any(|p| matches!(p, Protocol::Http | Protocol::Https));
            let grpc = out
                .iter()
                .any(|p| matches!(p, Protocol::Grpc | Protocol::Grpcs));
            if web && grpc {
                errs.add(
                    "protocols",
                    "these sets are mutually exclusive: ('http', 'https'), ('tcp', 'tls', 'udp'), ('tls_passthrough'), ('grpc', 'grpcs')",
                );
            }
            out
        }
    };
    let methods = inp.methods;
    for m in methods.iter().flatten() {
        if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase()) {
            errs.add("methods", format!("invalid value: {m}"));
        }
    }
    let hosts = inp.hosts.map(|hs| {
        hs.into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect::<Vec<_>>()
    });
    for h in hosts.iter().flatten() {
        if let Err(m) = check_route_host(h) {
            errs.add("hosts", m);
        }
    }
    let paths = inp.paths;
    for p in paths.iter().flatten() {
        if let Some(re) = p.strip_prefix('~') {
            if let Err(e) = regex::Regex::new(re) {
                errs.add("paths", format!("invalid regex: '{re}' ({e})"));
            }
        } else if !p.starts_with('/') {
            errs.add(
                "paths",
                "should start with: / (fixed path) or ~/ (regex path)",
            );
        }
    }
    let mut headers = None;
    if let Some(hs) = inp.headers.filter(|h| !h.is_empty()) {
        let mut out = BTreeMap::new();
        for (name, vals) in hs {
            let lname = name.to_ascii_lowercase();
            if lname == "host" {
                errs.add("headers", "cannot contain 'host' header, which must be specified in the 'hosts' attribute");
                continue;
            }
            let vals: Vec<String> = match vals {
                Value::String(s) => vec![s],
                Value::Array(a) => a
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    })
                    .collect(),
                other => vec![other.to_string()],
            };
            if vals.is_empty() {
                errs.add(&format!("headers.{name}"), "length must be at least 1");
            }
            for val in &vals {
                if let Some(re) = val.strip_prefix("~*") {
                    if let Err(e) = regex::Regex::new(re) {
                        errs.add(
                            &format!("headers.{name}"),
                            format!("invalid regex: '{re}' ({e})"),
                        );
                    }
                }
            }
            out.insert(lname, vals);
        }
        headers = Some(out);
    }
    let snis = inp.snis.filter(|s| !s.is_empty()).map(|s| {
        s.into_iter()
            .map(|n| n.to_ascii_lowercase())
            .collect::<Vec<_>>()
    });
    for n in snis.iter().flatten() {
        if let Err(m) = crate::entities::check_wildcard_host(n) {
            errs.add("snis", m);
        }
    }
    let is_grpc = protocols
        .iter()
        .any(|p| matches!(p, Protocol::Grpc | Protocol::Grpcs));
    if is_grpc {
        if inp.strip_path == Some(true) {
            errs.add(
                "strip_path",
                "cannot set 'strip_path' when 'protocols' is 'grpc' or 'grpcs'",
            );
        }
        if methods.as_ref().is_some_and(|m| !m.is_empty()) {
            errs.add(
                "methods",
                "cannot set 'methods' when 'protocols' is 'grpc' or 'grpcs'",
            );
        }
    }
    let secure = protocols
        .iter()
        .any(|p| matches!(p, Protocol::Https | Protocol::Grpcs));
    if snis.is_some() && !secure {
        errs.add_entity(
            "'snis' can only be set when 'protocols' is 'grpcs', 'https', 'tls' or 'tls_passthrough'",
        );
    }
    let unset = |v: &Option<Vec<String>>| v.as_ref().is_none_or(Vec::is_empty);
    if unset(&methods)
        && unset(&hosts)
        && unset(&paths)
        && headers.is_none()
        && (snis.is_none() || !secure)
    {
        errs.add_entity(if protocols.contains(&Protocol::Grpcs) {
            "must set one of 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'grpcs'"
        } else if protocols.contains(&Protocol::Grpc) {
            "must set one of 'hosts', 'headers', 'paths' when 'protocols' is 'grpc'"
        } else if protocols.contains(&Protocol::Https) {
            "must set one of 'methods', 'hosts', 'headers', 'paths', 'snis' when 'protocols' is 'https'"
        } else {
            "must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'"
        });
    }
    let https_redirect_status_code = match inp.https_redirect_status_code {
        None => 426,
        Some(c @ (426 | 301 | 302 | 307 | 308)) => c as u16,
        Some(_) => {
            errs.add(
                "https_redirect_status_code",
                "expected one of: 426, 301, 302, 307, 308",
            );
            426
        }
    };
    let path_handling = match inp.path_handling.as_deref() {
        None | Some("v0") => "v0".to_string(),
        Some("v1") => "v1".to_string(),
        Some(_) => {
            errs.add("path_handling", "expected one of: v0, v1");
            "v0".to_string()
        }
    };
    let service = match service {
        Some(id) => Some(ForeignKey { id }),
        None => resolve_fk(
            state,
            EntityKind::Service,
            "service",
            inp.service,
            &mut errs,
        ),
    };
    errs.into_result()?;
    Ok(Route {
        id,
        name: inp.name,
        protocols,
        methods,
        hosts,
        paths,
        headers,
        https_redirect_status_code,
        regex_priority: inp.regex_priority.unwrap_or(0),
        strip_path: inp.strip_path.unwrap_or(!is_grpc),
        path_handling,
        preserve_host: inp.preserve_host.unwrap_or(false),
        request_buffering: inp.request_buffering.unwrap_or(true),
        response_buffering: inp.response_buffering.unwrap_or(true),
        service,
        tags: inp.tags,
        created_at: stamp.created_at.or(inp.created_at).unwrap_or(stamp.now),
        updated_at: stamp.now,
        snis,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumerInput {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    username: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    custom_id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string_list")]
    tags: Option<Vec<String>>,
    #[serde(default)]
    created_at: Option<i64>,
    // Accepted because GET output may be sent back as input; the server sets it.
    #[serde(default, rename = "updated_at")]
    _updated_at: Option<i64>,
}

/// Builds a consumer from an Admin API body.
pub fn consumer(v: &Value, stamp: &Stamp) -> Result<Consumer, FieldErrors> {
    let inp: ConsumerInput = parse(v)?;
    let mut errs = FieldErrors::new();
    let id = check_id(&inp.id, stamp, &mut errs);
    check_tags(&inp.tags, &mut errs);
    check_len("username", inp.username.as_deref(), MAX_NAME_LEN, &mut errs);
    check_len(
        "custom_id",
        inp.custom_id.as_deref(),
        MAX_NAME_LEN,
        &mut errs,
    );
    let username = inp.username.filter(|s| !s.is_empty());
    let custom_id = inp.custom_id.filter(|s| !s.is_empty());
    if username.is_none() && custom_id.is_none() {
        errs.add_entity("at least one of these fields must be non-empty: 'custom_id', 'username'");
    }
    errs.into_result()?;
    Ok(Consumer {
        id,
        username,
        custom_id,
        tags: inp.tags,
        created_at: stamp.created_at.or(inp.created_at).unwrap_or(stamp.now),
        updated_at: stamp.now,
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyAuthInput {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    key: Option<String>,
    #[serde(default)]
    ttl: Option<i64>,
    #[serde(default, deserialize_with = "lenient::opt_string_list")]
    tags: Option<Vec<String>>,
    // The owner comes from the URL; a body's `consumer` is accepted and ignored.
    #[serde(default, rename = "consumer")]
    _consumer: Option<FkInput>,
    #[serde(default)]
    created_at: Option<i64>,
}

/// Builds a key-auth credential for `consumer` (from the URL).
pub fn key_auth(
    v: &Value,
    stamp: &Stamp,
    consumer: Uuid,
) -> Result<KeyAuthCredential, FieldErrors> {
    let inp: KeyAuthInput = parse(v)?;
    let mut errs = FieldErrors::new();
    let id = check_id(&inp.id, stamp, &mut errs);
    check_tags(&inp.tags, &mut errs);
    let key = match inp.key {
        None => stamp.generated_key.clone(),
        Some(k) if k.is_empty() => {
            errs.add("key", "length must be at least 1");
            k
        }
        Some(k) if check_len("key", Some(&k), MAX_NAME_LEN, &mut errs) => k,
        Some(k) => k,
    };
    let ttl = match inp.ttl {
        None | Some(0) => None,
        Some(t) if !(0..=100_000_000).contains(&t) => {
            errs.add("ttl", "value should be between 0 and 100000000");
            None
        }
        Some(_) => {
            errs.add(
                "ttl",
                "credential expiry is not supported yet; omit ttl or set it to 0",
            );
            None
        }
    };
    errs.into_result()?;
    Ok(KeyAuthCredential {
        id,
        consumer: ForeignKey { id: consumer },
        key,
        ttl,
        tags: inp.tags,
        created_at: stamp.created_at.or(inp.created_at).unwrap_or(stamp.now),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginInput {
    #[serde(default, deserialize_with = "lenient::opt_string")]
    id: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient::opt_string")]
    instance_name: Option<String>,
    #[serde(default)]
    config: Option<Value>,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default, deserialize_with = "lenient::opt_string_list")]
    protocols: Option<Vec<String>>,
    #[serde(default)]
    route: Option<FkInput>,
    #[serde(default)]
    service: Option<FkInput>,
    #[serde(default)]
    consumer: Option<FkInput>,
    #[serde(default, deserialize_with = "lenient::opt_string_list")]
    tags: Option<Vec<String>>,
    #[serde(default)]
    created_at: Option<i64>,
    // Accepted because GET output may be sent back as input; the server sets it.
    #[serde(default, rename = "updated_at")]
    _updated_at: Option<i64>,
}

/// Where a plugin is attached when created under a nested URL (`/routes/{r}/plugins`).
#[derive(Debug, Clone, Copy, Default)]
pub struct PluginScope {
    pub route: Option<Uuid>,
    pub service: Option<Uuid>,
    pub consumer: Option<Uuid>,
}

/// Builds a plugin from an Admin API body, validating its config against its schema.
pub fn plugin(
    v: &Value,
    stamp: &Stamp,
    state: &State,
    scope: PluginScope,
) -> Result<Plugin, FieldErrors> {
    let inp: PluginInput = parse(v)?;
    let mut errs = FieldErrors::new();
    let id = check_id(&inp.id, stamp, &mut errs);
    check_utf8_name("instance_name", &inp.instance_name, &mut errs);
    check_tags(&inp.tags, &mut errs);
    let name = match inp.name {
        None => {
            errs.add("name", "required field missing");
            String::new()
        }
        Some(n) => n,
    };
    let mut config = Value::Null;
    if !name.is_empty() {
        match plugins::validate(&name, inp.config.as_ref()) {
            Ok(c) => config = c,
            Err(e) => errs.merge(e),
        }
    }
    let protocols = match inp.protocols {
        None => vec![
            Protocol::Grpc,
            Protocol::Grpcs,
            Protocol::Http,
            Protocol::Https,
        ],
        Some(ps) => {
            let mut out = Vec::new();
            for (i, p) in ps.iter().enumerate() {
                match Protocol::parse(p) {
                    Some(pr) => out.push(pr),
                    None => errs.add(&format!("protocols.{}", i + 1), unknown_protocol(p)),
                }
            }
            out
        }
    };
    let fk = |given: Option<Uuid>, kind, field, inp, errs: &mut FieldErrors| match given {
        Some(id) => Some(ForeignKey { id }),
        None => resolve_fk(state, kind, field, inp, errs),
    };
    let route = fk(
        scope.route,
        EntityKind::Route,
        "route",
        inp.route,
        &mut errs,
    );
    let service = fk(
        scope.service,
        EntityKind::Service,
        "service",
        inp.service,
        &mut errs,
    );
    let consumer = fk(
        scope.consumer,
        EntityKind::Consumer,
        "consumer",
        inp.consumer,
        &mut errs,
    );
    if consumer.is_some() && !name.is_empty() && !plugins::allows_consumer_scope(&name) {
        // Kong's `no_consumer` type: `eq = null`.
        errs.add("consumer", "value must be null");
    }
    errs.into_result()?;
    Ok(Plugin {
        id,
        name,
        instance_name: inp.instance_name,
        config: ConfigValue(config),
        enabled: inp.enabled.unwrap_or(true),
        protocols,
        route,
        service,
        consumer,
        tags: inp.tags,
        created_at: stamp.created_at.or(inp.created_at).unwrap_or(stamp.now),
        updated_at: stamp.now,
    })
}

/// Maps an entity-building failure into the apply error the Admin API reports.
pub fn schema(e: FieldErrors) -> ApplyError {
    ApplyError::Schema(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stamp() -> Stamp {
        Stamp {
            id: Uuid::from_u128(1),
            now: 1_700_000_000,
            now_ms: 1_700_000_000_000,
            created_at: None,
            generated_key: "gen".into(),
            generated_secret: "gen".into(),
        }
    }

    #[test]
    fn service_url_shorthand_and_defaults() {
        let s = service(
            &json!({"name": "echo", "url": "http://echo:8080/base"}),
            &stamp(),
            &State::default(),
        )
        .unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.path.as_deref()),
            ("echo", 8080, Some("/base"))
        );
        assert_eq!(
            (
                s.retries,
                s.connect_timeout,
                s.read_timeout,
                s.write_timeout
            ),
            (5, 60000, 60000, 60000)
        );
        let s = service(&json!({"host": "example.com"}), &stamp(), &State::default()).unwrap();
        assert_eq!((s.port, s.path), (80, None));
        let s = service(
            &json!({"url": "http://127.0.0.1:9"}),
            &stamp(),
            &State::default(),
        )
        .unwrap();
        assert_eq!(s.path, None);
        let s = service(
            &json!({"url": "http://127.0.0.1:9/"}),
            &stamp(),
            &State::default(),
        )
        .unwrap();
        assert_eq!(s.path.as_deref(), Some("/"));
    }

    #[test]
    fn service_errors_name_fields() {
        // Kong reads a url without a scheme as a bare path.
        let e = service(&json!({"url": "not a url"}), &stamp(), &State::default()).unwrap_err();
        assert_eq!(e.to_json()["host"], "required field missing");
        assert_eq!(e.to_json()["path"], "should start with: /");
        let e = service(&json!({"url": "http://[bad"}), &stamp(), &State::default()).unwrap_err();
        assert!(e.to_json()["url"]
            .as_str()
            .unwrap()
            .starts_with("invalid url"));
        let e = service(
            &json!({"host": "a", "port": 70000, "retries": -1}),
            &stamp(),
            &State::default(),
        )
        .unwrap_err();
        assert!(e.to_json()["port"].is_string() && e.to_json()["retries"].is_string());
        let e = service(&json!({"host": "a", "foo": 1}), &stamp(), &State::default()).unwrap_err();
        assert_eq!(e.to_json()["foo"], "unknown field");
        let e = service(
            &json!({"name": "bad name", "host": "a"}),
            &stamp(),
            &State::default(),
        )
        .unwrap_err();
        assert!(e.to_json()["name"].is_string());
        let e = service(&json!({}), &stamp(), &State::default()).unwrap_err();
        assert_eq!(e.to_json()["host"], "required field missing");
    }

    #[test]
    fn route_validation() {
        let st = State::default();
        let r = route(&json!({"paths": ["/a"]}), &stamp(), &st, None).unwrap();
        assert!(r.strip_path && !r.preserve_host);
        assert_eq!(r.protocols, vec![Protocol::Http, Protocol::Https]);
        let e = route(&json!({}), &stamp(), &st, None).unwrap_err();
        assert!(e.to_json()["@entity"].is_array());
        let e = route(&json!({"paths": ["a"]}), &stamp(), &st, None).unwrap_err();
        assert!(e.to_json()["paths"].is_string());
        let e = route(&json!({"paths": ["~/a(["]}), &stamp(), &st, None).unwrap_err();
        assert!(e.to_json()["paths"]
            .as_str()
            .unwrap()
            .starts_with("invalid regex"));
        let e = route(&json!({"hosts": ["a.*.com"]}), &stamp(), &st, None).unwrap_err();
        assert!(e.to_json()["hosts"].as_str().unwrap().contains("wildcard"));
        let r = route(
            &json!({"paths": ["/a"], "path_handling": "v1"}),
            &stamp(),
            &st,
            None,
        )
        .unwrap();
        assert_eq!(r.path_handling, "v1");
        let e = route(
            &json!({"paths": ["/a"], "path_handling": "v2"}),
            &stamp(),
            &st,
            None,
        )
        .unwrap_err();
        assert!(e.to_json()["path_handling"].is_string());
        let e = route(&json!({"methods": ["get"]}), &stamp(), &st, None).unwrap_err();
        assert!(e.to_json()["methods"].is_string());
        let e = route(
            &json!({"paths": ["/"], "service": {"name": "nope"}}),
            &stamp(),
            &st,
            None,
        )
        .unwrap_err();
        assert!(e.to_json()["service"]["name"].is_string());
    }

    #[test]
    fn patch_merges_plugin_config() {
        let base = json!({"name": "rate-limiting", "config": {"minute": 5, "hour": 100}});
        let m = merge_patch(&base, &json!({"config": {"minute": 10}}));
        assert_eq!(m["config"], json!({"minute": 10, "hour": 100}));
    }

    #[test]
    fn names_and_tags_have_length_limits() {
        let long = "a".repeat(MAX_NAME_LEN + 1);
        let e = service(
            &json!({"name": long, "host": "h"}),
            &stamp(),
            &State::default(),
        )
        .unwrap_err();
        assert_eq!(e.to_json()["name"], "length must be at most 512");
        let ok = "a".repeat(MAX_NAME_LEN);
        assert!(service(
            &json!({"name": ok, "host": "h"}),
            &stamp(),
            &State::default()
        )
        .is_ok());
        let e = consumer(&json!({"username": "u".repeat(1_000_000)}), &stamp()).unwrap_err();
        assert_eq!(e.to_json()["username"], "length must be at most 512");
        let many: Vec<String> = (0..100_000).map(|i| format!("t{i}")).collect();
        let e = consumer(&json!({"username": "u", "tags": many}), &stamp()).unwrap_err();
        assert_eq!(e.to_json()["tags"], "length must be at most 128");
        let e = consumer(
            &json!({"username": "u", "tags": ["x".repeat(513)]}),
            &stamp(),
        )
        .unwrap_err();
        assert_eq!(e.to_json()["tags"], "length must be at most 512");
        let e = key_auth(&json!({"key": "k".repeat(513)}), &stamp(), Uuid::nil()).unwrap_err();
        assert_eq!(e.to_json()["key"], "length must be at most 512");
    }

    #[test]
    fn consumer_needs_username_or_custom_id() {
        assert!(consumer(&json!({}), &stamp()).is_err());
        assert!(consumer(&json!({"custom_id": "c1"}), &stamp()).is_ok());
    }

    #[test]
    fn key_auth_key_is_generated_when_absent() {
        let c = key_auth(&json!({}), &stamp(), Uuid::from_u128(9)).unwrap();
        assert_eq!(c.key, "gen");
        let c = key_auth(&json!({"key": 12345}), &stamp(), Uuid::from_u128(9)).unwrap();
        assert_eq!(c.key, "12345");
    }

    #[test]
    fn key_auth_cannot_be_consumer_scoped() {
        let st = State::default();
        let scope = PluginScope {
            consumer: Some(Uuid::from_u128(3)),
            ..Default::default()
        };
        let e = plugin(&json!({"name": "key-auth"}), &stamp(), &st, scope).unwrap_err();
        assert_eq!(e.to_json()["consumer"], "value must be null");
        assert_eq!(
            e.message(),
            "schema violation (consumer: value must be null)"
        );
    }
}
