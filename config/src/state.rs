//! The configuration state and its one deterministic transition function, [`State::apply`].
//!
//! Apply checks everything that depends on the state (unique names and keys, foreign keys,
//! references that forbid a delete) before it changes anything, so a rejected command leaves
//! the state exactly as it was. Nodes that apply the same commands in the same order reach the
//! same state and give the same answers, which is what replication relies on.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::command::{Applied, Command, PutMode};
use crate::entity::*;
use crate::error::ApplyError;

/// The entities themselves: what snapshots store. Ordered maps, so iteration and encoding are
/// deterministic.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateData {
    pub services: BTreeMap<Uuid, Service>,
    pub routes: BTreeMap<Uuid, Route>,
    pub consumers: BTreeMap<Uuid, Consumer>,
    pub keyauth_credentials: BTreeMap<Uuid, KeyAuthCredential>,
    pub plugins: BTreeMap<Uuid, Plugin>,
}

type PluginKey = (String, Option<Uuid>, Option<Uuid>, Option<Uuid>);

/// Unique-field indexes, derived from [`StateData`] and never stored.
#[derive(Debug, Clone, Default)]
struct Indexes {
    service_names: HashMap<String, Uuid>,
    route_names: HashMap<String, Uuid>,
    usernames: HashMap<String, Uuid>,
    custom_ids: HashMap<String, Uuid>,
    keys: HashMap<String, Uuid>,
    plugin_scopes: HashMap<PluginKey, Uuid>,
    plugin_instance_names: HashMap<String, Uuid>,
}

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

/// The configuration: entities plus their unique indexes.
#[derive(Debug, Clone, Default)]
pub struct State {
    data: StateData,
    idx: Indexes,
    changes: Vec<Change>,
    routing: u64,
}

/// Source of routing generations, unique within the process, so two states (say, one rebuilt
/// from a snapshot) never share a generation unless one is a clone of the other.
static ROUTING_GENERATIONS: AtomicU64 = AtomicU64::new(1);

fn plugin_key(p: &Plugin) -> PluginKey {
    (
        p.name.clone(),
        p.route.map(|f| f.id),
        p.service.map(|f| f.id),
        p.consumer.map(|f| f.id),
    )
}

fn fk_text(f: Option<ForeignKey>) -> String {
    match f {
        Some(f) => format!("{{id=\"{}\"}}", f.id),
        None => "null".into(),
    }
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

    pub fn services(&self) -> &BTreeMap<Uuid, Service> {
        &self.data.services
    }
    pub fn routes(&self) -> &BTreeMap<Uuid, Route> {
        &self.data.routes
    }
    pub fn consumers(&self) -> &BTreeMap<Uuid, Consumer> {
        &self.data.consumers
    }
    pub fn keyauth_credentials(&self) -> &BTreeMap<Uuid, KeyAuthCredential> {
        &self.data.keyauth_credentials
    }
    pub fn plugins(&self) -> &BTreeMap<Uuid, Plugin> {
        &self.data.plugins
    }

    /// Finds an entity by id, or by its endpoint key (service/route name, consumer username,
    /// credential key, plugin instance name), as Kong's `/{kind}/{id_or_name}` URLs do.
    pub fn resolve(&self, kind: EntityKind, key: &str) -> Option<Uuid> {
        if let Ok(id) = Uuid::parse_str(key) {
            if self.get(kind, id).is_some() {
                return Some(id);
            }
        }
        let by_name = match kind {
            EntityKind::Service => &self.idx.service_names,
            EntityKind::Route => &self.idx.route_names,
            EntityKind::Consumer => &self.idx.usernames,
            EntityKind::KeyAuth => &self.idx.keys,
            EntityKind::Plugin => &self.idx.plugin_instance_names,
        };
        by_name.get(key).copied()
    }

    pub fn get(&self, kind: EntityKind, id: Uuid) -> Option<Entity> {
        let d = &self.data;
        match kind {
            EntityKind::Service => d.services.get(&id).cloned().map(Entity::Service),
            EntityKind::Route => d.routes.get(&id).cloned().map(Entity::Route),
            EntityKind::Consumer => d.consumers.get(&id).cloned().map(Entity::Consumer),
            EntityKind::KeyAuth => d.keyauth_credentials.get(&id).cloned().map(Entity::KeyAuth),
            EntityKind::Plugin => d.plugins.get(&id).cloned().map(Entity::Plugin),
        }
    }

    /// Every entity of a kind, in primary-key order (Kong's paging order).
    pub fn list(&self, kind: EntityKind) -> Vec<Entity> {
        let d = &self.data;
        match kind {
            EntityKind::Service => d.services.values().cloned().map(Entity::Service).collect(),
            EntityKind::Route => d.routes.values().cloned().map(Entity::Route).collect(),
            EntityKind::Consumer => d
                .consumers
                .values()
                .cloned()
                .map(Entity::Consumer)
                .collect(),
            EntityKind::KeyAuth => d
                .keyauth_credentials
                .values()
                .cloned()
                .map(Entity::KeyAuth)
                .collect(),
            EntityKind::Plugin => d.plugins.values().cloned().map(Entity::Plugin).collect(),
        }
    }

    /// The credential that owns `key`, if any.
    pub fn credential_by_key(&self, key: &str) -> Option<&KeyAuthCredential> {
        self.idx
            .keys
            .get(key)
            .and_then(|id| self.data.keyauth_credentials.get(id))
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
                self.check_put(&entity, mode)?;
                self.put(entity.clone());
                Ok(Applied::Put(entity))
            }
            Command::Delete { kind, id } => {
                self.delete(kind, id)?;
                Ok(Applied::Deleted)
            }
            Command::Replace(data) => {
                // Build the new state entity by entity in dependency order; any violation
                // rejects the whole load and leaves `self` untouched.
                let mut fresh = State::default();
                let data = *data;
                let all = data
                    .services
                    .into_values()
                    .map(Entity::Service)
                    .chain(data.routes.into_values().map(Entity::Route))
                    .chain(data.consumers.into_values().map(Entity::Consumer))
                    .chain(data.keyauth_credentials.into_values().map(Entity::KeyAuth))
                    .chain(data.plugins.into_values().map(Entity::Plugin));
                for e in all {
                    fresh.check_put(&e, PutMode::Create)?;
                    fresh.put(e);
                }
                let mut changes = vec![Change::Reset];
                changes.append(&mut fresh.changes);
                *self = fresh;
                self.changes = changes;
                Ok(Applied::Replaced)
            }
        }
    }

    fn check_fk(
        &self,
        field: &str,
        target: EntityKind,
        fk: Option<ForeignKey>,
    ) -> Result<(), ApplyError> {
        match fk {
            Some(f) if self.get(target, f.id).is_none() => Err(ApplyError::ForeignKey {
                field: field.into(),
                target,
                id: f.id.to_string(),
            }),
            _ => Ok(()),
        }
    }

    fn check_unique(
        map: &HashMap<String, Uuid>,
        kind: EntityKind,
        field: &str,
        value: Option<&String>,
        me: Uuid,
    ) -> Result<(), ApplyError> {
        match value.and_then(|v| map.get(v).map(|owner| (v, owner))) {
            Some((v, owner)) if *owner != me => Err(ApplyError::unique(kind, field, v)),
            _ => Ok(()),
        }
    }

    fn check_put(&self, e: &Entity, mode: PutMode) -> Result<(), ApplyError> {
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
        let ix = &self.idx;
        match e {
            Entity::Service(s) => {
                Self::check_unique(&ix.service_names, kind, "name", s.name.as_ref(), id)?;
            }
            Entity::Route(r) => {
                self.check_fk("service", EntityKind::Service, r.service)?;
                Self::check_unique(&ix.route_names, kind, "name", r.name.as_ref(), id)?;
            }
            Entity::Consumer(c) => {
                Self::check_unique(&ix.usernames, kind, "username", c.username.as_ref(), id)?;
                Self::check_unique(&ix.custom_ids, kind, "custom_id", c.custom_id.as_ref(), id)?;
            }
            Entity::KeyAuth(k) => {
                self.check_fk("consumer", EntityKind::Consumer, Some(k.consumer))?;
                Self::check_unique(&ix.keys, kind, "key", Some(&k.key), id)?;
            }
            Entity::Plugin(p) => {
                self.check_fk("route", EntityKind::Route, p.route)?;
                self.check_fk("service", EntityKind::Service, p.service)?;
                self.check_fk("consumer", EntityKind::Consumer, p.consumer)?;
                Self::check_unique(
                    &ix.plugin_instance_names,
                    kind,
                    "instance_name",
                    p.instance_name.as_ref(),
                    id,
                )?;
                if let Some(owner) = ix.plugin_scopes.get(&plugin_key(p)) {
                    if *owner != id {
                        return Err(ApplyError::Unique {
                            kind,
                            key: format!(
                                "consumer={},name=\"{}\",route={},service={}",
                                fk_text(p.consumer),
                                p.name,
                                fk_text(p.route),
                                fk_text(p.service)
                            ),
                            fields: json!({
                                "consumer": p.consumer, "name": p.name,
                                "route": p.route, "service": p.service,
                            }),
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Inserts or replaces an entity, keeping indexes in step. Callers have checked it.
    fn put(&mut self, e: Entity) {
        let id = e.id();
        self.changes.push(Change::Put(e.kind(), id));
        self.unindex(e.kind(), id);
        let ix = &mut self.idx;
        match e {
            Entity::Service(s) => {
                if let Some(n) = &s.name {
                    ix.service_names.insert(n.clone(), id);
                }
                let enabled = s.enabled;
                if let Some(old) = self.data.services.insert(id, s) {
                    if old.enabled != enabled {
                        self.routing_changed();
                    }
                }
            }
            Entity::Route(r) => {
                if let Some(n) = &r.name {
                    ix.route_names.insert(n.clone(), id);
                }
                self.data.routes.insert(id, r);
                self.routing_changed();
            }
            Entity::Consumer(c) => {
                if let Some(n) = &c.username {
                    ix.usernames.insert(n.clone(), id);
                }
                if let Some(n) = &c.custom_id {
                    ix.custom_ids.insert(n.clone(), id);
                }
                self.data.consumers.insert(id, c);
            }
            Entity::KeyAuth(k) => {
                ix.keys.insert(k.key.clone(), id);
                self.data.keyauth_credentials.insert(id, k);
            }
            Entity::Plugin(p) => {
                ix.plugin_scopes.insert(plugin_key(&p), id);
                if let Some(n) = &p.instance_name {
                    ix.plugin_instance_names.insert(n.clone(), id);
                }
                self.data.plugins.insert(id, p);
            }
        }
    }

    /// Removes an entity's index entries (not the entity).
    fn unindex(&mut self, kind: EntityKind, id: Uuid) {
        let ix = &mut self.idx;
        let d = &self.data;
        match kind {
            EntityKind::Service => {
                if let Some(n) = d.services.get(&id).and_then(|s| s.name.as_ref()) {
                    ix.service_names.remove(n);
                }
            }
            EntityKind::Route => {
                if let Some(n) = d.routes.get(&id).and_then(|s| s.name.as_ref()) {
                    ix.route_names.remove(n);
                }
            }
            EntityKind::Consumer => {
                if let Some(c) = d.consumers.get(&id) {
                    if let Some(n) = &c.username {
                        ix.usernames.remove(n);
                    }
                    if let Some(n) = &c.custom_id {
                        ix.custom_ids.remove(n);
                    }
                }
            }
            EntityKind::KeyAuth => {
                if let Some(k) = d.keyauth_credentials.get(&id) {
                    ix.keys.remove(&k.key);
                }
            }
            EntityKind::Plugin => {
                if let Some(p) = d.plugins.get(&id) {
                    ix.plugin_scopes.remove(&plugin_key(p));
                    if let Some(n) = &p.instance_name {
                        ix.plugin_instance_names.remove(n);
                    }
                }
            }
        }
    }

    fn delete(&mut self, kind: EntityKind, id: Uuid) -> Result<(), ApplyError> {
        if self.get(kind, id).is_none() {
            // Kong answers 204 to deleting what is not there: deletes are idempotent.
            return Ok(());
        }
        if kind == EntityKind::Service
            && self
                .data
                .routes
                .values()
                .any(|r| r.service.map(|f| f.id) == Some(id))
        {
            return Err(ApplyError::ReferencedBy {
                kind,
                by: EntityKind::Route,
            });
        }
        let mut doomed: Vec<(EntityKind, Uuid)> = vec![(kind, id)];
        let is = |f: Option<ForeignKey>| f.map(|f| f.id) == Some(id);
        for p in self.data.plugins.values() {
            let hit = match kind {
                EntityKind::Service => is(p.service),
                EntityKind::Route => is(p.route),
                EntityKind::Consumer => is(p.consumer),
                _ => false,
            };
            if hit {
                doomed.push((EntityKind::Plugin, p.id));
            }
        }
        if kind == EntityKind::Consumer {
            for k in self.data.keyauth_credentials.values() {
                if k.consumer.id == id {
                    doomed.push((EntityKind::KeyAuth, k.id));
                }
            }
        }
        for (k, i) in doomed {
            self.changes.push(Change::Delete(k, i));
            self.unindex(k, i);
            let d = &mut self.data;
            match k {
                EntityKind::Service => {
                    d.services.remove(&i);
                }
                EntityKind::Route => {
                    d.routes.remove(&i);
                    self.routing_changed();
                }
                EntityKind::Consumer => {
                    d.consumers.remove(&i);
                }
                EntityKind::KeyAuth => {
                    d.keyauth_credentials.remove(&i);
                }
                EntityKind::Plugin => {
                    d.plugins.remove(&i);
                }
            }
        }
        Ok(())
    }

    /// Total number of entities (for metrics and tests).
    pub fn len(&self) -> usize {
        let d = &self.data;
        d.services.len()
            + d.routes.len()
            + d.consumers.len()
            + d.keyauth_credentials.len()
            + d.plugins.len()
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
        })
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
        assert_eq!(st.services().len(), 1);
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
        bad.routes.insert(
            Uuid::from_u128(10),
            match route(10, 99) {
                Entity::Route(r) => r,
                _ => unreachable!(),
            },
        );
        assert!(st.apply(Command::Replace(Box::new(bad))).is_err());
        assert!(st.resolve(EntityKind::Service, "keep").is_some());
    }
}
