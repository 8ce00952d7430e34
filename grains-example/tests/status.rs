//! The cluster status a silo reports (what `client status` and the dashboard show),
//! after a known workload on a `TestCluster`.

use std::time::Duration;

use granary_example::{Add, Counter};
use granary_proto::status::{ClusterEventKind, SiloState};
use granary_runtime::Grain;
use granary_silo::testing::TestCluster;
use tokio::time::Instant;

const STABLE: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_status_counts_what_was_done_and_sees_a_death() {
    let mut cluster = TestCluster::builder()
        .slaves(2)
        .heartbeats(Duration::from_millis(100), 3)
        .build()
        .await
        .unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    let client = cluster.client().await.unwrap();
    for i in 0..30 {
        client
            .grain::<Counter>(format!("k{}", i % 10))
            .ask(Add(1))
            .await
            .unwrap();
    }

    // Asked of a slave, which forwards to the master.
    let status = cluster.slave(0).unwrap().cluster_status().await.unwrap();
    assert_eq!(status.master, cluster.master().id());
    assert_eq!(status.silos.len(), 3, "{:?}", status.unanswered);
    assert_eq!(status.silos[0].id, cluster.master().id(), "master first");
    let counted: u64 = status
        .silos
        .iter()
        .flat_map(|s| &s.grain_types)
        .filter(|t| t.grain_type == Counter::TYPE_NAME)
        .map(|t| t.messages)
        .sum();
    assert_eq!(counted, 30);
    let active: u64 = status
        .silos
        .iter()
        .flat_map(|s| &s.grain_types)
        .filter(|t| t.grain_type == Counter::TYPE_NAME)
        .map(|t| t.activations)
        .sum();
    assert_eq!(active, 10);
    assert!(status.silos.iter().all(|s| s.state == SiloState::Active));
    let latency: u64 = status
        .silos
        .iter()
        .flat_map(|s| &s.grain_types)
        .map(|t| t.latency.count())
        .sum();
    assert_eq!(latency, 30, "every turn is timed");
    let joins = status
        .events
        .iter()
        .filter(|e| e.kind == ClusterEventKind::Joined)
        .count();
    assert_eq!(joins, 2, "{:?}", status.events);

    // A killed slave shows up dead, with an event saying so.
    let dead = cluster.slave(1).unwrap().id();
    cluster.kill_silo(1).await;
    let deadline = Instant::now() + STABLE;
    loop {
        let status = cluster.master().cluster_status().await.unwrap();
        let member_dead = status
            .members
            .iter()
            .any(|m| m.id == dead && m.state == SiloState::Dead);
        let event = status
            .events
            .iter()
            .any(|e| e.kind == ClusterEventKind::Died && e.silo == dead);
        if member_dead && event {
            assert_eq!(status.silos.len(), 2);
            break;
        }
        assert!(Instant::now() < deadline, "not seen dead: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    client.close().await;
    cluster.shutdown().await;
}
