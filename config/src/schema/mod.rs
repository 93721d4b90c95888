//! How an entity is declared: once, as data, in the style of Kong's entity schemas and
//! `daos.lua`. An [`EntityDecl`] names the table, its Admin API paths, its endpoint key, its
//! unique fields (single or composite), its foreign keys with their on-delete rule and its
//! fields with their types and defaults. Everything else is derived from it: the state
//! machine's indexes, uniqueness, reference checks and cascades ([`crate::State`]), the sled
//! layout and snapshot encoding (the storage crate), the Admin API's collections, nested
//! collections and back-links, the declarative file's nesting, and `GET /schemas/{entity}`.
//!
//! An entity type is a plain serde struct that implements [`Declared`]: its declaration, its
//! id, a way to read a declared field ([`Declared::field`]) and a builder from Admin API input.
//! The registry ([`crate::registry`]) lists the types; adding one there is all it takes to give
//! the new entity its storage, endpoints and declarative support.

mod build;
mod describe;

pub use build::{build_record, build_typed, strict_strings, BuildCx, FkInput};
pub use describe::{describe_fields, entity_schema, validate_entity};

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::error::FieldErrors;
use crate::registry::{Entity, EntityKind};

/// What deleting the referenced entity does to an entity that refers to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDelete {
    /// The referring entity is deleted too (a consumer's credentials).
    Cascade,
    /// The delete is refused while the reference exists (a service's routes).
    Restrict,
}

impl OnDelete {
    pub fn as_str(self) -> &'static str {
        match self {
            OnDelete::Cascade => "cascade",
            OnDelete::Restrict => "restrict",
        }
    }
}

/// A foreign key: a field holding `{"id": ...}` of another entity.
#[derive(Debug, Clone, Copy)]
pub struct ForeignDecl {
    pub field: &'static str,
    pub target: EntityKind,
    pub on_delete: OnDelete,
    /// The path segment under the target's item for the nested collection
    /// (`/consumers/{c}/key-auth`), if Kong has one.
    pub nested_path: Option<&'static str>,
    /// Whether the declarative format nests this entity under the target when this is the
    /// only reference it has (Kong nests routes under services, credentials under consumers).
    pub nests: bool,
}

impl ForeignDecl {
    /// A credential's (or ACL group's) owner, as Kong's plugin `daos.lua` declare them: the
    /// consumer, required, cascading on delete, nested under it at `nested_path` and in
    /// declarative files.
    pub const fn owned_by_consumer(nested_path: &'static str) -> ForeignDecl {
        ForeignDecl {
            field: "consumer",
            target: EntityKind::Consumer,
            on_delete: OnDelete::Cascade,
            nested_path: Some(nested_path),
            nests: true,
        }
    }
}

/// The type of a declared field, as `/schemas` prints it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldType {
    /// The primary key: a UUID, generated when absent.
    Id,
    /// Unix seconds, set by the server.
    Timestamp,
    /// A string; `max` characters at most, `name` restricts it to Kong's name characters.
    String {
        max: usize,
        min: usize,
    },
    /// A string that must match Kong's `name` type (alphanumerics and `.-_~`).
    Name,
    Integer {
        min: i64,
        max: i64,
    },
    Number,
    Boolean,
    /// One of the listed strings.
    OneOf(&'static [&'static str]),
    /// An ordered list of strings.
    Array,
    /// An unordered set of strings.
    Set,
    /// Kong's `tags`: a set of printable strings without `,` or `/`.
    Tags,
    /// A map of strings to lists of strings (route headers).
    Map,
    /// A reference to another entity, `{"id": ...}`.
    Foreign(EntityKind),
    /// A free-form record validated elsewhere (a plugin's `config`).
    Record,
}

/// One declared field.
#[derive(Debug, Clone, Copy)]
pub struct FieldDecl {
    pub name: &'static str,
    pub typ: FieldType,
    pub required: bool,
    /// Kong's default, as JSON text (`"true"`, `"60000"`, `"[\"http\"]"`), if any.
    pub default: Option<&'static str>,
    /// A credential secret: generated when absent (key-auth's `key`).
    pub auto: bool,
}

impl FieldDecl {
    pub const fn new(name: &'static str, typ: FieldType) -> FieldDecl {
        FieldDecl {
            name,
            typ,
            required: false,
            default: None,
            auto: false,
        }
    }
    pub const fn required(mut self) -> FieldDecl {
        self.required = true;
        self
    }
    pub const fn default(mut self, json: &'static str) -> FieldDecl {
        self.default = Some(json);
        self
    }
    pub const fn auto(mut self) -> FieldDecl {
        self.auto = true;
        self
    }
}

/// The fields every entity starts with.
pub const ID: FieldDecl = FieldDecl::new("id", FieldType::Id).auto();
pub const CREATED_AT: FieldDecl = FieldDecl::new("created_at", FieldType::Timestamp).auto();
pub const UPDATED_AT: FieldDecl = FieldDecl::new("updated_at", FieldType::Timestamp).auto();
pub const TAGS: FieldDecl = FieldDecl::new("tags", FieldType::Tags);

/// When a change to an entity changes what the router reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routing {
    /// Never (consumers, credentials, plugins).
    Never,
    /// On every put and delete (routes).
    Always,
    /// When one of these fields changes on a replace, and on delete (services: `enabled`).
    Fields(&'static [&'static str]),
}

/// An entity, declared once.
#[derive(Debug)]
pub struct EntityDecl {
    /// Kong's table name: the declarative file's key and what messages name.
    pub table: &'static str,
    /// The Admin API collection (`/key-auths`).
    pub admin_path: &'static str,
    /// The field that also addresses an item (`/consumers/{username}`), if any. It must be
    /// declared unique.
    pub endpoint_key: Option<&'static str>,
    /// Unique fields: each entry is one constraint, over one or more fields. A null value in a
    /// single-field constraint is not indexed; in a composite one it is part of the key.
    pub uniques: &'static [&'static [&'static str]],
    pub foreign: &'static [ForeignDecl],
    pub fields: &'static [FieldDecl],
    /// Entity-level checks, printed by `/schemas` (`{"at_least_one_of": [...]}`), as JSON.
    pub entity_checks: &'static str,
    /// The byte that keys this table in storage. Never reuse one: stored data depends on it.
    pub storage_tag: u8,
    /// Two distinct valid inputs, references left out (`/schemas` has no examples; the generic
    /// Admin API test drives every entity with these, filling required references itself).
    /// Strings meant to be unique contain `example`, which the test may replace.
    pub examples: [&'static str; 2],
    pub routing: Routing,
}

impl EntityDecl {
    pub fn has_field(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.name == name)
    }

    pub fn field(&self, name: &str) -> Option<&FieldDecl> {
        self.fields.iter().find(|f| f.name == name)
    }

    pub fn foreign(&self, field: &str) -> Option<&ForeignDecl> {
        self.foreign.iter().find(|f| f.field == field)
    }
}

/// A declared field's value, as indexes and references read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldRef<'a> {
    Null,
    Str(&'a str),
    Id(Uuid),
    Int(i64),
    Bool(bool),
}

impl FieldRef<'_> {
    /// Kong's rendering in a unique violation's message: `"x"`, `{id="…"}`, `null`.
    pub fn render(&self) -> String {
        match self {
            FieldRef::Null => "null".into(),
            FieldRef::Str(s) => Value::String((*s).to_string()).to_string(),
            FieldRef::Id(id) => format!("{{id=\"{id}\"}}"),
            FieldRef::Int(i) => i.to_string(),
            FieldRef::Bool(b) => b.to_string(),
        }
    }

    /// As the JSON `fields` of an error body.
    pub fn json(&self) -> Value {
        match self {
            FieldRef::Null => Value::Null,
            FieldRef::Str(s) => Value::String((*s).to_string()),
            FieldRef::Id(id) => serde_json::json!({ "id": id }),
            FieldRef::Int(i) => Value::from(*i),
            FieldRef::Bool(b) => Value::Bool(*b),
        }
    }

    pub fn id(&self) -> Option<Uuid> {
        match self {
            FieldRef::Id(id) => Some(*id),
            _ => None,
        }
    }
}

/// An entity type: a serde struct with its declaration. Every entity struct also has the
/// fields `id`, `tags` and `created_at`, which the registry reads directly.
pub trait Declared:
    Sized + Clone + PartialEq + Serialize + DeserializeOwned + Into<Entity> + 'static
{
    const DECL: EntityDecl;

    /// The value of a field named in [`EntityDecl::uniques`], [`EntityDecl::foreign`],
    /// [`EntityDecl::endpoint_key`] or [`Routing::Fields`]; `Null` for anything else.
    fn field(&self, name: &str) -> FieldRef<'_>;

    /// Builds the entity from Admin API or declarative input, with Kong's defaults and
    /// per-field messages. `cx.parent` is the reference the URL (or the file's nesting) gives.
    fn build(body: &Value, cx: &BuildCx<'_>) -> Result<Self, FieldErrors>;
}
