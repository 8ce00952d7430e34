//! A durable reminder on MongoDB: the shard tables are MongoDB documents, and a
//! `Beacon` beating every second keeps beating after the master and every slave crashed
//! and came back. Gated like `mongo_cluster.rs` (needs `MONGODB_URI`; reported as
//! `ignored, SKIPPED` without `cfg(granary_mongodb)`). A test binary of its own: its
//! silos restart on their old ports, which a cluster of a test running beside it in the
//! same binary could have taken meanwhile.

#[path = "support/mongo.rs"]
mod mongo;

use std::time::Duration;

use granary_example::{Arm, Beacon, Beats};
use granary_proto::GrainId;
use granary_runtime::reminder::{shard_id, shard_of};
use granary_runtime::{Grain, GrainStorage};
use granary_silo::storage::MongoStorage;
use granary_silo::testing::TestCluster;

/// A durable reminder on MongoDB: a `Beacon` beating every second keeps beating after
/// the master and every slave crashed and came back (the shard tables are MongoDB
/// documents, read by the restarted master's keeper).
#[cfg_attr(
    not(granary_mongodb),
    ignore = "SKIPPED: MONGODB_URI not set (see scripts/mongodb-test-server.sh)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reminder_survives_a_full_restart_on_mongodb() {
    mongo::on_scratch_database("granary_reminders", Duration::from_secs(90), reminder).await;
}

async fn beats_after(
    cluster: &TestCluster,
    since_unix_ms: u64,
    n: usize,
) -> Vec<granary_example::beacon::Beat> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let client = cluster.client().await.unwrap();
    loop {
        if let Ok(beats) = client
            .grain::<Beacon>("mongo")
            .ask(Beats)
            .timeout(Duration::from_secs(1))
            .await
        {
            if beats
                .iter()
                .filter(|b| b.due_unix_ms > since_unix_ms)
                .count()
                >= n
            {
                client.close().await;
                return beats;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fewer than {n} beats after {since_unix_ms}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn reminder(store: std::sync::Arc<MongoStorage>) {
    let mut cluster = TestCluster::builder()
        .slaves(2)
        .shared_storage(store.clone())
        .build()
        .await
        .unwrap();
    cluster
        .wait_for_membership_stable(Duration::from_secs(10))
        .await
        .unwrap();
    let client = cluster.client().await.unwrap();
    let armed = now_unix_ms();
    client
        .grain::<Beacon>("mongo")
        .ask(Arm { period_ms: 1_000 })
        .await
        .unwrap();
    client.close().await;
    beats_after(&cluster, armed, 2).await;
    // The reminder table is a MongoDB document.
    let shard = shard_id(shard_of(&GrainId::new(Beacon::TYPE_NAME, "mongo")));
    assert!(store.read(&shard).await.unwrap().is_some());

    // Everything crashes, and comes back on the same addresses and database (each
    // slave is killed and started again; then the master).
    cluster.kill_master().await;
    let down = now_unix_ms();
    for i in 0..2 {
        cluster.restart_silo(i).await.unwrap();
    }
    cluster.restart_master().await.unwrap();
    cluster
        .wait_for_membership_stable(Duration::from_secs(10))
        .await
        .unwrap();
    let beats = beats_after(&cluster, down, 2).await;
    let first = beats.iter().find(|b| b.due_unix_ms > down).unwrap();
    eprintln!(
        "reminder on MongoDB after a full restart: first tick {} ms after the crash ({} missed counted)",
        first.at_unix_ms.saturating_sub(down),
        first.missed
    );
    cluster.shutdown().await;
}
