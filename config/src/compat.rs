//! Growing a stored entity without losing what earlier versions wrote.
//!
//! Entities are stored and replicated with bincode, which is not self-describing: a struct
//! that gains a field can no longer read its old bytes. A struct that grows implements
//! [`Versioned`]: its binary form becomes a version byte followed by the fields, and reading
//! tells the two apart by the first byte. Every entity begins with its `id`, a UUID that bincode
//! writes as a length (16) and 16 bytes, so a first byte of 16 means "written before versions"
//! and any other value is a version number. JSON (the Admin API, declarative files) is not
//! affected: human-readable formats see the plain struct.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeOwned, SeqAccess, Visitor};
use serde::ser::SerializeTuple;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// The first byte of an entity written before versions: the UUID's length.
const UNVERSIONED: u8 = 16;

/// A stored entity type that has grown since its first version.
pub trait Versioned: Sized {
    /// The current version (never 16).
    const VERSION: u8;
    /// The fields after `id` as the first version wrote them.
    type V0: DeserializeOwned;
    fn from_v0(id: Uuid, old: Self::V0) -> Self;
    /// The plain (derived) serialization of the current struct.
    fn ser_plain<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error>;
    /// The plain (derived) deserialization of the current struct.
    fn de_plain<'de, D: Deserializer<'de>>(d: D) -> Result<Self, D::Error>;
}

struct Plain<'a, T>(&'a T);

impl<T: Versioned> Serialize for Plain<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.ser_plain(s)
    }
}

struct PlainOwned<T>(T);

impl<'de, T: Versioned> Deserialize<'de> for PlainOwned<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::de_plain(d).map(PlainOwned)
    }
}

/// `Serialize` for a [`Versioned`] type.
pub fn serialize<T: Versioned, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        return v.ser_plain(s);
    }
    let mut t = s.serialize_tuple(2)?;
    t.serialize_element(&T::VERSION)?;
    t.serialize_element(&Plain(v))?;
    t.end()
}

/// `Deserialize` for a [`Versioned`] type.
pub fn deserialize<'de, T: Versioned, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    if d.is_human_readable() {
        return T::de_plain(d);
    }
    struct V<T>(PhantomData<T>);
    impl<'de, T: Versioned> Visitor<'de> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a versioned entity")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
            let missing = || de::Error::custom("truncated entity");
            let first: u8 = seq.next_element()?.ok_or_else(missing)?;
            if first == UNVERSIONED {
                let id: [u8; 16] = seq.next_element()?.ok_or_else(missing)?;
                let old: T::V0 = seq.next_element()?.ok_or_else(missing)?;
                Ok(T::from_v0(Uuid::from_bytes(id), old))
            } else if first == T::VERSION {
                let v: PlainOwned<T> = seq.next_element()?.ok_or_else(missing)?;
                Ok(v.0)
            } else {
                Err(de::Error::custom(format!(
                    "entity version {first} is newer than this build knows"
                )))
            }
        }
    }
    // bincode reads a tuple's elements one after the other, whatever the length given.
    d.deserialize_tuple(3, V(PhantomData))
}
