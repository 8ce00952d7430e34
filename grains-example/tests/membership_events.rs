//! Membership event streams on a `TestCluster`: a subscriber on a silo (pushed from its
//! membership snapshots) and one on a client (polled status reports) both see a
//! `kill -9`-like crash of a slave as one `SiloDied`, and a new slave as `SiloJoined`.

use std::time::Duration;

use futures::{Stream, StreamExt};
use granary_proto::status::MembershipEvent;
use granary_silo::testing::TestCluster;
use tokio::time::Instant;

const STABLE: Duration = Duration::from_secs(10);
/// Time allowed for a change to reach every subscriber (100 ms heartbeats × 3 to
/// declare a death, then the client's next poll).
const NOTICE: Duration = Duration::from_secs(10);

/// The events of `events` up to and including `wanted`; panics at `deadline`.
async fn until(
    who: &str,
    events: &mut (impl Stream<Item = MembershipEvent> + Unpin + ?Sized),
    wanted: &MembershipEvent,
    deadline: Instant,
) -> Vec<MembershipEvent> {
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(event)) => {
                let done = &event == wanted;
                seen.push(event);
                if done {
                    return seen;
                }
            }
            Ok(None) => panic!("{who}: the stream ended; saw {seen:?}"),
            Err(_) => panic!("{who}: no {wanted:?} in time; saw {seen:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_see_a_killed_slave_die_once_and_a_new_one_join() {
    // Links the example grains: a silo refuses to start without grain types.
    assert!(!granary_example::grain_types().is_empty());
    let mut cluster = TestCluster::builder()
        .slaves(2)
        .heartbeats(Duration::from_millis(200), 5)
        .build()
        .await
        .unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    let client = cluster.client().await.unwrap();
    let mut on_master = cluster.master().membership_events();
    let mut on_slave = cluster.slave(0).unwrap().membership_events();
    let mut on_client = client
        .membership_events_every(Duration::from_millis(100))
        .await
        .unwrap();

    let dead = cluster.slave(1).unwrap().id();
    cluster.kill_silo(1).await;
    let died = MembershipEvent::SiloDied(dead);
    let deadline = Instant::now() + NOTICE;
    for (who, events) in [
        (
            "master",
            &mut on_master as &mut (dyn Stream<Item = _> + Unpin + Send),
        ),
        ("slave", &mut on_slave),
        ("client", &mut on_client),
    ] {
        let seen = until(who, events, &died, deadline).await;
        assert_eq!(seen, std::slice::from_ref(&died), "{who}: only the death");
    }

    // The next change is the join: the death was not reported again in between.
    let new = cluster.start_additional_silo().await.unwrap();
    let joined = MembershipEvent::SiloJoined(cluster.slave(new).unwrap().id());
    let deadline = Instant::now() + NOTICE;
    for (who, events) in [
        (
            "master",
            &mut on_master as &mut (dyn Stream<Item = _> + Unpin + Send),
        ),
        ("slave", &mut on_slave),
        ("client", &mut on_client),
    ] {
        let seen = until(who, events, &joined, deadline).await;
        assert_eq!(seen, std::slice::from_ref(&joined), "{who}: only the join");
    }

    drop((on_master, on_slave, on_client));
    client.close().await;
    cluster.shutdown().await;
}
