//! The schedule: replayable from the seed, bounded by the run, victims in range.

use std::time::Duration;

use super::*;

const ALL: [FaultKind; 10] = FaultKind::ALL;

fn key(plan: &[Planned]) -> Vec<(FaultKind, Duration, Duration, Option<usize>)> {
    plan.iter()
        .map(|p| (p.kind, p.at, p.hold, p.slave))
        .collect()
}

#[test]
fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
    let a = schedule(7, &ALL, Mode::Mixed, Duration::from_secs(1800), 3);
    let b = schedule(7, &ALL, Mode::Mixed, Duration::from_secs(1800), 3);
    let c = schedule(8, &ALL, Mode::Mixed, Duration::from_secs(1800), 3);
    assert_eq!(key(&a), key(&b));
    assert_ne!(key(&a), key(&c));
    // 30 minutes of 10–20 s faults: ~100 of them, every kind drawn.
    assert!(a.len() > 80, "{}", a.len());
    for kind in ALL {
        assert!(a.iter().any(|p| p.kind == kind), "{kind:?} never drawn");
    }
}

#[test]
fn faults_do_not_overlap_and_end_before_the_run_does() {
    let plan = schedule(3, &ALL, Mode::Mixed, Duration::from_secs(600), 3);
    for pair in plan.windows(2) {
        assert!(pair[0].at + pair[0].hold < pair[1].at);
    }
    let last = plan.last().unwrap();
    assert!(last.at + last.hold < Duration::from_secs(600));
    assert!(plan.iter().all(|p| p.slave.is_none_or(|s| s < 3)));
    assert!(plan.iter().all(|p| p.slave.is_some()
        == !matches!(
            p.kind,
            FaultKind::Lossy
                | FaultKind::DiskFull
                | FaultKind::KillMaster
                | FaultKind::IsolateMaster
        )));
}

#[test]
fn once_runs_each_listed_fault_in_order() {
    let kinds = [FaultKind::Kill, FaultKind::Pause, FaultKind::Isolate];
    let plan = schedule(16, &kinds, Mode::Once, Duration::from_secs(60), 3);
    assert_eq!(plan.iter().map(|p| p.kind).collect::<Vec<_>>(), kinds);
    let last = plan.last().unwrap();
    assert!(
        last.at + last.hold + Duration::from_secs(5) <= Duration::from_secs(60),
        "{last:?}"
    );
}
