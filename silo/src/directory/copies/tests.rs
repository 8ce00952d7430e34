//! Copy sets: versions only grow, members come and go, a gone home drops the set, and
//! sets are rebuilt from what slaves report they host.

use super::*;

fn silo(port: u16) -> SiloAddr {
    SiloAddr::new(([127, 0, 0, 1], port).into(), 1)
}

fn grain(key: &str) -> GrainId {
    GrainId::new("t.replicated/v1", key)
}

#[test]
fn every_change_has_a_newer_version_and_names_who_to_tell() {
    let mut sets = CopySets::new(9);
    let g = grain("a");
    let grown = sets.grow(&g, CopyKind::ReadReplicas, silo(1), &[silo(2), silo(3)]);
    assert_eq!(grown.set.version, SetVersion { epoch: 9, seq: 1 });
    assert_eq!(grown.recipients(), vec![silo(1), silo(2), silo(3)]);
    assert_eq!(sets.silos_of(&g, silo(1)), vec![silo(1), silo(2), silo(3)]);

    let shrunk = sets.shrink(&g, &[silo(3)]).unwrap();
    assert!(shrunk.set.version > grown.set.version);
    assert_eq!(shrunk.set.members, vec![silo(2)]);
    assert_eq!(shrunk.recipients(), vec![silo(1), silo(2), silo(3)]);
    assert!(sets.shrink(&g, &[silo(3)]).is_none(), "nothing to remove");

    // The last member goes: the set is issued once more (home alone), then forgotten.
    let alone = sets.released(&g, silo(2)).unwrap();
    assert!(alone.set.members.is_empty());
    assert_eq!(alone.dropped, vec![silo(2)]);
    assert!(sets.get(&g).is_none());
    assert_eq!(sets.silos_of(&g, silo(1)), vec![silo(1)]);
}

#[test]
fn a_gone_home_takes_the_whole_set_with_it() {
    let mut sets = CopySets::new(1);
    let (a, b) = (grain("a"), grain("b"));
    sets.grow(&a, CopyKind::ReadReplicas, silo(1), &[silo(2)]);
    sets.grow(&b, CopyKind::StatelessWorker, silo(2), &[silo(1), silo(3)]);
    let mut changes = sets.silo_gone(silo(1));
    changes.sort_by(|x, y| x.grain.cmp(&y.grain));
    assert_eq!(changes.len(), 2);
    // a: its primary died; the replica on 2 is told to go.
    assert!(changes[0].set.members.is_empty());
    assert_eq!(changes[0].dropped, vec![silo(2)]);
    // b: only the worker on 1 goes.
    assert_eq!(changes[1].set.members, vec![silo(3)]);
    assert!(sets.get(&a).is_none());
    assert_eq!(sets.len(), 1);
}

#[test]
fn a_new_home_replaces_the_old_set() {
    let mut sets = CopySets::new(1);
    let g = grain("a");
    sets.grow(&g, CopyKind::ReadReplicas, silo(1), &[silo(2), silo(3)]);
    let moved = sets.grow(&g, CopyKind::ReadReplicas, silo(4), &[silo(3)]);
    assert_eq!(moved.set.home, silo(4));
    assert_eq!(moved.set.members, vec![silo(3)]);
    assert_eq!(moved.dropped, vec![silo(1), silo(2)]);
}

#[test]
fn newer_epochs_order_after_older_ones() {
    let mut old = CopySets::new(5);
    let mut new = CopySets::new(6);
    let g = grain("a");
    for _ in 0..10 {
        old.grow(&g, CopyKind::StatelessWorker, silo(1), &[silo(2)]);
    }
    let a = old.grow(&g, CopyKind::StatelessWorker, silo(1), &[silo(2)]);
    let b = new.grow(&g, CopyKind::StatelessWorker, silo(1), &[silo(2)]);
    assert!(b.set.version > a.set.version);
}

#[test]
fn sets_are_rebuilt_from_what_slaves_host() {
    let mut sets = CopySets::new(2);
    let (rr, sw, orphan) = (grain("rr"), grain("sw"), grain("orphan"));
    let hosted = |g: &GrainId, role| HostedActivation {
        grain: g.clone(),
        role,
    };
    let on1 = vec![
        hosted(&rr, CopyRole::Primary),
        hosted(&sw, CopyRole::Worker),
        hosted(&grain("single"), CopyRole::Single),
    ];
    let on2 = vec![
        hosted(&rr, CopyRole::Replica),
        hosted(&sw, CopyRole::Worker),
        hosted(&orphan, CopyRole::Replica),
    ];
    let on3 = vec![hosted(&rr, CopyRole::Replica)];
    let homes = |g: &GrainId| (g == &rr || g == &sw).then_some(silo(1));
    let (mut changes, orphans) = sets.rebuild(
        [
            (silo(1), on1.as_slice()),
            (silo(2), on2.as_slice()),
            (silo(3), on3.as_slice()),
        ],
        homes,
    );
    changes.sort_by(|a, b| a.grain.cmp(&b.grain));
    assert_eq!(changes.len(), 2);
    assert_eq!(changes[0].grain, rr);
    assert_eq!(changes[0].set.kind, CopyKind::ReadReplicas);
    let mut members = changes[0].set.members.clone();
    members.sort();
    assert_eq!(members, vec![silo(2), silo(3)]);
    assert_eq!(changes[1].grain, sw);
    assert_eq!(changes[1].set.members, vec![silo(2)]);
    assert_eq!(orphans, vec![(silo(2), orphan)]);
}
