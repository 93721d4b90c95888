//! Tollgate's configuration model: the entities a Kong user knows (services, routes, consumers,
//! key-auth credentials, plugins), their validation with Kong's field names and defaults, the
//! [`Command`]s that change them, the deterministic [`State::apply`] that every node runs in the
//! same order, and the router's compiled form.
//!
//! This crate is pure: no I/O, no clock, no randomness. Anything non-deterministic (ids,
//! timestamps, generated keys) is decided by the caller *before* a command is built, so that
//! replaying the same commands on any node yields the same state.

pub mod address;
pub mod codec;
pub mod command;
pub mod compat;
pub mod data;
pub mod declarative;
pub mod entities;
pub mod entity;
pub mod error;
pub mod input;
pub mod legacy;
pub mod lenient;
pub mod normalize;
pub mod password;
pub mod plugins;
pub mod registry;
pub mod router;
pub mod schema;
pub mod state;
pub mod x509;

pub use command::{Applied, Command, PutMode};
pub use entities::{Consumer, KeyAuthCredential, Plugin, Route, Service};
pub use entity::{ForeignKey, Protocol};
pub use error::{ApplyError, FieldErrors};
pub use registry::{Entity, EntityKind, Typed};
pub use state::State;
