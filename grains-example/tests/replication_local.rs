//! Replication in a stand-alone silo: stateless workers grow local copies when all are
//! busy (never beyond `max_local`); a read-replicated type keeps its versioned record with replication off, so
//! turning it off and on never sends versions back; a primary that learns from a
//! caller that it is behind leaves memory rather than serve older state.

use std::sync::Arc;
use std::time::Duration;

use granary_example::{Bump, Digest, Gauge, Hash, Level};
use granary_proto::{codec, CallError, GrainId};
use granary_runtime::envelope::{Body, CopyHint, Envelope, ReplyTo};
use granary_runtime::{Grain, GrainStorage, Scaling};
use granary_silo::replication::CopyRole;
use granary_silo::storage::MemoryStorage;
use granary_silo::{Silo, SiloConfig};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_stateless_worker_grows_local_copies_up_to_max_local() {
    let config = SiloConfig::default().with_type_scaling(
        Digest::TYPE_NAME,
        Scaling::DEFAULT.max_local(3).hot_queue(1),
    );
    let silo = Silo::start(config, Arc::new(MemoryStorage::new()))
        .await
        .unwrap();
    let calls: Vec<_> = (0..64u64)
        .map(|i| {
            let digest = silo.grain::<Digest>("busy");
            tokio::spawn(async move {
                for _ in 0..20 {
                    let v = digest
                        .ask(Hash {
                            seed: i,
                            rounds: 20_000,
                        })
                        .await
                        .unwrap();
                    assert_eq!(v, granary_example::digest::mix(i, 20_000));
                }
            })
        })
        .collect();
    let dispatcher = silo.dispatcher(Digest::TYPE_NAME).unwrap();
    for call in calls {
        call.await.unwrap();
    }
    // The extra copies stay for the cool-down (30 s) after the load.
    let hosted = dispatcher.hosted();
    assert!(
        hosted.iter().all(|h| h.role == CopyRole::Worker),
        "{hosted:?}"
    );
    assert!(
        (2..=3).contains(&hosted.len()),
        "more copies, never beyond max_local: {hosted:?}"
    );
    let stats = dispatcher.stats();
    let grain = stats.grains.iter().find(|g| g.key == "busy").unwrap();
    assert_eq!(grain.messages, 64 * 20, "every call handled once");
    silo.shutdown().await;
}

#[tokio::test]
async fn turning_replication_off_and_on_never_sends_versions_back() {
    let storage = Arc::new(MemoryStorage::new());
    let id = GrainId::new(Gauge::TYPE_NAME, "g");
    for (replication, expected) in [(true, 3), (false, 6), (true, 9)] {
        let config = SiloConfig::default().with_replication(replication);
        let silo = Silo::start(config, storage.clone()).await.unwrap();
        for _ in 0..3 {
            silo.grain::<Gauge>("g").ask(Bump(1)).await.unwrap();
        }
        assert_eq!(silo.grain::<Gauge>("g").ask(Level).await.unwrap(), expected);
        silo.shutdown().await;
        // Written through on every bump: 12 bytes of magic and version, then the state.
        let stored = storage.read(&id).await.unwrap().unwrap();
        assert_eq!(&stored.data[..4], b"GRV1");
        let version = u64::from_le_bytes(stored.data[4..12].try_into().unwrap());
        assert_eq!(version, expected as u64, "replication {replication}");
    }
}

#[tokio::test]
async fn a_primary_behind_its_caller_leaves_memory_instead_of_serving() {
    let silo = Silo::start(SiloConfig::default(), Arc::new(MemoryStorage::new()))
        .await
        .unwrap();
    assert_eq!(silo.grain::<Gauge>("s").ask(Bump(2)).await.unwrap(), 2);
    // A caller claims to have seen version 100 of this grain (a second primary wrote
    // it, say): this one must not answer with its older state.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let envelope = Envelope {
        target: GrainId::new(Gauge::TYPE_NAME, "s"),
        body: Body::Encoded {
            name: "Level".into(),
            bytes: codec::encode(&Level).unwrap(),
        },
        reply: ReplyTo::Encoded(tx),
        hops: 0,
        trace: None,
        copy: CopyHint {
            min_version: 100,
            primary: true,
        },
        deadline: None,
    };
    silo.router()
        .deliver(envelope, Instant::now() + Duration::from_secs(5))
        .await
        .unwrap();
    let answer = rx.await.unwrap();
    assert!(
        matches!(answer, Err(CallError::Unreachable(_))),
        "{answer:?}"
    );
    // It re-reads its state on the next call.
    let deadline = Instant::now() + Duration::from_secs(5);
    while silo.dispatcher(Gauge::TYPE_NAME).unwrap().is_active("s") {
        assert!(Instant::now() < deadline, "the stale primary stays active");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(silo.grain::<Gauge>("s").ask(Level).await.unwrap(), 2);
    silo.shutdown().await;
}
