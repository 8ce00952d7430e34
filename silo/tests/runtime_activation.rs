//! Integration tests of the grain runtime in one silo: activation on the first message,
//! one activation per key under concurrent first calls, single-threaded turns, and
//! thousands of grains at once.

use std::sync::Arc;
use std::time::Duration;

use granary_runtime::prelude::*;
use granary_silo::storage::MemoryStorage;

mod support;
use support::*;

#[tokio::test]
async fn activates_on_first_message() {
    let silo = start(Arc::new(MemoryStorage::new()), Duration::from_secs(600)).await;
    let tally = silo.dispatcher(Tally::TYPE_NAME).unwrap();
    assert!(!tally.is_active("first"));
    assert_eq!(silo.grain::<Tally>("first").ask(Add(2)).await.unwrap(), 2);
    assert!(tally.is_active("first"));
    assert_eq!(activation_count("first"), 1);
    assert_eq!(silo.grain::<Tally>("first").ask(Total).await.unwrap(), 2);
    silo.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_activation_under_1000_concurrent_first_calls() {
    let silo = Arc::new(start(Arc::new(MemoryStorage::new()), Duration::from_secs(600)).await);
    let calls: Vec<_> = (0..1000)
        .map(|_| {
            let silo = silo.clone();
            tokio::spawn(async move { silo.grain::<Tally>("crowd").ask(Add(1)).await })
        })
        .collect();
    let mut replies = Vec::new();
    for call in calls {
        replies.push(call.await.unwrap().unwrap());
    }
    replies.sort_unstable();
    assert_eq!(
        replies,
        (1..=1000).collect::<Vec<i64>>(),
        "every add applied once, in some order"
    );
    assert_eq!(activation_count("crowd"), 1);
    Arc::into_inner(silo).unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_never_interleave() {
    let silo = Arc::new(start(Arc::new(MemoryStorage::new()), Duration::from_secs(600)).await);
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let silo = silo.clone();
            tokio::spawn(async move { silo.grain::<Tally>("serial").ask(SlowTurn(5)).await })
        })
        .collect();
    for call in calls {
        assert_eq!(
            call.await.unwrap().unwrap(),
            1,
            "a handler saw another turn running"
        );
    }
    // A handler awaiting keeps the next message waiting.
    let blocked = silo.grain::<Tally>("gated");
    let first = tokio::spawn({
        let g = blocked.clone();
        async move { g.ask(WaitGate).await }
    });
    let dispatcher = silo.dispatcher(Tally::TYPE_NAME).unwrap();
    // The first message is in the mailbox once the activation exists: only then send
    // the second, so it cannot overtake the first.
    eventually(
        "the first message activates the grain",
        Duration::from_secs(5),
        || dispatcher.is_active("gated"),
    )
    .await;
    let second = tokio::spawn({
        let g = blocked.clone();
        async move { g.ask(Total).await }
    });
    eventually(
        "second message queued behind the first",
        Duration::from_secs(5),
        || {
            dispatcher
                .stats()
                .grains
                .iter()
                .any(|g| g.key == "gated" && g.queue_depth == 1)
        },
    )
    .await;
    assert!(!second.is_finished());
    gate("gated").notify_one();
    first.await.unwrap().unwrap();
    assert_eq!(second.await.unwrap().unwrap(), 0);
    Arc::into_inner(silo).unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_grains_run_concurrently() {
    let silo = Arc::new(start(Arc::new(MemoryStorage::new()), Duration::from_secs(600)).await);
    let calls: Vec<_> = (0..5000)
        .map(|i| {
            let silo = silo.clone();
            tokio::spawn(async move { silo.grain::<Tally>(format!("many-{i}")).ask(Add(i)).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as i64);
    }
    assert_eq!(
        silo.dispatcher(Tally::TYPE_NAME)
            .unwrap()
            .activation_count(),
        5000
    );
    let (active, _) = silo.load();
    assert!(active >= 5000);
    Arc::into_inner(silo).unwrap().shutdown().await;
}
