//! Availability and recovery from a made-up history.

use std::time::Duration;

use super::*;
use crate::faults::{FaultKind, Planned};
use crate::history::{Call, Reply};

fn op(id: u64, invoked: u64, ok: bool) -> Op {
    Op {
        id,
        worker: 0,
        call: Call::Add { key: "c".into() },
        invoked,
        completed: invoked + 1_000,
        outcome: if ok {
            Outcome::Ok(Reply::Int(id as i64))
        } else {
            Outcome::Info("timeout".into())
        },
    }
}

#[test]
fn availability_and_recovery_of_a_fault_window() {
    // One op every 50 ms for 10 s; from 2.0 s to 3.5 s they fail.
    let ops: Vec<Op> = (0..200)
        .map(|i| {
            let t = i * 50_000;
            op(i, t, !(2_000_000..3_500_000).contains(&t))
        })
        .collect();
    let window = Window {
        fault: Planned {
            kind: FaultKind::Kill,
            at: Duration::from_secs(2),
            hold: Duration::from_secs(2),
            slave: Some(0),
        },
        victim: Some("s0".into()),
        start: 2_000_000,
        healed: 4_000_000,
    };
    let report = Report::new(
        "t".into(),
        1,
        10.0,
        &ops,
        &[window],
        Default::default(),
        vec![],
    );
    let f = &report.faults[0];
    assert_eq!(f.ops.attempted, 40);
    assert_eq!(f.ops.ok, 10);
    assert!((f.availability - 25.0).abs() < 1e-9);
    assert_eq!(f.recovery_s, Some(1.5));
    assert!(report.passed());
    assert!(
        report.table_row().contains("| 25.0 % | 1.5 s |"),
        "{}",
        report.table_row()
    );
}

#[test]
fn a_run_without_acknowledged_operations_fails() {
    let ops = vec![op(0, 0, false)];
    let report = Report::new("t".into(), 1, 1.0, &ops, &[], Default::default(), vec![]);
    assert!(!report.passed());
}
