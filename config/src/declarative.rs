//! Kong's declarative configuration format (`_format_version: "3.0"`), in YAML or JSON.
//!
//! Import accepts Kong's nesting (routes and plugins under services, plugins under routes,
//! credentials and plugins under consumers) and top-level lists that refer to parents by name
//! or id. The result is a whole [`StateData`], loaded with one `Command::Replace`, which is
//! checked as a whole by apply. Export writes the same format back, nested as Kong does.

use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::entity::{EntityKind, Timestamp};
use crate::error::FieldErrors;
use crate::input::{self, PluginScope, Stamp};
use crate::state::{State, StateData};

/// Error loading a declarative file, naming where in the file it is.
#[derive(Debug, thiserror::Error)]
pub enum DeclarativeError {
    #[error("cannot parse declarative config: {0}")]
    Syntax(String),
    #[error("declarative config {path}: {}", .errors.message())]
    Invalid { path: String, errors: FieldErrors },
    #[error("declarative config: {0}")]
    Conflict(String),
}

/// Supplies what a pure crate cannot make: fresh ids and keys, and the time.
pub trait Stamps {
    fn id(&mut self) -> Uuid;
    fn key(&mut self) -> String;
    fn now(&self) -> Timestamp;
}

/// Deterministic stamps for tests and tools: ids counting up from the one after `.0`, keys
/// `k1`, `k2`, …, and the time 1, so two parses of the same file give the same state.
pub struct Sequence(pub u128);

impl Stamps for Sequence {
    fn id(&mut self) -> Uuid {
        self.0 += 1;
        Uuid::from_u128(self.0)
    }
    fn key(&mut self) -> String {
        format!("k{}", self.0)
    }
    fn now(&self) -> Timestamp {
        1
    }
}

fn stamp(s: &mut dyn Stamps) -> Stamp {
    Stamp {
        id: s.id(),
        now: s.now(),
        created_at: None,
        generated_key: s.key(),
    }
}

/// Parses a YAML or JSON declarative file into a complete state.
pub fn parse(text: &str, stamps: &mut dyn Stamps) -> Result<StateData, DeclarativeError> {
    // JSON is YAML too, but the JSON parser is an order of magnitude faster on the large
    // files an API-ops pipeline pushes.
    let doc: Value = if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| DeclarativeError::Syntax(e.to_string()))?
    } else {
        serde_yaml::from_str(text).map_err(|e| DeclarativeError::Syntax(e.to_string()))?
    };
    let Some(root) = doc.as_object() else {
        return Err(DeclarativeError::Syntax(
            "expected a mapping at the top".into(),
        ));
    };
    match root.get("_format_version").and_then(Value::as_str) {
        Some("1.1" | "2.1" | "3.0") => {}
        Some(v) => {
            return Err(DeclarativeError::Syntax(format!(
                "unsupported _format_version '{v}' (expected \"3.0\")"
            )))
        }
        None => {
            return Err(DeclarativeError::Syntax(
                "missing _format_version (expected \"3.0\")".into(),
            ))
        }
    }
    for k in root.keys() {
        if !matches!(
            k.as_str(),
            "_format_version"
                | "_transform"
                | "_comment"
                | "services"
                | "routes"
                | "consumers"
                | "plugins"
                | "keyauth_credentials"
        ) {
            return Err(DeclarativeError::Syntax(format!(
                "unsupported top-level key '{k}'"
            )));
        }
    }
    let mut st = State::default();
    let list = |k: &str| {
        root.get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut deferred_plugins: Vec<(String, Value, PluginScope)> = Vec::new();

    for (i, svc) in list("services").iter().enumerate() {
        let path = format!("services[{i}]");
        let (body, nested) = split(svc, &["routes", "plugins"]);
        let s = input::service(&body, &stamp(stamps)).map_err(|e| invalid(&path, e))?;
        let sid = s.id;
        put(&mut st, crate::Entity::Service(s))?;
        for (j, r) in nested
            .get("routes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let rpath = format!("{path}.routes[{j}]");
            let (rbody, rnested) = split(r, &["plugins"]);
            let route = input::route(&rbody, &stamp(stamps), &st, Some(sid))
                .map_err(|e| invalid(&rpath, e))?;
            let rid = route.id;
            put(&mut st, crate::Entity::Route(route))?;
            defer(
                &mut deferred_plugins,
                &rpath,
                &rnested,
                PluginScope {
                    route: Some(rid),
                    ..Default::default()
                },
            );
        }
        defer(
            &mut deferred_plugins,
            &path,
            &nested,
            PluginScope {
                service: Some(sid),
                ..Default::default()
            },
        );
    }
    for (i, r) in list("routes").iter().enumerate() {
        let path = format!("routes[{i}]");
        let (rbody, rnested) = split(r, &["plugins"]);
        let route =
            input::route(&rbody, &stamp(stamps), &st, None).map_err(|e| invalid(&path, e))?;
        let rid = route.id;
        put(&mut st, crate::Entity::Route(route))?;
        defer(
            &mut deferred_plugins,
            &path,
            &rnested,
            PluginScope {
                route: Some(rid),
                ..Default::default()
            },
        );
    }
    for (i, c) in list("consumers").iter().enumerate() {
        let path = format!("consumers[{i}]");
        let (body, nested) = split(c, &["keyauth_credentials", "plugins"]);
        let consumer = input::consumer(&body, &stamp(stamps)).map_err(|e| invalid(&path, e))?;
        let cid = consumer.id;
        put(&mut st, crate::Entity::Consumer(consumer))?;
        for (j, k) in nested
            .get("keyauth_credentials")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let cred = input::key_auth(k, &stamp(stamps), cid)
                .map_err(|e| invalid(&format!("{path}.keyauth_credentials[{j}]"), e))?;
            put(&mut st, crate::Entity::KeyAuth(cred))?;
        }
        defer(
            &mut deferred_plugins,
            &path,
            &nested,
            PluginScope {
                consumer: Some(cid),
                ..Default::default()
            },
        );
    }
    for (i, k) in list("keyauth_credentials").iter().enumerate() {
        let path = format!("keyauth_credentials[{i}]");
        let owner = k
            .get("consumer")
            .and_then(|c| {
                c.as_str()
                    .map(str::to_string)
                    .or_else(|| c.get("id").and_then(Value::as_str).map(str::to_string))
            })
            .and_then(|c| st.resolve(EntityKind::Consumer, &c))
            .ok_or_else(|| {
                invalid(
                    &path,
                    FieldErrors::single("consumer", "required field missing or unknown consumer"),
                )
            })?;
        let mut body = k.clone();
        if let Some(o) = body.as_object_mut() {
            o.remove("consumer");
        }
        let cred = input::key_auth(&body, &stamp(stamps), owner).map_err(|e| invalid(&path, e))?;
        put(&mut st, crate::Entity::KeyAuth(cred))?;
    }
    for (i, p) in list("plugins").iter().enumerate() {
        deferred_plugins.push((format!("plugins[{i}]"), p.clone(), PluginScope::default()));
    }
    for (path, body, scope) in deferred_plugins {
        let body = refs_to_objects(&body);
        let plugin =
            input::plugin(&body, &stamp(stamps), &st, scope).map_err(|e| invalid(&path, e))?;
        put(&mut st, crate::Entity::Plugin(plugin))?;
    }
    Ok(st.data().clone())
}

/// Kong's files name parents as plain strings (`service: my-svc`); input wants objects.
fn refs_to_objects(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(o) = v.as_object_mut() {
        for k in ["service", "route", "consumer"] {
            if let Some(Value::String(s)) = o.get(k).cloned() {
                o.insert(k.into(), json!({ "id": s }));
            }
        }
    }
    v
}

/// Queues the plugins nested under an entity (at `path` in the file) with that entity's scope:
/// plugins are built last, once everything they may refer to exists.
fn defer(
    out: &mut Vec<(String, Value, PluginScope)>,
    path: &str,
    nested: &Map<String, Value>,
    scope: PluginScope,
) {
    let plugins = nested.get("plugins").and_then(Value::as_array);
    for (k, p) in plugins.into_iter().flatten().enumerate() {
        out.push((format!("{path}.plugins[{k}]"), p.clone(), scope));
    }
}

fn split(v: &Value, nested_keys: &[&str]) -> (Value, Map<String, Value>) {
    let mut body = refs_to_objects(v);
    let mut nested = Map::new();
    if let Some(o) = body.as_object_mut() {
        for k in nested_keys {
            if let Some(x) = o.remove(*k) {
                nested.insert(k.to_string(), x);
            }
        }
    }
    (body, nested)
}

fn invalid(path: &str, errors: FieldErrors) -> DeclarativeError {
    DeclarativeError::Invalid {
        path: path.to_string(),
        errors,
    }
}

fn put(st: &mut State, e: crate::Entity) -> Result<(), DeclarativeError> {
    st.apply(crate::Command::Put {
        entity: e,
        mode: crate::PutMode::Create,
    })
    .map(|_| ())
    .map_err(|e| DeclarativeError::Conflict(e.to_string()))
}

/// Exports a state in Kong's declarative format (JSON value; callers choose YAML or JSON).
/// Routes, plugins and credentials are nested under their parents as Kong exports them.
pub fn export(st: &State) -> Value {
    let strip = |mut v: Value, keys: &[&str]| {
        if let Some(o) = v.as_object_mut() {
            for k in keys {
                o.remove(*k);
            }
        }
        v
    };
    let plugin_json = |p: &crate::Plugin, drop: &[&str]| {
        strip(serde_json::to_value(p).unwrap_or(Value::Null), drop)
    };
    let mut services = Vec::new();
    for s in st.services().values() {
        let mut sv = serde_json::to_value(s).unwrap_or(Value::Null);
        let routes: Vec<Value> = st
            .routes()
            .values()
            .filter(|r| r.service.map(|f| f.id) == Some(s.id))
            .map(|r| {
                let mut rv = strip(serde_json::to_value(r).unwrap_or(Value::Null), &["service"]);
                let ps: Vec<Value> = st
                    .plugins()
                    .values()
                    .filter(|p| {
                        p.route.map(|f| f.id) == Some(r.id)
                            && p.service.is_none()
                            && p.consumer.is_none()
                    })
                    .map(|p| plugin_json(p, &["route", "service", "consumer"]))
                    .collect();
                rv["plugins"] = Value::Array(ps);
                rv
            })
            .collect();
        let ps: Vec<Value> = st
            .plugins()
            .values()
            .filter(|p| {
                p.service.map(|f| f.id) == Some(s.id) && p.route.is_none() && p.consumer.is_none()
            })
            .map(|p| plugin_json(p, &["route", "service", "consumer"]))
            .collect();
        sv["routes"] = Value::Array(routes);
        sv["plugins"] = Value::Array(ps);
        services.push(sv);
    }
    let routes: Vec<Value> = st
        .routes()
        .values()
        .filter(|r| r.service.is_none())
        .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
        .collect();
    let consumers: Vec<Value> = st
        .consumers()
        .values()
        .map(|c| {
            let mut cv = serde_json::to_value(c).unwrap_or(Value::Null);
            let creds: Vec<Value> = st
                .keyauth_credentials()
                .values()
                .filter(|k| k.consumer.id == c.id)
                .map(|k| {
                    strip(
                        serde_json::to_value(k).unwrap_or(Value::Null),
                        &["consumer"],
                    )
                })
                .collect();
            cv["keyauth_credentials"] = Value::Array(creds);
            cv
        })
        .collect();
    // Everything not nested above: global and multi-scope plugins, referring by id.
    let plugins: Vec<Value> = st
        .plugins()
        .values()
        .filter(|p| {
            let scopes = [p.route.is_some(), p.service.is_some(), p.consumer.is_some()]
                .iter()
                .filter(|x| **x)
                .count();
            scopes != 1 || p.consumer.is_some()
        })
        .map(|p| serde_json::to_value(p).unwrap_or(Value::Null))
        .collect();
    json!({
        "_format_version": "3.0",
        "services": services,
        "routes": routes,
        "consumers": consumers,
        "plugins": plugins,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use Sequence as Seq;

    const KONG_FILE: &str = r#"
_format_version: "3.0"
services:
  - name: example-service
    url: http://echo:8080
    routes:
      - name: example-route
        paths: [/mock]
        plugins:
          - name: rate-limiting
            config: { minute: 5, policy: local }
    plugins:
      - name: key-auth
consumers:
  - username: alice
    keyauth_credentials:
      - key: alice-key
plugins:
  - name: rate-limiting
    config: { hour: 1000 }
"#;

    #[test]
    fn imports_kongs_nested_format() {
        let data = parse(KONG_FILE, &mut Seq(0)).unwrap();
        assert_eq!(data.services.len(), 1);
        assert_eq!(data.routes.len(), 1);
        assert_eq!(data.plugins.len(), 3);
        assert_eq!(
            data.keyauth_credentials.values().next().unwrap().key,
            "alice-key"
        );
        let st = State::from_data(data).unwrap();
        let exported = export(&st);
        let again = parse(&serde_json::to_string(&exported).unwrap(), &mut Seq(1000)).unwrap();
        // Ids are kept on re-import, so the export is a faithful round trip.
        assert_eq!(&again, st.data());
    }

    #[test]
    fn errors_name_the_place() {
        let bad = "_format_version: \"3.0\"\nservices:\n  - name: s\n    url: nope\n";
        let e = parse(bad, &mut Seq(0)).unwrap_err();
        assert!(e.to_string().contains("services[0]"), "{e}");
        assert!(parse("services: []", &mut Seq(0)).is_err());
    }
}
