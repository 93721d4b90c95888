//! Checkers over a history of register operations (one register per key; every write writes a
//! value never written before, and values grow with invoke time).
//!
//! - `lost_writes`: after healing, every node's final consistent read of a key returns the same
//!   value, and that value is not older than an acknowledged write that began after it was
//!   acknowledged: no acknowledged write was lost.
//! - `realtime_reads`: consistent reads respect real-time order: no read returns a value
//!   whose write began after the read ended (future read), none returns a value overwritten by a
//!   write acknowledged before the read began (stale read), and of two reads in real-time order
//!   the later never returns a value the earlier had already seen overwritten. These are the
//!   conditions a unique-value register history must meet to be linearizable. They are
//!   necessary, not sufficient (the full search is in `wgl`), and name the culprit read when
//!   the search finds none.
//! - `monotonic_default_reads`: per node, default reads never go back to an older value.
//!
//! Writes with an unknown outcome (`info`) may take effect at any later time.

use std::collections::HashMap;

use serde_json::{json, Value};

use crate::history::{Event, Kind, Op};

/// A completed operation.
#[derive(Debug, Clone)]
pub struct OpRec {
    pub op: Op,
    pub key: usize,
    pub value: Option<u64>,
    pub node: usize,
    pub invoke: u64,
    /// `u64::MAX` when the outcome is unknown.
    pub complete: u64,
    pub kind: Kind,
}

/// Pairs each invoke with its process's next completion.
pub fn pair(events: &[Event]) -> Vec<OpRec> {
    let mut open: HashMap<usize, &Event> = HashMap::new();
    let mut out = Vec::new();
    for e in events {
        if e.kind == Kind::Invoke {
            open.insert(e.process, e);
            continue;
        }
        if let Some(inv) = open.remove(&e.process) {
            out.push(OpRec {
                op: inv.op,
                key: inv.key,
                value: if inv.op == Op::Write {
                    inv.value
                } else {
                    e.value
                },
                node: inv.node,
                invoke: inv.time,
                complete: if e.kind == Kind::Info {
                    u64::MAX
                } else {
                    e.time
                },
                kind: e.kind,
            });
        }
    }
    // Invokes never completed (the run ended): unknown outcome.
    for (_, inv) in open {
        out.push(OpRec {
            op: inv.op,
            key: inv.key,
            value: inv.value,
            node: inv.node,
            invoke: inv.time,
            complete: u64::MAX,
            kind: Kind::Info,
        });
    }
    out
}

struct Writes {
    /// value → (invoke, complete) of the write that wrote it (complete MAX: unknown outcome).
    by_value: HashMap<u64, (u64, u64)>,
    /// Acknowledged writes: (invoke, complete).
    acked: Vec<(u64, u64)>,
}

fn writes_by_key(ops: &[OpRec]) -> HashMap<usize, Writes> {
    let mut m: HashMap<usize, Writes> = HashMap::new();
    for o in ops
        .iter()
        .filter(|o| o.op == Op::Write && o.kind != Kind::Fail)
    {
        let w = m.entry(o.key).or_insert_with(|| Writes {
            by_value: HashMap::new(),
            acked: Vec::new(),
        });
        if let Some(v) = o.value {
            w.by_value.insert(v, (o.invoke, o.complete));
        }
        if o.kind == Kind::Ok {
            w.acked.push((o.invoke, o.complete));
        }
    }
    m
}

/// Whether reading `value` at a read invoked at `read_invoke` is stale: some write acknowledged
/// before the read began started after `value`'s write was acknowledged.
fn stale(w: &Writes, value: Option<u64>, read_invoke: u64) -> bool {
    let written_done = match value {
        None => 0,
        Some(v) => match w.by_value.get(&v) {
            Some((_, c)) => *c,
            None => return false,
        },
    };
    if value.is_none() {
        return w.acked.iter().any(|(_, c)| *c < read_invoke);
    }
    written_done != u64::MAX
        && w.acked
            .iter()
            .any(|(i, c)| *i > written_done && *c < read_invoke)
}

/// Reads in real-time order that see values out of order: the later read's value was
/// overwritten-before-written relative to the earlier read's value.
fn reordered(w: &Writes, reads: &mut [&OpRec]) -> Vec<Value> {
    reads.sort_by_key(|r| r.invoke);
    let mut out = Vec::new();
    // The newest (by write invoke) value seen by reads completed so far.
    let mut done: Vec<(u64, u64)> = reads
        .iter()
        .filter_map(|r| r.value.map(|v| (r.complete, v)))
        .collect();
    done.sort();
    for r in reads.iter() {
        let Some(v2) = r.value else { continue };
        let Some((_, c2)) = w.by_value.get(&v2) else {
            continue;
        };
        for (c1, v1) in done.iter().take_while(|(c1, _)| *c1 < r.invoke) {
            let _ = c1;
            if let Some((i1, _)) = w.by_value.get(v1) {
                if *c2 != u64::MAX && *c2 < *i1 {
                    out.push(
                        json!({"read": v2, "after_read_of": v1, "key": r.key, "node": r.node}),
                    );
                    break;
                }
            }
        }
    }
    out
}

fn verdict(anomalies: Vec<Value>, checked: usize) -> Value {
    json!({
        "valid": anomalies.is_empty(),
        "checked": checked,
        "anomaly_count": anomalies.len(),
        "anomalies": anomalies.into_iter().take(20).collect::<Vec<_>>(),
    })
}

/// Runs every register checker. `finals` are (node, key, value) read after healing.
pub fn check(ops: &[OpRec], finals: &[(usize, usize, Option<u64>)]) -> Value {
    let writes = writes_by_key(ops);
    let empty = Writes {
        by_value: HashMap::new(),
        acked: Vec::new(),
    };

    // Lost writes and convergence.
    let mut lost = Vec::new();
    let mut by_key: HashMap<usize, Vec<(usize, Option<u64>)>> = HashMap::new();
    for (node, key, v) in finals {
        by_key.entry(*key).or_default().push((*node, *v));
    }
    for (key, vals) in &by_key {
        let w = writes.get(key).unwrap_or(&empty);
        if vals.windows(2).any(|p| p[0].1 != p[1].1) {
            lost.push(json!({"key": key, "diverged": vals}));
        }
        if let Some((_, v)) = vals.first() {
            if stale(w, *v, u64::MAX - 1) {
                lost.push(json!({"key": key, "final": v, "error": "an acknowledged later write is missing"}));
            }
        }
    }

    // Consistent reads.
    let mut lin = Vec::new();
    let consistent: Vec<&OpRec> = ops
        .iter()
        .filter(|o| o.op == Op::ConsistentRead && o.kind == Kind::Ok)
        .collect();
    for r in &consistent {
        let w = writes.get(&r.key).unwrap_or(&empty);
        if let Some(v) = r.value {
            match w.by_value.get(&v) {
                None => lin.push(json!({"key": r.key, "read": v, "error": "value never written"})),
                Some((i, _)) if *i > r.complete => {
                    lin.push(json!({"key": r.key, "read": v, "error": "read from the future"}))
                }
                _ => {}
            }
        }
        if stale(w, r.value, r.invoke) {
            lin.push(json!({"key": r.key, "read": r.value, "node": r.node, "error": "stale read"}));
        }
    }
    let mut by_key_reads: HashMap<usize, Vec<&OpRec>> = HashMap::new();
    for r in &consistent {
        by_key_reads.entry(r.key).or_default().push(r);
    }
    for (key, reads) in by_key_reads.iter_mut() {
        lin.extend(reordered(writes.get(key).unwrap_or(&empty), reads));
    }

    // Default reads, per node.
    let mut mono = Vec::new();
    let defaults: Vec<&OpRec> = ops
        .iter()
        .filter(|o| o.op == Op::Read && o.kind == Kind::Ok)
        .collect();
    let mut per: HashMap<(usize, usize), Vec<&OpRec>> = HashMap::new();
    for r in &defaults {
        per.entry((r.node, r.key)).or_default().push(r);
    }
    for ((_, key), reads) in per.iter_mut() {
        mono.extend(reordered(writes.get(key).unwrap_or(&empty), reads));
    }

    json!({
        "lost_writes": verdict(lost, by_key.len()),
        "realtime_reads": verdict(lin, consistent.len()),
        "monotonic_default_reads": verdict(mono, defaults.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(op: Op, key: usize, value: Option<u64>, invoke: u64, complete: u64) -> OpRec {
        OpRec {
            op,
            key,
            value,
            node: 0,
            invoke,
            complete,
            kind: Kind::Ok,
        }
    }

    #[test]
    fn valid_history_passes() {
        let ops = vec![
            op(Op::Write, 1, Some(1), 0, 10),
            op(Op::ConsistentRead, 1, Some(1), 11, 20),
            op(Op::Write, 1, Some(2), 21, 30),
            op(Op::ConsistentRead, 1, Some(2), 31, 40),
        ];
        let r = check(&ops, &[(0, 1, Some(2)), (1, 1, Some(2))]);
        assert_eq!(r["realtime_reads"]["valid"], true, "{r}");
        assert_eq!(r["lost_writes"]["valid"], true, "{r}");
    }

    #[test]
    fn stale_read_and_lost_write_are_caught() {
        let ops = vec![
            op(Op::Write, 1, Some(1), 0, 10),
            op(Op::Write, 1, Some(2), 11, 20),
            op(Op::ConsistentRead, 1, Some(1), 21, 30),
        ];
        let r = check(&ops, &[(0, 1, Some(1))]);
        assert_eq!(r["realtime_reads"]["valid"], false, "{r}");
        assert_eq!(r["lost_writes"]["valid"], false, "{r}");
    }

    #[test]
    fn reads_going_backwards_are_caught() {
        let ops = vec![
            op(Op::Write, 1, Some(1), 0, 10),
            op(Op::Write, 1, Some(2), 11, 20),
            op(Op::Read, 1, Some(2), 21, 30),
            op(Op::Read, 1, Some(1), 31, 40),
        ];
        let r = check(&ops, &[]);
        assert_eq!(r["monotonic_default_reads"]["valid"], false, "{r}");
    }
}
