//! `KongConsumer`s and their credential Secrets (kongstate/consumer.go, credentials.go):
//! - a consumer needs `username` or `custom_id`; its id is the controller's (from the
//!   username);
//! - each name in `credentials` is a Secret in the consumer's namespace labelled
//!   `konghq.com/credential: <type>`; its keys (data and stringData merged) fill the
//!   credential as go-kong's structs read them: known keys kept (`ttl` as a number), others
//!   dropped with a warning, the required ones checked (key-auth `key`, basic-auth and
//!   hmac-auth `username`, jwt `key` with `algorithm` defaulting to HS256, acl `group`);
//! - two credentials of a type with the same unique key are a conflict: the controller
//!   drops the consumers; here the whole translation stops and names both.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::class::Selection;
use crate::error::Error;
use crate::objects::{secret_data, Object, Store};
use crate::{ids, tags};

/// A credential type: its label value, its table, the keys it reads, the required ones,
/// and the key that must be unique across consumers.
struct CredType {
    label: &'static str,
    table: &'static str,
    keys: &'static [&'static str],
    required: &'static [&'static str],
    unique: Option<&'static str>,
}

const TYPES: &[CredType] = &[
    CredType {
        label: "key-auth",
        table: "keyauth_credentials",
        keys: &["id", "key", "ttl"],
        required: &["key"],
        unique: Some("key"),
    },
    CredType {
        label: "basic-auth",
        table: "basicauth_credentials",
        keys: &["id", "username", "password"],
        required: &["username"],
        unique: Some("username"),
    },
    CredType {
        label: "hmac-auth",
        table: "hmacauth_credentials",
        keys: &["id", "username", "secret"],
        required: &["username"],
        unique: Some("username"),
    },
    CredType {
        label: "jwt",
        table: "jwt_secrets",
        keys: &["id", "key", "algorithm", "rsa_public_key", "secret"],
        required: &["key"],
        unique: Some("key"),
    },
    CredType {
        label: "acl",
        table: "acls",
        keys: &["id", "group"],
        required: &["group"],
        unique: None,
    },
];

/// Credential types the controller knows that Tollgate has no plugin for.
const UNSUPPORTED: &[&str] = &["oauth2", "mtls-auth", "konnect-key-auth"];

const LABEL: &str = "konghq.com/credential";

/// The consumers made, with what plugins need to refer to them.
#[derive(Debug, Default)]
pub struct Consumers {
    pub json: Value,
    /// A KongConsumer `(namespace, name)` → the consumer's name as plugins refer to it
    /// (username, else custom_id).
    pub refs: BTreeMap<(String, String), String>,
}

fn credential(
    consumer: &Object,
    secret_name: &str,
    store: &Store,
    errors: &mut Vec<Error>,
    warnings: &mut Vec<String>,
) -> Option<(&'static CredType, Map<String, Value>, String)> {
    let res = consumer.resource();
    let Some(secret) = store.get("Secret", &consumer.namespace, secret_name) else {
        errors.push(Error::object(
            &res,
            format!(
                "credentials: Secret {}/{secret_name} is not in the manifests",
                consumer.namespace
            ),
        ));
        return None;
    };
    let sres = secret.resource();
    let Some(label) = secret.labels.get(LABEL) else {
        errors.push(Error::object(
            &sres,
            format!("used as a credential by {res}, but it has no {LABEL} label naming its type (key-auth, basic-auth, jwt, hmac-auth, acl)"),
        ));
        return None;
    };
    if UNSUPPORTED.contains(&label.as_str()) {
        errors.push(Error::object(
            &sres,
            format!("credential type {label:?} has no plugin in Tollgate (key-auth, basic-auth, jwt, hmac-auth and acl do)"),
        ));
        return None;
    }
    let Some(ty) = TYPES.iter().find(|t| t.label == label) else {
        errors.push(Error::object(
            &sres,
            format!("label {LABEL}: {label:?} is not a credential type"),
        ));
        return None;
    };
    let mut fields = Map::new();
    for (k, v) in secret_data(secret) {
        if !ty.keys.contains(&k.as_str()) {
            warnings.push(format!("{sres}: key {k:?} is not a {label} credential field: dropped, as the controller drops it"));
            continue;
        }
        let value = match k.as_str() {
            "ttl" => match v.trim().parse::<i64>() {
                Ok(n) => json!(n),
                Err(_) => {
                    errors.push(Error::object(
                        &sres,
                        format!("ttl: {v:?} is not an integer"),
                    ));
                    return None;
                }
            },
            _ => json!(v),
        };
        fields.insert(k.clone(), value);
    }
    for r in ty.required {
        if !fields.contains_key(*r) {
            errors.push(Error::object(
                &sres,
                format!("{label} credential is invalid: no {r}"),
            ));
            return None;
        }
    }
    if ty.label == "jwt"
        && fields
            .get("algorithm")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    {
        fields.insert("algorithm".into(), json!("HS256"));
    }
    fields.insert("tags".into(), json!(tags::of(secret)));
    Some((ty, fields, secret_name.to_string()))
}

/// Reads the selected KongConsumers.
pub fn translate(
    store: &Store,
    sel: &Selection,
    errors: &mut Vec<Error>,
    warnings: &mut Vec<String>,
) -> Consumers {
    let mut out = Consumers::default();
    let mut list = Vec::new();
    // (type, unique value) → who has it, for conflicts.
    let mut seen: BTreeMap<(&str, String), String> = BTreeMap::new();
    for kc in store.all("KongConsumer").filter(|c| sel.takes_annotated(c)) {
        let res = kc.resource();
        let username = kc
            .body
            .get("username")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let custom_id = kc
            .body
            .get("custom_id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let Some(reference) = username.or(custom_id) else {
            errors.push(Error::object(&res, "no username or custom_id specified"));
            continue;
        };
        if kc
            .body
            .get("consumerGroups")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
        {
            errors.push(Error::object(
                &res,
                "consumerGroups: consumer groups are a Kong Enterprise feature, not in Tollgate",
            ));
            continue;
        }
        let id = match username {
            Some(u) => ids::id("consumers", u),
            None => ids::id("consumers", &format!("custom_id:{reference}")),
        };
        let mut c = Map::new();
        c.insert("id".into(), json!(id));
        if let Some(u) = username {
            c.insert("username".into(), json!(u));
        }
        if let Some(ci) = custom_id {
            c.insert("custom_id".into(), json!(ci));
        }
        c.insert("tags".into(), json!(tags::of(kc)));
        let names: Vec<&str> = kc
            .body
            .get("credentials")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for secret_name in names {
            let Some((ty, mut fields, sname)) =
                credential(kc, secret_name, store, errors, warnings)
            else {
                continue;
            };
            if let Some(u) = ty.unique {
                let value = fields
                    .get(u)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let who = format!("{res} (Secret {}/{sname})", kc.namespace);
                if let Some(other) = seen.insert((ty.label, value), who.clone()) {
                    errors.push(Error::object(
                        &res,
                        format!("conflicting {} credentials: Secret {}/{sname} has the same {u} as {other}; the controller would drop both consumers", ty.label, kc.namespace),
                    ));
                    continue;
                }
            }
            if !fields.contains_key("id") {
                let key = format!("{}/{}/{sname}", kc.namespace, kc.name);
                fields.insert("id".into(), json!(ids::id(ty.table, &key)));
            }
            let entry = c.entry(ty.table).or_insert_with(|| json!([]));
            if let Value::Array(a) = entry {
                a.push(Value::Object(fields));
            }
        }
        out.refs.insert(
            (kc.namespace.clone(), kc.name.clone()),
            reference.to_string(),
        );
        list.push(Value::Object(c));
    }
    out.json = Value::Array(list);
    out
}
