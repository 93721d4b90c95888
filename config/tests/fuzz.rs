//! Property-based fuzzing of every parser that reads network input in this crate: Admin API
//! entity bodies, form bodies, declarative files, paths and the router. Each property holds
//! for any input: no panic, and what is accepted is consistent. `PROPTEST_CASES` sets the
//! number of cases (CI runs a larger bounded batch, see `.ci/run`).

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use serde_json::{Map, Value};
use tollgate_config::declarative::{self, Sequence};
use tollgate_config::input::{self, PluginScope, Stamp};
use tollgate_config::lenient::{form_to_json, MAX_FORM_DEPTH};
use tollgate_config::normalize::normalize_path;
use tollgate_config::router::{RequestView, Router};
use tollgate_config::schema::BuildCx;
use tollgate_config::{Command, Entity, EntityKind, PutMode, State};
use uuid::Uuid;

/// Field names the validators know, so that generated bodies get past the first check.
const FIELDS: &[&str] = &[
    "name",
    "host",
    "port",
    "path",
    "url",
    "protocol",
    "retries",
    "connect_timeout",
    "read_timeout",
    "write_timeout",
    "enabled",
    "tags",
    "id",
    "paths",
    "hosts",
    "methods",
    "headers",
    "protocols",
    "strip_path",
    "preserve_host",
    "regex_priority",
    "service",
    "username",
    "custom_id",
    "key",
    "ttl",
    "config",
    "minute",
    "hour",
    "policy",
    "limit_by",
    "key_names",
    "hide_credentials",
    "anonymous",
    "route",
    "consumer",
    "instance_name",
    "request_buffering",
    "response_buffering",
    "https_redirect_status_code",
    "path_handling",
    "header_name",
    "fault_tolerant",
    "created_at",
    "redis",
    "second",
    "day",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(FIELDS).prop_map(str::to_string),
        1 => "[a-z_~.\\[\\]0-9]{0,12}",
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12).prop_map(Value::from),
        "[ -~]{0,24}".prop_map(Value::String),
        proptest::sample::select(vec![
            "http",
            "https",
            "grpc",
            "GET",
            "/",
            "/a",
            "~/a/\\d+",
            "*.x.com",
            "x.*",
            "local",
            "cluster",
            "redis",
            "consumer",
            "ip",
            "http://h:1/p",
            "key-auth",
            "rate-limiting",
            "a.b",
            "",
            "0",
            "-1",
            "65536",
            "true",
        ])
        .prop_map(|s| Value::String(s.to_string())),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn object() -> impl Strategy<Value = Value> {
    proptest::collection::btree_map(key(), json(), 0..8)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn stamp() -> Stamp {
    Stamp {
        id: Uuid::from_u128(7),
        now: 1_700_000_000,
        now_ms: 1_700_000_000_000,
        created_at: None,
        generated_key: "generated".into(),
        generated_secret: "generated".into(),
    }
}

/// A state with one service, route and consumer, for bodies that reference them.
fn base_state() -> State {
    let mut st = State::default();
    let svc = input::service(
        &serde_json::json!({"name": "s", "host": "h"}),
        &stamp(),
        &State::default(),
    )
    .unwrap();
    let sid = svc.id;
    st.apply(Command::Put {
        entity: Entity::Service(svc),
        mode: PutMode::Create,
    })
    .unwrap();
    let mut s2 = stamp();
    s2.id = Uuid::from_u128(8);
    let r = input::route(
        &serde_json::json!({"name": "r", "paths": ["/"]}),
        &s2,
        &st,
        Some(sid),
    )
    .unwrap();
    st.apply(Command::Put {
        entity: Entity::Route(r),
        mode: PutMode::Create,
    })
    .unwrap();
    st
}

proptest! {
    #[test]
    fn fuzz_entity_bodies_are_accepted_or_refused_never_panic(body in object()) {
        let st = base_state();
        let stamp = stamp();
        // Whatever a builder accepts, the state machine takes or refuses with an error, and
        // the entity's own JSON is accepted again (what GET shows, PUT takes back).
        if let Ok(s) = input::service(&body, &stamp, &State::default()) {
            let again = input::service(&Entity::Service(s.clone()).to_json(), &stamp, &State::default());
            prop_assert!(again.is_ok(), "service JSON refused again: {:?}", again.err().map(|e| e.to_json()));
            let _ = st.clone().apply(Command::Put { entity: Entity::Service(s), mode: PutMode::Create });
        }
        if let Ok(r) = input::route(&body, &stamp, &st, None) {
            let _ = st.clone().apply(Command::Put { entity: Entity::Route(r), mode: PutMode::Create });
        }
        if let Ok(c) = input::consumer(&body, &stamp) {
            let again = input::consumer(&Entity::Consumer(c.clone()).to_json(), &stamp);
            prop_assert!(again.is_ok());
            let _ = st.clone().apply(Command::Put { entity: Entity::Consumer(c), mode: PutMode::Create });
        }
        let _ = input::key_auth(&body, &stamp, Uuid::from_u128(9));
        let scope = PluginScope { route: None, service: None, consumer: None };
        if let Ok(p) = input::plugin(&body, &stamp, &st, scope) {
            let _ = st.clone().apply(Command::Put { entity: Entity::Plugin(p), mode: PutMode::Create });
        }
        let _ = input::merge_patch(&body, &body);
        // Every declared kind, through the registry, with and without a parent reference:
        // what builds is taken or refused by apply, and its JSON builds again.
        for kind in EntityKind::ALL {
            for parent in [None, kind.decl().foreign.first().map(|f| (f.field, Uuid::from_u128(1)))] {
                let cx = BuildCx { stamp: &stamp, state: &st, parent, transform: true };
                if let Ok(e) = kind.build(&body, &cx) {
                    let again = kind.build(&e.to_json(), &cx);
                    prop_assert!(again.is_ok(), "{:?} JSON refused again: {:?}", kind, again.err().map(|e| e.to_json()));
                    let _ = st.clone().apply(Command::Put { entity: e, mode: PutMode::Create });
                }
            }
        }
    }

    #[test]
    fn fuzz_form_bodies_never_panic_and_stay_shallow(
        pairs in proptest::collection::vec(("[a-z.\\[\\]0-9]{0,80}", "[ -~]{0,12}"), 0..12),
        deep in 0usize..40,
    ) {
        let deep_key = "a.".repeat(deep) + "a";
        let mut all: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        all.push((&deep_key, "1"));
        match form_to_json(all) {
            Ok(v) => prop_assert!(depth(&v) <= MAX_FORM_DEPTH + 2, "depth {}", depth(&v)),
            Err(e) => prop_assert!(e.to_string().contains("deeper than")),
        }
    }

    #[test]
    fn fuzz_declarative_text_never_panics(text in "[ -~\n]{0,400}") {
        let _ = declarative::parse(&text, &mut Sequence(0));
    }

    #[test]
    fn fuzz_declarative_documents_never_panic(
        services in proptest::collection::vec(object(), 0..3),
        consumers in proptest::collection::vec(object(), 0..3),
        plugins in proptest::collection::vec(object(), 0..3),
    ) {
        let doc = serde_json::json!({
            "_format_version": "3.0",
            "services": services, "consumers": consumers, "plugins": plugins,
        });
        let _ = declarative::parse(&doc.to_string(), &mut Sequence(0));
        if let Ok(yaml) = serde_yaml::to_string(&doc) {
            let _ = declarative::parse(&yaml, &mut Sequence(0));
        }
    }

    #[test]
    fn fuzz_paths_normalise_once_and_route_without_panic(
        path in "[ -~]{0,64}",
        host in "[a-z0-9.*:-]{0,24}",
        method in "[A-Z]{0,7}",
    ) {
        let once = normalize_path(&path).into_owned();
        prop_assert_eq!(normalize_path(&once).into_owned(), once.clone());
        let router = router();
        let headers: HashMap<String, Vec<String>> = HashMap::new();
        let _ = router.find(&RequestView { method: &method, host: &host, port: None, path: &once, headers: &headers, sni: None, tls: false });
    }

    #[test]
    fn fuzz_target_addresses_normalise_once_or_are_refused(text in "[0-9a-fA-F:.\\[\\]a-z-]{0,48}") {
        // Targets and upstream names from the Admin API: never a panic, and a normalised
        // address normalises to itself (so `1.2.3.4` and `001.2.3.4:8000` are one target).
        if let Ok(h) = tollgate_config::address::normalize(&text) {
            let formatted = h.format(Some(8000));
            let again = tollgate_config::address::normalize(&formatted).unwrap();
            prop_assert_eq!(again.format(Some(8000)), formatted);
        }
    }
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Object(m) => 1 + m.values().map(depth).max().unwrap_or(0),
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A router over routes of every shape, built once.
fn router() -> &'static Router {
    static R: std::sync::OnceLock<Router> = std::sync::OnceLock::new();
    R.get_or_init(|| {
        let mut st = base_state();
        let shapes = [
            serde_json::json!({"paths": ["~/a/(?<id>\\d+)$", "/b"], "regex_priority": 3}),
            serde_json::json!({"hosts": ["*.x.com", "x.*", "y.com:8000"]}),
            serde_json::json!({"methods": ["GET", "POST"]}),
            serde_json::json!({"headers": {"x-v": ["1", "~*^b.+$"]}}),
            serde_json::json!({"paths": ["/c"], "hosts": ["c.com"], "methods": ["PUT"]}),
        ];
        for (i, body) in shapes.iter().enumerate() {
            let mut s = stamp();
            s.id = Uuid::from_u128(100 + i as u128);
            let r = input::route(body, &s, &st, Some(Uuid::from_u128(7))).unwrap();
            st.apply(Command::Put {
                entity: Entity::Route(r),
                mode: PutMode::Create,
            })
            .unwrap();
        }
        let _ = BTreeMap::<u8, u8>::new();
        Router::build(&st)
    })
}
