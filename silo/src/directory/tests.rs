use super::*;

fn silo(port: u16) -> SiloAddr {
    SiloAddr::new(([127, 0, 0, 1], port).into(), 1)
}

fn candidates(ports: &[u16]) -> Vec<Candidate> {
    ports
        .iter()
        .map(|&p| Candidate {
            silo: silo(p),
            queue_depth: 0,
        })
        .collect()
}

fn grain(i: usize) -> GrainId {
    GrainId::new("t/v1", i.to_string())
}

#[test]
fn resolve_is_stable_and_places_once() {
    let dir = Directory::new();
    let c = candidates(&[1, 2, 3]);
    let first = dir.resolve(&grain(0), &c, None).unwrap();
    for _ in 0..10 {
        assert_eq!(dir.resolve(&grain(0), &c, None).unwrap(), first);
    }
    assert_eq!(dir.len(), 1);
}

#[test]
fn concurrent_resolves_agree() {
    let dir = std::sync::Arc::new(Directory::new());
    let c = candidates(&[1, 2, 3]);
    let answers: Vec<_> = (0..8)
        .map(|_| {
            let (dir, c) = (dir.clone(), c.clone());
            std::thread::spawn(move || {
                (0..200)
                    .map(|i| dir.resolve(&grain(i), &c, None).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .map(|t| t.join().unwrap())
        .collect();
    assert!(answers.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(dir.len(), 200);
}

#[test]
fn placement_spreads_evenly() {
    let dir = Directory::new();
    let c = candidates(&[1, 2, 3]);
    for i in 0..3000 {
        dir.resolve(&grain(i), &c, None).unwrap();
    }
    for (silo, n) in dir.counts() {
        assert!((900..=1100).contains(&n), "{silo} got {n} of 3000");
    }
}

#[test]
fn dead_silos_lose_their_grains_and_stale_entries_move() {
    let dir = Directory::new();
    let all = candidates(&[1, 2]);
    for i in 0..100 {
        dir.resolve(&grain(i), &all, None).unwrap();
    }
    let on_one = dir.counts()[&silo(1)];
    assert_eq!(dir.remove_silo(silo(1)), on_one);
    assert!(!dir.counts().contains_key(&silo(1)));
    // An entry on a silo that is no longer a candidate is re-placed.
    let only_two = candidates(&[2]);
    let dir = Directory::new();
    assert_eq!(
        dir.resolve(&grain(0), &candidates(&[1]), None).unwrap(),
        silo(1)
    );
    assert_eq!(dir.resolve(&grain(0), &only_two, None).unwrap(), silo(2));
    assert_eq!(dir.counts().get(&silo(1)), None);
}

#[test]
fn unregister_only_removes_the_matching_entry() {
    let dir = Directory::new();
    let one = candidates(&[1]);
    dir.resolve(&grain(0), &one, None).unwrap();
    assert!(!dir.unregister(&grain(0), silo(2)));
    assert!(dir.unregister(&grain(0), silo(1)));
    assert!(dir.is_empty());
    assert!(dir.counts().is_empty());
}

#[test]
fn no_candidates_is_a_clear_error() {
    let dir = Directory::new();
    assert!(matches!(
        dir.resolve(&grain(0), &[], None),
        Err(CallError::Unreachable(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn unconfirmed_placements_are_swept_confirmed_ones_stay() {
    let dir = Directory::new();
    let c = candidates(&[1, 2]);
    // A client resolves two grains; the owner then resolves (confirms) only the first.
    let owner = dir.resolve(&grain(0), &c, None).unwrap();
    dir.resolve(&grain(1), &c, None).unwrap();
    assert_eq!(dir.resolve(&grain(0), &c, Some(owner)).unwrap(), owner);
    // A placement made at the owner's own request is confirmed at once.
    let own = dir
        .resolve(&grain(2), &candidates(&[3]), Some(silo(3)))
        .unwrap();
    assert_eq!(own, silo(3));
    // Another silo asking does not confirm.
    let other = dir
        .resolve(&grain(3), &candidates(&[4]), Some(silo(9)))
        .unwrap();
    assert_eq!(other, silo(4));

    assert_eq!(dir.sweep(TENTATIVE_TTL), 0, "nothing is old enough yet");
    tokio::time::advance(TENTATIVE_TTL).await;
    assert_eq!(dir.sweep(TENTATIVE_TTL), 2);
    assert_eq!(dir.lookup(&grain(0)), Some(owner));
    assert_eq!(dir.lookup(&grain(1)), None);
    assert_eq!(dir.lookup(&grain(2)), Some(silo(3)));
    assert_eq!(dir.lookup(&grain(3)), None);
    assert_eq!(dir.counts().values().sum::<usize>(), 2);
}
