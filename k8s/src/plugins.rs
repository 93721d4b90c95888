//! `KongPlugin`s and `KongClusterPlugin`s attached by `konghq.com/plugins`
//! (kongstate/kongstate.go `getPluginRelations`/`buildPlugins`, kongstate/plugin.go,
//! util/rels/relations.go):
//! - the annotation on an Ingress attaches to each of its routes, on a Service to its Kong
//!   services, on a KongConsumer to the consumer; a name is looked up as a KongPlugin in the
//!   referrer's namespace, then as a KongClusterPlugin;
//! - one plugin per combination: consumer × (service or route) when both are named, else
//!   each alone;
//! - `config`, or `configFrom.secretKeyRef` (JSON or YAML in a Secret), then `configPatches`;
//!   `disabled` → `enabled: false`; `protocols`; `instance_name` suffixed with the first 9
//!   hex digits of the SHA-256 of the combination so that each copy is unique;
//! - a KongClusterPlugin labelled `global: "true"` is a global plugin; two global ones of
//!   the same plugin are refused (the controller drops both);
//! - `konghq.com/rewrite` on an Ingress adds a request-transformer replacing the URI.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use crate::class::Selection;
use crate::consumers::Consumers;
use crate::error::Error;
use crate::ingress::KongService;
use crate::objects::{secret_value, Object, Store};
use crate::{annotations, ids, tags};

const PLUGINS: &str = "konghq.com/plugins";

/// What one KongPlugin is attached to.
#[derive(Default)]
struct Relations {
    consumers: Vec<String>,
    services: Vec<String>,
    routes: Vec<String>,
}

fn push_unique(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

/// Looks up a plugin named by `referrer`'s annotation: `(kind, namespace, name)`.
fn resolve<'a>(
    store: &'a Store,
    sel: &Selection,
    referrer: &Object,
    name: &str,
) -> Result<&'a Object, String> {
    if let Some((ns, _)) = name.split_once(':') {
        return Err(format!(
            "annotation {PLUGINS}: {name:?} names a plugin in namespace {ns:?}; cross-namespace references need a ReferenceGrant, which Tollgate does not read: put the KongPlugin in {:?}",
            referrer.namespace
        ));
    }
    if let Some(p) = store.get("KongPlugin", &referrer.namespace, name) {
        return Ok(p);
    }
    match store.get("KongClusterPlugin", "", name) {
        Some(p) if sel.takes_annotated(p) => Ok(p),
        _ => Err(format!(
            "annotation {PLUGINS} names {name:?}, which is neither a KongPlugin in namespace {:?} nor a KongClusterPlugin in the manifests",
            referrer.namespace
        )),
    }
}

fn config_of(store: &Store, p: &Object) -> Result<Value, String> {
    // An empty `config: {}` beside `configFrom` is no config (the controller's check).
    let config = p
        .at("/config")
        .filter(|c| c.as_object().is_none_or(|o| !o.is_empty()));
    let from = p.at("/configFrom");
    let patches: Vec<&Value> = p
        .at("/configPatches")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    match (config, from) {
        (Some(_), Some(_)) => Err("has both config and configFrom set".into()),
        (None, Some(f)) => {
            if !patches.is_empty() {
                return Err("configPatches patch `config`, and configFrom replaces it: use one or the other".into());
            }
            let text = secret_ref(store, p, f.get("secretKeyRef"), "configFrom")?;
            let v: Value = serde_json::from_str(&text)
                .or_else(|_| serde_yaml::from_str(&text))
                .map_err(|_| {
                    "configFrom: the Secret's value is neither JSON nor YAML".to_string()
                })?;
            if !v.is_object() {
                return Err("configFrom: the Secret's value is not a map".into());
            }
            Ok(v)
        }
        (c, None) => {
            let mut cfg = c.cloned().unwrap_or_else(|| json!({}));
            if !cfg.is_object() {
                return Err("config: expected a map".into());
            }
            for (i, patch) in patches.into_iter().enumerate() {
                let at = format!("configPatches[{i}]");
                let path = patch
                    .get("path")
                    .and_then(Value::as_str)
                    .filter(|s| s.is_empty() || s.starts_with('/'))
                    .ok_or_else(|| format!("{at}.path: expected a JSON pointer (/field)"))?;
                let text = secret_ref(store, p, patch.pointer("/valueFrom/secretKeyRef"), &at)?;
                let value: Value = serde_json::from_str(&text)
                    .map_err(|_| format!("{at}: the Secret's value is not JSON"))?;
                add_at(&mut cfg, path, value).map_err(|e| format!("{at}.path: {e}"))?;
            }
            Ok(cfg)
        }
    }
}

/// JSON Patch `add` at `path`, creating missing parent maps (the controller patches with
/// `EnsurePathExistsOnAdd`); `""` replaces the whole document, `-` appends to a list.
fn add_at(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let tokens: Vec<String> = path[1..]
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    let (last, parents) = tokens.split_last().ok_or("empty path")?;
    let mut here = doc;
    for t in parents {
        here = match here {
            Value::Object(o) => o.entry(t.clone()).or_insert_with(|| json!({})),
            Value::Array(a) => {
                let i: usize = t
                    .parse()
                    .map_err(|_| format!("{t:?} is not a list index"))?;
                a.get_mut(i)
                    .ok_or_else(|| format!("index {i} is past the list's end"))?
            }
            _ => return Err(format!("{t:?}: not inside a map or a list")),
        };
    }
    match here {
        Value::Object(o) => {
            o.insert(last.clone(), value);
        }
        Value::Array(a) if last == "-" => a.push(value),
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("{last:?} is not a list index"))?;
            if i > a.len() {
                return Err(format!("index {i} is past the list's end"));
            }
            a.insert(i, value);
        }
        _ => return Err(format!("{last:?}: not inside a map or a list")),
    }
    Ok(())
}

fn secret_ref(store: &Store, p: &Object, r: Option<&Value>, at: &str) -> Result<String, String> {
    let r = r.ok_or_else(|| format!("{at}: secretKeyRef is required"))?;
    let name = r
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at}.secretKeyRef.name is required"))?;
    let key = r
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("{at}.secretKeyRef.key is required"))?;
    let ns = if p.namespace.is_empty() {
        r.get("namespace").and_then(Value::as_str).ok_or_else(|| {
            format!("{at}.secretKeyRef.namespace is required for a KongClusterPlugin")
        })?
    } else {
        p.namespace.as_str()
    };
    let secret = store
        .get("Secret", ns, name)
        .ok_or_else(|| format!("{at}: Secret {ns}/{name} is not in the manifests"))?;
    secret_value(secret, key)
        .map(str::to_string)
        .ok_or_else(|| format!("{at}: no key {key:?} in Secret {ns}/{name}"))
}

/// The plugin entity before it is scoped.
fn base(store: &Store, p: &Object) -> Result<Map<String, Value>, String> {
    let name = p
        .body
        .get("plugin")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or("no plugin name (the `plugin` field)")?;
    for (field, why) in [
        ("ordering", "plugin ordering is a Kong Enterprise feature"),
        ("run_on", "run_on was removed in Kong 3.0"),
    ] {
        if p.body.get(field).is_some_and(|v| !v.is_null()) {
            return Err(format!("{field}: {why}; Tollgate does not support it"));
        }
    }
    let mut m = Map::new();
    m.insert("name".into(), json!(name));
    m.insert("config".into(), config_of(store, p)?);
    if p.body.get("disabled").and_then(Value::as_bool) == Some(true) {
        m.insert("enabled".into(), json!(false));
    }
    if let Some(protocols) = p.body.get("protocols").filter(|v| !v.is_null()) {
        m.insert("protocols".into(), protocols.clone());
    }
    if let Some(i) = p
        .body
        .get("instance_name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        m.insert("instance_name".into(), json!(i));
    }
    m.insert("tags".into(), json!(tags::of(p)));
    Ok(m)
}

fn scoped(
    base: &Map<String, Value>,
    service: Option<&str>,
    route: Option<&str>,
    consumer: Option<&str>,
    used: &mut Vec<String>,
) -> Value {
    let mut m = base.clone();
    let name = m
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut hashed = String::new();
    if let Some(s) = service {
        m.insert("service".into(), json!(s));
        hashed.push_str(&format!("_service-{s}"));
    }
    if let Some(r) = route {
        m.insert("route".into(), json!(r));
        hashed.push_str(&format!("_route-{r}"));
    }
    if let Some(c) = consumer {
        m.insert("consumer".into(), json!(c));
        hashed.push_str(&format!("_consumer-{c}"));
    }
    if let Some(inst) = m
        .get("instance_name")
        .and_then(Value::as_str)
        .map(str::to_string)
    {
        let sum: String = Sha256::digest(hashed.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut suffixed = format!("{inst}-{}", &sum[..9]);
        if used.contains(&suffixed) {
            suffixed = format!("{inst}-{sum}");
        }
        used.push(suffixed.clone());
        m.insert("instance_name".into(), json!(suffixed));
    }
    m.insert(
        "id".into(),
        json!(ids::id(
            "plugins",
            &ids::plugin_key(&name, service, route, consumer)
        )),
    );
    Value::Object(m)
}

/// The plugins of the translation, scoped by their relations.
pub fn translate(
    store: &Store,
    sel: &Selection,
    services: &[KongService],
    consumers: &Consumers,
    errors: &mut Vec<Error>,
) -> Value {
    // (kind, namespace, name) of the plugin object → its relations.
    // Keyed by the plugin object and the referrer's namespace: a KongClusterPlugin used from
    // two namespaces gives two sets of relations, as the controller keys them
    // (`<referrer namespace>:<name>`).
    let mut relations: BTreeMap<(String, String, String, String), Relations> = BTreeMap::new();
    let mut attach = |referrer: &Object, f: &mut dyn FnMut(&mut Relations)| {
        let Some(list) = referrer.annotation(PLUGINS) else {
            return;
        };
        for name in annotations::csv(list) {
            match resolve(store, sel, referrer, &name) {
                Ok(p) => f(relations
                    .entry((
                        p.kind.clone(),
                        p.namespace.clone(),
                        p.name.clone(),
                        referrer.namespace.clone(),
                    ))
                    .or_default()),
                Err(e) => errors.push(Error::object(&referrer.resource(), e)),
            }
        }
    };
    let mut out = Vec::new();
    for ing in sel.ingresses(store) {
        let routes: Vec<&str> = services
            .iter()
            .flat_map(|s| &s.routes)
            .filter(|r| r.ingress == (ing.namespace.clone(), ing.name.clone()))
            .map(|r| r.name.as_str())
            .collect();
        attach(ing, &mut |r| {
            for name in &routes {
                push_unique(&mut r.routes, name);
            }
        });
    }
    for svc in store.all("Service") {
        let kong: Vec<&str> = services
            .iter()
            .filter(|s| s.namespace == svc.namespace && s.svc_name == svc.name)
            .map(|s| s.name.as_str())
            .collect();
        if kong.is_empty() {
            continue;
        }
        attach(svc, &mut |r| {
            for name in &kong {
                push_unique(&mut r.services, name);
            }
        });
    }
    for kc in store.all("KongConsumer").filter(|c| sel.takes_annotated(c)) {
        let Some(reference) = consumers.refs.get(&(kc.namespace.clone(), kc.name.clone())) else {
            continue;
        };
        attach(kc, &mut |r| push_unique(&mut r.consumers, reference));
    }
    for ((kind, ns, name, _), r) in &relations {
        let Some(p) = store.get(kind, ns, name) else {
            continue;
        };
        let base = match base(store, p) {
            Ok(b) => b,
            Err(e) => {
                errors.push(Error::object(&p.resource(), e));
                continue;
            }
        };
        let mut used = Vec::new();
        let targets = r.services.len() + r.routes.len();
        if !r.consumers.is_empty() {
            for c in &r.consumers {
                if targets == 0 {
                    out.push(scoped(&base, None, None, Some(c), &mut used));
                }
                for s in &r.services {
                    out.push(scoped(&base, Some(s), None, Some(c), &mut used));
                }
                for rt in &r.routes {
                    out.push(scoped(&base, None, Some(rt), Some(c), &mut used));
                }
            }
        } else {
            for s in &r.services {
                out.push(scoped(&base, Some(s), None, None, &mut used));
            }
            for rt in &r.routes {
                out.push(scoped(&base, None, Some(rt), None, &mut used));
            }
        }
    }
    // konghq.com/rewrite: a request-transformer on each route of the Ingress.
    for ing in sel.ingresses(store) {
        let Some(uri) = ing.annotation("konghq.com/rewrite") else {
            continue;
        };
        let uri = if uri.is_empty() { "/" } else { uri };
        let template = match rewrite_template(uri) {
            Ok(t) => t,
            Err(e) => {
                errors.push(Error::object(
                    &ing.resource(),
                    format!("annotation konghq.com/rewrite: {e}"),
                ));
                continue;
            }
        };
        for r in services.iter().flat_map(|s| &s.routes) {
            if r.ingress != (ing.namespace.clone(), ing.name.clone()) {
                continue;
            }
            let mut m = Map::new();
            m.insert("name".into(), json!("request-transformer"));
            m.insert("config".into(), json!({"replace": {"uri": template}}));
            m.insert("tags".into(), json!(tags::of(ing)));
            out.push(scoped(&m, None, Some(&r.name), None, &mut Vec::new()));
        }
    }
    // Global KongClusterPlugins.
    let mut globals: BTreeMap<String, Vec<&Object>> = BTreeMap::new();
    for p in store
        .all("KongClusterPlugin")
        .filter(|p| sel.takes_annotated(p))
    {
        if p.labels.get("global").map(String::as_str) == Some("true") {
            let name = p
                .body
                .get("plugin")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            globals.entry(name).or_default().push(p);
        }
    }
    for (name, list) in globals {
        if list.len() > 1 {
            let names: Vec<String> = list.iter().map(|p| p.name.clone()).collect();
            for p in &list {
                errors.push(Error::object(
                    &p.resource(),
                    format!("more than one global KongClusterPlugin for plugin {name:?} ({}); the controller drops them all", names.join(", ")),
                ));
            }
            continue;
        }
        match base(store, list[0]) {
            Ok(mut b) => {
                // A global plugin is applied once: no instance_name suffix.
                let id = ids::id("plugins", &ids::plugin_key(&name, None, None, None));
                b.insert("id".into(), json!(id));
                out.push(Value::Object(b));
            }
            Err(e) => errors.push(Error::object(&list[0].resource(), e)),
        }
    }
    Value::Array(out)
}

/// `konghq.com/rewrite`'s value as a request-transformer template: `$1` → the first
/// capture, `\$` → `$` (subtranslator/ingress.go `generateRewriteURIConfig`).
pub fn rewrite_template(uri: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = uri.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, '$')) => out.push('$'),
                Some((j, other)) => return Err(format!("unexpected {other} at pos {j}")),
                None => return Err("unexpected end of string".into()),
            },
            '$' => {
                let mut digits = String::new();
                while let Some((_, d)) = chars.peek().copied().filter(|(_, d)| d.is_ascii_digit()) {
                    digits.push(d);
                    chars.next();
                }
                if digits.is_empty() {
                    return match chars.peek() {
                        Some((j, other)) => Err(format!("unexpected {other} at pos {j}")),
                        None => Err("unexpected end of string".into()),
                    };
                }
                out.push_str(&format!("$(uri_captures[{digits}])"));
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::rewrite_template;

    #[test]
    fn rewrite_templates_are_the_controllers() {
        assert_eq!(
            rewrite_template("/x/$1/y").unwrap(),
            "/x/$(uri_captures[1])/y"
        );
        assert_eq!(rewrite_template("/a\\$b").unwrap(), "/a$b");
        assert_eq!(rewrite_template("/$12").unwrap(), "/$(uri_captures[12])");
        assert!(rewrite_template("/$x").is_err());
        assert!(rewrite_template("/\\a").is_err());
        assert!(rewrite_template("/$").is_err());
    }
}
