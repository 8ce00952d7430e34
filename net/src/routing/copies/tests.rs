//! Copy routes: tokens only rise, newer sets replace older ones, picks spread over the
//! set and never name this silo, and a gone silo is routed around.

use super::*;

fn silo(port: u16) -> SiloAddr {
    SiloAddr::new(([127, 0, 0, 1], port).into(), 1)
}

fn grain() -> GrainId {
    GrainId::new("t.replicated/v1", "k")
}

fn set(seq: u64, kind: CopyKind, home: u16, members: &[u16]) -> CopySet {
    CopySet {
        version: SetVersion { epoch: 1, seq },
        kind,
        home: silo(home),
        members: members.iter().map(|p| silo(*p)).collect(),
    }
}

#[test]
fn unknown_grains_cost_nothing_and_route_by_the_directory() {
    let routes = CopyRoutes::default();
    assert_eq!(routes.known(&grain()), None);
    assert_eq!(routes.pick(&grain(), true, None), None);
}

#[test]
fn the_token_never_goes_back() {
    let routes = CopyRoutes::default();
    routes.learn(&grain(), 7, None);
    routes.learn(&grain(), 3, None);
    assert_eq!(routes.known(&grain()).unwrap().token, 7);
    routes.learn(&grain(), 9, None);
    assert_eq!(routes.known(&grain()).unwrap().token, 9);
}

#[test]
fn only_newer_sets_replace_the_known_one() {
    let routes = CopyRoutes::default();
    routes.learn(
        &grain(),
        0,
        Some(set(5, CopyKind::ReadReplicas, 1, &[2, 3])),
    );
    routes.learn(&grain(), 0, Some(set(4, CopyKind::ReadReplicas, 1, &[])));
    let known = routes.known(&grain()).unwrap();
    assert_eq!(known.seen, Some(SetVersion { epoch: 1, seq: 5 }));
    assert_eq!(known.kind, Some(CopyKind::ReadReplicas));
    routes.learn(&grain(), 0, Some(set(6, CopyKind::ReadReplicas, 1, &[])));
    assert_eq!(
        routes.known(&grain()).unwrap().seen,
        Some(SetVersion { epoch: 1, seq: 6 })
    );
}

#[test]
fn writes_go_to_the_home_and_reads_spread_over_every_copy() {
    let routes = CopyRoutes::default();
    routes.learn(
        &grain(),
        1,
        Some(set(1, CopyKind::ReadReplicas, 1, &[2, 3])),
    );
    for _ in 0..10 {
        assert_eq!(routes.pick(&grain(), false, None), Some(silo(1)));
    }
    let mut seen = std::collections::HashSet::new();
    for _ in 0..30 {
        seen.insert(routes.pick(&grain(), true, None).unwrap());
    }
    assert_eq!(seen.len(), 3, "round robin reaches every copy: {seen:?}");
}

#[test]
fn a_pick_never_names_this_silo() {
    let routes = CopyRoutes::default();
    routes.learn(
        &grain(),
        1,
        Some(set(1, CopyKind::StatelessWorker, 1, &[2])),
    );
    for _ in 0..10 {
        assert_eq!(routes.pick(&grain(), true, Some(silo(2))), Some(silo(1)));
    }
    // The home is this silo: writes route by the directory (None).
    assert_eq!(routes.pick(&grain(), false, Some(silo(1))), None);
}

#[test]
fn gone_silos_are_routed_around_and_a_gone_home_drops_the_set() {
    let routes = CopyRoutes::default();
    routes.learn(
        &grain(),
        4,
        Some(set(1, CopyKind::ReadReplicas, 1, &[2, 3])),
    );
    routes.drop_silo_of(&grain(), silo(2));
    for _ in 0..10 {
        assert_ne!(routes.pick(&grain(), true, None), Some(silo(2)));
    }
    routes.forget_silo(silo(1));
    assert_eq!(routes.pick(&grain(), true, None), None);
    // The token survives: later reads still carry it.
    assert_eq!(routes.known(&grain()).unwrap().token, 4);
    routes.learn(&grain(), 4, Some(set(2, CopyKind::ReadReplicas, 3, &[])));
    routes.forget_sets();
    assert_eq!(routes.known(&grain()).unwrap().seen, None);
    assert_eq!(routes.known(&grain()).unwrap().token, 4);
}
