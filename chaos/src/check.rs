//! Checking a recorded history against what Granary promises.
//!
//! - [`counter`]: every acknowledged increment is in the final value, none is applied
//!   twice (`acked ≤ final ≤ acked + indeterminate` per key), and every reply is
//!   possible at its time (no two acknowledged increments see one value; no read
//!   goes back in time).
//! - [`register`]: each register key's history is linearizable (a Wing–Gong search
//!   with Lowe's memoisation, as in Knossos and porcupine), with indeterminate writes
//!   allowed to take effect at any later time or never.
//! - [`account`]: the follow graph: every acknowledged `Follow(a, b)` shows on both
//!   sides at the end, and nothing shows that was never attempted.
//!
//! A [`Violation`] carries the smallest excerpt of the history that shows it.

use serde::Serialize;

use crate::history::Op;

pub mod account;
pub mod counter;
pub mod register;

/// One broken promise, with the operations that show it.
#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    /// `counter`, `register` or `account`.
    pub model: &'static str,
    /// The grain key.
    pub key: String,
    /// What is wrong, in one line.
    pub what: String,
    /// The operations that show it (the minimal excerpt), in invocation order.
    pub excerpt: Vec<Op>,
}

/// What the checkers found in one history.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Findings {
    /// Every broken promise found.
    pub violations: Vec<Violation>,
    /// Acknowledged increments missing from a final counter value.
    pub lost: u64,
    /// Increments applied more often than they were attempted.
    pub duplicated: u64,
    /// Register keys whose search ran out of budget (neither proven nor refuted).
    pub unknown: Vec<String>,
    /// Register keys checked, and their operations.
    pub register_keys: usize,
    /// Register operations checked.
    pub register_ops: usize,
    /// Counter keys checked.
    pub counter_keys: usize,
    /// Accounts checked.
    pub accounts: usize,
}

/// Runs every checker over `ops` (the final reads included).
pub fn check_all(ops: &[Op]) -> Findings {
    let mut findings = Findings::default();
    counter::check(ops, &mut findings);
    register::check(ops, &mut findings, register::DEFAULT_BUDGET);
    account::check(ops, &mut findings);
    findings
}

/// Groups operations by key, each group in invocation order.
pub(crate) fn by_key<'a>(
    ops: impl Iterator<Item = &'a Op>,
) -> std::collections::BTreeMap<String, Vec<&'a Op>> {
    let mut keys: std::collections::BTreeMap<String, Vec<&'a Op>> = Default::default();
    for op in ops {
        keys.entry(op.call.key().to_owned()).or_default().push(op);
    }
    for ops in keys.values_mut() {
        ops.sort_by_key(|op| (op.invoked, op.id));
    }
    keys
}

/// The excerpt of `ops` around the operation `center`: it and every operation whose
/// interval overlaps it, plus the `before` operations that completed last before it.
pub(crate) fn excerpt(ops: &[&Op], center: &Op, before: usize) -> Vec<Op> {
    let end = center.completed;
    let mut earlier: Vec<&Op> = ops
        .iter()
        .copied()
        .filter(|op| op.completed < center.invoked)
        .collect();
    earlier.sort_by_key(|op| op.completed);
    let skip = earlier.len().saturating_sub(before);
    let mut out: Vec<Op> = earlier[skip..].iter().map(|op| (*op).clone()).collect();
    out.extend(
        ops.iter()
            .filter(|op| op.completed >= center.invoked && op.invoked <= end)
            .map(|op| (*op).clone()),
    );
    out.sort_by_key(|op| (op.invoked, op.id));
    out.dedup_by_key(|op| op.id);
    out
}

#[cfg(test)]
mod tests;
