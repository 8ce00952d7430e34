//! The [`Lock`] grain in one silo: 20 concurrent acquirers never hold it at once and get
//! strictly increasing fencing tokens; waiters are served first come first served; a
//! holder that paused past its lease is refused by the lock and, with its stale token,
//! by a [`Fenced`] resource.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use granary_example::lock::acquire;
use granary_example::{
    Acquire, Fenced, FencedRead, FencedWrite, Grant, Inspect, Lock, Release, Renew,
};
use granary_runtime::GrainRef;
use granary_silo::storage::MemoryStorage;
use granary_silo::{Silo, SiloConfig};

async fn silo() -> Silo {
    Silo::start(SiloConfig::default(), Arc::new(MemoryStorage::new()))
        .await
        .unwrap()
}

fn ask_acquire(owner: &str, lease_ms: u64) -> Acquire {
    Acquire {
        owner: owner.into(),
        lease_ms,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_acquirers_hold_it_one_at_a_time_with_increasing_tokens() {
    let silo = silo().await;
    let holding = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let tokens = Arc::new(Mutex::new(Vec::new()));
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let lock: GrainRef<Lock> = silo.grain::<Lock>("twenty");
            let fenced: GrainRef<Fenced> = silo.grain::<Fenced>("twenty");
            let (holding, most, tokens) = (holding.clone(), most.clone(), tokens.clone());
            tokio::spawn(async move {
                let owner = format!("worker-{i}");
                let token = acquire(
                    &lock,
                    &owner,
                    Duration::from_secs(30),
                    Duration::from_millis(5),
                    Duration::from_secs(60),
                )
                .await
                .unwrap()
                .expect("acquired within a minute");
                let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokens.lock().unwrap().push(token);
                fenced
                    .ask(FencedWrite {
                        token,
                        value: owner.clone(),
                    })
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(3)).await;
                holding.fetch_sub(1, Ordering::SeqCst);
                assert!(
                    lock.ask(Release { token }).await.unwrap(),
                    "{owner} released"
                );
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(most.load(Ordering::SeqCst), 1, "two holders at once");
    let tokens = tokens.lock().unwrap().clone();
    assert_eq!(tokens.len(), 20);
    assert!(
        tokens.windows(2).all(|w| w[1] > w[0]),
        "tokens in the order the lock was held: {tokens:?}"
    );
    let view = silo.grain::<Lock>("twenty").ask(Inspect).await.unwrap();
    assert_eq!((view.holder, view.waiters.len()), (None, 0));
    assert_eq!(view.last_token, *tokens.last().unwrap());
    silo.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_first_come_first_served() {
    let silo = silo().await;
    let lock = silo.grain::<Lock>("fair");
    let Grant::Held { token: a, .. } = lock.ask(ask_acquire("a", 10_000)).await.unwrap() else {
        panic!("a free lock is granted at once");
    };
    for (owner, ahead) in [("b", 1), ("c", 2), ("d", 3)] {
        assert_eq!(
            lock.ask(ask_acquire(owner, 10_000)).await.unwrap(),
            Grant::Queued { ahead }
        );
    }
    // Asking again keeps one's place; asking often does not jump the queue.
    for _ in 0..3 {
        assert_eq!(
            lock.ask(ask_acquire("d", 10_000)).await.unwrap(),
            Grant::Queued { ahead: 3 }
        );
    }
    assert!(lock.ask(Release { token: a }).await.unwrap());
    assert_eq!(
        lock.ask(ask_acquire("d", 10_000)).await.unwrap(),
        Grant::Queued { ahead: 2 }
    );
    let Grant::Held { token: b, .. } = lock.ask(ask_acquire("b", 10_000)).await.unwrap() else {
        panic!("b was first in the queue");
    };
    assert!(b > a);
    assert!(lock.ask(Release { token: b }).await.unwrap());
    let Grant::Held { token: c, .. } = lock.ask(ask_acquire("c", 10_000)).await.unwrap() else {
        panic!("c came before d");
    };
    assert!(c > b);
    silo.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_paused_past_its_lease_is_refused_with_its_stale_token() {
    let silo = silo().await;
    let lock = silo.grain::<Lock>("paused");
    let fenced = silo.grain::<Fenced>("paused");
    let Grant::Held { token: old, .. } = lock.ask(ask_acquire("slow", 300)).await.unwrap() else {
        panic!("a free lock is granted at once");
    };
    fenced
        .ask(FencedWrite {
            token: old,
            value: "slow: before the pause".into(),
        })
        .await
        .unwrap();
    // The holder pauses (GC, SIGSTOP…) past its lease; nobody releases the lock.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let Grant::Held { token: new, .. } = lock.ask(ask_acquire("fast", 10_000)).await.unwrap()
    else {
        panic!("an expired lease frees the lock");
    };
    assert!(new > old);
    fenced
        .ask(FencedWrite {
            token: new,
            value: "fast".into(),
        })
        .await
        .unwrap();
    // The old holder wakes up and carries on as if it still held the lock.
    let stale = fenced
        .ask(FencedWrite {
            token: old,
            value: "slow: after the pause".into(),
        })
        .await;
    let err = stale.expect_err("a stale token must be refused");
    assert!(err.to_string().contains("stale fencing token"), "{err}");
    assert!(lock
        .ask(Renew {
            token: old,
            lease_ms: 1_000
        })
        .await
        .is_err());
    assert!(!lock.ask(Release { token: old }).await.unwrap());
    assert_eq!(
        fenced.ask(FencedRead).await.unwrap(),
        Some(("fast".to_owned(), new))
    );
    // The current holder renews and releases normally.
    assert_eq!(
        lock.ask(Renew {
            token: new,
            lease_ms: 5_000
        })
        .await
        .unwrap(),
        5_000
    );
    assert!(lock.ask(Release { token: new }).await.unwrap());
    silo.shutdown().await;
}
