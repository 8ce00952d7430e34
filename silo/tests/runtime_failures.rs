//! Integration tests of the grain runtime in one silo: what fails and what survives an
//! etag conflict, a panicking or failing handler, a timeout, a full mailbox and a call
//! naming an unknown grain type or message.

use std::sync::Arc;
use std::time::Duration;

use granary_proto::GrainId;
use granary_runtime::prelude::*;
use granary_runtime::GrainStorage;
use granary_silo::storage::MemoryStorage;
use granary_silo::{Silo, SiloConfig};
use tokio::time::Instant;

mod support;
use support::*;

#[tokio::test]
async fn etag_conflict_fails_the_write_and_deactivates() {
    let storage = Arc::new(MemoryStorage::new());
    let silo = start(storage.clone(), Duration::from_secs(600)).await;
    let g = silo.grain::<Tally>("contested");
    assert_eq!(g.ask(Add(1)).await.unwrap(), 1);
    // Someone else (another activation, an operator) writes newer state.
    let current = storage.read(&tally_id("contested")).await.unwrap().unwrap();
    let newer = granary_proto::codec::encode(&TallyState { total: 100 }).unwrap();
    storage
        .write(&tally_id("contested"), &newer, Some(&current.etag))
        .await
        .unwrap();

    let err = g.ask(Add(1)).await.unwrap_err();
    assert!(
        matches!(err, CallError::Storage(ref m) if m.contains("etag conflict")),
        "{err:?}"
    );
    let dispatcher = silo.dispatcher(Tally::TYPE_NAME).unwrap();
    let deadline = Duration::from_secs(5);
    eventually("conflicted grain deactivated", deadline, || {
        !dispatcher.is_active("contested")
    })
    .await;
    // The newer state was not overwritten, and the next activation reads it.
    assert_eq!(g.ask(Total).await.unwrap(), 100);
    assert_eq!(g.ask(Add(1)).await.unwrap(), 101);
    silo.shutdown().await;
}

#[tokio::test]
async fn a_failed_write_is_never_read_afterwards() {
    // The chaos harness's "dirty read of a failed write": a write fails (the store is
    // down), a later read must not see its value, which the store may never hold.
    let storage = Arc::new(FlakyStorage::default());
    let silo = start(storage.clone(), Duration::from_secs(600)).await;
    let g = silo.grain::<Tally>("outage");
    assert_eq!(g.ask(Add(5)).await.unwrap(), 5);
    storage
        .fail
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = g.ask(Add(1)).await.unwrap_err();
    assert!(matches!(err, CallError::Storage(_)), "{err:?}");
    // The failed value is dropped before the next message: it reads what is stored.
    assert_eq!(g.ask(Total).await.unwrap(), 5);
    storage
        .fail
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(g.ask(Add(1)).await.unwrap(), 6);
    silo.shutdown().await;
}

#[tokio::test]
async fn a_panicking_handler_fails_its_call_only() {
    let storage = Arc::new(MemoryStorage::new());
    let silo = start(storage.clone(), Duration::from_secs(600)).await;
    let g = silo.grain::<Tally>("fragile");
    assert_eq!(g.ask(Add(3)).await.unwrap(), 3);
    let err = g.ask(Boom).await.unwrap_err();
    assert!(
        matches!(err, CallError::Panicked(ref m) if m.contains("boom in fragile")),
        "{err:?}"
    );
    // Other grains are unaffected; this one re-activates from storage, without the
    // state the panicking turn left behind.
    assert_eq!(silo.grain::<Tally>("sturdy").ask(Add(1)).await.unwrap(), 1);
    assert_eq!(g.ask(Total).await.unwrap(), 3);
    assert_eq!(activation_count("fragile"), 2);
    silo.shutdown().await;
}

#[tokio::test]
async fn handler_errors_keep_the_grain_active() {
    let silo = start(Arc::new(MemoryStorage::new()), Duration::from_secs(600)).await;
    let g = silo.grain::<Tally>("grumpy");
    assert_eq!(
        g.ask(Fail).await.unwrap_err(),
        CallError::Handler("refused".into())
    );
    assert_eq!(g.ask(Add(1)).await.unwrap(), 1);
    assert_eq!(activation_count("grumpy"), 1);
    silo.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn ask_times_out() {
    let silo = start(Arc::new(MemoryStorage::new()), Duration::from_secs(600)).await;
    let g = silo.grain::<Tally>("stuck");
    let started = Instant::now();
    let err = g
        .ask(WaitGate)
        .timeout(Duration::from_secs(3))
        .await
        .unwrap_err();
    assert_eq!(err, CallError::Timeout);
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(started.elapsed() < Duration::from_secs(4));
    gate("stuck").notify_one();
    // The default is 30 s, as in Orleans.
    assert_eq!(
        granary_runtime::DEFAULT_CALL_TIMEOUT,
        Duration::from_secs(30)
    );
    silo.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn full_mailbox_applies_backpressure_then_fails() {
    let silo = Silo::start(
        SiloConfig::default().with_mailbox_capacity(2),
        Arc::new(MemoryStorage::new()),
    )
    .await
    .unwrap();
    let g = silo.grain::<Tally>("crowded");
    let blocker = tokio::spawn({
        let g = g.clone();
        async move { g.ask(WaitGate).await }
    });
    let dispatcher = silo.dispatcher(Tally::TYPE_NAME).unwrap();
    eventually("blocker running", Duration::from_secs(5), || {
        dispatcher
            .stats()
            .grains
            .iter()
            .any(|s| s.key == "crowded" && s.queue_depth == 0)
    })
    .await;
    g.tell(AddLazily(1)).await.unwrap();
    g.tell(AddLazily(1)).await.unwrap();
    let err = g
        .tell(AddLazily(1))
        .timeout(Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(err, CallError::MailboxFull);
    gate("crowded").notify_one();
    blocker.await.unwrap().unwrap();
    assert_eq!(
        g.ask(Total).await.unwrap(),
        2,
        "the rejected tell was not applied"
    );
    silo.shutdown().await;
}

/// Sends an already-encoded call, as one arriving from another process would: the
/// typed API rules out unregistered grains and messages at compile time (see
/// `RegisteredMessage`), but a peer built from other code can still name them.
async fn call_encoded(silo: &Silo, grain_type: &'static str, message: &str) -> CallError {
    use granary_runtime::envelope::{Body, Envelope, ReplyTo};
    let (tx, rx) = tokio::sync::oneshot::channel();
    let envelope = Envelope {
        target: GrainId::new(grain_type, "x"),
        body: Body::Encoded {
            name: message.into(),
            bytes: Vec::new(),
        },
        reply: ReplyTo::Encoded(tx),
        hops: 0,
        trace: None,
        copy: Default::default(),
        deadline: None,
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    if let Err(e) = silo.router().deliver(envelope, deadline).await {
        return e;
    }
    rx.await
        .expect("the call is answered")
        .expect_err("the call fails")
}

#[tokio::test]
async fn unknown_grain_types_and_messages_are_clear_errors() {
    let silo = start(Arc::new(MemoryStorage::new()), Duration::from_secs(600)).await;
    // A message the grain type does not list.
    let err = call_encoded(&silo, "test.tally/v1", "Unlisted").await;
    assert!(
        matches!(err, CallError::UnknownMessage { ref grain_type, ref message }
            if grain_type == "test.tally/v1" && message == "Unlisted"),
        "{err:?}"
    );
    assert!(err.to_string().contains("register_grain!"), "{err}");
    // A grain type that was never registered.
    let err = call_encoded(&silo, "test.ghost/v1", "Ping").await;
    assert_eq!(err, CallError::UnknownGrainType("test.ghost/v1".into()));
    assert!(err.to_string().contains("register_grain!"), "{err}");
    silo.shutdown().await;
}
