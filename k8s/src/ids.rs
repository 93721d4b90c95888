//! Deterministic ids, so that translating the same manifests twice gives the same entities.
//!
//! Services, routes, consumers and plugins get the ids the controller gives them (go-kong's
//! `FillID`: UUIDv5 of the entity's name in a namespace per entity type, itself a UUIDv5 of
//! the type's plural name under a fixed root). Kinds the controller leaves to Kong
//! (upstreams, targets, credentials, SNIs) get UUIDv5s of their natural keys the same way.

use uuid::Uuid;

/// go-kong's `_kongEntitiesNamespace`.
const ROOT: Uuid = Uuid::from_u128(0xfd02801f_0957_4a15_a55a_c8d9606f30b5);

/// The id of an entity of `table` (`services`, `routes`, `consumers`, `plugins`, …) whose
/// key is `key` (in the default workspace).
pub fn id(table: &str, key: &str) -> Uuid {
    let ns = Uuid::new_v5(&ROOT, table.as_bytes());
    Uuid::new_v5(&ns, key.as_bytes())
}

/// A plugin's key: its name, then the entities it is scoped to, as go-kong builds it.
pub fn plugin_key(
    name: &str,
    service: Option<&str>,
    route: Option<&str>,
    consumer: Option<&str>,
) -> String {
    let mut key = name.to_string();
    if let Some(s) = service {
        key.push_str(":service/");
        key.push_str(s);
    }
    if let Some(r) = route {
        key.push_str(":route/");
        key.push_str(r);
    }
    if let Some(c) = consumer {
        key.push_str(":consumer/");
        key.push_str(c);
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    // Expected values from the controller's golden files
    // (internal/dataplane/testdata/golden/*/default_golden.yaml in Kong/kubernetes-ingress-controller).
    #[test]
    fn ids_are_the_controllers() {
        assert_eq!(
            id("services", "foo-namespace.foo-svc.80").to_string(),
            "fe1e2edc-5479-52fe-b0f4-b90d8d5f83ba"
        );
        assert_eq!(
            id("routes", "foo-namespace.foo.foo-svc.example.com.80").to_string(),
            "3eee2c18-8fcc-5661-8f84-5c89adfa404f"
        );
        assert_eq!(
            id("consumers", "consumer").to_string(),
            "7deb6e70-60be-5dd2-b374-06551479ea5e"
        );
        assert_eq!(
            id(
                "plugins",
                &plugin_key(
                    "correlation-id",
                    None,
                    Some("default.httpbin.httpbin..80"),
                    None
                )
            )
            .to_string(),
            "61a22b86-f859-5c8a-a23c-97b92b14b635"
        );
    }
}
