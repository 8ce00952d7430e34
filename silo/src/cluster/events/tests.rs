use std::collections::BTreeMap;
use std::time::Duration;

use granary_proto::packet::LoadReport;

use super::*;
use crate::membership::{Hosting, MemberInfo};

fn silo(port: u16) -> SiloId {
    SiloId::new(
        ([127, 0, 0, 1], port).into(),
        ([127, 0, 0, 1], port + 1).into(),
        1,
    )
}

fn snapshot(
    version: u64,
    me: SiloId,
    master: Option<SiloId>,
    members: &[(SiloId, MemberStatus)],
) -> Arc<MembershipSnapshot> {
    let members: BTreeMap<_, _> = members
        .iter()
        .map(|(id, status)| {
            let info = MemberInfo {
                id: *id,
                status: *status,
                load: LoadReport::default(),
                is_master: Some(*id) == master,
                is_candidate: Some(*id) == master,
            };
            (*id, info)
        })
        .collect();
    Arc::new(MembershipSnapshot {
        version,
        me,
        master,
        epoch: 1,
        master_reachable: master.is_some(),
        hosting: if master.is_some() {
            Hosting::Serving
        } else {
            Hosting::Suspended
        },
        admission: 1,
        members,
    })
}

#[test]
fn a_snapshot_views_tombstones_as_departures() {
    let (m, a, b) = (silo(10), silo(20), silo(30));
    let snap = snapshot(
        3,
        m,
        Some(m),
        &[
            (m, MemberStatus::Active),
            (a, MemberStatus::ShuttingDown),
            (b, MemberStatus::Dead),
        ],
    );
    assert_eq!(
        view(&snap),
        (
            Some(m),
            vec![
                (m, MemberPhase::Active),
                (a, MemberPhase::Left),
                (b, MemberPhase::Dead)
            ]
        )
    );
}

async fn next(
    events: &mut (impl Stream<Item = MembershipEvent> + Unpin),
) -> Option<MembershipEvent> {
    tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("an event or the end of the stream")
}

#[tokio::test]
async fn the_stream_reports_changes_after_the_current_snapshot_and_ends_with_the_silo() {
    let (old, new, me, other) = (silo(10), silo(20), silo(30), silo(40));
    let (tx, rx) = watch::channel(snapshot(1, me, None, &[(me, MemberStatus::Active)]));
    let mut events = events(rx);
    // Welcomed by the master: the members it lists joined, the master changed.
    tx.send_replace(snapshot(
        2,
        me,
        Some(old),
        &[
            (old, MemberStatus::Active),
            (me, MemberStatus::Active),
            (other, MemberStatus::Active),
        ],
    ));
    assert_eq!(
        next(&mut events).await,
        Some(MembershipEvent::SiloJoined(old))
    );
    assert_eq!(
        next(&mut events).await,
        Some(MembershipEvent::SiloJoined(other))
    );
    assert_eq!(
        next(&mut events).await,
        Some(MembershipEvent::MasterChanged {
            old: None,
            new: old
        })
    );
    // The same membership again (a reachability flap): nothing.
    tx.send_replace(snapshot(
        3,
        me,
        Some(old),
        &[
            (old, MemberStatus::Active),
            (me, MemberStatus::Active),
            (other, MemberStatus::Active),
        ],
    ));
    // Another slave dies and the master is replaced.
    tx.send_replace(snapshot(
        4,
        me,
        Some(new),
        &[
            (old, MemberStatus::Dead),
            (new, MemberStatus::Active),
            (me, MemberStatus::Active),
            (other, MemberStatus::Dead),
        ],
    ));
    assert_eq!(
        next(&mut events).await,
        Some(MembershipEvent::SiloDied(old))
    );
    assert_eq!(
        next(&mut events).await,
        Some(MembershipEvent::SiloDied(other))
    );
    assert_eq!(
        next(&mut events).await,
        Some(MembershipEvent::SiloJoined(new))
    );
    assert_eq!(
        next(&mut events).await,
        Some(MembershipEvent::MasterChanged {
            old: Some(old),
            new
        })
    );
    drop(tx);
    assert_eq!(next(&mut events).await, None);
}
