//! Which objects this translation serves, by ingress class, as the controller's store
//! decides (internal/store/store.go):
//! - an `Ingress` is taken when its `kubernetes.io/ingress.class` annotation, or else its
//!   `spec.ingressClassName`, is the class; with neither, when the class's `IngressClass`
//!   is the cluster default (`ingressclass.kubernetes.io/is-default-class: "true"`);
//! - a `KongConsumer` or `KongClusterPlugin` needs the annotation naming the class, or none
//!   when the class is the default;
//! - `KongPlugin`s, Services and Secrets are read when something taken refers to them.

use crate::objects::{Object, Store};

const CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// The class served and whether it is the default.
#[derive(Debug, Clone)]
pub struct Selection {
    pub class: String,
    pub is_default: bool,
}

impl Selection {
    pub fn new(store: &Store, class: &str, warnings: &mut Vec<String>) -> Selection {
        let is_default = store
            .get("IngressClass", "", class)
            .is_some_and(|ic| ic.annotation(DEFAULT_CLASS_ANNOTATION) == Some("true"));
        let sel = Selection {
            class: class.to_string(),
            is_default,
        };
        for ing in store.all("Ingress") {
            if !sel.takes_ingress(ing) {
                warnings.push(format!(
                    "{}: ignored: its ingress class is not {class:?}",
                    ing.resource()
                ));
            }
        }
        for kind in ["KongConsumer", "KongClusterPlugin"] {
            for obj in store.all(kind) {
                if !sel.takes_annotated(obj) {
                    warnings.push(format!(
                        "{}: ignored: it needs the annotation {CLASS_ANNOTATION}: {class}",
                        obj.resource()
                    ));
                }
            }
        }
        sel
    }

    pub fn takes_ingress(&self, ing: &Object) -> bool {
        // An empty value counts as none, as in the controller.
        if let Some(c) = ing.annotation(CLASS_ANNOTATION).filter(|c| !c.is_empty()) {
            return c == self.class;
        }
        match ing
            .str_at("/spec/ingressClassName")
            .filter(|c| !c.is_empty())
        {
            Some(c) => c == self.class,
            None => self.is_default,
        }
    }

    /// For kinds selected by annotation only (KongConsumer, KongClusterPlugin).
    pub fn takes_annotated(&self, obj: &Object) -> bool {
        match obj.annotation(CLASS_ANNOTATION).filter(|c| !c.is_empty()) {
            Some(c) => c == self.class,
            None => self.is_default,
        }
    }

    /// The Ingresses taken, in the controller's order: by namespace and name, then (stable)
    /// by `metadata.creationTimestamp`, so the oldest wins a default backend or an SNI.
    pub fn ingresses<'a>(&self, store: &'a Store) -> Vec<&'a Object> {
        let mut list: Vec<&Object> = store
            .all("Ingress")
            .filter(|i| self.takes_ingress(i))
            .collect();
        // RFC 3339 timestamps in UTC sort as text; none sorts first, as the zero time.
        list.sort_by(|a, b| {
            let t = |o: &Object| {
                o.str_at("/metadata/creationTimestamp")
                    .unwrap_or("")
                    .to_string()
            };
            t(a).cmp(&t(b))
        });
        list
    }
}
