//! The translation against the Kong Ingress Controller's own golden files: the same
//! manifests must give the same Kong entities, names, ids, tags and fields.
//!
//! Deliberate differences, removed before comparing (each in the README's "Differences
//! from Kong"):
//! - an upstream whose Service has no endpoints in the manifests gets the target
//!   `<svc>.<ns>.svc:<port>` (the controller leaves it empty and Kong answers 503);
//! - every entity has an id (the controller leaves upstreams, targets, credentials and
//!   SNIs to Kong, which makes random ones; ours are derived from their keys so that a
//!   second apply changes nothing);
//! - an SNI nested in its certificate does not repeat `certificate: {id}`.

use std::path::Path;

use serde_json::Value;
use tollgate_k8s::{translate, Options};

/// Removes from `ours` what the golden file leaves out by design (see the module doc).
fn strip_deliberate(ours: &mut Value, golden: &Value) {
    match (ours, golden) {
        (Value::Object(o), Value::Object(g)) => {
            if !g.contains_key("id") {
                o.remove("id");
            }
            if !g.contains_key("targets") {
                o.remove("targets");
            }
            for (k, v) in o.iter_mut() {
                if let Some(gv) = g.get(k) {
                    strip_deliberate(v, gv);
                }
            }
        }
        (Value::Array(o), Value::Array(g)) => {
            // Pair entries by name where they have one (lists are compared sorted).
            for item in o.iter_mut() {
                let key = entry_key(item);
                if let Some(gi) = g.iter().find(|x| entry_key(x) == key) {
                    strip_deliberate(item, gi);
                }
            }
        }
        _ => {}
    }
}

fn entry_key(v: &Value) -> String {
    for k in [
        "name",
        "username",
        "custom_id",
        "key",
        "group",
        "target",
        "id",
    ] {
        if let Some(s) = v.get(k).and_then(Value::as_str) {
            return format!("{k}={s}");
        }
    }
    String::new()
}

/// Sorts lists of entities so that order does not matter, and drops the SNIs' repeated
/// certificate reference.
fn canonical(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::Array(snis)) = o.get_mut("snis") {
                for s in snis.iter_mut() {
                    if let Value::Object(so) = s {
                        so.remove("certificate");
                    }
                }
            }
            for (_, x) in o.iter_mut() {
                canonical(x);
            }
        }
        Value::Array(a) => {
            for x in a.iter_mut() {
                canonical(x);
            }
            if a.iter().all(Value::is_object) {
                a.sort_by_key(|x| x.to_string());
            }
        }
        _ => {}
    }
}

fn case(name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/kic-golden")
        .join(name);
    let input = std::fs::read_to_string(dir.join("in.yaml")).unwrap();
    let golden: Value =
        serde_yaml::from_str(&std::fs::read_to_string(dir.join("default_golden.yaml")).unwrap())
            .unwrap();
    let mut ours = match translate(&input, &Options::default()) {
        Ok(t) => t.config,
        Err(e) => panic!("{name}: {e}"),
    };
    canonical(&mut ours);
    let mut golden = golden;
    canonical(&mut golden);
    strip_deliberate(&mut ours, &golden);
    canonical(&mut ours);
    if ours != golden {
        panic!(
            "{name}: differs from the controller\n--- controller\n{}\n--- ours\n{}",
            serde_yaml::to_string(&golden).unwrap(),
            serde_yaml::to_string(&ours).unwrap()
        );
    }
}

macro_rules! cases {
    ($($test:ident => $dir:literal,)*) => {
        $(#[test] fn $test() { case($dir); })*
    };
}

cases! {
    credentials => "credentials",
    empty_path => "ingress-v1-empty-path",
    ingress_class_annotation => "ingress-v1-ingress-class-annotation",
    multiple_ports_for_one_service => "ingress-v1-multiple-ports-for-one-service",
    ports_defined_by_name => "ingress-v1-ports-defined-by-name",
    regex_prefix_exact_rule => "ingress-v1-regex-prefix-exact-rule",
    regex_prefixed_path => "ingress-v1-regex-prefixed-path",
    rule_with_tls => "ingress-v1-rule-with-tls",
    rule_with_tls_and_consumer => "ingress-v1-rule-with-tls-and-consumer",
    single_service_in_multiple_ingresses => "ingress-v1-single-service-in-multiple-ingresses",
    acme_like_path => "ingress-v1-with-acme-like-path",
    default_backend => "ingress-v1-with-default-backend",
    consumer_with_custom_id => "kongconsumer-with-custom-id",
    plugin_instance_name => "kongplugin-instance-name",
}
