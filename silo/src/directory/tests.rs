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

/// The owner a resolve names (panics on an error or a wait).
fn owner(resolution: Result<Resolution, CallError>) -> SiloAddr {
    match resolution.unwrap() {
        Resolution::Owner(silo) => silo,
        Resolution::Wait(until) => panic!("asked to wait until {until:?}"),
    }
}

#[test]
fn resolve_is_stable_and_places_once() {
    let dir = Directory::new();
    let c = candidates(&[1, 2, 3]);
    let first = owner(dir.resolve(&grain(0), &c, None));
    for _ in 0..10 {
        assert_eq!(owner(dir.resolve(&grain(0), &c, None)), first);
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
                    .map(|i| owner(dir.resolve(&grain(i), &c, None)))
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
        owner(dir.resolve(&grain(i), &c, None));
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
        owner(dir.resolve(&grain(i), &all, None));
    }
    let on_one = dir.counts()[&silo(1)];
    assert_eq!(dir.remove_silo(silo(1)), on_one);
    assert!(!dir.counts().contains_key(&silo(1)));
    // An entry on a silo that is no longer a candidate is re-placed.
    let only_two = candidates(&[2]);
    let dir = Directory::new();
    assert_eq!(
        owner(dir.resolve(&grain(0), &candidates(&[1]), None)),
        silo(1)
    );
    assert_eq!(owner(dir.resolve(&grain(0), &only_two, None)), silo(2));
    assert_eq!(dir.counts().get(&silo(1)), None);
}

#[test]
fn unregister_only_removes_the_matching_entry() {
    let dir = Directory::new();
    let one = candidates(&[1]);
    owner(dir.resolve(&grain(0), &one, None));
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
    let first = owner(dir.resolve(&grain(0), &c, None));
    owner(dir.resolve(&grain(1), &c, None));
    assert_eq!(owner(dir.resolve(&grain(0), &c, Some(first))), first);
    // A placement made at the owner's own request is confirmed at once.
    let own = owner(dir.resolve(&grain(2), &candidates(&[3]), Some(silo(3))));
    assert_eq!(own, silo(3));
    // Another silo asking does not confirm.
    let other = owner(dir.resolve(&grain(3), &candidates(&[4]), Some(silo(9))));
    assert_eq!(other, silo(4));

    assert_eq!(dir.sweep(TENTATIVE_TTL), 0, "nothing is old enough yet");
    tokio::time::advance(TENTATIVE_TTL).await;
    assert_eq!(dir.sweep(TENTATIVE_TTL), 2);
    assert_eq!(dir.lookup(&grain(0)), Some(first));
    assert_eq!(dir.lookup(&grain(1)), None);
    assert_eq!(dir.lookup(&grain(2)), Some(silo(3)));
    assert_eq!(dir.lookup(&grain(3)), None);
    assert_eq!(dir.counts().values().sum::<usize>(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_new_epoch_rebuilds_from_claims_and_waits_for_the_rest() {
    let dir = Directory::new();
    let c = candidates(&[1, 2]);
    owner(dir.resolve(&grain(0), &c, None));
    let window = Duration::from_secs(3);
    dir.ensure_epoch(7, window, false);
    assert_eq!(dir.epoch(), 7);
    assert!(dir.is_empty(), "a new master starts empty");

    // Slave 1 reports grains 1 and 2; slave 2 claims grain 2 too and grain 3.
    assert!(dir.claim(silo(1), vec![grain(1), grain(2)]).is_empty());
    assert_eq!(dir.claim(silo(2), vec![grain(2), grain(3)]), vec![grain(2)]);
    assert_eq!(owner(dir.resolve(&grain(1), &c, None)), silo(1));
    assert_eq!(
        owner(dir.resolve(&grain(2), &c, None)),
        silo(1),
        "the first claim stays"
    );
    assert_eq!(owner(dir.resolve(&grain(3), &c, None)), silo(2));
    // Claims are confirmed: a sweep keeps them.
    tokio::time::advance(TENTATIVE_TTL).await;
    assert_eq!(dir.sweep(TENTATIVE_TTL), 0);

    // Asking again for the same epoch changes nothing.
    dir.ensure_epoch(7, window, false);
    assert_eq!(owner(dir.resolve(&grain(3), &c, None)), silo(2));

    // A grain nobody claimed waits out the window, then is placed.
    dir.ensure_epoch(8, window, false);
    assert!(matches!(
        dir.resolve(&grain(9), &c, None),
        Ok(Resolution::Wait(until)) if until == Instant::now() + window
    ));
    tokio::time::advance(window).await;
    let placed = owner(dir.resolve(&grain(9), &c, None));
    assert!(c.iter().any(|cand| cand.silo == placed));
    // A late claim of a grain placed meanwhile is refused.
    let other = if placed == silo(1) { silo(2) } else { silo(1) };
    assert_eq!(dir.claim(other, vec![grain(9)]), vec![grain(9)]);
}

#[tokio::test(start_paused = true)]
async fn resolves_waiting_out_a_rebuild_wake_on_claims() {
    let dir = std::sync::Arc::new(Directory::new());
    dir.ensure_epoch(2, Duration::from_secs(60), false);
    let waiter = tokio::spawn({
        let dir = dir.clone();
        async move {
            dir.changed_or(Instant::now() + Duration::from_secs(60))
                .await
        }
    });
    tokio::task::yield_now().await;
    dir.claim(silo(1), vec![grain(1)]);
    tokio::time::timeout(Duration::from_secs(1), waiter)
        .await
        .expect("woken by the claim")
        .unwrap();
}

#[test]
fn the_first_epoch_has_no_window() {
    let dir = Directory::new();
    dir.ensure_epoch(1, Duration::from_secs(60), true);
    owner(dir.resolve(&grain(0), &candidates(&[1]), None));
}
