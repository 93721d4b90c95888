//! The history of operations: every client operation is recorded when it is invoked and when
//! it completes (ok), certainly failed (fail) or ended without a known outcome (info), with
//! monotonic times, as in Jepsen.

use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Invoke,
    Ok,
    Fail,
    Info,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Write,
    Read,
    ConsistentRead,
}

/// One history event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub process: usize,
    pub kind: Kind,
    pub op: Op,
    pub key: usize,
    /// Written value, or value read (`None`: absent, or unknown for an invoke of a read).
    pub value: Option<u64>,
    pub node: usize,
    /// Nanoseconds since the run started.
    pub time: u64,
}

/// A shared, append-only history.
pub struct History {
    start: Instant,
    events: Mutex<Vec<Event>>,
}

impl History {
    pub fn new() -> History {
        History {
            start: Instant::now(),
            events: Mutex::new(Vec::new()),
        }
    }

    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    pub fn record(
        &self,
        process: usize,
        kind: Kind,
        op: Op,
        key: usize,
        value: Option<u64>,
        node: usize,
    ) {
        let e = Event {
            process,
            kind,
            op,
            key,
            value,
            node,
            time: self.now(),
        };
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(e);
    }

    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}
