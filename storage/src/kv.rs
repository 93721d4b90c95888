//! The small key-value interface our storage is written against. sled is pre-1.0 and its
//! on-disk format may change, so sled's types stop here: swapping the engine means rewriting
//! this file only.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Storage engine failure.
#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("storage engine: {0}")]
    Engine(#[from] sled::Error),
    #[error("encoding: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("decoding: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("inconsistent stored state: {0}")]
    Inconsistent(String),
}

fn cfg() -> impl bincode::config::Config {
    bincode::config::standard()
}

pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, KvError> {
    Ok(bincode::serde::encode_to_vec(v, cfg())?)
}

pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, KvError> {
    Ok(bincode::serde::decode_from_slice(b, cfg())?.0)
}

/// A key and its value.
pub type Pair = (Vec<u8>, Vec<u8>);

/// A database: named trees of ordered byte keys.
#[derive(Clone)]
pub struct Kv {
    db: sled::Db,
}

/// One ordered keyspace.
#[derive(Clone)]
pub struct Tree {
    t: sled::Tree,
}

/// Writes applied to one tree atomically.
#[derive(Default)]
pub struct Batch {
    b: sled::Batch,
}

impl Batch {
    pub fn put(&mut self, k: impl AsRef<[u8]>, v: impl AsRef<[u8]>) {
        self.b.insert(k.as_ref(), v.as_ref());
    }
    pub fn remove(&mut self, k: impl AsRef<[u8]>) {
        self.b.remove(k.as_ref());
    }
}

impl Kv {
    pub fn open(dir: &Path) -> Result<Kv, KvError> {
        Ok(Kv {
            db: sled::Config::new().path(dir).open()?,
        })
    }

    pub fn tree(&self, name: &str) -> Result<Tree, KvError> {
        Ok(Tree {
            t: self.db.open_tree(name)?,
        })
    }

    /// Waits until everything written so far is on disk.
    pub async fn flush(&self) -> Result<(), KvError> {
        self.db.flush_async().await?;
        Ok(())
    }
}

impl Tree {
    pub fn get(&self, k: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.t.get(k.as_ref())?.map(|v| v.to_vec()))
    }

    pub fn put(&self, k: impl AsRef<[u8]>, v: impl AsRef<[u8]>) -> Result<(), KvError> {
        self.t.insert(k.as_ref(), v.as_ref())?;
        Ok(())
    }

    pub fn apply(&self, b: Batch) -> Result<(), KvError> {
        self.t.apply_batch(b.b)?;
        Ok(())
    }

    /// Entries with keys in `[from, to)` (`to = None`: to the end), in key order.
    pub fn range(
        &self,
        from: &[u8],
        to: Option<&[u8]>,
    ) -> impl Iterator<Item = Result<Pair, KvError>> {
        let it = match to {
            Some(t) => self.t.range(from.to_vec()..t.to_vec()),
            None => self.t.range(from.to_vec()..),
        };
        it.map(|r| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(KvError::from)
        })
    }

    pub fn scan_prefix(&self, p: &[u8]) -> impl Iterator<Item = Result<Pair, KvError>> {
        self.t.scan_prefix(p).map(|r| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec()))
                .map_err(KvError::from)
        })
    }

    pub fn last(&self) -> Result<Option<Pair>, KvError> {
        Ok(self.t.last()?.map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    pub fn len(&self) -> usize {
        self.t.len()
    }

    pub fn is_empty(&self) -> bool {
        self.t.is_empty()
    }
}
