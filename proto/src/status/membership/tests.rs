use super::*;

use MemberPhase::{Active, Dead, Left};
use MembershipEvent::{MasterChanged, SiloDied, SiloJoined, SiloLeft};

fn silo(port: u16) -> SiloId {
    SiloId::new(
        ([127, 0, 0, 1], port).into(),
        ([127, 0, 0, 1], port + 1).into(),
        u64::from(port),
    )
}

#[test]
fn the_baseline_is_not_reported() {
    let (m, a) = (silo(10), silo(20));
    let mut tracker = MembershipTracker::new(Some(m), [(m, Active), (a, Active), (silo(30), Dead)]);
    assert_eq!(
        tracker.update(Some(m), [(m, Active), (a, Active), (silo(30), Dead)]),
        []
    );
    assert_eq!(tracker.active().collect::<Vec<_>>(), [m, a]);
}

#[test]
fn joins_and_departures_are_reported_once() {
    let (m, a, b) = (silo(10), silo(20), silo(30));
    let mut tracker = MembershipTracker::new(Some(m), [(m, Active)]);
    assert_eq!(
        tracker.update(Some(m), [(m, Active), (a, Active), (b, Active)]),
        [SiloJoined(a), SiloJoined(b)]
    );
    assert_eq!(
        tracker.update(Some(m), [(m, Active), (a, Active), (b, Active)]),
        []
    );
    assert_eq!(
        tracker.update(Some(m), [(m, Active), (a, Left), (b, Dead)]),
        [SiloLeft(a), SiloDied(b)]
    );
    assert_eq!(
        tracker.update(Some(m), [(m, Active), (a, Left), (b, Dead)]),
        []
    );
    // A member that left and is later marked dead is not reported twice.
    assert_eq!(
        tracker.update(Some(m), [(m, Active), (a, Dead), (b, Dead)]),
        []
    );
    // Forgotten tombstones are not departures either.
    assert_eq!(tracker.update(Some(m), [(m, Active)]), []);
}

#[test]
fn a_member_that_came_and_went_between_two_views_is_joined_then_gone() {
    let (m, a) = (silo(10), silo(20));
    let mut tracker = MembershipTracker::new(Some(m), [(m, Active)]);
    assert_eq!(
        tracker.update(Some(m), [(m, Active), (a, Dead)]),
        [SiloJoined(a), SiloDied(a)]
    );
}

#[test]
fn an_active_member_missing_from_the_view_died() {
    let (m, a, b) = (silo(10), silo(20), silo(30));
    let mut tracker = MembershipTracker::new(Some(m), [(m, Active), (a, Active)]);
    assert_eq!(
        tracker.update(Some(m), [(m, Active), (b, Active)]),
        [SiloDied(a), SiloJoined(b)]
    );
}

#[test]
fn a_departed_member_seen_active_again_joins_again() {
    let (m, a) = (silo(10), silo(20));
    let mut tracker = MembershipTracker::new(Some(m), [(m, Active), (a, Dead)]);
    assert_eq!(
        tracker.update(Some(m), [(m, Active), (a, Active)]),
        [SiloJoined(a)]
    );
}

#[test]
fn a_new_master_is_reported_after_the_membership_changes() {
    let (old, new, a) = (silo(10), silo(20), silo(30));
    // A slave before its first WELCOME knows only itself, and no master.
    let mut tracker = MembershipTracker::new(None, [(a, Active)]);
    assert_eq!(tracker.update(None, [(a, Active)]), []);
    assert_eq!(
        tracker.update(Some(old), [(old, Active), (a, Active)]),
        [
            SiloJoined(old),
            MasterChanged {
                old: None,
                new: old
            }
        ]
    );
    // Cut off from the master: no master change until another one welcomes it.
    assert_eq!(
        tracker.update(None, [(old, Dead), (a, Active)]),
        [SiloDied(old)]
    );
    assert_eq!(tracker.master(), Some(old));
    assert_eq!(
        tracker.update(Some(new), [(old, Dead), (new, Active), (a, Active)]),
        [
            SiloJoined(new),
            MasterChanged {
                old: Some(old),
                new
            }
        ]
    );
}

#[test]
fn status_reports_map_leaving_to_left() {
    use crate::status::{MemberView, RoleKind};
    let (m, a) = (silo(10), silo(20));
    let view = |state| MemberView {
        id: a,
        role: RoleKind::Slave,
        state,
        activations: 0,
        queue_depth: 0,
    };
    let report = |state| ClusterStatus {
        master: m,
        members: vec![view(state)],
        silos: vec![],
        unanswered: vec![],
        events: vec![],
    };
    let mut tracker = MembershipTracker::from_status(&report(SiloState::Active));
    assert_eq!(tracker.update_status(&report(SiloState::Fenced)), []);
    assert_eq!(
        tracker.update_status(&report(SiloState::Leaving)),
        [SiloLeft(a)]
    );
}
