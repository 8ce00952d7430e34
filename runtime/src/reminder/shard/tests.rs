use super::*;

fn row(start_ms: u64, period_ms: u64, last_ms: Option<u64>) -> Row {
    Row {
        start_ms,
        period_ms,
        last_ms,
    }
}

#[test]
fn nothing_is_due_before_the_first_tick() {
    let r = row(1_000, 100, None);
    assert_eq!(r.due(999), None);
    assert_eq!(r.next_tick(0), 1_000);
    assert_eq!(r.due(1_000), Some((1_000, 0)));
    assert_eq!(r.next_tick(1_000), 1_000, "due now");
}

#[test]
fn a_delivered_tick_waits_for_the_next_one() {
    let r = row(1_000, 100, Some(1_000));
    assert_eq!(r.due(1_050), None);
    assert_eq!(r.next_tick(1_050), 1_100);
    assert_eq!(r.due(1_100), Some((1_100, 0)));
    // Delivered late (at 1 130) and recorded as the 1 100 tick: the next is still 1 200.
    let r = row(1_000, 100, Some(1_100));
    assert_eq!(r.due(1_130), None);
    assert_eq!(r.next_tick(1_130), 1_200);
}

#[test]
fn missed_ticks_are_coalesced_into_the_latest_one() {
    // Delivered up to 1 100; the shard was down until 1 550: ticks 1 200…1 500 are due,
    // delivered as the 1 500 tick standing for the three before it.
    let r = row(1_000, 100, Some(1_100));
    assert_eq!(r.due(1_550), Some((1_500, 3)));
    // Never delivered, first tick long past.
    let r = row(1_000, 100, None);
    assert_eq!(r.due(1_420), Some((1_400, 4)));
    // A stale `last` from before a re-registration counts as nothing delivered.
    let r = row(1_000, 100, Some(500));
    assert_eq!(r.due(1_000), Some((1_000, 0)));
}
