//! The counter model: `Add(1)` replies with the new value, `Get` with the current one.
//!
//! Per key, with `acked` acknowledged and `info` indeterminate increments, and `F` the
//! final value (the last acknowledged `Get`, read after the faults healed):
//! - `F ≥ acked` (else `acked − F` acknowledged increments were **lost**), and
//!   `F ≤ acked + info` (else `F − acked − info` were **duplicated**);
//! - no two acknowledged `Add`s replied with the same value (two activations, or a
//!   write that overwrote another: a lost update);
//! - an acknowledged reply `v` (of an `Add` or a `Get`) is at least the number of
//!   increments acknowledged before the call was invoked, and at most the number of
//!   increments invoked before it completed (a reply from stale or from future state).

use std::collections::HashMap;

use super::{by_key, excerpt, Findings, Violation};
use crate::history::{Call, Op, Outcome, Reply};
use crate::workload::FINAL_READER;

/// Checks every counter key of `ops` into `findings`.
pub fn check(ops: &[Op], findings: &mut Findings) {
    let counters = by_key(
        ops.iter()
            .filter(|op| matches!(op.call, Call::Add { .. } | Call::Get { .. })),
    );
    for (key, ops) in counters {
        findings.counter_keys += 1;
        check_key(&key, &ops, findings);
    }
}

fn value(op: &Op) -> Option<i64> {
    match op.outcome {
        Outcome::Ok(Reply::Int(v)) => Some(v),
        _ => None,
    }
}

fn is_add(op: &Op) -> bool {
    matches!(op.call, Call::Add { .. })
}

fn check_key(key: &str, ops: &[&Op], findings: &mut Findings) {
    let violation = |what: String, excerpt: Vec<Op>| Violation {
        model: "counter",
        key: key.to_owned(),
        what,
        excerpt,
    };
    let adds: Vec<&Op> = ops.iter().copied().filter(|op| is_add(op)).collect();
    let acked = adds.iter().filter(|op| value(op).is_some()).count() as i64;
    let info = adds
        .iter()
        .filter(|op| matches!(op.outcome, Outcome::Info(_)))
        .count() as i64;

    // Acknowledged completions and all (possibly applied) invocations, sorted, to
    // count "acked before t" and "invoked before t" by binary search.
    let mut acked_at: Vec<u64> = adds
        .iter()
        .filter(|op| value(op).is_some())
        .map(|op| op.completed)
        .collect();
    acked_at.sort_unstable();
    let mut invoked_at: Vec<u64> = adds
        .iter()
        .filter(|op| !matches!(op.outcome, Outcome::Fail(_)))
        .map(|op| op.invoked)
        .collect();
    invoked_at.sort_unstable();

    let mut seen: HashMap<i64, &Op> = HashMap::new();
    for &op in ops {
        let Some(v) = value(op) else { continue };
        let floor = acked_at.partition_point(|&t| t < op.invoked) as i64;
        let ceiling = invoked_at.partition_point(|&t| t <= op.completed) as i64;
        let floor = if is_add(op) { floor + 1 } else { floor };
        if v < floor {
            findings.violations.push(violation(
                format!(
                    "{} replied {v}, but {floor} increment(s) were acknowledged before it was invoked (stale state)",
                    if is_add(op) { "Add" } else { "Get" }
                ),
                excerpt(ops, op, 3),
            ));
        } else if v > ceiling {
            findings.violations.push(violation(
                format!(
                    "replied {v}, but only {ceiling} increment(s) were invoked before it completed"
                ),
                excerpt(ops, op, 3),
            ));
        }
        if is_add(op) {
            if let Some(other) = seen.insert(v, op) {
                let mut pair = vec![other.clone(), op.clone()];
                pair.sort_by_key(|op| op.invoked);
                findings.violations.push(violation(
                    format!("two acknowledged increments both replied {v} (one was lost)"),
                    pair,
                ));
            }
        }
    }

    // The final value: the last acknowledged final read.
    let Some(last) = ops
        .iter()
        .copied()
        .filter(|op| !is_add(op) && op.worker == FINAL_READER && value(op).is_some())
        .max_by_key(|op| op.invoked)
    else {
        if acked > 0 {
            findings.violations.push(violation(
                "no final read succeeded, so the acknowledged increments cannot be checked".into(),
                Vec::new(),
            ));
        }
        return;
    };
    let after_last = adds.iter().any(|op| op.invoked > last.invoked);
    if after_last {
        return; // not a final read (a checker of a partial history)
    }
    let final_value = value(last).unwrap_or_default();
    if final_value < acked {
        findings.lost += (acked - final_value) as u64;
        findings.violations.push(violation(
            format!("final value {final_value} < {acked} acknowledged increments ({info} indeterminate): lost writes"),
            vec![last.clone()],
        ));
    } else if final_value > acked + info {
        findings.duplicated += (final_value - acked - info) as u64;
        findings.violations.push(violation(
            format!(
                "final value {final_value} > {acked} acknowledged + {info} indeterminate increments: applied twice"
            ),
            vec![last.clone()],
        ));
    }
}
