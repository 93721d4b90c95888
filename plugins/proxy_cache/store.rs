//! The proxy-cache store: one per process, in memory, bounded in bytes, least recently used
//! entries evicted first (Kong's `memory` strategy keeps entries in an nginx shared dict,
//! which also evicts by LRU when full).
//!
//! Entries are spread over [`SHARDS`] shards by key, each a mutex around an LRU list with its
//! share of the byte budget, so hits on different keys do not wait on one lock; a lock is held
//! only to look up, insert or remove (never while a body is read or sent: entries are shared
//! `Arc`s).

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use lru::LruCache;

/// Bytes the store may hold in all (keys, headers and bodies, plus a per-entry overhead).
pub const DEFAULT_MEMORY: usize = 64 * 1024 * 1024;
/// Shards of the store; each holds at most its share of the budget.
pub const SHARDS: usize = 8;
/// Largest entry stored (an eighth of a shard at the default size): a larger response goes
/// to the client uncached.
pub const MAX_ENTRY: usize = 4 * 1024 * 1024;
/// What an entry costs beyond its bytes (the LRU node, the `Arc`, the header vector).
const OVERHEAD: usize = 256;

/// A stored response (Kong's memory strategy: `status, headers, body, body_len, timestamp,
/// ttl, version, req_body`).
#[derive(Debug, Clone)]
pub struct Entry {
    pub status: u16,
    /// The response headers when it was stored, names as sent.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Unix seconds (Kong's `ngx.time()`).
    pub timestamp: i64,
    /// Freshness in seconds.
    pub ttl: i64,
    /// The request body, when the proxy had read it.
    pub req_body: Option<Bytes>,
    /// Unix seconds after which the entry is gone (`None`: kept until evicted, as a shared
    /// dict's exptime 0).
    pub expires: Option<f64>,
}

impl Entry {
    fn cost(&self, key: &str) -> usize {
        key.len()
            + self.body.len()
            + self.req_body.as_ref().map_or(0, Bytes::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len() + 16)
                .sum::<usize>()
            + OVERHEAD
    }

    /// Kong's stored JSON (what `GET /proxy-cache/{key}` answers): repeated headers become
    /// arrays, as `ngx.resp.get_headers` returns them.
    pub fn to_json(&self) -> serde_json::Value {
        let mut headers = serde_json::Map::new();
        for (k, v) in &self.headers {
            match headers.get_mut(k) {
                Some(serde_json::Value::Array(a)) => a.push(v.clone().into()),
                Some(prev) => {
                    let first = prev.take();
                    *prev = serde_json::Value::Array(vec![first, v.clone().into()]);
                }
                None => {
                    headers.insert(k.clone(), v.clone().into());
                }
            }
        }
        serde_json::json!({
            "status": self.status,
            "headers": headers,
            "body": String::from_utf8_lossy(&self.body),
            "body_len": self.body.len(),
            "timestamp": self.timestamp,
            "ttl": self.ttl,
            "version": 1,
            "req_body": self.req_body.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
        })
    }
}

struct Shard {
    lru: LruCache<String, (Arc<Entry>, usize)>,
    bytes: usize,
}

/// The store. See the module documentation.
pub struct Store {
    shards: Box<[Mutex<Shard>]>,
    shard_budget: usize,
}

impl Store {
    /// A store of at most `memory` bytes.
    pub fn new(memory: usize) -> Store {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    lru: LruCache::unbounded(),
                    bytes: 0,
                })
            })
            .collect();
        Store {
            shards,
            shard_budget: memory / SHARDS,
        }
    }

    /// The largest entry this store takes.
    pub fn max_entry(&self) -> usize {
        MAX_ENTRY.min(self.shard_budget)
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        let i = (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) as usize) % SHARDS;
        // A panic while holding a shard lock leaves a consistent LRU: keep serving.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live entry under `key` at time `now`, marked as recently used.
    pub fn get(&self, key: &str, now: f64) -> Option<Arc<Entry>> {
        let mut s = self.shard(key);
        let (entry, _) = s.lru.get(key)?;
        if entry.expires.is_some_and(|e| now >= e) {
            if let Some((_, (_, cost))) = s.lru.pop_entry(key) {
                s.bytes -= cost;
            }
            return None;
        }
        Some(entry.clone())
    }

    /// Stores `entry` under `key` (replacing what was there), evicting the least recently
    /// used entries of its shard to make room. False when the entry is too large.
    pub fn put(&self, key: String, entry: Entry) -> bool {
        let cost = entry.cost(&key);
        if cost > self.shard_budget || entry.body.len() > self.max_entry() {
            return false;
        }
        let mut s = self.shard(&key);
        if let Some((_, old)) = s.lru.pop(&key) {
            s.bytes -= old;
        }
        while s.bytes + cost > self.shard_budget {
            match s.lru.pop_lru() {
                Some((_, (_, c))) => s.bytes -= c,
                None => break,
            }
        }
        s.bytes += cost;
        s.lru.put(key, (Arc::new(entry), cost));
        true
    }

    /// Removes `key`; whether it was there (and live at `now`).
    pub fn remove(&self, key: &str, now: f64) -> bool {
        let mut s = self.shard(key);
        match s.lru.pop(key) {
            Some((e, cost)) => {
                s.bytes -= cost;
                !e.expires.is_some_and(|x| now >= x)
            }
            None => false,
        }
    }

    /// Removes every entry.
    pub fn clear(&self) {
        for m in self.shards.iter() {
            let mut s = m.lock().unwrap_or_else(|e| e.into_inner());
            s.lru.clear();
            s.bytes = 0;
        }
    }

    /// Bytes held (entries and their overhead).
    pub fn bytes(&self) -> usize {
        self.shards
            .iter()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).bytes)
            .sum()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()).lru.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(body: usize, expires: Option<f64>) -> Entry {
        Entry {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: Bytes::from(vec![b'x'; body]),
            timestamp: 0,
            ttl: 300,
            req_body: None,
            expires,
        }
    }

    #[test]
    fn stays_within_its_budget_evicting_the_least_recently_used() {
        let store = Store::new(SHARDS * 64 * 1024);
        for i in 0..2000 {
            assert!(store.put(format!("k{i}"), entry(1000, None)));
            assert!(store.bytes() <= SHARDS * 64 * 1024);
        }
        assert!(store.len() < 2000);
        // Recently used keys survive a flood of new ones in their shard.
        let hot = "hot".to_string();
        store.put(hot.clone(), entry(100, None));
        for i in 0..2000 {
            assert!(store.get(&hot, 0.0).is_some(), "evicted after {i}");
            store.put(format!("n{i}"), entry(1000, None));
        }
        assert!(store.get("k0", 0.0).is_none());
    }

    #[test]
    fn refuses_entries_over_the_bound_and_expires_entries() {
        let store = Store::new(DEFAULT_MEMORY);
        assert!(!store.put("big".into(), entry(MAX_ENTRY + 1, None)));
        assert!(store.put("ok".into(), entry(MAX_ENTRY - 1024, None)));
        assert!(store.put("t".into(), entry(1, Some(10.0))));
        assert!(store.get("t", 9.0).is_some());
        assert!(store.get("t", 10.0).is_none());
        assert!(!store.remove("t", 11.0));
        assert!(store.remove("ok", 0.0));
        store.put("a".into(), entry(1, None));
        store.clear();
        assert_eq!((store.len(), store.bytes()), (0, 0));
    }
}
