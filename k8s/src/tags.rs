//! The controller's tags: every entity names the Kubernetes object it came from
//! (`k8s-name:`, `k8s-namespace:`, `k8s-kind:`, `k8s-uid:`, `k8s-group:`, `k8s-version:`),
//! then the object's `konghq.com/tags` annotation.

use serde_json::Value;

use crate::objects::Object;

/// The tags of entities made from `obj` (KIC's `util.GenerateTagsForObject`).
pub fn of(obj: &Object) -> Vec<String> {
    let mut tags = vec![format!("k8s-name:{}", obj.name)];
    if !obj.namespace.is_empty() {
        tags.push(format!("k8s-namespace:{}", obj.namespace));
    }
    tags.push(format!("k8s-kind:{}", obj.kind));
    if let Some(uid) = &obj.uid {
        tags.push(format!("k8s-uid:{uid}"));
    }
    if !obj.group().is_empty() {
        tags.push(format!("k8s-group:{}", obj.group()));
    }
    tags.push(format!("k8s-version:{}", obj.version()));
    for t in crate::annotations::csv(obj.annotation("konghq.com/tags").unwrap_or("")) {
        // An apply's ownership tag is the apply's to give: one written by hand would hand
        // the entity to another set, whose next apply would delete it.
        if t.starts_with("k8s-apply:") {
            continue;
        }
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    tags
}

/// Tags naming an object absent from the manifests (a Service known only by an Ingress's
/// backend and a `--backend` mapping).
pub fn of_missing(kind: &str, namespace: &str, name: &str) -> Vec<String> {
    vec![
        format!("k8s-name:{name}"),
        format!("k8s-namespace:{namespace}"),
        format!("k8s-kind:{kind}"),
        "k8s-version:v1".to_string(),
    ]
}

/// Which object an entity of the output came from, read back from its tags (to name it in
/// errors found after translation).
pub fn resource_of(entity: &Value) -> Option<crate::Resource> {
    let tags = entity.get("tags")?.as_array()?;
    let find = |prefix: &str| {
        tags.iter()
            .filter_map(Value::as_str)
            .find_map(|t| t.strip_prefix(prefix))
            .map(str::to_string)
    };
    Some(crate::Resource {
        kind: find("k8s-kind:")?,
        namespace: find("k8s-namespace:").unwrap_or_default(),
        name: find("k8s-name:")?,
    })
}

/// Adds `tag` to every entity of a declarative file, nested ones included.
pub fn add_everywhere(doc: &mut Value, tag: &str) {
    let Value::Object(root) = doc else { return };
    for (key, list) in root.iter_mut() {
        if key.starts_with('_') {
            continue;
        }
        add_to_list(list, tag);
    }
}

fn add_to_list(list: &mut Value, tag: &str) {
    let Value::Array(items) = list else { return };
    for item in items {
        let Value::Object(o) = item else { continue };
        for (_, v) in o.iter_mut() {
            // Nested entity lists (routes, targets, credentials, snis).
            if v.as_array()
                .is_some_and(|a| a.iter().all(Value::is_object) && !a.is_empty())
            {
                add_to_list(v, tag);
            }
        }
        let tags = o.entry("tags").or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(t) = tags {
            if !t.iter().any(|x| x.as_str() == Some(tag)) {
                t.push(Value::String(tag.to_string()));
            }
        }
    }
}
