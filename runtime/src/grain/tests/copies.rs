//! The context of a read-replicated copy: versions count durable writes and survive a
//! re-activation from storage, a clear never sends them back, a replica never writes
//! and only moves forward, a failed write-through drops the unwritten state,
//! and a failed write that landed counts (and is published) when the turn settles.

use tokio::sync::watch;

use super::*;
use crate::replication::{versioned_record, Snapshot};

fn primary(
    store: &Arc<dyn GrainStorage>,
    key: &str,
) -> (GrainContext<Kept>, watch::Receiver<Option<Snapshot>>) {
    let (tx, rx) = watch::channel(None);
    let mut ctx = GrainContext::new(
        GrainId::new(Kept::TYPE_NAME, key),
        store.clone(),
        Arc::new(NoRoute),
        crate::HostingLease::forever(),
    );
    ctx.set_copy(Some(tx));
    (ctx, rx)
}

fn published(rx: &watch::Receiver<Option<Snapshot>>) -> (u64, KeptState) {
    let snapshot = rx.borrow().clone().expect("a snapshot was published");
    (snapshot.version, codec::decode(&snapshot.state).unwrap())
}

#[tokio::test]
async fn versions_count_durable_writes_and_survive_a_reactivation() {
    let store: Arc<dyn GrainStorage> = Arc::new(TestStore::default());
    let (mut a, rx) = primary(&store, "v");
    a.load_state().await.unwrap();
    assert_eq!(a.version(), Some(0));
    assert_eq!(published(&rx), (0, KeptState::default()));
    for n in 1..=3 {
        a.state_mut().n = n;
        a.write_state().await.unwrap();
        assert_eq!(a.version(), Some(u64::from(n)));
        assert_eq!(published(&rx), (u64::from(n), KeptState { n }));
    }
    // A new primary (the old one died) starts where the store is, never below.
    let (mut b, rx) = primary(&store, "v");
    b.load_state().await.unwrap();
    assert_eq!(b.version(), Some(3));
    assert_eq!(b.state(), &KeptState { n: 3 });
    assert_eq!(published(&rx), (3, KeptState { n: 3 }));
    // Single-activation contexts have no version.
    assert_eq!(
        ctx::<Kept>(&Arc::new(TestStore::default()), "x").version(),
        None
    );
}

#[tokio::test]
async fn clearing_writes_the_default_state_under_the_next_version() {
    let store: Arc<dyn GrainStorage> = Arc::new(TestStore::default());
    let (mut a, _rx) = primary(&store, "c");
    a.load_state().await.unwrap();
    a.state_mut().n = 7;
    a.write_state().await.unwrap();
    a.clear_state().await.unwrap();
    assert_eq!(a.version(), Some(2));
    assert_eq!(a.state(), &KeptState::default());
    let (mut b, _rx) = primary(&store, "c");
    b.load_state().await.unwrap();
    assert_eq!(b.version(), Some(2), "the version did not go back");
}

#[tokio::test]
async fn a_record_from_before_replication_is_version_zero() {
    let concrete = Arc::new(TestStore::default());
    let grain = GrainId::new(Kept::TYPE_NAME, "legacy");
    let plain = codec::encode(&KeptState { n: 5 }).unwrap();
    concrete.write(&grain, &plain, None).await.unwrap();
    let store: Arc<dyn GrainStorage> = concrete.clone();
    let (mut a, _rx) = primary(&store, "legacy");
    a.load_state().await.unwrap();
    assert_eq!((a.version(), a.state().n), (Some(0), 5));
    a.state_mut().n = 6;
    a.write_state().await.unwrap();
    let stored = concrete.records.lock().unwrap()[&grain].data.clone();
    assert_eq!(
        stored,
        versioned_record(1, &codec::encode(&KeptState { n: 6 }).unwrap())
    );
}

#[tokio::test]
async fn a_replica_never_writes_and_only_moves_forward() {
    let store: Arc<dyn GrainStorage> = Arc::new(TestStore::default());
    let mut r = GrainContext::<Kept>::new(
        GrainId::new(Kept::TYPE_NAME, "r"),
        store.clone(),
        Arc::new(NoRoute),
        crate::HostingLease::forever(),
    );
    r.set_copy(None);
    let snapshot = |version, n| Snapshot {
        version,
        state: Arc::new(codec::encode(&KeptState { n }).unwrap()),
    };
    r.apply_snapshot(&snapshot(0, 0)).unwrap();
    r.apply_snapshot(&snapshot(4, 40)).unwrap();
    r.apply_snapshot(&snapshot(3, 30)).unwrap();
    assert_eq!((r.version(), r.state().n), (Some(4), 40));
    r.state_mut().n = 1;
    assert!(r.write_state().await.is_err());
    assert!(!r.needs_final_write());
    assert!(store.read(r.id()).await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_through_drops_the_unwritten_state() {
    let flaky = Arc::new(TestStore::default());
    let store: Arc<dyn GrainStorage> = flaky.clone();
    let (mut a, rx) = primary(&store, "w");
    a.load_state().await.unwrap();
    a.state_mut().n = 1;
    a.write_through().await.unwrap();
    assert_eq!(published(&rx), (1, KeptState { n: 1 }));
    flaky.set_down(true);
    a.state_mut().n = 2;
    assert!(a.write_through().await.is_err());
    assert!(a.take_deactivate_request(), "the grain leaves memory");
    assert!(
        !a.needs_final_write(),
        "the unwritten state is never written"
    );
    flaky.set_down(false);
    assert!(a.write_state().await.is_err(), "not even on request");
    assert_eq!(
        published(&rx),
        (1, KeptState { n: 1 }),
        "nothing unwritten was shipped"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lost_write_that_landed_counts_in_the_version() {
    let concrete = Arc::new(TestStore::default());
    let store: Arc<dyn GrainStorage> = concrete.clone();
    let (mut a, rx) = primary(&store, "lost");
    a.load_state().await.unwrap();
    a.state_mut().n = 1;
    a.write_state().await.unwrap();
    // Version 2 lands, its answer is lost (and so are the resends' answers).
    a.state_mut().n = 2;
    concrete.lose_answers(u32::MAX);
    assert!(a.write_state().await.is_err());
    concrete.lose_answers(0);
    // Each resend met a conflict that was recognised as the grain's own write and then
    // wrote again, one version each; the next write recognises the last of them and
    // goes on from it, so no two states share a version.
    let stored = concrete.records.lock().unwrap()[a.id()].data.clone();
    let landed = crate::replication::split_record(&stored).0;
    assert!(landed > 2, "every write that landed counts: {landed}");
    a.state_mut().n = 3;
    a.write_state().await.unwrap();
    assert_eq!(a.version(), Some(landed + 1));
    assert_eq!(published(&rx), (landed + 1, KeptState { n: 3 }));
    let stored = concrete.records.lock().unwrap()[a.id()].data.clone();
    assert_eq!(
        stored,
        versioned_record(landed + 1, &codec::encode(&KeptState { n: 3 }).unwrap())
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_that_landed_counts_as_a_version_at_settle() {
    // The store made the write durable but its answer was lost: settling the turn finds
    // it, the version counts it and the replicas may be sent it (it is durable).
    let concrete = Arc::new(TestStore::default());
    let store: Arc<dyn GrainStorage> = concrete.clone();
    let (mut a, rx) = primary(&store, "landed");
    a.load_state().await.unwrap();
    a.state_mut().n = 4;
    concrete.lose_answers(u32::MAX);
    assert!(a.write_state().await.is_err());
    concrete.lose_answers(0);
    assert!(a.is_unsettled());
    a.settle().await;
    assert!(!a.take_deactivate_request(), "the write landed");
    // The last resend landed: its version is the stored one, and it is published.
    let stored = concrete.records.lock().unwrap()[a.id()].data.clone();
    let landed = crate::replication::split_record(&stored).0;
    assert!(landed >= 1);
    assert_eq!(a.version(), Some(landed));
    assert_eq!(published(&rx), (landed, KeptState { n: 4 }));
    // The next write goes on from it under the next version.
    a.state_mut().n = 5;
    a.write_state().await.unwrap();
    assert_eq!(a.version(), Some(landed + 1));
    assert_eq!(published(&rx), (landed + 1, KeptState { n: 5 }));
}
