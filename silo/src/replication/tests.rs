//! Decisions on the paused tokio clock: growth only on load sustained over the window,
//! never beyond `max_copies`; shrinking only after the cool-down, all the way down once
//! the load is gone; the need computed per threshold.

use std::time::Duration;

use granary_proto::replication::CopyKind;
use granary_runtime::Scaling;
use tokio::time::Instant;

use super::decide::{needed_activations, needed_silos, Decision, Hotness, Load};

const TICK: Duration = Duration::from_millis(100);

fn scaling() -> Scaling {
    Scaling::DEFAULT
        .window(Duration::from_secs(1))
        .cool_down(Duration::from_secs(3))
        .max_copies(3)
}

fn busy(activations_busy: f64) -> Load {
    Load {
        rate: 1_000.0,
        queue: 0.0,
        busy: activations_busy,
        activations: 1,
    }
}

/// Feeds `load` every tick for `span`; returns the last decision for `current` silos.
async fn feed(hot: &mut Hotness, load: Load, span: Duration, current: usize) -> Decision {
    let mut decision = Decision::Keep;
    let end = Instant::now() + span;
    while Instant::now() < end {
        tokio::time::advance(TICK).await;
        hot.observe(Instant::now(), load);
        decision = hot.decide(Instant::now(), current);
        if decision != Decision::Keep {
            return decision;
        }
    }
    decision
}

#[test]
fn each_threshold_asks_for_enough_activations() {
    let s = Scaling::DEFAULT.hot_rate(1_000);
    let load = |rate, queue, busy| Load {
        rate,
        queue,
        busy,
        activations: 1,
    };
    assert_eq!(needed_activations(&load(0.0, 0.0, 0.0), &s), 1);
    // busy 75% per copy: 1.5 activations busy need 2.
    assert_eq!(needed_activations(&load(0.0, 0.0, 1.5), &s), 2);
    // Exactly at the threshold is not hot.
    assert_eq!(needed_activations(&load(0.0, 0.0, 0.75), &s), 1);
    // 8 queued per copy: 20 queued need 3.
    assert_eq!(needed_activations(&load(0.0, 20.0, 0.0), &s), 3);
    // 1,000 msg/s per copy: 4,500 msg/s need 5.
    assert_eq!(needed_activations(&load(4_500.0, 0.0, 0.0), &s), 5);
    // The rate threshold is off by default.
    assert_eq!(
        needed_activations(&load(1e9, 0.0, 0.0), &Scaling::DEFAULT),
        1
    );
    // Stateless workers: 4 local workers per silo, so 5 activations need 2 silos;
    // never more silos than max_copies.
    let l = load(0.0, 0.0, 3.7);
    assert_eq!(needed_silos(&l, &s, CopyKind::StatelessWorker, 4), 2);
    assert_eq!(needed_silos(&l, &s, CopyKind::ReadReplicas, 4), 4);
    assert_eq!(
        needed_silos(&l, &s.max_copies(2), CopyKind::ReadReplicas, 4),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn a_blip_shorter_than_half_the_window_adds_no_copy() {
    let mut hot = Hotness::new(CopyKind::ReadReplicas, scaling(), 1);
    let decision = feed(&mut hot, busy(0.1), Duration::from_secs(2), 1).await;
    assert_eq!(decision, Decision::Keep);
    // 400 ms of heavy load in a 1 s window, twice, with quiet in between.
    for _ in 0..2 {
        let decision = feed(&mut hot, busy(5.0), Duration::from_millis(400), 1).await;
        assert_eq!(decision, Decision::Keep);
        let decision = feed(&mut hot, busy(0.1), Duration::from_secs(1), 1).await;
        assert_eq!(decision, Decision::Keep);
    }
}

#[tokio::test(start_paused = true)]
async fn sustained_load_grows_to_the_need_but_never_beyond_max_copies() {
    let mut hot = Hotness::new(CopyKind::ReadReplicas, scaling(), 1);
    let started = Instant::now();
    let decision = feed(&mut hot, busy(1.4), Duration::from_secs(3), 1).await;
    let Decision::Grow { to, load } = decision else {
        panic!("expected growth, got {decision:?}");
    };
    assert_eq!(to, 2);
    assert!((load.busy - 1.4).abs() < 1e-9);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "not before the window is full"
    );
    hot.changed();
    // Much more load: the need is 7, max_copies is 3.
    let decision = feed(&mut hot, busy(5.0), Duration::from_secs(3), 2).await;
    assert!(
        matches!(decision, Decision::Grow { to: 3, .. }),
        "{decision:?}"
    );
    hot.changed();
    let decision = feed(&mut hot, busy(5.0), Duration::from_secs(3), 3).await;
    assert_eq!(decision, Decision::Keep, "already at max_copies");
}

#[tokio::test(start_paused = true)]
async fn copies_go_only_after_the_cool_down_and_all_at_once_when_load_stops() {
    let mut hot = Hotness::new(CopyKind::ReadReplicas, scaling(), 1);
    feed(&mut hot, busy(2.0), Duration::from_secs(2), 3).await;
    let stopped = Instant::now();
    let decision = feed(&mut hot, busy(0.0), Duration::from_secs(10), 3).await;
    let Decision::Shrink { to, load } = decision else {
        panic!("expected shrinking, got {decision:?}");
    };
    assert_eq!(to, 1, "every extra copy goes at once");
    assert_eq!(load.busy, 0.0);
    let waited = stopped.elapsed();
    // The cool-down (3 s) after the last loaded interval, within one more tick.
    assert!(waited >= Duration::from_secs(3), "{waited:?}");
    assert!(waited <= Duration::from_secs(3) + TICK * 2, "{waited:?}");
}

#[tokio::test(start_paused = true)]
async fn a_lower_but_steady_load_shrinks_to_what_it_needs() {
    let mut hot = Hotness::new(CopyKind::ReadReplicas, scaling(), 1);
    feed(&mut hot, busy(2.0), Duration::from_secs(2), 3).await;
    let decision = feed(&mut hot, busy(1.2), Duration::from_secs(10), 3).await;
    assert!(
        matches!(decision, Decision::Shrink { to: 2, .. }),
        "{decision:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_grain_with_no_load_for_the_cool_down_is_cold() {
    let mut hot = Hotness::new(CopyKind::StatelessWorker, scaling(), 2);
    feed(&mut hot, busy(0.5), Duration::from_secs(1), 1).await;
    assert!(!hot.is_cold(Instant::now()));
    feed(&mut hot, Load::default(), Duration::from_secs(2), 1).await;
    assert!(
        !hot.is_cold(Instant::now()),
        "not before the cool-down (3 s)"
    );
    feed(&mut hot, Load::default(), Duration::from_millis(1_100), 1).await;
    assert!(hot.is_cold(Instant::now()));
    assert!(hot.samples() > 0);
}
