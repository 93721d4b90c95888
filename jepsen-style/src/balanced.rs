//! Balanced-route checker: client-visible failures against what retries and health checks
//! promise when a backend is killed, frozen or slowed (the backend nemesis).
//!
//! The promises, per backend fault, with `N` nodes each running one client at a time:
//! - **kill** (connects refused): a refused connect is resent to another target, so no
//!   request sent after the kill fails. A request in flight on the backend at the instant it
//!   dies fails (it was sent: never resent), at most one per node: budget `N`.
//! - **pause** (connections accepted, never answered): a request sent to it times out (504)
//!   and is not resent; the first timeout trips the node's passive breaker, and the probing
//!   owner's failures take the backend out on every node: budget `N × passive timeouts`.
//! - **slow** (answers within the read timeout): budget 0.
//! - **no backend fault**: budget 0.
//!
//! A failure counts against the fault whose interval (plus [`AFTERMATH_MS`] after it healed)
//! holds the request; requests on a faulted node (killed, frozen, restarting) are left out,
//! as the data-plane availability checker leaves them out. And every backend must answer
//! again once its last fault has healed (re-admission by active checks), given
//! [`READMIT_MS`].

use serde_json::{json, Value};

use crate::nemesis::Fault;
use crate::workload::BalancedSample;

/// How long after a backend fault healed its failures still count against it.
const AFTERMATH_MS: u64 = 2_000;
/// How long a healed backend may take to receive traffic again.
const READMIT_MS: u64 = 5_000;

pub struct Params {
    pub nodes: usize,
    pub passive_timeouts: u64,
    /// The backends' names as they answer (`backend-1`…, or `echo-1`…).
    pub backends: Vec<String>,
}

pub fn check(samples: &[BalancedSample], faults: &[Fault], p: &Params) -> Value {
    let backend_faults: Vec<&Fault> = faults.iter().filter(|f| f.backend.is_some()).collect();
    let mut per_fault = vec![0u64; backend_faults.len()];
    let mut unexplained = Vec::new();
    let mut total = 0u64;
    let mut failed = 0u64;
    for s in samples.iter().filter(|s| !s.faulted) {
        total += 1;
        if s.status == Some(200) {
            continue;
        }
        failed += 1;
        // The latest fault that began before the request ended and whose aftermath it
        // overlaps (faults come one at a time; an aftermath may reach into the next).
        let during = backend_faults
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                s.invoke_unix_ms <= f.end_unix_ms + AFTERMATH_MS
                    && s.complete_unix_ms >= f.start_unix_ms
            })
            .max_by_key(|(_, f)| f.start_unix_ms)
            .map(|(i, _)| i);
        match during {
            Some(i) => per_fault[i] += 1,
            None => unexplained.push(json!({
                "node": s.node + 1, "invoke_unix_ms": s.invoke_unix_ms, "status": s.status,
            })),
        }
    }
    let mut valid = unexplained.is_empty();
    let mut report = Vec::new();
    for (f, n) in backend_faults.iter().zip(&per_fault) {
        let bf = f.backend.as_ref().expect("a backend fault");
        let budget = match bf.kind.as_str() {
            "kill" => p.nodes as u64,
            "pause" => p.nodes as u64 * p.passive_timeouts,
            _ => 0,
        };
        let ok = *n <= budget;
        valid &= ok;
        report.push(json!({
            "fault": f.detail, "start_unix_ms": f.start_unix_ms, "end_unix_ms": f.end_unix_ms,
            "failed": n, "budget": budget, "valid": ok,
        }));
    }
    // Re-admission: each backend answers again after its last fault healed.
    let mut readmitted = Vec::new();
    for (i, name) in p.backends.iter().enumerate() {
        let healed = backend_faults
            .iter()
            .filter(|f| f.backend.as_ref().is_some_and(|b| b.backend == i))
            .map(|f| f.end_unix_ms)
            .max();
        let Some(healed) = healed else { continue };
        let last = samples.iter().map(|s| s.invoke_unix_ms).max().unwrap_or(0);
        if last < healed + READMIT_MS {
            readmitted.push(
                json!({"backend": name, "valid": null, "why": "run ended too soon after the heal"}),
            );
            continue;
        }
        let back = samples
            .iter()
            .any(|s| s.invoke_unix_ms > healed && s.backend.as_deref() == Some(name.as_str()));
        valid &= back;
        readmitted.push(json!({"backend": name, "healed_unix_ms": healed, "valid": back}));
    }
    json!({
        "valid": valid,
        "requests": total,
        "failed": failed,
        "unexplained_failures": unexplained,
        "backend_faults": report,
        "readmitted": readmitted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nemesis::BackendFault;

    fn sample(node: usize, t: u64, status: u16, backend: &str) -> BalancedSample {
        BalancedSample {
            node,
            invoke_unix_ms: t,
            complete_unix_ms: t + 5,
            status: Some(status),
            backend: Some(backend.into()),
            faulted: false,
        }
    }

    fn fault(kind: &str, start: u64, end: u64) -> Fault {
        Fault {
            nemesis: "backend".into(),
            detail: format!("{kind} backend 2"),
            nodes: vec![],
            start_ns: 0,
            end_ns: 0,
            start_unix_ms: start,
            end_unix_ms: end,
            sides: 1,
            problem: None,
            backend: Some(BackendFault {
                backend: 1,
                kind: kind.into(),
            }),
        }
    }

    fn params() -> Params {
        Params {
            nodes: 3,
            passive_timeouts: 1,
            backends: vec!["b1".into(), "b2".into()],
        }
    }

    #[test]
    fn failures_are_held_to_each_faults_budget() {
        let mut s: Vec<BalancedSample> = (0..100)
            .map(|i| sample((i % 3) as usize, i * 100, 200, "b1"))
            .collect();
        s.push(sample(0, 20_000, 200, "b2"));
        // A pause: one 504 per node is what the breaker allows.
        for n in 0..3 {
            s.push(sample(n, 1_000, 504, "b1"));
        }
        let f = [fault("pause", 900, 5_000)];
        assert_eq!(check(&s, &f, &params())["valid"], true);
        s.push(sample(1, 1_200, 504, "b1"));
        assert_eq!(check(&s, &f, &params())["valid"], false);
        // A slow backend allows none; a failure outside any fault is unexplained.
        let s2 = vec![sample(0, 1_000, 502, "b1"), sample(0, 20_000, 200, "b2")];
        assert_eq!(
            check(&s2, &[fault("slow", 900, 5_000)], &params())["valid"],
            false
        );
        let r = check(&s2, &[], &params());
        assert_eq!(r["unexplained_failures"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn a_healed_backend_must_answer_again() {
        let s: Vec<BalancedSample> = (0..200).map(|i| sample(0, i * 100, 200, "b1")).collect();
        let r = check(&s, &[fault("kill", 1_000, 2_000)], &params());
        assert_eq!(r["valid"], false, "b2 never answered after its heal");
    }
}
