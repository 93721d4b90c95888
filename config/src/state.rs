//! The configuration state and its one deterministic transition function, [`State::apply`].
//!
//! Everything here is derived from the entities' declarations ([`crate::schema`]): one table
//! per registered kind, an index per declared unique constraint, a reverse index per declared
//! foreign key, and deletes that cascade or are refused as each reference's `on_delete` says.
//!
//! Apply checks everything that depends on the state (unique fields, foreign keys, references
//! that forbid a delete) before it changes anything, so a rejected command leaves the state
//! exactly as it was. Nodes that apply the same commands in the same order reach the same
//! state and give the same answers, which is what replication relies on: every iteration here
//! is over ordered maps.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::command::{Applied, Command, PutMode};
pub use crate::data::StateData;
use crate::entities::Service;
use crate::error::{ApplyError, FieldErrors};
use crate::registry::{Entity, EntityKind, Typed};
use crate::schema::{FieldRef, OnDelete, Routing};

/// A unique constraint: kind, and the constraint's position in the declaration. Its index maps
/// each key (the raw string for a single string field, Kong's rendering otherwise) to its
/// owner, so a lookup borrows the key.
type Constraint = (EntityKind, usize);

/// One entity-level effect of an applied command, for storage that persists entities one by
/// one (the state machine writes exactly these, atomically with its last-applied index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The entity was created or replaced; read it with [`State::get`].
    Put(EntityKind, Uuid),
    Delete(EntityKind, Uuid),
    /// Everything was replaced (declarative load): drop all stored entities first.
    Reset,
}

/// The configuration: entities plus the indexes their declarations ask for.
#[derive(Debug, Clone, Default)]
pub struct State {
    data: StateData,
    unique: HashMap<Constraint, HashMap<String, Uuid>>,
    /// Who refers to an entity: `(kind, id)` of the target to the referrers.
    refs: HashMap<(EntityKind, Uuid), BTreeSet<(EntityKind, Uuid)>>,
    changes: Vec<Change>,
    routing: u64,
}

/// Source of routing generations, unique within the process, so two states (say, one rebuilt
/// from a snapshot) never share a generation unless one is a clone of the other.
static ROUTING_GENERATIONS: AtomicU64 = AtomicU64::new(1);

/// The index keys of `e`'s unique constraints, with the position of each constraint.
fn unique_keys(e: &Entity) -> Vec<(usize, String)> {
    let decl = e.kind().decl();
    let mut out = Vec::with_capacity(decl.uniques.len());
    for (i, fields) in decl.uniques.iter().enumerate() {
        if let [f] = fields {
            match e.field(f) {
                FieldRef::Null => {}
                FieldRef::Str(s) => out.push((i, s.to_string())),
                other => out.push((i, other.render())),
            }
        } else {
            out.push((i, composite_key(fields, |f| e.field(f))));
        }
    }
    out
}

/// Kong's rendering of a composite key, fields in name order: `consumer=null,name="x"`.
fn composite_key<'a>(fields: &[&str], value: impl Fn(&str) -> FieldRef<'a>) -> String {
    let mut names: Vec<&str> = fields.to_vec();
    names.sort_unstable();
    names
        .iter()
        .map(|f| format!("{f}={}", value(f).render()))
        .collect::<Vec<_>>()
        .join(",")
}

fn unique_error(e: &Entity, constraint: usize, key: &str) -> ApplyError {
    let kind = e.kind();
    let fields = kind.decl().uniques[constraint];
    match fields {
        [f] => match e.field(f) {
            FieldRef::Str(s) => ApplyError::unique(kind, f, s),
            other => ApplyError::Unique {
                kind,
                key: format!("{f}={}", other.render()),
                fields: json!({ *f: other.json() }),
            },
        },
        _ => {
            let mut obj = serde_json::Map::new();
            for f in fields.iter() {
                obj.insert(f.to_string(), e.field(f).json());
            }
            ApplyError::Unique {
                kind,
                key: key.to_string(),
                fields: Value::Object(obj),
            }
        }
    }
}

/// What a tagged replace does (counts of entities).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct TaggedChange {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub unchanged: usize,
}

impl TaggedChange {
    pub fn is_nothing(&self) -> bool {
        self.created == 0 && self.updated == 0 && self.deleted == 0
    }
}

/// Equal as Kong would print them, `created_at` and `updated_at` aside.
fn same_but_timestamps(a: &Entity, b: &Entity) -> bool {
    if a.kind() != b.kind() {
        return false;
    }
    let strip = |e: &Entity| {
        let mut v = e.to_json();
        if let Value::Object(o) = &mut v {
            o.remove("created_at");
            o.remove("updated_at");
        }
        v
    };
    strip(a) == strip(b)
}

impl State {
    /// Rebuilds a state (and its indexes) from stored data, checking it as a whole.
    pub fn from_data(data: StateData) -> Result<State, ApplyError> {
        let mut st = State::default();
        st.apply(Command::Replace(Box::new(data)))?;
        Ok(st)
    }

    pub fn data(&self) -> &StateData {
        &self.data
    }

    /// The entities of one type, in id order (Kong's paging order).
    pub fn all<T: Typed>(&self) -> impl Iterator<Item = &T> {
        self.data.all::<T>()
    }

    /// One entity of a type, by id.
    pub fn one<T: Typed>(&self, id: Uuid) -> Option<&T> {
        self.get(T::KIND, id).and_then(T::from_entity)
    }

    pub fn get(&self, kind: EntityKind, id: Uuid) -> Option<&Entity> {
        self.data.tables.get(&kind)?.get(&id)
    }

    /// Every entity of a kind, in id order.
    pub fn list(&self, kind: EntityKind) -> impl Iterator<Item = &Entity> {
        self.data.table(kind)
    }

    pub fn count(&self, kind: EntityKind) -> usize {
        self.data.count(kind)
    }

    /// Finds an entity by id or by its endpoint key (service name, consumer username,
    /// credential key, plugin instance name), as Kong's `/{kind}/{id or key}` URLs do.
    pub fn resolve(&self, kind: EntityKind, key: &str) -> Option<Uuid> {
        self.resolve_in(kind, key, None)
    }

    /// As [`State::resolve`], under a parent from the URL: an endpoint key unique only per
    /// parent (an ACL group per consumer) is looked up within it.
    pub fn resolve_in(
        &self,
        kind: EntityKind,
        key: &str,
        parent: Option<(&str, Uuid)>,
    ) -> Option<Uuid> {
        if let Ok(id) = Uuid::parse_str(key) {
            if self.get(kind, id).is_some() {
                return Some(id);
            }
        }
        if kind == EntityKind::Certificate {
            // Kong's `/certificates/{sni}`: a certificate is also named by its SNIs.
            return self
                .find_unique(EntityKind::Sni, "name", key)
                .and_then(|s| s.field("certificate").id());
        }
        let decl = kind.decl();
        let ek = decl.endpoint_key?;
        for (i, fields) in decl.uniques.iter().enumerate() {
            let lookup = match (fields, parent) {
                ([f], _) if *f == ek => key.to_string(),
                ([a, b], Some((pf, pid))) if (*a == ek && *b == pf) || (*a == pf && *b == ek) => {
                    composite_key(fields, |f| {
                        if f == ek {
                            FieldRef::Str(key)
                        } else {
                            FieldRef::Id(pid)
                        }
                    })
                }
                _ => continue,
            };
            if let Some(id) = self.owner((kind, i), &lookup) {
                return Some(*id);
            }
        }
        None
    }

    /// Who holds `key` in a unique constraint's index.
    fn owner(&self, constraint: Constraint, key: &str) -> Option<&Uuid> {
        self.unique.get(&constraint)?.get(key)
    }

    /// The entity of `kind` whose single-field unique `field` is `value` (a credential by its
    /// key).
    pub fn find_unique(&self, kind: EntityKind, field: &str, value: &str) -> Option<&Entity> {
        let i = kind.decl().uniques.iter().position(|u| u == &[field])?;
        let id = self.owner((kind, i), value)?;
        self.get(kind, *id)
    }

    /// The entities that refer to `(kind, id)`, in kind and id order.
    pub fn referrers(&self, kind: EntityKind, id: Uuid) -> impl Iterator<Item = &Entity> {
        self.refs
            .get(&(kind, id))
            .into_iter()
            .flatten()
            .filter_map(|(k, i)| self.get(*k, *i))
    }

    /// Changes whenever something the router reads changes: a route, or whether a service is
    /// enabled. Equal generations mean equal routing input, so a router built for one serves
    /// the other (0 is the empty state's).
    pub fn routing_generation(&self) -> u64 {
        self.routing
    }

    fn routing_changed(&mut self) {
        self.routing = ROUTING_GENERATIONS.fetch_add(1, Ordering::Relaxed);
    }

    /// The entity-level changes made by the last [`State::apply`] (empty when it failed).
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// Applies one command. On error the state is unchanged.
    pub fn apply(&mut self, cmd: Command) -> Result<Applied, ApplyError> {
        self.changes.clear();
        match cmd {
            Command::Put { entity, mode } => {
                let keys = self.check_put(&entity, mode)?;
                self.put(entity.clone(), keys);
                Ok(Applied::Put(entity))
            }
            Command::Delete { kind, id } => {
                self.delete(kind, id)?;
                Ok(Applied::Deleted)
            }
            Command::Replace(data) => self.replace(*data),
            Command::Batch(cmds) => self.batch(cmds),
            Command::ReplaceV1(data) => {
                self.replace(StateData::from_entities(data.into_entities()))
            }
            Command::ReplaceTagged { tag, data } => {
                let (merged, _) = self.merge_tagged(&tag, *data)?;
                self.replace(merged)
            }
        }
    }

    /// The data a [`Command::ReplaceTagged`] leaves, and what it changes:
    /// - every entity of `data` must carry `tag`, and may not take the id of an entity that
    ///   does not (what is not owned is never overwritten);
    /// - entities carrying `tag` that `data` does not hold are removed; everything without
    ///   the tag stays as it is;
    /// - an entity equal to the one it replaces but for its timestamps is kept as it was, so
    ///   that replacing with the same data changes nothing, not even `updated_at`.
    ///
    /// Deterministic (it reads only `self` and its arguments), as the state machine needs.
    pub fn merge_tagged(
        &self,
        tag: &str,
        data: StateData,
    ) -> Result<(StateData, TaggedChange), ApplyError> {
        let owned = |e: &Entity| e.tags().is_some_and(|t| t.iter().any(|x| x == tag));
        let mut merged = StateData::default();
        let mut change = TaggedChange::default();
        for e in self.data.tables.values().flat_map(|t| t.values()) {
            if !owned(e) {
                merged.insert(e.clone());
            }
        }
        let mut kept = std::collections::BTreeSet::new();
        for e in data.into_entities() {
            if !owned(&e) {
                return Err(ApplyError::Schema(FieldErrors::single(
                    "tags",
                    format!(
                        "every entity of a tagged replace must carry the tag '{tag}' ({} {} does not)",
                        e.kind().table(),
                        e.id()
                    ),
                )));
            }
            match self.get(e.kind(), e.id()) {
                Some(old) if !owned(old) => {
                    return Err(ApplyError::Schema(FieldErrors::single(
                        "id",
                        format!(
                            "{} {} exists and is not tagged '{tag}': a tagged replace does not overwrite it",
                            e.kind().table(),
                            e.id()
                        ),
                    )))
                }
                Some(old) if same_but_timestamps(old, &e) => {
                    change.unchanged += 1;
                    kept.insert((e.kind(), e.id()));
                    merged.insert(old.clone());
                }
                Some(_) => {
                    change.updated += 1;
                    kept.insert((e.kind(), e.id()));
                    merged.insert(e);
                }
                None => {
                    change.created += 1;
                    merged.insert(e);
                }
            }
        }
        let removed: BTreeSet<(EntityKind, Uuid)> = self
            .data
            .tables
            .values()
            .flat_map(|t| t.values())
            .filter(|e| owned(e) && !kept.contains(&(e.kind(), e.id())))
            .map(|e| (e.kind(), e.id()))
            .collect();
        change.deleted = removed.len();
        // What the tag does not own is never deleted, not even by a cascade: an entity of
        // someone else's that refers to one being removed stops the replace, naming it.
        for e in merged.tables.values().flat_map(|t| t.values()) {
            if owned(e) {
                continue;
            }
            for f in e.kind().decl().foreign {
                if let FieldRef::Id(id) = e.field(f.field) {
                    if removed.contains(&(f.target, id)) {
                        return Err(ApplyError::Schema(FieldErrors::single(
                            f.field,
                            format!(
                                "{} {} (not tagged '{tag}') refers to {} {}, which this replace removes: delete it, or point it elsewhere, first",
                                e.kind().table(),
                                e.id(),
                                f.target.table(),
                                id
                            ),
                        )));
                    }
                }
            }
        }
        Ok((merged, change))
    }

    /// Applies puts and deletes in order, all or none: on the first error, what was done is
    /// undone in reverse (a put restores the previous value or removes the new entity; a
    /// delete puts back what it removed, parents first).
    fn batch(&mut self, cmds: Vec<Command>) -> Result<Applied, ApplyError> {
        let mut undo: Vec<Vec<Entity>> = Vec::new();
        let mut created: Vec<Vec<(EntityKind, Uuid)>> = Vec::new();
        let mut changes = Vec::new();
        let mut last = Applied::Deleted;
        for cmd in cmds {
            let outcome = match cmd {
                Command::Put { entity, mode } => {
                    let before = self.get(entity.kind(), entity.id()).cloned();
                    let key = (entity.kind(), entity.id());
                    self.check_put(&entity, mode)
                        .map(|keys| {
                            self.put(entity.clone(), keys);
                            match before {
                                Some(b) => (vec![b], vec![]),
                                None => (vec![], vec![key]),
                            }
                        })
                        .map(|r| (r, Applied::Put(entity)))
                }
                Command::Delete { kind, id } => {
                    let gone: Vec<Entity> = match self.doomed(kind, id) {
                        Ok(d) if self.get(kind, id).is_some() => d
                            .iter()
                            .filter_map(|(k, i)| self.get(*k, *i).cloned())
                            .collect(),
                        _ => vec![],
                    };
                    self.delete(kind, id)
                        .map(|_| ((gone, vec![]), Applied::Deleted))
                }
                _ => Err(ApplyError::Schema(FieldErrors::single(
                    "@entity",
                    "a batch holds only puts and deletes",
                ))),
            };
            match outcome {
                Ok(((restore, remove), applied)) => {
                    undo.push(restore);
                    created.push(remove);
                    changes.append(&mut self.changes);
                    last = applied;
                }
                Err(e) => {
                    self.changes.clear();
                    while let (Some(restore), Some(remove)) = (undo.pop(), created.pop()) {
                        for (k, i) in remove {
                            self.unindex(k, i);
                            if let Some(t) = self.data.tables.get_mut(&k) {
                                t.remove(&i);
                                if t.is_empty() {
                                    self.data.tables.remove(&k);
                                }
                            }
                        }
                        for e in restore {
                            // What was there a moment ago fits again: parents come first
                            // in `doomed`'s order, and nothing else changed since.
                            let checked = self.check_put(&e, PutMode::Upsert);
                            debug_assert!(checked.is_ok(), "batch undo refused {e:?}");
                            if let Ok(keys) = checked {
                                self.put(e, keys);
                            }
                        }
                    }
                    self.changes.clear();
                    return Err(e);
                }
            }
        }
        self.changes = changes;
        Ok(last)
    }

    /// Builds the new state entity by entity, references first; any violation rejects the
    /// whole load and leaves `self` untouched.
    fn replace(&mut self, data: StateData) -> Result<Applied, ApplyError> {
        let mut fresh = State::default();
        for e in data.into_entities() {
            let keys = fresh.check_put(&e, PutMode::Create)?;
            fresh.put(e, keys);
        }
        let mut changes = vec![Change::Reset];
        changes.append(&mut fresh.changes);
        *self = fresh;
        self.changes = changes;
        Ok(Applied::Replaced)
    }

    /// Checks a put against the state; returns the entity's unique keys for [`State::put`].
    fn check_put(&self, e: &Entity, mode: PutMode) -> Result<Vec<(usize, String)>, ApplyError> {
        let kind = e.kind();
        let id = e.id();
        let exists = self.get(kind, id).is_some();
        match mode {
            PutMode::Create if exists => {
                return Err(ApplyError::PrimaryKey {
                    kind,
                    id: id.to_string(),
                })
            }
            PutMode::Update if !exists => {
                return Err(ApplyError::NotFound {
                    kind,
                    id: id.to_string(),
                })
            }
            _ => {}
        }
        for fk in kind.decl().foreign {
            if let Some(target) = e.field(fk.field).id() {
                if self.get(fk.target, target).is_none() {
                    return Err(ApplyError::ForeignKey {
                        field: fk.field.into(),
                        target: fk.target,
                        id: target.to_string(),
                    });
                }
            }
        }
        let keys = unique_keys(e);
        for (i, key) in &keys {
            if matches!(self.owner((kind, *i), key), Some(owner) if *owner != id) {
                return Err(unique_error(e, *i, key));
            }
        }
        Ok(keys)
    }

    /// Inserts or replaces an entity, keeping indexes in step. Callers have checked it.
    fn put(&mut self, e: Entity, keys: Vec<(usize, String)>) {
        let kind = e.kind();
        let id = e.id();
        let decl = kind.decl();
        self.changes.push(Change::Put(kind, id));
        let routing = match decl.routing {
            Routing::Never => false,
            Routing::Always => true,
            Routing::Fields(fields) => self
                .get(kind, id)
                .is_some_and(|old| fields.iter().any(|f| old.field(f) != e.field(f))),
        };
        self.unindex(kind, id);
        for (i, key) in keys {
            self.unique.entry((kind, i)).or_default().insert(key, id);
        }
        for fk in decl.foreign {
            if let Some(target) = e.field(fk.field).id() {
                self.refs
                    .entry((fk.target, target))
                    .or_default()
                    .insert((kind, id));
            }
        }
        self.data.insert(e);
        if routing {
            self.routing_changed();
        }
    }

    /// Removes an entity's index entries (not the entity).
    fn unindex(&mut self, kind: EntityKind, id: Uuid) {
        let Some(old) = self.data.tables.get(&kind).and_then(|t| t.get(&id)) else {
            return;
        };
        for (i, key) in unique_keys(old) {
            if let Some(index) = self.unique.get_mut(&(kind, i)) {
                if index.get(&key) == Some(&id) {
                    index.remove(&key);
                }
            }
        }
        for fk in kind.decl().foreign {
            if let Some(target) = old.field(fk.field).id() {
                if let Some(set) = self.refs.get_mut(&(fk.target, target)) {
                    set.remove(&(kind, id));
                    if set.is_empty() {
                        self.refs.remove(&(fk.target, target));
                    }
                }
            }
        }
    }

    /// What deleting `(kind, id)` takes with it, or the reference that forbids it.
    fn doomed(&self, kind: EntityKind, id: Uuid) -> Result<Vec<(EntityKind, Uuid)>, ApplyError> {
        let mut out = vec![(kind, id)];
        let mut seen: BTreeSet<(EntityKind, Uuid)> = BTreeSet::from([(kind, id)]);
        let mut i = 0;
        while i < out.len() {
            let (tk, tid) = out[i];
            i += 1;
            for &(rk, rid) in self.refs.get(&(tk, tid)).into_iter().flatten() {
                let Some(referrer) = self.get(rk, rid) else {
                    continue;
                };
                for fk in rk.decl().foreign.iter().filter(|f| f.target == tk) {
                    if referrer.field(fk.field).id() != Some(tid) {
                        continue;
                    }
                    match fk.on_delete {
                        OnDelete::Restrict => {
                            return Err(ApplyError::ReferencedBy { kind: tk, by: rk })
                        }
                        OnDelete::Cascade => {
                            if seen.insert((rk, rid)) {
                                out.push((rk, rid));
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn delete(&mut self, kind: EntityKind, id: Uuid) -> Result<(), ApplyError> {
        if self.get(kind, id).is_none() {
            // Kong answers 204 to deleting what is not there: deletes are idempotent.
            return Ok(());
        }
        if kind == EntityKind::CaCertificate {
            // Services list CA certificates by id, not through a declared foreign key.
            let by = self
                .all::<Service>()
                .find(|s| s.ca_certificates.as_ref().is_some_and(|l| l.contains(&id)));
            if let Some(s) = by {
                return Err(ApplyError::ReferencedByOthers(format!(
                    "ca certificate {id} is still referenced by services (id = {})",
                    s.id
                )));
            }
        }
        for (k, i) in self.doomed(kind, id)? {
            self.changes.push(Change::Delete(k, i));
            self.unindex(k, i);
            if let Some(t) = self.data.tables.get_mut(&k) {
                t.remove(&i);
            }
            if k.decl().routing != Routing::Never {
                self.routing_changed();
            }
        }
        Ok(())
    }

    /// Total number of entities (for metrics and tests).
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Kong's JSON for a list page.
pub fn page_json(data: Vec<Value>, next: Option<String>, offset: Option<String>) -> Value {
    let mut v = json!({ "data": data, "next": next });
    if let Some(o) = offset {
        v["offset"] = Value::String(o);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::*;

    fn svc(id: u128, name: &str) -> Entity {
        Entity::Service(Service {
            id: Uuid::from_u128(id),
            name: Some(name.into()),
            protocol: Protocol::Http,
            host: "h".into(),
            port: 80,
            path: None,
            retries: 5,
            connect_timeout: 60000,
            write_timeout: 60000,
            read_timeout: 60000,
            enabled: true,
            tags: None,
            created_at: 1,
            updated_at: 1,
            client_certificate: None,
            tls_verify: None,
            tls_verify_depth: None,
            ca_certificates: None,
        })
    }

    fn tagged_svc(id: u128, name: &str, tag: &str, at: i64) -> Entity {
        let Entity::Service(mut s) = svc(id, name) else {
            unreachable!()
        };
        s.tags = Some(vec![tag.into()]);
        s.created_at = at;
        s.updated_at = at;
        Entity::Service(s)
    }

    #[test]
    fn a_tagged_replace_replaces_only_what_the_tag_owns() {
        let mut st = State::default();
        st.apply(Command::Put {
            entity: svc(1, "mine-not"),
            mode: PutMode::Create,
        })
        .unwrap();
        let first = StateData::from_entities([
            tagged_svc(2, "a", "k8s-apply:x", 10),
            tagged_svc(3, "b", "k8s-apply:x", 10),
        ]);
        st.apply(Command::ReplaceTagged {
            tag: "k8s-apply:x".into(),
            data: Box::new(first),
        })
        .unwrap();
        assert_eq!(st.data().count(EntityKind::Service), 3);

        // The same again, stamped later: nothing changes, not even the timestamps.
        let again = StateData::from_entities([
            tagged_svc(2, "a", "k8s-apply:x", 99),
            tagged_svc(3, "b", "k8s-apply:x", 99),
        ]);
        let (_, change) = st.merge_tagged("k8s-apply:x", again.clone()).unwrap();
        assert_eq!(
            change,
            TaggedChange {
                unchanged: 2,
                ..Default::default()
            }
        );
        let before = st.data().clone();
        st.apply(Command::ReplaceTagged {
            tag: "k8s-apply:x".into(),
            data: Box::new(again),
        })
        .unwrap();
        assert_eq!(st.data(), &before);

        // Dropping b from the set removes it; the untagged service stays.
        let fewer = StateData::from_entities([tagged_svc(2, "a", "k8s-apply:x", 99)]);
        let (_, change) = st.merge_tagged("k8s-apply:x", fewer.clone()).unwrap();
        assert_eq!(
            change,
            TaggedChange {
                unchanged: 1,
                deleted: 1,
                ..Default::default()
            }
        );
        st.apply(Command::ReplaceTagged {
            tag: "k8s-apply:x".into(),
            data: Box::new(fewer),
        })
        .unwrap();
        assert!(st.get(EntityKind::Service, Uuid::from_u128(3)).is_none());
        assert!(st.get(EntityKind::Service, Uuid::from_u128(1)).is_some());

        // An entity without the tag, or taking an untagged entity's id, is refused whole.
        let untagged = StateData::from_entities([svc(4, "c")]);
        assert!(st
            .apply(Command::ReplaceTagged {
                tag: "k8s-apply:x".into(),
                data: Box::new(untagged)
            })
            .is_err());
        let stealing = StateData::from_entities([tagged_svc(1, "mine-not", "k8s-apply:x", 5)]);
        assert!(st
            .apply(Command::ReplaceTagged {
                tag: "k8s-apply:x".into(),
                data: Box::new(stealing)
            })
            .is_err());
        assert_eq!(st.data().count(EntityKind::Service), 2);

        // An untagged entity referring to one the replace would remove stops it, named.
        st.apply(Command::Put {
            entity: route(9, 2),
            mode: PutMode::Create,
        })
        .unwrap();
        let without_a = StateData::from_entities([tagged_svc(6, "d", "k8s-apply:x", 5)]);
        let e = st
            .merge_tagged("k8s-apply:x", without_a)
            .unwrap_err()
            .to_string();
        assert!(e.contains("routes 00000000-0000-0000-0000-000000000009 (not tagged 'k8s-apply:x') refers to services"), "{e}");

        // A name taken by an entity the tag does not own is a unique violation, as in any load.
        let clash = StateData::from_entities([tagged_svc(5, "mine-not", "k8s-apply:x", 5)]);
        assert!(st
            .apply(Command::ReplaceTagged {
                tag: "k8s-apply:x".into(),
                data: Box::new(clash)
            })
            .is_err());
    }

    fn route(id: u128, svc: u128) -> Entity {
        Entity::Route(Route {
            id: Uuid::from_u128(id),
            name: None,
            protocols: vec![Protocol::Http],
            methods: None,
            hosts: None,
            paths: Some(vec!["/".into()]),
            headers: None,
            https_redirect_status_code: 426,
            regex_priority: 0,
            strip_path: true,
            path_handling: "v0".into(),
            preserve_host: false,
            request_buffering: true,
            response_buffering: true,
            service: Some(Uuid::from_u128(svc).into()),
            tags: None,
            created_at: 1,
            updated_at: 1,
            snis: None,
        })
    }

    fn create(e: Entity) -> Command {
        Command::Put {
            entity: e,
            mode: PutMode::Create,
        }
    }

    #[test]
    fn duplicate_names_conflict_and_leave_state_unchanged() {
        let mut st = State::default();
        st.apply(create(svc(1, "a"))).unwrap();
        let err = st.apply(create(svc(2, "a"))).unwrap_err();
        assert_eq!(err.status(), 409);
        assert_eq!(st.count(EntityKind::Service), 1);
        // Renaming a service onto its own name is fine; onto another's is not.
        st.apply(create(svc(3, "b"))).unwrap();
        let upd = Command::Put {
            entity: svc(3, "a"),
            mode: PutMode::Update,
        };
        assert_eq!(st.apply(upd).unwrap_err().status(), 409);
        assert_eq!(
            st.resolve(EntityKind::Service, "b"),
            Some(Uuid::from_u128(3))
        );
    }

    #[test]
    fn routing_generation_moves_only_with_what_the_router_reads() {
        let mut st = State::default();
        let mut seen = vec![st.routing_generation()];
        let mut step = |st: &mut State, cmd: Command, moves: bool| {
            st.apply(cmd).unwrap();
            let g = st.routing_generation();
            assert_eq!(!seen.contains(&g), moves, "generation {g} after {seen:?}");
            seen.push(g);
        };
        // A new service has no routes yet; a route, and a service turned off, change routing.
        step(&mut st, create(svc(1, "a")), false);
        step(&mut st, create(route(10, 1)), true);
        let mut off = svc(1, "a");
        if let Entity::Service(s) = &mut off {
            s.enabled = false;
        }
        let update = |e| Command::Put {
            entity: e,
            mode: PutMode::Update,
        };
        step(&mut st, update(off), true);
        let mut renamed = svc(1, "b");
        if let Entity::Service(s) = &mut renamed {
            s.enabled = false;
        }
        step(&mut st, update(renamed), false);
        let consumer = Entity::Consumer(Consumer {
            id: Uuid::from_u128(20),
            username: Some("u".into()),
            custom_id: None,
            tags: None,
            created_at: 1,
            updated_at: 1,
        });
        step(&mut st, create(consumer), false);
        let del = |kind, id| Command::Delete {
            kind,
            id: Uuid::from_u128(id),
        };
        step(&mut st, del(EntityKind::Consumer, 20), false);
        step(&mut st, del(EntityKind::Route, 10), true);

        // A state rebuilt from the same data is another state: it never shares a generation.
        let mut again = st.clone();
        again.apply(create(route(11, 1))).unwrap();
        let rebuilt = State::from_data(again.data().clone()).unwrap();
        assert_ne!(rebuilt.routing_generation(), again.routing_generation());
        assert_eq!(st.clone().routing_generation(), st.routing_generation());
    }

    #[test]
    fn dangling_references_are_rejected() {
        let mut st = State::default();
        let err = st.apply(create(route(10, 1))).unwrap_err();
        assert!(matches!(err, ApplyError::ForeignKey { .. }));
        assert_eq!(err.status(), 400);
        assert!(st.is_empty());
    }

    #[test]
    fn service_with_routes_cannot_be_deleted_and_delete_is_idempotent() {
        let mut st = State::default();
        st.apply(create(svc(1, "a"))).unwrap();
        st.apply(create(route(10, 1))).unwrap();
        let del = Command::Delete {
            kind: EntityKind::Service,
            id: Uuid::from_u128(1),
        };
        assert!(matches!(
            st.apply(del.clone()),
            Err(ApplyError::ReferencedBy { .. })
        ));
        st.apply(Command::Delete {
            kind: EntityKind::Route,
            id: Uuid::from_u128(10),
        })
        .unwrap();
        st.apply(del.clone()).unwrap();
        st.apply(del).unwrap();
        assert!(st.is_empty());
    }

    #[test]
    fn create_with_existing_id_is_primary_key_violation() {
        let mut st = State::default();
        st.apply(create(svc(1, "a"))).unwrap();
        assert!(matches!(
            st.apply(create(svc(1, "z"))),
            Err(ApplyError::PrimaryKey { .. })
        ));
        let upsert = Command::Put {
            entity: svc(1, "z"),
            mode: PutMode::Upsert,
        };
        st.apply(upsert).unwrap();
        assert_eq!(
            st.resolve(EntityKind::Service, "z"),
            Some(Uuid::from_u128(1))
        );
        assert_eq!(st.resolve(EntityKind::Service, "a"), None);
    }

    #[test]
    fn changes_name_every_entity_touched() {
        let mut st = State::default();
        st.apply(create(svc(1, "a"))).unwrap();
        assert_eq!(
            st.take_changes(),
            vec![Change::Put(EntityKind::Service, Uuid::from_u128(1))]
        );
        assert!(st.apply(create(svc(2, "a"))).is_err());
        assert!(st.take_changes().is_empty());
        st.apply(Command::Delete {
            kind: EntityKind::Service,
            id: Uuid::from_u128(1),
        })
        .unwrap();
        assert_eq!(
            st.take_changes(),
            vec![Change::Delete(EntityKind::Service, Uuid::from_u128(1))]
        );
    }

    #[test]
    fn commands_round_trip_through_bincode() {
        let c = create(svc(1, "a"));
        assert_eq!(Command::decode(&c.encode()).unwrap(), c);
    }

    #[test]
    fn replace_is_all_or_nothing() {
        let mut st = State::default();
        st.apply(create(svc(1, "keep"))).unwrap();
        let mut bad = StateData::default();
        bad.insert(route(10, 99));
        assert!(st.apply(Command::Replace(Box::new(bad))).is_err());
        assert!(st.resolve(EntityKind::Service, "keep").is_some());
    }
}
