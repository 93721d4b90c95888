//! Linearizability of the consistent reads and the writes, per key, by the Wing–Gong–Lowe
//! search of the `todc-utils` crate (the search Knossos runs: linearize each operation as
//! early as possible, backtrack, memoise (linearized set, state) pairs).
//!
//! Operations with an unknown outcome (`info`) may take effect at any time after their
//! invocation, so their response is placed at the end of the history. An unknown-outcome
//! write whose value nobody ever read is dropped first: linearizing it last is always
//! possible and says nothing, while keeping it would make the search branch on it. Failed
//! operations are certainly not applied and are dropped; default (non-consistent) reads are
//! not linearizable by design and are checked elsewhere.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use todc_utils::linearizability::history::{Action, History};
use todc_utils::linearizability::WGLChecker;
use todc_utils::specifications::Specification;

use crate::checker::OpRec;
use crate::history::{Kind, Op};

#[derive(Debug, Clone, Copy)]
enum RegOp {
    Write(u64),
    Read(Option<u64>),
}

/// A register holding a value or nothing (the consumer does not exist yet).
struct Register;

impl Specification for Register {
    type State = Option<u64>;
    type Operation = RegOp;

    fn init() -> Self::State {
        None
    }

    fn apply(op: &RegOp, state: &Option<u64>) -> (bool, Option<u64>) {
        match op {
            RegOp::Write(v) => (true, Some(*v)),
            RegOp::Read(v) => (v == state, *state),
        }
    }
}

/// The history of one key as call/response actions in real-time order.
fn actions(ops: &[&OpRec], observed: &HashSet<u64>) -> Vec<(usize, Action<RegOp>)> {
    let kept: Vec<&OpRec> = ops
        .iter()
        .copied()
        .filter(|o| match (o.op, o.kind) {
            (Op::Write, Kind::Ok) => true,
            (Op::Write, Kind::Info) => o.value.is_some_and(|v| observed.contains(&v)),
            (Op::ConsistentRead, Kind::Ok) => true,
            _ => false,
        })
        .collect();
    // (time, is_response, process, op): calls sort before responses at equal times.
    let mut events: Vec<(u64, bool, usize, RegOp)> = Vec::with_capacity(kept.len() * 2);
    for (i, o) in kept.iter().enumerate() {
        let op = match o.op {
            Op::Write => RegOp::Write(o.value.unwrap_or(0)),
            _ => RegOp::Read(o.value),
        };
        events.push((o.invoke, false, i, op));
        events.push((o.complete, true, i, op));
    }
    events.sort_by_key(|e| (e.0, e.1));
    events
        .into_iter()
        .map(|(_, resp, p, op)| {
            (
                p,
                if resp {
                    Action::Response(op)
                } else {
                    Action::Call(op)
                },
            )
        })
        .collect()
}

/// Checks every key; a key whose search does not finish within `budget` is `unknown`.
pub async fn check(ops: &[OpRec], observed: &HashSet<u64>, keys: usize, budget: Duration) -> Value {
    let mut per_key = Vec::new();
    let mut valid = Some(true);
    for key in 0..keys {
        let mine: Vec<&OpRec> = ops.iter().filter(|o| o.key == key).collect();
        let acts = actions(&mine, observed);
        let n = acts.len() / 2;
        let started = Instant::now();
        let verdict = if acts.is_empty() {
            Some(true)
        } else {
            let job = tokio::task::spawn_blocking(move || {
                WGLChecker::<Register>::is_linearizable(History::from_actions(acts))
            });
            match tokio::time::timeout(budget, job).await {
                Ok(Ok(v)) => Some(v),
                _ => None,
            }
        };
        valid = match (valid, verdict) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (None, _) | (_, None) => None,
            _ => Some(true),
        };
        per_key.push(json!({
            "key": key,
            "operations": n,
            "linearizable": verdict,
            "seconds": started.elapsed().as_secs_f64(),
        }));
    }
    json!({"valid": valid, "keys": per_key})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(op: Op, kind: Kind, value: Option<u64>, invoke: u64, complete: u64) -> OpRec {
        OpRec {
            op,
            key: 0,
            value,
            node: 0,
            invoke,
            complete,
            kind,
        }
    }

    fn verdict(ops: &[OpRec]) -> bool {
        let observed: HashSet<u64> = ops
            .iter()
            .filter(|o| o.op != Op::Write)
            .filter_map(|o| o.value)
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(check(ops, &observed, 1, Duration::from_secs(10)))["valid"] == true
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [
            op(Op::Write, Kind::Ok, Some(1), 0, 10),
            op(Op::ConsistentRead, Kind::Ok, Some(1), 20, 30),
            op(Op::Write, Kind::Ok, Some(2), 40, 50),
            op(Op::ConsistentRead, Kind::Ok, Some(2), 60, 70),
        ];
        assert!(verdict(&h));
    }

    #[test]
    fn stale_read_is_caught() {
        let h = [
            op(Op::Write, Kind::Ok, Some(1), 0, 10),
            op(Op::Write, Kind::Ok, Some(2), 20, 30),
            op(Op::ConsistentRead, Kind::Ok, Some(1), 40, 50),
        ];
        assert!(!verdict(&h));
    }

    #[test]
    fn concurrent_reads_must_agree_on_one_order() {
        // Writes 1 and 2 overlap; reader A sees 1 then 2, reader B sees 2 then 1, all after
        // both writes ended: no single order explains both.
        let h = [
            op(Op::Write, Kind::Ok, Some(1), 0, 100),
            op(Op::Write, Kind::Ok, Some(2), 0, 100),
            op(Op::ConsistentRead, Kind::Ok, Some(1), 110, 120),
            op(Op::ConsistentRead, Kind::Ok, Some(2), 110, 120),
            op(Op::ConsistentRead, Kind::Ok, Some(2), 130, 140),
            op(Op::ConsistentRead, Kind::Ok, Some(1), 130, 140),
        ];
        assert!(!verdict(&h));
    }

    #[test]
    fn an_unknown_write_may_land_late() {
        let h = [
            op(Op::Write, Kind::Ok, Some(1), 0, 10),
            op(Op::Write, Kind::Info, Some(2), 20, u64::MAX),
            op(Op::ConsistentRead, Kind::Ok, Some(1), 30, 40),
            op(Op::ConsistentRead, Kind::Ok, Some(2), 50, 60),
        ];
        assert!(verdict(&h));
    }

    #[test]
    fn reading_a_value_before_its_write_began_is_caught() {
        let h = [
            op(Op::ConsistentRead, Kind::Ok, Some(1), 0, 10),
            op(Op::Write, Kind::Ok, Some(1), 20, 30),
        ];
        assert!(!verdict(&h));
    }
}
