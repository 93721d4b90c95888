//! Ingress TLS as certificates (translator/translate_certs.go): each `spec.tls[]` entry's
//! Secret (`kubernetes.io/tls`, `tls.crt` and `tls.key`, in the Ingress's namespace) becomes
//! a certificate whose id is the Secret's uid, with the entry's hosts as SNIs. The same
//! certificate named by several Ingresses is one certificate with all their hosts; a host
//! claimed by two different certificates is refused.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::class::Selection;
use crate::error::Error;
use crate::objects::{secret_value, Store};
use crate::{ids, tags};

pub fn translate(
    store: &Store,
    sel: &Selection,
    errors: &mut Vec<Error>,
    warnings: &mut Vec<String>,
) -> Value {
    // (cert, key) → (certificate entity, its SNIs).
    let mut certs: BTreeMap<(String, String), (Value, Vec<String>)> = BTreeMap::new();
    let mut sni_owner: BTreeMap<String, String> = BTreeMap::new();
    for ing in sel.ingresses(store) {
        let res = ing.resource();
        for (i, entry) in ing
            .at("/spec/tls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let hosts: Vec<&str> = entry
                .get("hosts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            // An entry without a Secret or without hosts gives no certificate (the
            // controller skips it too).
            let Some(secret_name) = entry.get("secretName").and_then(Value::as_str) else {
                continue;
            };
            if hosts.is_empty() {
                continue;
            }
            let Some(secret) = store.get("Secret", &ing.namespace, secret_name) else {
                errors.push(Error::object(
                    &res,
                    format!(
                        "spec.tls[{i}]: Secret {}/{secret_name} is not in the manifests",
                        ing.namespace
                    ),
                ));
                continue;
            };
            let (Some(cert), Some(key)) = (
                secret_value(secret, "tls.crt"),
                secret_value(secret, "tls.key"),
            ) else {
                errors.push(Error::object(
                    &secret.resource(),
                    format!("used for TLS by {res}, but it lacks tls.crt or tls.key"),
                ));
                continue;
            };
            let (cert, key) = (cert.trim().to_string(), key.trim().to_string());
            let id = secret
                .uid
                .as_deref()
                .and_then(|u| uuid::Uuid::parse_str(u).ok())
                .unwrap_or_else(|| {
                    ids::id(
                        "certificates",
                        &format!("{}/{}", secret.namespace, secret.name),
                    )
                });
            let slot = certs.entry((cert.clone(), key.clone())).or_insert_with(|| {
                (
                    json!({"id": id, "cert": cert, "key": key, "tags": tags::of(secret)}),
                    Vec::new(),
                )
            });
            let cert_id = slot.0["id"].as_str().unwrap_or_default().to_string();
            for host in hosts {
                match sni_owner.get(host) {
                    // The first (oldest Ingress) keeps it, as in the controller.
                    Some(owner) if *owner != cert_id => warnings.push(format!(
                        "{res}: spec.tls[{i}]: host {host} ignored: it already has the certificate of Secret id {owner}"
                    )),
                    Some(_) => {}
                    None => {
                        sni_owner.insert(host.to_string(), cert_id.clone());
                        slot.1.push(host.to_string());
                    }
                }
            }
        }
    }
    let mut out: Vec<Value> = certs
        .into_values()
        .map(|(mut c, mut snis)| {
            snis.sort();
            if !snis.is_empty() {
                c["snis"] = Value::Array(
                    snis.iter()
                        .map(|h| json!({"id": ids::id("snis", h), "name": h}))
                        .collect(),
                );
            }
            c
        })
        .collect();
    out.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    Value::Array(out)
}
