//! The per-run summary: operations by outcome, each fault's availability and recovery
//! time, the checkers' findings, and a one-line table row for RELIABILITY.md.
//!
//! - **Availability** of a fault: of the operations invoked while it was in effect,
//!   the share acknowledged.
//! - **Recovery** of a fault: from the moment it began until service was whole again,
//!   the start of the first second (after the first failed operation) in which every
//!   operation invoked was acknowledged. It includes failure detection (3 missed
//!   heartbeats) and, where service cannot come back before the fault ends (a lone
//!   master killed), the fault's whole length. `0` when no operation failed between
//!   its start and 5 s after it was healed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::check::Findings;
use crate::faults::Planned;
use crate::history::{Op, Outcome};

/// Bucket width for availability and recovery, µs.
const BUCKET: u64 = 250_000;
/// A clean stretch this many buckets long means recovered.
const CLEAN: usize = 4;
/// Failures this long after a fault was healed still belong to it, µs.
const GRACE: u64 = 5_000_000;

/// When a fault was in effect (µs since the start of the run).
#[derive(Clone, Debug, Serialize)]
pub struct Window {
    /// The planned fault.
    pub fault: Planned,
    /// The silo it hit, if one.
    pub victim: Option<String>,
    /// When it was applied.
    pub start: u64,
    /// When it was healed.
    pub healed: u64,
}

/// Operation counts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Counts {
    /// Operations invoked.
    pub attempted: u64,
    /// Acknowledged.
    pub ok: u64,
    /// Certainly not applied.
    pub fail: u64,
    /// Outcome unknown.
    pub info: u64,
}

impl Counts {
    fn add(&mut self, outcome: &Outcome) {
        self.attempted += 1;
        match outcome {
            Outcome::Ok(_) => self.ok += 1,
            Outcome::Fail(_) => self.fail += 1,
            Outcome::Info(_) => self.info += 1,
        }
    }

    /// Share acknowledged, in %.
    pub fn availability(&self) -> f64 {
        if self.attempted == 0 {
            100.0
        } else {
            100.0 * self.ok as f64 / self.attempted as f64
        }
    }
}

/// One fault's effect.
#[derive(Clone, Debug, Serialize)]
pub struct FaultStats {
    /// The fault's name.
    pub fault: &'static str,
    /// The silo it hit, if one.
    pub victim: Option<String>,
    /// When it began, seconds into the run.
    pub start_s: f64,
    /// How long it lasted.
    pub held_s: f64,
    /// Operations invoked while it lasted.
    pub ops: Counts,
    /// Share of them acknowledged, %.
    pub availability: f64,
    /// `None`: not recovered before the run ended.
    pub recovery_s: Option<f64>,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// The scenario's name (`short`, `mixed`, `soak`).
    pub scenario: String,
    /// The run's seed.
    pub seed: u64,
    /// How long the workload ran.
    pub duration_s: f64,
    /// Operations by outcome.
    pub totals: Counts,
    /// Per call kind (`add`, `read`, …).
    pub by_call: BTreeMap<String, Counts>,
    /// Each fault's availability and recovery.
    pub faults: Vec<FaultStats>,
    /// What the checkers found.
    pub findings: Findings,
    /// Keys whose final read never succeeded.
    pub unanswered: Vec<String>,
    /// Why the run failed (empty: passed).
    pub failures: Vec<String>,
}

fn call_name(op: &Op) -> String {
    let json = serde_json::to_value(&op.call).unwrap_or_default();
    json.get("f")
        .and_then(|f| f.as_str())
        .unwrap_or("?")
        .to_owned()
}

/// Availability and recovery of one window.
fn fault_stats(ops: &[Op], w: &Window, buckets: &[(u64, u64)]) -> FaultStats {
    let mut counts = Counts::default();
    for op in ops
        .iter()
        .filter(|op| op.invoked >= w.start && op.invoked < w.healed)
    {
        counts.add(&op.outcome);
    }
    let first = (w.start / BUCKET) as usize;
    // A failure counts for this fault if it happened while it lasted or within
    // `GRACE` after it was healed (a rejoin, a restarted slave…), not later.
    let last = (((w.healed + GRACE) / BUCKET) as usize + 1).min(buckets.len());
    let failed_at = (first..last).find(|&b| buckets[b].0 < buckets[b].1);
    let recovery_s = match failed_at {
        None => Some(0.0),
        Some(f) => (f..buckets.len().saturating_sub(CLEAN))
            .find(|&b| (b..b + CLEAN).all(|i| buckets[i].1 > 0 && buckets[i].0 == buckets[i].1))
            .map(|b| ((b as u64 * BUCKET).saturating_sub(w.start)) as f64 / 1e6),
    };
    FaultStats {
        fault: w.fault.kind.name(),
        victim: w.victim.clone(),
        start_s: w.start as f64 / 1e6,
        held_s: (w.healed - w.start) as f64 / 1e6,
        availability: counts.availability(),
        ops: counts,
        recovery_s,
    }
}

impl Report {
    /// Summarises `ops` (the workload's, final reads excluded from the counts).
    pub fn new(
        scenario: String,
        seed: u64,
        duration_s: f64,
        ops: &[Op],
        windows: &[Window],
        findings: Findings,
        unanswered: Vec<String>,
    ) -> Report {
        let workload: Vec<&Op> = ops
            .iter()
            .filter(|op| op.worker != crate::workload::FINAL_READER)
            .collect();
        let mut totals = Counts::default();
        let mut by_call: BTreeMap<String, Counts> = BTreeMap::new();
        let end = workload.iter().map(|op| op.invoked).max().unwrap_or(0);
        let mut buckets = vec![(0u64, 0u64); (end / BUCKET) as usize + 1];
        for op in &workload {
            totals.add(&op.outcome);
            by_call.entry(call_name(op)).or_default().add(&op.outcome);
            let b = &mut buckets[(op.invoked / BUCKET) as usize];
            b.1 += 1;
            b.0 += u64::from(matches!(op.outcome, Outcome::Ok(_)));
        }
        let owned: Vec<Op> = workload.iter().map(|op| (*op).clone()).collect();
        let faults = windows
            .iter()
            .map(|w| fault_stats(&owned, w, &buckets))
            .collect();
        let mut failures = Vec::new();
        if !findings.violations.is_empty() {
            failures.push(format!("{} violation(s)", findings.violations.len()));
        }
        if !findings.unknown.is_empty() {
            failures.push(format!(
                "linearizability undecided for {:?}",
                findings.unknown
            ));
        }
        if !unanswered.is_empty() {
            failures.push(format!("final reads never answered for {unanswered:?}"));
        }
        if totals.ok == 0 {
            failures.push("no operation was acknowledged".into());
        }
        Report {
            scenario,
            seed,
            duration_s,
            totals,
            by_call,
            faults,
            findings,
            unanswered,
            failures,
        }
    }

    /// Whether the run passed (no violation, no undecided check, every final read answered).
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// Availability over all fault windows, and the longest recovery.
    fn fault_summary(&self) -> (f64, Option<f64>) {
        let mut all = Counts::default();
        for f in &self.faults {
            all.attempted += f.ops.attempted;
            all.ok += f.ops.ok;
        }
        let worst = self
            .faults
            .iter()
            .map(|f| f.recovery_s.unwrap_or(f64::INFINITY))
            .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))));
        (all.availability(), worst)
    }

    /// The RELIABILITY.md row: scenario | ops | acknowledged | lost | duplicated |
    /// violations | availability in faults | worst recovery.
    pub fn table_row(&self) -> String {
        let (availability, worst) = self.fault_summary();
        let worst = match worst {
            None => "–".to_owned(),
            Some(r) if r.is_finite() => format!("{r:.1} s"),
            Some(_) => "not recovered".to_owned(),
        };
        format!(
            "| {} (seed {}) | {} | {} | {} | {} | {} | {:.1} % | {} |",
            self.scenario,
            self.seed,
            self.totals.attempted,
            self.totals.ok,
            self.findings.lost,
            self.findings.duplicated,
            self.findings.violations.len(),
            availability,
            worst
        )
    }

    /// Per fault kind: how many, availability over all their windows, median and worst
    /// recovery (a markdown table, for RELIABILITY.md).
    pub fn by_kind_table(&self) -> String {
        let mut kinds: BTreeMap<&str, Vec<&FaultStats>> = BTreeMap::new();
        for f in &self.faults {
            kinds.entry(f.fault).or_default().push(f);
        }
        let mut s = String::from(
            "| fault | times | operations during it | acknowledged | median recovery | worst recovery |\n|---|---|---|---|---|---|\n",
        );
        for (kind, faults) in kinds {
            let (mut ops, mut ok) = (0u64, 0u64);
            for f in &faults {
                ops += f.ops.attempted;
                ok += f.ops.ok;
            }
            let mut rec: Vec<f64> = faults
                .iter()
                .map(|f| f.recovery_s.unwrap_or(f64::INFINITY))
                .collect();
            rec.sort_by(f64::total_cmp);
            let show = |r: f64| {
                if r.is_finite() {
                    format!("{r:.1} s")
                } else {
                    "not recovered".to_owned()
                }
            };
            let _ = writeln!(
                s,
                "| {kind} | {} | {ops} | {:.1} % | {} | {} |",
                faults.len(),
                if ops == 0 {
                    100.0
                } else {
                    100.0 * ok as f64 / ops as f64
                },
                show(rec[rec.len() / 2]),
                show(rec[rec.len() - 1])
            );
        }
        s
    }

    /// The human summary printed at the end of a run.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let t = &self.totals;
        let _ = writeln!(
            s,
            "== {} (seed {}), {:.0} s: {} operations: {} ok, {} failed (not applied), {} indeterminate",
            self.scenario, self.seed, self.duration_s, t.attempted, t.ok, t.fail, t.info
        );
        for (call, c) in &self.by_call {
            let _ = writeln!(
                s,
                "   {call:<10} {:>8} ok {:>6} fail {:>6} info",
                c.ok, c.fail, c.info
            );
        }
        let _ = writeln!(s, "   faults:");
        for f in &self.faults {
            let recovery = f
                .recovery_s
                .map_or_else(|| "not recovered".to_owned(), |r| format!("{r:.1} s"));
            let _ = writeln!(
                s,
                "   {:>7.1}s {:<24} {:<4} held {:>4.1}s  {:>6} ops  availability {:>5.1} %  recovery {recovery}",
                f.start_s,
                f.fault,
                f.victim.as_deref().unwrap_or("-"),
                f.held_s,
                f.ops.attempted,
                f.availability
            );
        }
        let fi = &self.findings;
        let _ = writeln!(
            s,
            "   checked: {} counters, {} registers ({} ops, linearizability), {} accounts; lost {}, duplicated {}, violations {}",
            fi.counter_keys, fi.register_keys, fi.register_ops, fi.accounts, fi.lost, fi.duplicated, fi.violations.len()
        );
        for v in &fi.violations {
            let _ = writeln!(s, "   VIOLATION [{} {}] {}", v.model, v.key, v.what);
            for op in &v.excerpt {
                let _ = writeln!(
                    s,
                    "      worker {:>3} {:>10}..{:<10} µs {:?} -> {:?}",
                    op.worker as i64, op.invoked, op.completed, op.call, op.outcome
                );
            }
        }
        let verdict = if self.passed() {
            "PASSED".to_owned()
        } else {
            format!("FAILED: {}", self.failures.join("; "))
        };
        let _ = writeln!(s, "   {verdict}");
        s
    }
}

#[cfg(test)]
mod tests;
