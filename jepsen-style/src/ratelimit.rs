//! Rate-limit checker: admissions per fixed window against the bound the README states.
//!
//! For a window no fault touched: `limit + (N − 1) + rate × 0.5 s` (one request per node in
//! flight when the shares are computed, plus what peers admit while their counts are being
//! gossiped: the view is rebased at least every 0.5 s). For a window a fault touched, each
//! extra side the fault split the cluster into may admit at most the headroom it saw at the
//! split, so the bound grows by one limit per extra side.
//!
//! A request is counted in a window only when its whole round trip lies inside it; requests
//! that straddle a boundary, and requests with no answer, are counted nowhere and reported.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::nemesis::Fault;
use crate::workload::RlSample;

/// How long after a fault healed its effect on counts may last (gossip reconnects, a
/// restarted node hears its peers again).
const AFTERMATH_MS: u64 = 2_000;

pub struct Params {
    pub limit: u64,
    pub window_ms: u64,
    pub nodes: usize,
    /// Requests per second sent in all.
    pub rate: f64,
}

pub fn check(samples: &[RlSample], faults: &[Fault], p: &Params) -> Value {
    #[derive(Default)]
    struct W {
        admitted: u64,
        refused: u64,
        straddling: u64,
        unknown: u64,
    }
    let mut windows: BTreeMap<u64, W> = BTreeMap::new();
    for s in samples {
        let w = s.invoke_unix_ms / p.window_ms;
        let entry = windows.entry(w).or_default();
        match s.admitted {
            None => entry.unknown += 1,
            Some(_) if s.complete_unix_ms / p.window_ms != w => entry.straddling += 1,
            Some(true) => entry.admitted += 1,
            Some(false) => entry.refused += 1,
        }
    }
    let in_flight = (p.rate * 0.5).ceil() as u64;
    let healthy_bound = p.limit + p.nodes as u64 - 1 + in_flight;
    let mut valid = true;
    let mut out = Vec::new();
    let mut worst_healthy: f64 = 0.0;
    for (w, c) in &windows {
        let (start, end) = (w * p.window_ms, (w + 1) * p.window_ms);
        let extra: usize = faults
            .iter()
            .filter(|f| f.start_unix_ms < end && f.end_unix_ms + AFTERMATH_MS > start)
            .map(|f| f.sides.saturating_sub(1))
            .sum();
        let bound = healthy_bound + extra as u64 * p.limit;
        let ok = c.admitted <= bound;
        valid &= ok;
        if extra == 0 {
            worst_healthy = worst_healthy.max(c.admitted as f64 / p.limit as f64);
        }
        out.push(json!({
            "window_start_unix_ms": start,
            "admitted": c.admitted,
            "refused": c.refused,
            "straddling": c.straddling,
            "unknown": c.unknown,
            "faulted": extra > 0,
            "bound": bound,
            "valid": ok,
        }));
    }
    json!({
        "valid": valid,
        "limit": p.limit,
        "healthy_bound": healthy_bound,
        "worst_healthy_ratio": worst_healthy,
        "windows": out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: u64, admitted: bool) -> RlSample {
        RlSample {
            node: 0,
            invoke_unix_ms: t,
            complete_unix_ms: t + 5,
            admitted: Some(admitted),
        }
    }

    fn params() -> Params {
        Params {
            limit: 10,
            window_ms: 60_000,
            nodes: 3,
            rate: 2.0,
        }
    }

    #[test]
    fn a_healthy_window_over_the_bound_is_an_anomaly() {
        // Bound: 10 + 2 + 1 = 13.
        let ok: Vec<RlSample> = (0..13).map(|i| sample(i * 100, true)).collect();
        assert_eq!(check(&ok, &[], &params())["valid"], true);
        let over: Vec<RlSample> = (0..14).map(|i| sample(i * 100, true)).collect();
        assert_eq!(check(&over, &[], &params())["valid"], false);
    }

    #[test]
    fn a_fault_raises_the_bound_by_one_limit_per_extra_side() {
        let over: Vec<RlSample> = (0..20).map(|i| sample(i * 100, true)).collect();
        let fault = Fault {
            nemesis: "partition".into(),
            detail: String::new(),
            nodes: vec![0],
            start_ns: 0,
            end_ns: 0,
            start_unix_ms: 30_000,
            end_unix_ms: 35_000,
            sides: 2,
            problem: None,
            backend: None,
        };
        assert_eq!(check(&over, &[fault], &params())["valid"], true);
    }

    #[test]
    fn straddling_and_unanswered_requests_count_nowhere() {
        let mut s: Vec<RlSample> = (0..13).map(|i| sample(i * 100, true)).collect();
        s.push(RlSample {
            node: 1,
            invoke_unix_ms: 59_999,
            complete_unix_ms: 60_003,
            admitted: Some(true),
        });
        s.push(RlSample {
            node: 1,
            invoke_unix_ms: 100,
            complete_unix_ms: 3_100,
            admitted: None,
        });
        let r = check(&s, &[], &params());
        assert_eq!(r["valid"], true);
        assert_eq!(r["windows"][0]["straddling"], 1);
        assert_eq!(r["windows"][0]["unknown"], 1);
    }
}
