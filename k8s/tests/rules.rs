//! Each translation rule on a small manifest, with the controller's behaviour as the
//! expected output (facts from kubernetes-ingress-controller's translator and kongstate
//! packages and their tests; sources are named in each module's doc).

use serde_json::{json, Value};
use tollgate_k8s::{translate, Options};

fn with(opts: &Options, yaml: &str) -> (Value, Vec<String>) {
    match translate(yaml, opts) {
        Ok(t) => (t.config, t.warnings),
        Err(e) => panic!("refused: {e}"),
    }
}

fn t(yaml: &str) -> Value {
    with(&Options::default(), yaml).0
}

fn warnings(yaml: &str) -> Vec<String> {
    with(&Options::default(), yaml).1
}

fn err(yaml: &str) -> String {
    match translate(yaml, &Options::default()) {
        Ok(t) => panic!("accepted: {}", t.config),
        Err(e) => e.to_string(),
    }
}

fn ingress(annotations: &str, spec_class: &str, path: &str, path_type: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: ing
  namespace: ns
  annotations:
{annotations}
spec:
{spec_class}
  rules:
  - host: example.com
    http:
      paths:
      - path: {path}
        pathType: {path_type}
        backend:
          service:
            name: svc
            port:
              number: 80
"
    )
}

fn simple(annotations: &str) -> String {
    ingress(annotations, "  ingressClassName: kong", "/foo", "Prefix")
}

fn route(doc: &Value) -> &Value {
    &doc["services"][0]["routes"][0]
}

#[test]
fn routes_have_the_controllers_names_and_defaults() {
    let doc = t(&simple("    x: y"));
    let s = &doc["services"][0];
    assert_eq!(s["name"], "ns.svc.80");
    assert_eq!(s["host"], "svc.ns.80.svc");
    assert_eq!(s["retries"], 5);
    assert_eq!(s["read_timeout"], 60000);
    let r = route(&doc);
    assert_eq!(r["name"], "ns.ing.svc.example.com.80");
    assert_eq!(r["paths"], json!(["/foo/", "~/foo$"]));
    assert_eq!(r["hosts"], json!(["example.com"]));
    // Kong's defaults are strip_path true and preserve_host false; the controller's are not.
    assert_eq!(r["strip_path"], false);
    assert_eq!(r["preserve_host"], true);
    assert_eq!(doc["upstreams"][0]["name"], "svc.ns.80.svc");
    // Without endpoints or a --backend, cluster DNS finds the Service.
    assert_eq!(doc["upstreams"][0]["targets"][0]["target"], "svc.ns.svc:80");
}

#[test]
fn a_wildcard_host_is_an_underscore_in_the_route_name() {
    let doc = t(&simple("    x: y").replace("host: example.com", "host: '*.example.com'"));
    assert_eq!(route(&doc)["name"], "ns.ing.svc._.example.com.80");
    assert_eq!(route(&doc)["hosts"], json!(["*.example.com"]));
}

#[test]
fn ingress_class_selection() {
    // The annotation wins over spec.ingressClassName.
    let y = ingress(
        "    kubernetes.io/ingress.class: nginx",
        "  ingressClassName: kong",
        "/",
        "Prefix",
    );
    let (doc, w) = with(&Options::default(), &y);
    assert!(doc.get("services").is_none());
    assert!(
        w[0].contains("Ingress ns/ing: ignored: its ingress class is not \"kong\""),
        "{w:?}"
    );
    let y = ingress(
        "    kubernetes.io/ingress.class: kong",
        "  ingressClassName: nginx",
        "/",
        "Prefix",
    );
    assert!(t(&y).get("services").is_some());
    // Neither: taken only when IngressClass kong is the default.
    let none = ingress("    x: y", "  x: y", "/", "Prefix").replace("  x: y\n  rules", "  rules");
    assert!(t(&none).get("services").is_none());
    let default_class = "---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: kong
  annotations:
    ingressclass.kubernetes.io/is-default-class: \"true\"
spec:
  controller: ingress-controllers.konghq.com/kong
";
    assert!(t(&format!("{none}{default_class}"))
        .get("services")
        .is_some());
    // --ingress-class picks another class.
    let opts = Options {
        ingress_class: "internal".into(),
        ..Options::default()
    };
    let y = ingress("    x: y", "  ingressClassName: internal", "/", "Prefix");
    assert!(with(&opts, &y).0.get("services").is_some());
}

#[test]
fn consumers_need_the_class_annotation_unless_the_class_is_the_default() {
    let c = "apiVersion: configuration.konghq.com/v1
kind: KongConsumer
metadata:
  name: alice
  namespace: ns
username: alice
";
    assert!(t(c).get("consumers").is_none());
    assert!(warnings(c)[0].contains(
        "KongConsumer ns/alice: ignored: it needs the annotation kubernetes.io/ingress.class: kong"
    ));
    let annotated = c.replace(
        "  namespace: ns\n",
        "  namespace: ns\n  annotations:\n    kubernetes.io/ingress.class: kong\n",
    );
    assert_eq!(t(&annotated)["consumers"][0]["username"], "alice");
}

#[test]
fn ingress_annotations_set_route_fields() {
    let doc = t(&simple(
        "    konghq.com/strip-path: \"true\"
    konghq.com/preserve-host: \"false\"
    konghq.com/protocols: https
    konghq.com/https-redirect-status-code: \"301\"
    konghq.com/regex-priority: \"10\"
    konghq.com/methods: get,post
    konghq.com/snis: example.com
    konghq.com/request-buffering: \"false\"
    konghq.com/response-buffering: \"false\"
    konghq.com/headers.x-env: a, b
    konghq.com/path-handling: v1
    konghq.com/host-aliases: alias.example.com",
    ));
    let r = route(&doc);
    assert_eq!(r["strip_path"], true);
    assert_eq!(r["preserve_host"], false);
    assert_eq!(r["protocols"], json!(["https"]));
    assert_eq!(r["https_redirect_status_code"], 301);
    assert_eq!(r["regex_priority"], 10);
    assert_eq!(r["methods"], json!(["GET", "POST"]));
    assert_eq!(r["snis"], json!(["example.com"]));
    assert_eq!(r["request_buffering"], false);
    assert_eq!(r["response_buffering"], false);
    assert_eq!(r["headers"], json!({"x-env": ["a", "b"]}));
    assert_eq!(r["path_handling"], "v1");
    assert_eq!(r["hosts"], json!(["example.com", "alias.example.com"]));
}

#[test]
fn force_ssl_redirect_is_302_to_https() {
    let doc = t(&simple(
        "    ingress.kubernetes.io/force-ssl-redirect: \"true\"",
    ));
    assert_eq!(route(&doc)["https_redirect_status_code"], 302);
    assert_eq!(route(&doc)["protocols"], json!(["https"]));
}

#[test]
fn values_the_controller_ignores_are_ignored_with_a_warning() {
    let y = simple(
        "    konghq.com/regex-priority: high\n    konghq.com/https-redirect-status-code: \"418\"",
    );
    let (doc, w) = with(&Options::default(), &y);
    assert_eq!(route(&doc)["regex_priority"], 0);
    assert_eq!(route(&doc)["https_redirect_status_code"], 426);
    assert!(
        w.iter().any(|w| w
            .contains("Ingress ns/ing: annotation konghq.com/regex-priority: \"high\" ignored")),
        "{w:?}"
    );
}

fn service(annotations: &str, spec: &str) -> String {
    format!(
        "---
apiVersion: v1
kind: Service
metadata:
  name: svc
  namespace: ns
  annotations:
{annotations}
spec:
{spec}
"
    )
}

#[test]
fn service_annotations_set_service_and_upstream_fields() {
    let y = simple("    x: y")
        + &service(
            "    konghq.com/protocol: https
    konghq.com/path: /api
    konghq.com/connect-timeout: \"1000\"
    konghq.com/read-timeout: \"2000\"
    konghq.com/write-timeout: \"3000\"
    konghq.com/retries: \"1\"
    konghq.com/tls-verify: \"true\"
    konghq.com/host-header: internal.example",
            "  ports:\n  - port: 80",
        );
    let doc = t(&y);
    let s = &doc["services"][0];
    assert_eq!(s["protocol"], "https");
    assert_eq!(s["path"], "/api");
    assert_eq!(s["connect_timeout"], 1000);
    assert_eq!(s["read_timeout"], 2000);
    assert_eq!(s["write_timeout"], 3000);
    assert_eq!(s["retries"], 1);
    assert_eq!(s["tls_verify"], true);
    assert_eq!(doc["upstreams"][0]["host_header"], "internal.example");
    // Tags name the Kubernetes Service.
    assert_eq!(
        s["tags"],
        json!([
            "k8s-name:svc",
            "k8s-namespace:ns",
            "k8s-kind:Service",
            "k8s-version:v1"
        ])
    );
}

#[test]
fn an_unknown_service_protocol_is_refused_naming_the_service() {
    let y =
        simple("    x: y") + &service("    konghq.com/protocol: gopher", "  ports:\n  - port: 80");
    assert_eq!(
        err(&y),
        "Service ns/svc: annotation konghq.com/protocol has invalid value: gopher"
    );
}

const SLICE: &str = "---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc-abc
  namespace: ns
  labels:
    kubernetes.io/service-name: svc
addressType: IPv4
ports:
- name: http
  port: 8080
endpoints:
- addresses: [10.0.0.1]
  conditions: {ready: true}
- addresses: [10.0.0.2]
  conditions: {ready: false}
- addresses: [10.0.0.3]
";

fn targets(doc: &Value) -> Vec<String> {
    doc["upstreams"][0]["targets"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| t["target"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn endpoint_slices_give_ready_targets_on_the_target_port() {
    let y = simple("    x: y")
        + &service(
            "    x: y",
            "  ports:\n  - name: http\n    port: 80\n    targetPort: 8080",
        )
        + SLICE;
    assert_eq!(targets(&t(&y)), ["10.0.0.1:8080", "10.0.0.3:8080"]);
}

#[test]
fn endpoints_are_read_when_there_are_no_slices() {
    let eps = "---
apiVersion: v1
kind: Endpoints
metadata:
  name: svc
  namespace: ns
subsets:
- addresses: [{ip: 10.1.0.1}, {ip: 10.1.0.2}]
  ports: [{name: http, port: 9000}]
";
    let y = simple("    x: y")
        + &service(
            "    x: y",
            "  ports:\n  - name: http\n    port: 80\n    targetPort: http",
        )
        + eps;
    assert_eq!(targets(&t(&y)), ["10.1.0.1:9000", "10.1.0.2:9000"]);
}

#[test]
fn service_upstream_external_name_and_backend_mappings() {
    let y = simple("    x: y")
        + &service(
            "    ingress.kubernetes.io/service-upstream: \"true\"",
            "  ports:\n  - port: 80",
        )
        + SLICE;
    assert_eq!(targets(&t(&y)), ["svc.ns.svc:80"]);
    let y = simple("    x: y")
        + &service(
            "    x: y",
            "  type: ExternalName\n  externalName: api.example.net\n  ports:\n  - port: 80",
        );
    assert_eq!(targets(&t(&y)), ["api.example.net:80"]);
    let mut opts = Options::default();
    opts.add_backend("svc.ns=127.0.0.1:9001,127.0.0.1:9002")
        .unwrap();
    assert_eq!(
        targets(&with(&opts, &(simple("    x: y") + SLICE)).0),
        ["127.0.0.1:9001", "127.0.0.1:9002"]
    );
    assert!(opts.add_backend("svc=127.0.0.1:1").is_err());
    assert!(opts.add_backend("svc.ns=nowhere").is_err());
}

fn plugin(kind: &str, name: &str, extra: &str) -> String {
    let ns = if kind == "KongPlugin" {
        "  namespace: ns\n"
    } else {
        ""
    };
    format!(
        "---
apiVersion: configuration.konghq.com/v1
kind: {kind}
metadata:
  name: {name}
{ns}  annotations:
    kubernetes.io/ingress.class: kong
{extra}"
    )
}

/// KongConsumer alice in `ns`, naming `plugins`.
fn alice(ns: &str, plugins: &str) -> String {
    format!(
        "---
apiVersion: configuration.konghq.com/v1
kind: KongConsumer
metadata:
  name: alice
  namespace: {ns}
  annotations:
    kubernetes.io/ingress.class: kong
    konghq.com/plugins: {plugins}
username: alice
"
    )
}

#[test]
fn plugins_attach_to_routes_services_and_consumers() {
    let consumer = &alice("ns", "limit");
    let y = simple("    konghq.com/plugins: limit")
        + &service("    konghq.com/plugins: cors", "  ports:\n  - port: 80")
        + consumer
        + &plugin(
            "KongPlugin",
            "limit",
            "plugin: rate-limiting\nconfig:\n  minute: 5\n",
        )
        + &plugin(
            "KongClusterPlugin",
            "cors",
            "plugin: cors\ndisabled: true\nprotocols: [http]\n",
        );
    let doc = t(&y);
    let plugins = doc["plugins"].as_array().unwrap();
    // The KongPlugin named by both a consumer and a route: one plugin per pair.
    let limit: Vec<&Value> = plugins
        .iter()
        .filter(|p| p["name"] == "rate-limiting")
        .collect();
    assert_eq!(limit.len(), 1);
    assert_eq!(limit[0]["route"], "ns.ing.svc.example.com.80");
    assert_eq!(limit[0]["consumer"], "alice");
    // The name not found as a KongPlugin is found as a KongClusterPlugin, on the service.
    let cors: Vec<&Value> = plugins.iter().filter(|p| p["name"] == "cors").collect();
    assert_eq!(cors.len(), 1);
    assert_eq!(cors[0]["service"], "ns.svc.80");
    assert_eq!(cors[0]["enabled"], false);
    assert_eq!(cors[0]["protocols"], json!(["http"]));
    assert!(cors[0]["tags"]
        .as_array()
        .unwrap()
        .contains(&json!("k8s-kind:KongClusterPlugin")));
}

#[test]
fn a_global_kong_cluster_plugin_is_global_and_two_are_refused() {
    let global = |name: &str| {
        plugin("KongClusterPlugin", name, "plugin: correlation-id\n").replace(
            "  annotations:\n",
            "  labels:\n    global: \"true\"\n  annotations:\n",
        )
    };
    let doc = t(&global("ids"));
    let p = &doc["plugins"][0];
    assert_eq!(p["name"], "correlation-id");
    assert!(p.get("route").is_none() && p.get("service").is_none());
    let e = err(&(global("ids") + &global("more-ids")));
    assert!(e.contains("KongClusterPlugin ids: more than one global KongClusterPlugin for plugin \"correlation-id\""), "{e}");
}

#[test]
fn config_from_a_secret_and_its_errors() {
    let secret = "---
apiVersion: v1
kind: Secret
metadata:
  name: limits
  namespace: ns
stringData:
  conf: '{\"minute\": 7}'
";
    let y = simple("    konghq.com/plugins: limit")
        + secret
        + &plugin("KongPlugin", "limit", "plugin: rate-limiting\nconfigFrom:\n  secretKeyRef:\n    name: limits\n    key: conf\n");
    assert_eq!(t(&y)["plugins"][0]["config"], json!({"minute": 7}));
    let both = y.replace("configFrom:", "config: {minute: 1}\nconfigFrom:");
    assert!(err(&both).contains("KongPlugin ns/limit: has both config and configFrom set"));
    let missing = y.replace("key: conf", "key: nope");
    assert!(err(&missing)
        .contains("KongPlugin ns/limit: configFrom: no key \"nope\" in Secret ns/limits"));
}

#[test]
fn an_annotation_naming_a_missing_plugin_names_the_object() {
    let e = err(&simple("    konghq.com/plugins: ghost"));
    assert!(e.starts_with("Ingress ns/ing: annotation konghq.com/plugins names \"ghost\", which is neither a KongPlugin in namespace \"ns\" nor a KongClusterPlugin"), "{e}");
    let e = err(&simple("    konghq.com/plugins: other:limit"));
    assert!(e.contains("ReferenceGrant"), "{e}");
}

#[test]
fn instance_names_get_the_controllers_suffix() {
    let y = simple("    konghq.com/plugins: ids")
        + &plugin(
            "KongPlugin",
            "ids",
            "plugin: correlation-id\ninstance_name: example\n",
        );
    // sha256("_route-ns.ing.svc.example.com.80")[..9]
    let p = &t(&y)["plugins"][0];
    let name = p["instance_name"].as_str().unwrap();
    assert!(
        name.starts_with("example-") && name.len() == "example-".len() + 9,
        "{name}"
    );
}

#[test]
fn the_rewrite_annotation_adds_a_request_transformer() {
    let y = ingress(
        "    konghq.com/rewrite: /v2/$1",
        "  ingressClassName: kong",
        "/~/api/(.*)",
        "ImplementationSpecific",
    );
    let doc = t(&y);
    assert_eq!(route(&doc)["paths"], json!(["~/api/(.*)"]));
    let p = &doc["plugins"][0];
    assert_eq!(p["name"], "request-transformer");
    assert_eq!(
        p["config"],
        json!({"replace": {"uri": "/v2/$(uri_captures[1])"}})
    );
}

fn consumer_with(secret_yaml: &str) -> String {
    format!(
        "apiVersion: configuration.konghq.com/v1
kind: KongConsumer
metadata:
  name: alice
  namespace: ns
  annotations:
    kubernetes.io/ingress.class: kong
username: alice
credentials:
- cred
---
apiVersion: v1
kind: Secret
metadata:
  name: cred
  namespace: ns
{secret_yaml}"
    )
}

#[test]
fn credential_secrets_of_every_type() {
    let c = |label: &str, data: &str| {
        t(&consumer_with(&format!(
            "  labels:\n    konghq.com/credential: {label}\nstringData:\n{data}"
        )))["consumers"][0]
            .clone()
    };
    let k = c("key-auth", "  key: k1\n  ttl: \"30\"");
    assert_eq!(k["keyauth_credentials"][0]["key"], "k1");
    assert_eq!(k["keyauth_credentials"][0]["ttl"], 30);
    let b = c("basic-auth", "  username: u\n  password: p");
    assert_eq!(b["basicauth_credentials"][0]["username"], "u");
    let h = c("hmac-auth", "  username: u\n  secret: s");
    assert_eq!(h["hmacauth_credentials"][0]["secret"], "s");
    let j = c("jwt", "  key: iss");
    assert_eq!(j["jwt_secrets"][0]["algorithm"], "HS256");
    let a = c("acl", "  group: admins");
    assert_eq!(a["acls"][0]["group"], "admins");
    // stringData is merged over data, as the API server does.
    let merged = t(&consumer_with("  labels:\n    konghq.com/credential: key-auth\ndata:\n  key: b2xk\nstringData:\n  key: new\n"));
    assert_eq!(
        merged["consumers"][0]["keyauth_credentials"][0]["key"],
        "new"
    );
}

#[test]
fn credential_errors_name_the_object() {
    let e = err(&consumer_with("stringData:\n  key: k\n"));
    assert!(e.contains("Secret ns/cred: used as a credential by KongConsumer ns/alice, but it has no konghq.com/credential label"), "{e}");
    let e = err(&consumer_with(
        "  labels:\n    konghq.com/credential: key-auth\nstringData:\n  nokey: k\n",
    ));
    assert!(
        e.contains("Secret ns/cred: key-auth credential is invalid: no key"),
        "{e}"
    );
    let e = err(&consumer_with(
        "  labels:\n    konghq.com/credential: oauth2\nstringData:\n  name: k\n",
    ));
    assert!(
        e.contains("Secret ns/cred: credential type \"oauth2\" has no plugin in Tollgate"),
        "{e}"
    );
    let e = err(&consumer_with(
        "  labels:\n    konghq.com/credential: key-auth\nstringData:\n  key: k\n",
    )
    .replace("- cred", "- gone"));
    assert!(
        e.contains("KongConsumer ns/alice: credentials: Secret ns/gone is not in the manifests"),
        "{e}"
    );
    // Two consumers with the same key: the controller drops both; here it is an error.
    let two =
        consumer_with("  labels:\n    konghq.com/credential: key-auth\nstringData:\n  key: same\n")
            + "---\n"
            + &consumer_with(
                "  labels:\n    konghq.com/credential: key-auth\nstringData:\n  key: same\n",
            )
            .replace("name: alice", "name: bob")
            .replace("username: alice", "username: bob")
            .replace("name: cred", "name: cred2")
            .replace("- cred", "- cred2");
    let e = err(&two);
    assert!(e.contains("conflicting key-auth credentials"), "{e}");
}

#[test]
fn ingress_tls_secrets_become_certificates_with_snis() {
    let tls = "  tls:\n  - hosts: [a.example.com, b.example.com]\n    secretName: cert\n";
    let y = simple("    x: y").replace("  rules:", &format!("{tls}  rules:"))
        + "---
apiVersion: v1
kind: Secret
metadata:
  name: cert
  namespace: ns
  uid: 6b7ac2a5-4a4b-4c5e-9c1f-2f7a3b6c9d10
type: kubernetes.io/tls
stringData:
  tls.crt: CERT
  tls.key: KEY
";
    let doc = t(&y);
    let c = &doc["certificates"][0];
    assert_eq!(c["id"], "6b7ac2a5-4a4b-4c5e-9c1f-2f7a3b6c9d10");
    assert_eq!(c["cert"], "CERT");
    let snis: Vec<&str> = c["snis"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(snis, ["a.example.com", "b.example.com"]);
    let e = err(&simple("    x: y").replace("  rules:", &format!("{tls}  rules:")));
    assert!(
        e.contains("Ingress ns/ing: spec.tls[0]: Secret ns/cert is not in the manifests"),
        "{e}"
    );
}

#[test]
fn documents_that_are_not_kubernetes_objects_are_refused() {
    assert_eq!(
        err("hello"),
        "document 1: not a Kubernetes object: expected a map with apiVersion, kind and metadata"
    );
    // A leading `---` opens the first document; the second is the empty one after it.
    assert_eq!(
        err("---\n---\nkind: Service\n"),
        "document 2: not a Kubernetes object: no `apiVersion`"
    );
    assert!(err("apiVersion: v1\nkind: Service\nmetadata: {}\n")
        .contains("Service without `metadata.name`"));
    assert!(err("a: [").starts_with("document 1: not YAML"));
    let dup = simple("    x: y") + "---\n" + &simple("    x: y");
    assert_eq!(err(&dup), "Ingress ns/ing: appears twice in the manifests");
}

#[test]
fn unknown_kinds_are_skipped_with_a_warning_and_lists_are_read() {
    let w = warnings("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n");
    assert_eq!(w, ["Deployment default/web: ignored: the Kong Ingress Controller does not translate Deployment objects"]);
    let list = format!(
        "apiVersion: v1\nkind: List\nitems:\n{}",
        simple("    x: y")
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
            .replacen("  apiVersion", "- apiVersion", 1)
    );
    assert!(t(&list).get("services").is_some());
}

#[test]
fn oversized_files_are_refused_before_parsing() {
    let big = "#".repeat(tollgate_k8s::MAX_MANIFEST_BYTES + 1);
    assert!(err(&big).contains("more than the"));
}

#[test]
fn the_owner_tag_goes_on_every_entity() {
    let opts = Options {
        owner_tag: Some(tollgate_k8s::apply_tag("demo")),
        ..Options::default()
    };
    let (doc, _) = with(&opts, &simple("    x: y"));
    for v in [
        &doc["services"][0],
        route(&doc),
        &doc["upstreams"][0],
        &doc["upstreams"][0]["targets"][0],
    ] {
        assert!(
            v["tags"]
                .as_array()
                .unwrap()
                .contains(&json!("k8s-apply:demo")),
            "{v}"
        );
    }
}

mod fuzz {
    use proptest::prelude::*;

    proptest! {
        // Whatever the text, translation answers (an error or a file), never panics.
        #[test]
        fn fuzz_translate_never_panics(s in "\\PC{0,400}") {
            let _ = tollgate_k8s::translate(&s, &tollgate_k8s::Options::default());
        }

        #[test]
        fn fuzz_translate_survives_mangled_manifests(cut in 0usize..2000, junk in "[ :\\-\\[\\]{}a-z0-9\n]{0,40}") {
            let base = super::simple("    konghq.com/plugins: p") + &super::plugin("KongPlugin", "p", "plugin: cors\n");
            let cut = cut.min(base.len());
            let cut = (0..=cut).rev().find(|i| base.is_char_boundary(*i)).unwrap_or(0);
            let text = format!("{}{}{}", &base[..cut], junk, &base[cut..]);
            let _ = tollgate_k8s::translate(&text, &tollgate_k8s::Options::default());
        }
    }
}

#[test]
fn a_kong_cluster_plugin_named_from_two_namespaces_has_relations_per_namespace() {
    let consumer = &alice("other", "shared");
    let y = simple("    konghq.com/plugins: shared")
        + consumer
        + &plugin("KongClusterPlugin", "shared", "plugin: correlation-id\n");
    let doc = t(&y);
    let plugins = doc["plugins"].as_array().unwrap();
    // One on the route (from ns), one on the consumer (from other): not one on the pair.
    assert_eq!(plugins.len(), 2, "{plugins:?}");
    assert!(plugins
        .iter()
        .any(|p| p.get("route").is_some() && p.get("consumer").is_none()));
    assert!(plugins
        .iter()
        .any(|p| p.get("consumer").is_some() && p.get("route").is_none()));
}

#[test]
fn config_patches_add_values_creating_parents() {
    let secret = "---
apiVersion: v1
kind: Secret
metadata:
  name: s
  namespace: ns
stringData:
  v: '\"abc\"'
";
    let y = simple("    konghq.com/plugins: p")
        + secret
        + &plugin(
            "KongPlugin",
            "p",
            "plugin: request-transformer\nconfig:\n  add:\n    headers: [a:1]\nconfigPatches:\n- path: /replace/body\n  valueFrom:\n    secretKeyRef: {name: s, key: v}\n- path: /add/headers/-\n  valueFrom:\n    secretKeyRef: {name: s, key: v}\n",
        );
    assert_eq!(
        t(&y)["plugins"][0]["config"],
        json!({"add": {"headers": ["a:1", "abc"]}, "replace": {"body": "abc"}})
    );
    // `config: {}` beside configFrom is no config.
    let from = simple("    konghq.com/plugins: p")
        + &secret.replace("v: '\"abc\"'", "v: '{\"header_name\": \"x-id\"}'")
        + &plugin(
            "KongPlugin",
            "p",
            "plugin: correlation-id\nconfig: {}\nconfigFrom:\n  secretKeyRef: {name: s, key: v}\n",
        );
    assert_eq!(
        t(&from)["plugins"][0]["config"],
        json!({"header_name": "x-id"})
    );
}

#[test]
fn upstream_settings_the_translation_does_not_read_are_refused() {
    let y = simple("    x: y")
        + &service(
            "    konghq.com/upstream-policy: sticky",
            "  ports:\n  - port: 80",
        );
    assert!(err(&y).starts_with("Service ns/svc: annotation konghq.com/upstream-policy: KongUpstreamPolicy and KongIngress are not translated"));
}

#[test]
fn a_hand_written_apply_tag_is_dropped() {
    let doc = t(&simple("    konghq.com/tags: team-a,k8s-apply:other"));
    let tags = route(&doc)["tags"].as_array().unwrap();
    assert!(tags.contains(&json!("team-a")));
    assert!(!tags.contains(&json!("k8s-apply:other")));
}

#[test]
fn the_oldest_ingress_wins_the_default_backend_and_a_contested_sni() {
    let backend = |name: &str, created: &str, svc: &str| {
        format!(
            "---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  namespace: ns
  creationTimestamp: \"{created}\"
spec:
  ingressClassName: kong
  defaultBackend:
    service:
      name: {svc}
      port:
        number: 80
"
        )
    };
    let y = backend("a-newer", "2024-05-01T00:00:00Z", "new")
        + &backend("b-older", "2023-01-01T00:00:00Z", "old");
    let (doc, w) = with(&Options::default(), &y);
    assert_eq!(doc["services"][0]["name"], "ns.old.80");
    assert!(
        w.iter()
            .any(|w| w.contains("Ingress ns/a-newer: spec.defaultBackend ignored")),
        "{w:?}"
    );
}
