//! The checkers on known-good and known-bad histories: a checker that never fails
//! proves nothing, so each rule is shown to catch the history that breaks it.

use super::register::{check_key, Verdict};
use super::*;
use crate::history::{Call, Op, Outcome, Reply};

/// Builds histories tersely; ids in order of creation.
#[derive(Default)]
struct H {
    ops: Vec<Op>,
}

impl H {
    fn op(&mut self, worker: u32, call: Call, at: (u64, u64), outcome: Outcome) -> &mut Self {
        self.ops.push(Op {
            id: self.ops.len() as u64,
            worker,
            call,
            invoked: at.0,
            completed: at.1,
            outcome,
        });
        self
    }
    fn w(&mut self, v: u64, at: (u64, u64)) -> &mut Self {
        self.op(0, write(v), at, Outcome::Ok(Reply::Value(None)))
    }
    fn w_info(&mut self, v: u64, at: (u64, u64)) -> &mut Self {
        self.op(0, write(v), at, Outcome::Info("timeout".into()))
    }
    fn r(&mut self, v: Option<u64>, at: (u64, u64)) -> &mut Self {
        let read = Call::Read { key: "r".into() };
        self.op(1, read, at, Outcome::Ok(Reply::Value(v)))
    }
    fn add(&mut self, outcome: Outcome, at: (u64, u64)) -> &mut Self {
        self.op(2, Call::Add { key: "c".into() }, at, outcome)
    }
    fn get(&mut self, v: i64, at: (u64, u64)) -> &mut Self {
        let reader = crate::workload::FINAL_READER;
        self.op(
            reader,
            Call::Get { key: "c".into() },
            at,
            Outcome::Ok(Reply::Int(v)),
        )
    }
    fn register(&self) -> Verdict {
        let refs: Vec<&Op> = self.ops.iter().collect();
        check_key(&refs, register::DEFAULT_BUDGET)
    }
}

fn write(v: u64) -> Call {
    Call::Write {
        key: "r".into(),
        value: v,
    }
}

fn ok(v: i64) -> Outcome {
    Outcome::Ok(Reply::Int(v))
}

fn assert_violation(verdict: Verdict) -> String {
    match verdict {
        Verdict::Violation { what, .. } => what,
        other => panic!("expected a violation, got {other:?}"),
    }
}

// ---- register: good histories ----------------------------------------------------

#[test]
fn sequential_reads_of_the_last_write_are_linearizable() {
    let mut h = H::default();
    h.r(None, (0, 1))
        .w(1, (2, 3))
        .r(Some(1), (4, 5))
        .w(2, (6, 7))
        .r(Some(2), (8, 9));
    assert_eq!(h.register(), Verdict::Linearizable);
}

#[test]
fn a_read_during_a_write_may_see_either_value() {
    let mut h = H::default();
    h.w(1, (0, 100)).r(None, (10, 20)).r(Some(1), (30, 40));
    assert_eq!(h.register(), Verdict::Linearizable);
    let mut h = H::default();
    h.w(1, (0, 100)).r(Some(1), (10, 20)).r(Some(1), (30, 40));
    assert_eq!(h.register(), Verdict::Linearizable);
}

#[test]
fn an_indeterminate_write_may_land_late_or_never() {
    let mut h = H::default();
    h.w_info(1, (0, 5)).r(None, (10, 20)).r(Some(1), (50, 60));
    assert_eq!(h.register(), Verdict::Linearizable);
    let mut h = H::default();
    h.w(1, (0, 5)).w_info(2, (6, 7)).r(Some(1), (10, 20));
    assert_eq!(h.register(), Verdict::Linearizable);
}

#[test]
fn failed_writes_never_count() {
    let mut h = H::default();
    h.w(1, (0, 5))
        .op(0, write(2), (6, 7), Outcome::Fail("unreachable".into()))
        .r(Some(1), (10, 20));
    assert_eq!(h.register(), Verdict::Linearizable);
}

#[test]
fn a_long_history_of_a_real_register_is_linearizable_and_a_stale_read_in_it_is_not() {
    // Simulate an atomic register: each op takes effect at a random point inside its
    // interval; 6 workers, 3000 operations.
    let mut rng = fastrand::Rng::with_seed(42);
    let mut events: Vec<(u64, usize)> = Vec::new(); // (effect time, op)
    let mut h = H::default();
    let mut clocks = [0u64; 6];
    let mut next_value = 1;
    for i in 0..3000 {
        let worker = rng.usize(..6);
        let invoked = clocks[worker] + rng.u64(1..50);
        let completed = invoked + rng.u64(1..200);
        clocks[worker] = completed;
        let effect = rng.u64(invoked..=completed);
        let call = if rng.bool() {
            next_value += 1;
            write(next_value)
        } else {
            Call::Read { key: "r".into() }
        };
        h.op(
            worker as u32,
            call,
            (invoked, completed),
            Outcome::Ok(Reply::Value(None)),
        );
        events.push((effect, i));
    }
    events.sort();
    let mut value = None;
    for (_, i) in events {
        match h.ops[i].call {
            Call::Write { value: v, .. } => value = Some(v),
            _ => h.ops[i].outcome = Outcome::Ok(Reply::Value(value)),
        }
    }
    assert_eq!(h.register(), Verdict::Linearizable);

    // A read invoked after write w completed that returns a value whose write
    // completed before w was invoked: no order allows it.
    let ops = h.ops.clone();
    let (w, u) = ops
        .iter()
        .filter(|w| matches!(w.call, Call::Write { .. }))
        .find_map(|w| {
            let u = ops.iter().find(|u| {
                matches!(u.call, Call::Write { .. }) && u.completed < w.invoked && u.id + 5 < w.id
            })?;
            Some((w.clone(), u.clone()))
        })
        .unwrap();
    let Call::Write { value: old, .. } = u.call else {
        unreachable!()
    };
    let read = ops
        .iter()
        .position(|r| matches!(r.call, Call::Read { .. }) && r.invoked > w.completed)
        .unwrap();
    h.ops[read].outcome = Outcome::Ok(Reply::Value(Some(old)));
    assert_violation(h.register());
}

// ---- register: bad histories -----------------------------------------------------

#[test]
fn a_stale_read_after_a_newer_write_completed_is_caught() {
    let mut h = H::default();
    h.w(1, (0, 10)).w(2, (20, 30)).r(Some(1), (40, 50));
    let what = assert_violation(h.register());
    assert!(what.contains("not linearizable"), "{what}");
}

#[test]
fn a_value_cannot_be_unread() {
    // Once a read saw the write, a later read may not see the state before it.
    let mut h = H::default();
    h.w(1, (0, 100)).r(Some(1), (10, 20)).r(None, (30, 40));
    assert_violation(h.register());
}

#[test]
fn an_indeterminate_write_that_was_read_cannot_be_undone() {
    // The "grain lost its unsaved state" shape: a failed write was visible, then gone.
    let mut h = H::default();
    h.w(1, (0, 10))
        .w_info(2, (20, 25))
        .r(Some(2), (30, 40))
        .r(Some(1), (50, 60));
    assert_violation(h.register());
}

#[test]
fn two_readers_may_not_see_two_writes_in_opposite_orders() {
    let mut h = H::default();
    h.w(1, (0, 100))
        .w(2, (0, 100))
        .r(Some(1), (110, 120))
        .r(Some(2), (125, 135))
        .r(Some(1), (140, 150));
    assert_violation(h.register());
}

#[test]
fn a_read_of_a_value_never_written_is_caught() {
    let mut h = H::default();
    h.w(1, (0, 10)).r(Some(99), (20, 30));
    let what = assert_violation(h.register());
    assert!(what.contains("no write wrote"), "{what}");
}

#[test]
fn the_violation_excerpt_holds_the_stale_read_and_the_writes() {
    let mut h = H::default();
    h.w(1, (0, 10)).w(2, (20, 30)).r(Some(1), (40, 50));
    let mut findings = Findings::default();
    register::check(&h.ops, &mut findings, register::DEFAULT_BUDGET);
    assert_eq!(findings.violations.len(), 1);
    let excerpt = &findings.violations[0].excerpt;
    assert!(excerpt
        .iter()
        .any(|op| op.outcome == Outcome::Ok(Reply::Value(Some(1)))));
    assert!(excerpt.iter().any(|op| op.call == write(2)));
}

#[test]
fn the_budget_gives_unknown_not_a_pass() {
    let mut h = H::default();
    for v in 0..12 {
        h.w(v + 1, (0, 1000));
    }
    h.r(Some(99), (2000, 2001));
    h.ops.pop();
    h.r(Some(1), (2000, 2001))
        .r(Some(2), (2002, 2003))
        .r(Some(1), (2004, 2005));
    let refs: Vec<&Op> = h.ops.iter().collect();
    assert_eq!(check_key(&refs, 50), Verdict::Unknown);
    assert_violation(check_key(&refs, register::DEFAULT_BUDGET));
}

// ---- counter ---------------------------------------------------------------------

fn counter(h: &H) -> Findings {
    let mut findings = Findings::default();
    counter::check(&h.ops, &mut findings);
    findings
}

#[test]
fn a_counter_with_acked_and_indeterminate_increments_passes() {
    let mut h = H::default();
    h.add(ok(1), (0, 10))
        .add(ok(2), (11, 20))
        .add(Outcome::Info("lost".into()), (21, 30))
        .add(Outcome::Fail("unreachable".into()), (31, 40))
        .add(ok(4), (41, 50))
        .get(4, (100, 110));
    let f = counter(&h);
    assert!(f.violations.is_empty(), "{:#?}", f.violations);
}

#[test]
fn a_lost_acknowledged_increment_is_caught() {
    let mut h = H::default();
    h.add(ok(1), (0, 10))
        .add(ok(2), (11, 20))
        .get(1, (100, 110));
    let f = counter(&h);
    assert_eq!(f.lost, 1);
    assert!(f.violations.iter().any(|v| v.what.contains("lost")));
}

#[test]
fn an_increment_applied_twice_is_caught() {
    let mut h = H::default();
    h.add(ok(1), (0, 10))
        .add(Outcome::Info("timeout".into()), (11, 20))
        .get(3, (100, 110));
    let f = counter(&h);
    assert_eq!(f.duplicated, 1);
}

#[test]
fn two_increments_replying_one_value_are_caught() {
    let mut h = H::default();
    h.add(ok(1), (0, 50))
        .add(ok(1), (10, 60))
        .get(2, (100, 110));
    let f = counter(&h);
    let v = f
        .violations
        .iter()
        .find(|v| v.what.contains("both replied 1"))
        .expect("duplicate reply caught");
    assert_eq!(v.excerpt.len(), 2);
}

#[test]
fn a_stale_get_is_caught() {
    let mut h = H::default();
    h.add(ok(1), (0, 10))
        .add(ok(2), (11, 20))
        .get(1, (30, 40))
        .get(2, (100, 110));
    let f = counter(&h);
    assert!(
        f.violations.iter().any(|v| v.what.contains("stale")),
        "{:#?}",
        f.violations
    );
}

// ---- accounts --------------------------------------------------------------------

fn follow(from: &str, to: &str) -> Call {
    Call::Follow {
        from: from.into(),
        to: to.into(),
    }
}

fn final_reads(h: &mut H, account: &str, followers: i64, following: &[&str]) {
    let at = (1000, 1001);
    let reader = crate::workload::FINAL_READER;
    h.op(
        reader,
        Call::Followers {
            key: account.into(),
        },
        at,
        ok(followers),
    );
    let keys = following.iter().map(|s| s.to_string()).collect();
    h.op(
        reader,
        Call::Following {
            key: account.into(),
        },
        at,
        Outcome::Ok(Reply::Keys(keys)),
    );
}

fn accounts(h: &H) -> Findings {
    let mut findings = Findings::default();
    account::check(&h.ops, &mut findings);
    findings
}

#[test]
fn a_consistent_follow_graph_passes() {
    let mut h = H::default();
    h.op(0, follow("a", "b"), (0, 10), ok(1))
        .op(0, follow("a", "b"), (11, 20), ok(1))
        .op(1, follow("c", "b"), (0, 10), Outcome::Info("lost".into()))
        .op(
            1,
            follow("c", "a"),
            (11, 20),
            Outcome::Fail("unreachable".into()),
        );
    final_reads(&mut h, "a", 0, &["b"]);
    final_reads(&mut h, "b", 2, &[]);
    final_reads(&mut h, "c", 0, &["b"]);
    let f = accounts(&h);
    assert!(f.violations.is_empty(), "{:#?}", f.violations);
    assert_eq!(f.accounts, 3);
}

#[test]
fn a_missing_follower_and_a_phantom_follow_are_caught() {
    let mut h = H::default();
    h.op(0, follow("a", "b"), (0, 10), ok(1));
    final_reads(&mut h, "a", 0, &["c"]);
    final_reads(&mut h, "b", 0, &[]);
    let f = accounts(&h);
    assert_eq!(f.lost, 1);
    let a = f
        .violations
        .iter()
        .find(|v| v.key == "a")
        .expect("a flagged");
    assert!(
        a.what.contains("missing [\"b\"]") && a.what.contains("never attempted [\"c\"]"),
        "{}",
        a.what
    );
    assert!(f
        .violations
        .iter()
        .any(|v| v.key == "b" && v.what.contains("0 followers")));
}
