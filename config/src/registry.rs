//! The registry's machinery: the macro that turns the list of entity types in
//! [`crate::entities`] (one line each) into [`Entity`] and [`EntityKind`], and what is derived
//! from the list as a whole (lookup by table, load order). Everything that works on "any
//! entity" (the state machine, storage, the Admin API, declarative files, `/schemas`) goes
//! through these and the types' declarations.

pub use crate::entities::{Entity, EntityKind};
use crate::schema::Declared;

/// A registered entity type: its kind, and how to find it inside an [`Entity`].
pub trait Typed: Declared {
    const KIND: EntityKind;
    fn from_entity(e: &Entity) -> Option<&Self>;
}

/// Declares the entity modules and makes [`Entity`] and [`EntityKind`] from them; invoked
/// once, in [`crate::entities`].
macro_rules! registry {
    ($($variant:ident($module:ident :: $ty:ident) $(in $path:literal)?),* $(,)?) => {
        $(
            $(#[path = $path])?
            mod $module;
            pub use $module::$ty;
        )*

        /// Any entity, as carried by a [`crate::Command`] and stored.
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        pub enum Entity {
            $($variant($ty),)*
        }

        /// The kinds of entity.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        pub enum EntityKind {
            $($variant,)*
        }

        impl EntityKind {
            /// Every kind, in registry order.
            pub const ALL: &'static [EntityKind] = &[$(EntityKind::$variant,)*];

            pub fn decl(self) -> &'static $crate::schema::EntityDecl {
                match self {
                    $(EntityKind::$variant => &<$ty as $crate::schema::Declared>::DECL,)*
                }
            }

            /// Builds an entity of this kind from input.
            pub fn build(
                self,
                body: &serde_json::Value,
                cx: &$crate::schema::BuildCx<'_>,
            ) -> Result<Entity, $crate::error::FieldErrors> {
                use $crate::schema::Declared;
                match self {
                    $(EntityKind::$variant => <$ty as Declared>::build(body, cx).map(Entity::$variant),)*
                }
            }
        }

        impl Entity {
            pub fn kind(&self) -> EntityKind {
                match self {
                    $(Entity::$variant(_) => EntityKind::$variant,)*
                }
            }

            pub fn id(&self) -> Uuid {
                match self {
                    $(Entity::$variant(e) => e.id,)*
                }
            }

            /// A declared field's value (see [`Declared::field`]).
            pub fn field(&self, name: &str) -> FieldRef<'_> {
                match self {
                    $(Entity::$variant(e) => e.field(name),)*
                }
            }

            pub fn tags(&self) -> Option<&[String]> {
                match self {
                    $(Entity::$variant(e) => e.tags.as_deref(),)*
                }
            }

            pub fn created_at(&self) -> i64 {
                match self {
                    $(Entity::$variant(e) => e.created_at,)*
                }
            }

            /// The entity as Kong's Admin API prints it.
            pub fn to_json(&self) -> Value {
                // Plain structs of strings, numbers and string-keyed maps always serialize.
                let mut v = match self {
                    $(Entity::$variant(e) => serde_json::to_value(e).unwrap_or(Value::Null),)*
                };
                // Every declared field is shown, null when the struct has no place for it
                // yet (a route's `snis` until TLS routing), as Kong shows unset fields.
                if let Value::Object(o) = &mut v {
                    for f in self.kind().decl().fields {
                        o.entry(f.name).or_insert(Value::Null);
                    }
                }
                v
            }
        }

        $(
            impl From<$ty> for Entity {
                fn from(e: $ty) -> Entity {
                    Entity::$variant(e)
                }
            }

            impl $crate::registry::Typed for $ty {
                const KIND: EntityKind = EntityKind::$variant;
                fn from_entity(e: &Entity) -> Option<&Self> {
                    match e {
                        Entity::$variant(x) => Some(x),
                        #[allow(unreachable_patterns)]
                        _ => None,
                    }
                }
            }
        )*
    };
}

pub(crate) use registry;

impl EntityKind {
    /// Kong's table name, used in messages (`'services' entity`) and declarative files.
    pub fn table(self) -> &'static str {
        self.decl().table
    }

    pub fn from_table(table: &str) -> Option<EntityKind> {
        Self::ALL.iter().copied().find(|k| k.table() == table)
    }

    /// The kinds in an order where every reference points to an earlier kind, so a whole
    /// configuration can be loaded front to back.
    pub fn load_order() -> Vec<EntityKind> {
        let mut out: Vec<EntityKind> = Vec::new();
        while out.len() < Self::ALL.len() {
            let before = out.len();
            for k in Self::ALL {
                if out.contains(k) {
                    continue;
                }
                let ready = k
                    .decl()
                    .foreign
                    .iter()
                    .all(|f| f.target == *k || out.contains(&f.target));
                if ready {
                    out.push(*k);
                }
            }
            // A reference cycle would stop progress; the registry test rules it out.
            if out.len() == before {
                let rest: Vec<EntityKind> = Self::ALL
                    .iter()
                    .copied()
                    .filter(|k| !out.contains(k))
                    .collect();
                out.extend(rest);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::FieldType;

    #[test]
    fn every_declaration_is_consistent() {
        let mut tags = std::collections::HashSet::new();
        for k in EntityKind::ALL {
            let d = k.decl();
            assert!(
                tags.insert(d.storage_tag),
                "{} reuses a storage tag",
                d.table
            );
            assert_eq!(EntityKind::from_table(d.table), Some(*k));
            for u in d.uniques.iter().flat_map(|u| u.iter()) {
                assert!(d.has_field(u), "{}: unique {u} is not a field", d.table);
            }
            if let Some(e) = d.endpoint_key {
                // Unique alone, or together with a reference (unique per parent).
                let unique = d.uniques.iter().any(|u| {
                    u == &[e]
                        || u.len() == 2
                            && u.contains(&e)
                            && u.iter().any(|f| d.foreign(f).is_some())
                });
                assert!(unique, "{}: endpoint key {e} is not unique", d.table);
            }
            for f in d.foreign {
                let fd = d.field(f.field).expect("foreign key is a field");
                assert_eq!(fd.typ, FieldType::Foreign(f.target), "{}", d.table);
            }
            for f in d.fields {
                if let FieldType::Foreign(_) = f.typ {
                    assert!(d.foreign(f.name).is_some(), "{}.{}", d.table, f.name);
                }
            }
        }
        // The examples are valid input, given their required reference.
        for k in EntityKind::ALL {
            let d = k.decl();
            let required = d
                .foreign
                .iter()
                .find(|f| d.field(f.field).is_some_and(|fd| fd.required));
            for ex in d.examples {
                let body: serde_json::Value = serde_json::from_str(ex).expect("example is JSON");
                let stamp = crate::input::Stamp {
                    id: uuid::Uuid::from_u128(1),
                    now: 1,
                    now_ms: 1000,
                    created_at: None,
                    generated_key: "k".into(),
                    generated_secret: "k".into(),
                };
                let cx = crate::schema::BuildCx {
                    stamp: &stamp,
                    state: &crate::State::default(),
                    parent: required.map(|f| (f.field, uuid::Uuid::from_u128(2))),
                    transform: true,
                };
                if let Err(e) = k.build(&body, &cx) {
                    panic!("{}: example {ex} is refused: {}", d.table, e.message());
                }
            }
        }
        let order = EntityKind::load_order();
        for (i, k) in order.iter().enumerate() {
            for f in k.decl().foreign {
                assert!(order[..i].contains(&f.target), "reference cycle at {k:?}");
            }
        }
    }
}
