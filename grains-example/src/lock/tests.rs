use super::*;

fn waiter(owner: &str, lease_ms: u64, seen: u64) -> Waiter {
    Waiter {
        owner: owner.into(),
        lease_ms,
        seen_unix_ms: seen,
    }
}

#[test]
fn the_head_of_the_queue_gets_a_free_lock_with_the_next_token() {
    let mut s = LockState::default();
    s.queue.push_back(waiter("a", 100, 0));
    s.queue.push_back(waiter("b", 200, 0));
    assert!(s.settle(10));
    let h = s.holder.clone().unwrap();
    assert_eq!(
        (h.owner.as_str(), h.token, h.expires_unix_ms),
        ("a", 1, 110)
    );
    assert!(!s.settle(50), "nothing changes while the lease runs");
    // The lease runs out: b gets token 2, its lease counted from then.
    assert!(s.settle(110));
    let h = s.holder.clone().unwrap();
    assert_eq!(
        (h.owner.as_str(), h.token, h.expires_unix_ms),
        ("b", 2, 310)
    );
    assert!(s.queue.is_empty());
    assert!(s.settle(310));
    assert_eq!((s.holder.is_none(), s.last_token), (true, 2));
}

#[test]
fn a_waiter_that_stops_asking_leaves_the_queue() {
    let timeout = WAITER_TIMEOUT.as_millis() as u64;
    let mut s = LockState {
        holder: Some(Holder {
            owner: "h".into(),
            token: 7,
            expires_unix_ms: 10 * timeout,
        }),
        last_token: 7,
        queue: [waiter("gone", 100, 0), waiter("here", 100, timeout)].into(),
    };
    assert!(s.settle(timeout));
    assert_eq!(s.queue.len(), 1);
    assert_eq!(s.queue[0].owner, "here");
    // Tokens never go back, whatever leaves.
    assert!(s.settle(10 * timeout));
    assert_eq!(
        s.holder.as_ref().map(|h| h.token),
        None,
        "here stopped asking too"
    );
    assert_eq!(s.last_token, 7);
}
