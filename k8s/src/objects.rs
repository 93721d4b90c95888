//! Reading the manifests: multi-document YAML into Kubernetes objects, indexed by kind,
//! namespace and name, with Secrets' `data` decoded and `stringData` merged in as the API
//! server does.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Resource};
use crate::{MAX_MANIFEST_BYTES, MAX_OBJECTS};

/// One Kubernetes object.
#[derive(Debug, Clone)]
pub struct Object {
    pub kind: String,
    pub api_version: String,
    /// `default` when the manifest leaves it out (as `kubectl apply` does); empty for
    /// cluster-scoped kinds.
    pub namespace: String,
    pub name: String,
    pub uid: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The whole object as written.
    pub body: Value,
}

impl Object {
    pub fn resource(&self) -> Resource {
        Resource {
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// `apiVersion`'s group (`networking.k8s.io`), empty for the core group (`v1`).
    pub fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map_or("", |(group, _)| group)
    }

    /// `apiVersion`'s version (`v1`).
    pub fn version(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map_or(self.api_version.as_str(), |(_, v)| v)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.get(key).map(String::as_str)
    }

    /// A field by JSON pointer (`/spec/rules`).
    pub fn at(&self, pointer: &str) -> Option<&Value> {
        self.body.pointer(pointer).filter(|v| !v.is_null())
    }

    pub fn str_at(&self, pointer: &str) -> Option<&str> {
        self.at(pointer).and_then(Value::as_str)
    }
}

/// Kinds read by the translation, with the API group they must come from.
const KNOWN: &[(&str, &str)] = &[
    ("Ingress", "networking.k8s.io"),
    ("IngressClass", "networking.k8s.io"),
    ("Service", ""),
    ("Endpoints", ""),
    ("EndpointSlice", "discovery.k8s.io"),
    ("Secret", ""),
    ("KongPlugin", "configuration.konghq.com"),
    ("KongClusterPlugin", "configuration.konghq.com"),
    ("KongConsumer", "configuration.konghq.com"),
];

/// Kinds without a namespace.
const CLUSTER_SCOPED: &[&str] = &["IngressClass", "KongClusterPlugin"];

/// The objects of a file, by kind then `(namespace, name)`.
#[derive(Debug, Default)]
pub struct Store {
    by_kind: BTreeMap<String, BTreeMap<(String, String), Object>>,
}

impl Store {
    /// Reads every document of `text`. Kinds the translation does not read are skipped
    /// with a warning; a document that is not a Kubernetes object is an error.
    pub fn load(text: &str, warnings: &mut Vec<String>) -> Result<Store, Error> {
        if text.len() > MAX_MANIFEST_BYTES {
            return Err(Error::File(format!(
                "{} bytes, more than the {MAX_MANIFEST_BYTES} accepted",
                text.len()
            )));
        }
        let mut store = Store::default();
        let mut count = 0usize;
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let index = i + 1;
            let value = Value::deserialize(doc).map_err(|e| Error::Document {
                index,
                problem: format!("not YAML: {e}"),
            })?;
            let items = match &value {
                // An empty document (`---` at the end) is nothing.
                Value::Null => continue,
                Value::Object(o) if o.get("kind").and_then(Value::as_str) == Some("List") => {
                    match o.get("items") {
                        Some(Value::Array(items)) => items.clone(),
                        _ => {
                            return Err(Error::Document {
                                index,
                                problem: "a List without `items`".into(),
                            })
                        }
                    }
                }
                _ => vec![value],
            };
            for item in items {
                count += 1;
                if count > MAX_OBJECTS {
                    return Err(Error::File(format!("more than {MAX_OBJECTS} objects")));
                }
                let obj = object(index, item)?;
                store.add(obj, warnings)?;
            }
        }
        Ok(store)
    }

    fn add(&mut self, obj: Object, warnings: &mut Vec<String>) -> Result<(), Error> {
        let Some((_, group)) = KNOWN.iter().find(|(k, _)| *k == obj.kind) else {
            warnings.push(format!(
                "{}: ignored: the Kong Ingress Controller does not translate {} objects",
                obj.resource(),
                obj.kind
            ));
            return Ok(());
        };
        if obj.group() != *group {
            warnings.push(format!(
                "{}: ignored: apiVersion {} is not the {} the controller reads",
                obj.resource(),
                obj.api_version,
                if group.is_empty() {
                    "core group".to_string()
                } else {
                    format!("group {group}")
                }
            ));
            return Ok(());
        }
        let key = (obj.namespace.clone(), obj.name.clone());
        let table = self.by_kind.entry(obj.kind.clone()).or_default();
        if table.contains_key(&key) {
            return Err(Error::object(
                &obj.resource(),
                "appears twice in the manifests",
            ));
        }
        table.insert(key, obj);
        Ok(())
    }

    /// Every object of a kind, in namespace then name order.
    pub fn all<'a>(&'a self, kind: &str) -> impl Iterator<Item = &'a Object> + 'a {
        self.by_kind.get(kind).into_iter().flat_map(|t| t.values())
    }

    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<&Object> {
        self.by_kind
            .get(kind)?
            .get(&(namespace.to_string(), name.to_string()))
    }
}

fn string_map(
    v: Option<&Value>,
    what: &str,
    index: usize,
) -> Result<BTreeMap<String, String>, Error> {
    let mut out = BTreeMap::new();
    match v {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => {
            for (k, v) in o {
                let s = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    // The API server refuses these; so does the controller's decoder.
                    _ => {
                        return Err(Error::Document {
                            index,
                            problem: format!("metadata.{what}.{k}: expected a string"),
                        })
                    }
                };
                out.insert(k.clone(), s);
            }
        }
        Some(_) => {
            return Err(Error::Document {
                index,
                problem: format!("metadata.{what}: expected a map of strings"),
            })
        }
    }
    Ok(out)
}

fn object(index: usize, value: Value) -> Result<Object, Error> {
    let doc_err = |problem: &str| Error::Document {
        index,
        problem: format!("not a Kubernetes object: {problem}"),
    };
    let Value::Object(o) = &value else {
        return Err(doc_err("expected a map with apiVersion, kind and metadata"));
    };
    let kind = o
        .get("kind")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| doc_err("no `kind`"))?
        .to_string();
    let api_version = o
        .get("apiVersion")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| doc_err("no `apiVersion`"))?
        .to_string();
    let meta = o
        .get("metadata")
        .and_then(Value::as_object)
        .ok_or_else(|| doc_err(&format!("{kind} without `metadata`")))?;
    let name = meta
        .get("name")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| doc_err(&format!("{kind} without `metadata.name`")))?
        .to_string();
    let namespace = if CLUSTER_SCOPED.contains(&kind.as_str()) {
        String::new()
    } else {
        meta.get("namespace")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .unwrap_or("default")
            .to_string()
    };
    let uid = meta.get("uid").and_then(Value::as_str).map(str::to_string);
    let labels = string_map(meta.get("labels"), "labels", index)?;
    let annotations = string_map(meta.get("annotations"), "annotations", index)?;
    let mut obj = Object {
        kind,
        api_version,
        namespace,
        name,
        uid,
        labels,
        annotations,
        body: value,
    };
    if obj.kind == "Secret" {
        decode_secret(&mut obj)?;
    }
    Ok(obj)
}

/// Replaces a Secret's `data` by its decoded text, with `stringData` merged over it (the
/// API server's rule), so every reader sees plain strings.
fn decode_secret(obj: &mut Object) -> Result<(), Error> {
    let resource = obj.resource();
    let mut data = serde_json::Map::new();
    if let Some(d) = obj.body.get("data").filter(|v| !v.is_null()) {
        let Some(d) = d.as_object() else {
            return Err(Error::object(&resource, "data: expected a map"));
        };
        for (k, v) in d {
            let Some(s) = v.as_str() else {
                return Err(Error::object(
                    &resource,
                    format!("data.{k}: expected a base64 string"),
                ));
            };
            // kubectl folds long values over lines.
            let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .map_err(|_| {
                    // Not the decoder's message: it quotes a byte of the value.
                    Error::object(&resource, format!("data.{k}: not base64"))
                })?;
            let text = String::from_utf8(bytes)
                .map_err(|_| Error::object(&resource, format!("data.{k}: not UTF-8 text")))?;
            data.insert(k.clone(), Value::String(text));
        }
    }
    if let Some(d) = obj.body.get("stringData").filter(|v| !v.is_null()) {
        let Some(d) = d.as_object() else {
            return Err(Error::object(&resource, "stringData: expected a map"));
        };
        for (k, v) in d {
            let s = match v {
                Value::String(s) => s.clone(),
                // YAML reads `ttl: 30` as a number; the API server wants a string and
                // kubectl would refuse it. Accept its text.
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => {
                    return Err(Error::object(
                        &resource,
                        format!("stringData.{k}: expected a string"),
                    ))
                }
            };
            data.insert(k.clone(), Value::String(s));
        }
    }
    if let Value::Object(o) = &mut obj.body {
        o.remove("stringData");
        o.insert("data".into(), Value::Object(data));
    }
    Ok(())
}

/// A decoded Secret's value (after [`Store::load`]).
pub fn secret_value<'a>(secret: &'a Object, key: &str) -> Option<&'a str> {
    secret.body.get("data")?.get(key)?.as_str()
}

/// A decoded Secret's keys and values.
pub fn secret_data(secret: &Object) -> impl Iterator<Item = (&String, &str)> {
    secret
        .body
        .get("data")
        .and_then(Value::as_object)
        .into_iter()
        .flat_map(|m| m.iter().filter_map(|(k, v)| v.as_str().map(|s| (k, s))))
}
