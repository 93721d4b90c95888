//! One test for every declared entity, driven by the declarations alone: adding an entity to
//! the registry puts it under this test with no new test code. For each kind, through the
//! Admin API: create, read by id and by endpoint key, the uniqueness error, list with paging
//! and tags, PUT (create and replace), PATCH, DELETE, the foreign-key error, what deleting a
//! referenced entity does (cascade or refusal, as declared), nested collections and the links
//! back to what an entity refers to.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};

use common::Node;
use reqwest::Method;
use serde_json::{json, Value};
use tollgate_config::schema::OnDelete;
use tollgate_config::EntityKind;
use uuid::Uuid;

static FRESH: AtomicUsize = AtomicUsize::new(0);

/// One of a kind's examples, with its unique-looking strings made new.
fn example(kind: EntityKind, i: usize) -> Value {
    let n = FRESH.fetch_add(1, Ordering::Relaxed);
    let text = kind.decl().examples[i].replace("example", &format!("ex{n}"));
    serde_json::from_str(&text).unwrap()
}

fn path(kind: EntityKind) -> String {
    format!("/{}", kind.decl().admin_path)
}

fn id_of(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_string()
}

/// Creates an entity of `kind` with fresh examples and whatever it must refer to.
fn create_any(node: &Node, kind: EntityKind) -> futures_util::future::BoxFuture<'_, Value> {
    Box::pin(async move {
        let mut body = example(kind, 0);
        with_required_parents(node, kind, &mut body).await;
        node.create(&path(kind), body).await
    })
}

/// Fills `body`'s required references with newly created entities.
async fn with_required_parents(node: &Node, kind: EntityKind, body: &mut Value) {
    let decl = kind.decl();
    for fk in decl.foreign {
        let required = decl.field(fk.field).is_some_and(|f| f.required);
        if required && body.get(fk.field).is_none() {
            let parent = create_any(node, fk.target).await;
            body[fk.field] = json!({ "id": parent["id"] });
        }
    }
}

async fn drive(node: &Node, kind: EntityKind) {
    let decl = kind.decl();
    let base = path(kind);
    let tag = format!("generic-{}", decl.table);
    let what = decl.table;

    // Create and read by id.
    let mut body0 = example(kind, 0);
    with_required_parents(node, kind, &mut body0).await;
    body0["tags"] = json!([tag]);
    let e0 = node.create(&base, body0.clone()).await;
    let id0 = id_of(&e0);
    let (s, got) = node.get(&format!("{base}/{id0}")).await;
    assert_eq!((s, &got), (200, &e0), "{what}: read by id");

    // `/schemas/{table}` lists exactly the fields the entity is printed with.
    let (s, schema) = node.get(&format!("/schemas/{what}")).await;
    assert_eq!(s, 200, "{what}: schema");
    let mut declared: Vec<String> = schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f.as_object().unwrap().keys().cloned())
        .collect();
    let mut printed: Vec<String> = e0.as_object().unwrap().keys().cloned().collect();
    declared.sort();
    printed.sort();
    assert_eq!(declared, printed, "{what}: schema fields vs entity");

    // Read by endpoint key: at the top when it is unique alone, under the parent when it is
    // unique per parent.
    if let Some(ek) = decl.endpoint_key {
        if let Some(v) = e0[ek].as_str() {
            let alone = decl.uniques.iter().any(|u| u == &[ek]);
            let url = if alone {
                Some(format!("{base}/{v}"))
            } else {
                decl.foreign
                    .iter()
                    .find(|f| f.nested_path.is_some())
                    .map(|f| {
                        let pid = e0[f.field]["id"].as_str().unwrap();
                        let parent = path(f.target);
                        format!("{parent}/{pid}/{}/{v}", f.nested_path.unwrap())
                    })
            };
            if let Some(url) = url {
                let (s, got) = node.get(&url).await;
                assert_eq!((s, &got["id"]), (200, &e0["id"]), "{what}: read by {ek}");
            }
        }
    }

    // The same input again violates a unique constraint (certificates have none).
    if !decl.uniques.is_empty() {
        let (s, err) = node.post(&base, body0.clone()).await;
        assert_eq!(s, 409, "{what}: duplicate -> {err}");
        assert_eq!(err["name"], "unique constraint violation", "{what}: {err}");
    }

    // A second one, sharing the first's references.
    let mut body1 = example(kind, 1);
    for fk in decl.foreign {
        if !body0[fk.field].is_null() {
            body1[fk.field] = body0[fk.field].clone();
        }
    }
    body1["tags"] = json!([tag, "second"]);
    let e1 = node.create(&base, body1).await;
    let id1 = id_of(&e1);

    // Paging one at a time finds both; tags select.
    let mut seen = Vec::new();
    let mut next = Some(format!("{base}?size=1&tags={tag}"));
    while let Some(url) = next.take() {
        let (s, page) = node.get(&url).await;
        assert_eq!(s, 200, "{what}: {url} -> {page}");
        assert!(page["data"].as_array().unwrap().len() <= 1);
        seen.extend(page["data"].as_array().unwrap().iter().map(id_of));
        next = page["next"].as_str().map(str::to_string);
    }
    seen.sort();
    let mut both = vec![id0.clone(), id1.clone()];
    both.sort();
    assert_eq!(seen, both, "{what}: paged by tag");
    let (_, page) = node.get(&format!("{base}?tags={tag},second")).await;
    assert_eq!(page["data"].as_array().unwrap().len(), 1, "{what}: {page}");
    assert_eq!(page["data"][0]["id"], e1["id"]);

    // PATCH changes what it names and keeps the rest.
    let (s, patched) = node
        .send(
            Method::PATCH,
            &format!("{base}/{id1}"),
            Some(json!({"tags": ["patched"]})),
        )
        .await;
    assert_eq!(s, 200, "{what}: PATCH {patched}");
    assert_eq!(patched["tags"], json!(["patched"]));
    let mut expect = e1.clone();
    expect["tags"] = json!(["patched"]);
    if let Some(u) = patched.get("updated_at") {
        expect["updated_at"] = u.clone();
    }
    assert_eq!(patched, expect, "{what}: PATCH keeps the other fields");

    // DELETE, idempotent (which also frees the first one's unique values for PUT).
    for _ in 0..2 {
        let (s, _) = node
            .send(Method::DELETE, &format!("{base}/{id0}"), None)
            .await;
        assert_eq!(s, 204, "{what}: DELETE");
    }
    assert_eq!(node.get(&format!("{base}/{id0}")).await.0, 404);

    // PUT creates at a new id, then replaces.
    let new_id = Uuid::new_v4().to_string();
    let mut put = example(kind, 0);
    for fk in decl.foreign {
        if !body0[fk.field].is_null() {
            put[fk.field] = body0[fk.field].clone();
        }
    }
    let (s, created) = node
        .send(Method::PUT, &format!("{base}/{new_id}"), Some(put.clone()))
        .await;
    assert_eq!(
        (s, id_of(&created)),
        (200, new_id.clone()),
        "{what}: PUT create {created}"
    );
    put["tags"] = json!(["replaced"]);
    let (s, replaced) = node
        .send(Method::PUT, &format!("{base}/{new_id}"), Some(put))
        .await;
    assert_eq!(s, 200, "{what}: PUT replace {replaced}");
    assert_eq!(replaced["tags"], json!(["replaced"]));
    assert_eq!(replaced["created_at"], created["created_at"]);

    for fk in decl.foreign {
        // A reference to nothing is refused.
        // (The second example: the first may be one that cannot take every reference, as
        // key-auth cannot be scoped to a consumer.)
        let mut dangling = example(kind, 1);
        with_required_parents(node, kind, &mut dangling).await;
        dangling[fk.field] = json!({ "id": Uuid::new_v4() });
        let (s, err) = node.post(&base, dangling).await;
        assert_eq!(s, 400, "{what}.{}: dangling -> {err}", fk.field);
        assert_eq!(err["name"], "foreign key violation", "{what}: {err}");

        // Created under its parent's URL, it refers to the parent, and links back to it.
        let parent = create_any(node, fk.target).await;
        let pid = id_of(&parent);
        let mut child = example(kind, 1);
        with_required_parents(node, kind, &mut child).await;
        let child = match fk.nested_path {
            Some(nested) => {
                if let Some(o) = child.as_object_mut() {
                    o.remove(fk.field);
                }
                let url = format!("{}/{pid}/{nested}", path(fk.target));
                let c = node.create(&url, child).await;
                let (s, list) = node.get(&url).await;
                assert_eq!(s, 200);
                assert!(
                    list["data"].as_array().unwrap().contains(&c),
                    "{what}: {url}"
                );
                let (s, got) = node.get(&format!("{url}/{}", id_of(&c))).await;
                assert_eq!((s, &got), (200, &c), "{what}: nested item");
                c
            }
            None => {
                child[fk.field] = json!({ "id": pid });
                node.create(&base, child).await
            }
        };
        assert_eq!(child[fk.field]["id"], parent["id"], "{what}.{}", fk.field);
        let cid = id_of(&child);
        let (s, back) = node.get(&format!("{base}/{cid}/{}", fk.field)).await;
        assert_eq!((s, &back["id"]), (200, &parent["id"]), "{what}: back-link");

        // Deleting the parent cascades or is refused, as declared.
        let (s, err) = node
            .send(Method::DELETE, &format!("{}/{pid}", path(fk.target)), None)
            .await;
        let child_status = node.get(&format!("{base}/{cid}")).await.0;
        match fk.on_delete {
            OnDelete::Cascade => {
                assert_eq!(s, 204, "{what}: cascade {err}");
                assert_eq!(child_status, 404, "{what}: deleted with its {}", fk.field);
            }
            OnDelete::Restrict => {
                assert_eq!(s, 400, "{what}: restrict");
                assert_eq!(err["name"], "foreign key violation");
                assert_eq!(child_status, 200, "{what}: kept");
            }
        }
    }
}

#[tokio::test]
async fn every_declared_entity_behaves_like_a_kong_entity() {
    let node = Node::start().await;
    for kind in EntityKind::ALL {
        drive(&node, *kind).await;
    }
}

/// Follows `next` links from `path` and returns every row.
async fn all_pages(node: &Node, path: &str) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut next = Some(path.to_string());
    while let Some(url) = next.take() {
        let (s, page) = node.get(&url).await;
        assert_eq!(s, 200, "{url} -> {page}");
        rows.extend(page["data"].as_array().unwrap().iter().cloned());
        next = page["next"].as_str().map(str::to_string);
    }
    rows
}

// Ported from Kong's spec/02-integration/04-admin_api/14-tags_spec.lua ("/tags", "/tags/:tags",
// a tag that does not exist, `?tags=` ignored), with our own entities.
#[tokio::test]
async fn tags_list_every_tagged_entity() {
    let node = Node::start().await;
    for i in 1..=2 {
        let c = node
            .create(
                "/consumers",
                json!({"username": format!("tagged-{i}"), "tags": ["corp_ a", format!("consumer_ {i}")]}),
            )
            .await;
        node.create(
            &format!("/consumers/{}/plugins", id_of(&c)),
            json!({"name": "rate-limiting", "config": {"minute": 5}, "tags": ["corp_ a"]}),
        )
        .await;
    }
    node.create("/services", json!({"name": "untagged", "host": "h.test"}))
        .await;

    let all = all_pages(&node, "/tags?size=1").await;
    assert_eq!(all.len(), 6, "{all:?}");
    for row in &all {
        let kind = EntityKind::from_table(row["entity_name"].as_str().unwrap()).unwrap();
        let id = row["entity_id"].as_str().unwrap();
        let (s, e) = node.get(&format!("{}/{id}", path(kind))).await;
        assert_eq!(s, 200);
        assert!(e["tags"].as_array().unwrap().contains(&row["tag"]), "{row}");
    }
    let corp = all_pages(&node, "/tags/corp_%20a").await;
    assert_eq!(corp.len(), 4);
    assert!(corp.iter().all(|r| r["tag"] == "corp_ a"));
    assert_eq!(all_pages(&node, "/tags/nope").await.len(), 0);
    assert_eq!(
        all_pages(&node, "/tags/corp_%20a?tags=consumer_%201")
            .await
            .len(),
        4
    );
}

#[tokio::test]
async fn schemas_describe_and_validate_without_storing() {
    let node = Node::start().await;
    let (s, c) = node.get("/schemas/consumers").await;
    assert_eq!(s, 200);
    assert_eq!(
        c["entity_checks"],
        json!([{"at_least_one_of": ["custom_id", "username"]}])
    );
    let (_, acls) = node.get("/schemas/acls").await;
    let consumer = acls["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|f| f.get("consumer"))
        .unwrap();
    assert_eq!(
        (
            &consumer["reference"],
            &consumer["on_delete"],
            &consumer["required"]
        ),
        (&json!("consumers"), &json!("cascade"), &json!(true))
    );
    let (s, e) = node.get("/schemas/nope").await;
    assert_eq!((s, &e["message"]), (404, &json!("No entity named 'nope'")));

    let (s, e) = node.post("/schemas/consumers/validate", json!({})).await;
    assert_eq!((s, &e["name"]), (400, &json!("schema violation")));
    let (s, e) = node
        .post(
            "/schemas/consumers/validate",
            json!({"username": "only-checked"}),
        )
        .await;
    assert_eq!(
        (s, &e["message"]),
        (200, &json!("schema validation successful"))
    );
    assert_eq!(node.get("/consumers/only-checked").await.0, 404);

    let (s, rl) = node.get("/schemas/plugins/rate-limiting").await;
    assert_eq!(s, 200);
    let config = rl["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|f| f.get("config"))
        .unwrap();
    let names: Vec<&str> = config["fields"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| f.as_object().unwrap().keys().map(String::as_str))
        .collect();
    assert!(
        names.contains(&"minute") && names.contains(&"policy"),
        "{names:?}"
    );
    assert_eq!(node.get("/schemas/plugins/nope").await.0, 404);
    let (s, e) = node
        .post(
            "/schemas/plugins/validate",
            json!({"name": "rate-limiting", "config": {"minute": -1}}),
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        e["fields"]["config"]["minute"],
        "value must be greater than 0"
    );
    let (s, _) = node
        .post(
            "/schemas/plugins/validate",
            json!({"name": "rate-limiting", "config": {"minute": 1}}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(node.get("/plugins").await.1["data"], json!([]));
}
