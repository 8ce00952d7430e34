//! The lease's expiry, grace and wake-ups.

use std::time::{Duration, Instant};

use super::HostingLease;

#[test]
fn forever_always_holds() {
    let lease = HostingLease::forever();
    assert!(lease.is_valid());
    assert!(lease.acknowledged_in_time(Instant::now() + Duration::from_secs(3600)));
    assert_eq!(lease.valid_until(), None);
}

#[test]
fn a_new_lease_is_not_held_until_renewed() {
    let lease = HostingLease::new(Duration::from_millis(50));
    assert!(!lease.is_valid());
    assert!(!lease.acknowledged_in_time(Instant::now()));
    let until = Instant::now() + Duration::from_secs(60);
    lease.renew_until(until);
    assert!(lease.is_valid());
    let reported = lease.valid_until().unwrap();
    assert!(reported <= until && until - reported < Duration::from_micros(1));
    lease.revoke();
    assert!(!lease.is_valid());
}

#[test]
fn acknowledgements_count_within_the_grace_only() {
    let lease = HostingLease::new(Duration::from_millis(100));
    let now = Instant::now();
    lease.renew_until(now);
    assert!(!lease.is_valid(), "a lease ending now does not hold");
    assert!(lease.acknowledged_in_time(now + Duration::from_millis(99)));
    assert!(!lease.acknowledged_in_time(now + Duration::from_millis(101)));
}

#[tokio::test]
async fn waiting_activations_wake_on_renewal() {
    let lease = std::sync::Arc::new(HostingLease::new(Duration::ZERO));
    let waiter = tokio::spawn({
        let lease = lease.clone();
        async move { lease.wait_valid().await }
    });
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    // A renewal into the past wakes the waiter, which sees it is still invalid.
    lease.renew_until(Instant::now() - Duration::from_secs(1));
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished());
    lease.renew_until(Instant::now() + Duration::from_secs(60));
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken by the renewal")
        .unwrap();
}
