//! In-process cluster tests: a master and slaves on 127.0.0.1 with real UDP membership
//! and TCP transport (`granary_silo::testing::TestCluster`).

use std::collections::HashSet;
use std::time::Duration;

use granary_example::{Account, Add, Counter, Follow, Followers, Get, Greeter, Hello};
use granary_proto::{CallError, GrainId};
use granary_runtime::Grain;
use granary_silo::testing::{eventually, TestCluster};
use granary_silo::SiloConfig;
use tokio::time::Instant;

const STABLE: Duration = Duration::from_secs(10);

fn counter(key: &str) -> GrainId {
    GrainId::new(Counter::TYPE_NAME, key)
}

/// Which running slaves host `grain`.
fn hosts(cluster: &TestCluster, grain: &GrainId) -> Vec<usize> {
    cluster
        .slaves()
        .filter(|(_, s)| s.hosts(grain))
        .map(|(i, _)| i)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silos_join_and_leave() {
    let mut cluster = TestCluster::builder().slaves(2).build().await.unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    assert_eq!(cluster.master().membership().active_slaves().count(), 2);

    let third = cluster.start_additional_silo().await.unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    assert_eq!(cluster.master().membership().active_slaves().count(), 3);

    // A graceful leave is seen by the master and the other slaves.
    let leaving = cluster.slave(third).unwrap().id();
    cluster.stop_silo(third).await;
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    for silo in std::iter::once(cluster.master()).chain(cluster.slaves().map(|(_, s)| s)) {
        assert!(
            !silo.membership().is_active(&leaving),
            "{} still lists the departed slave",
            silo.id()
        );
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_grains_spread_evenly_over_three_slaves() {
    let cluster = TestCluster::builder().slaves(3).build().await.unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    let client = cluster.client().await.unwrap();
    let calls: Vec<_> = (0..1000)
        .map(|i| {
            let g = client.grain::<Counter>(format!("spread-{i}"));
            tokio::spawn(async move { g.ask(Add(1)).await })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), 1);
    }
    let counts: Vec<usize> = cluster
        .slaves()
        .map(|(_, s)| s.activation_count())
        .collect();
    assert_eq!(counts.iter().sum::<usize>(), 1000, "{counts:?}");
    for n in &counts {
        assert!(
            (267..=400).contains(n),
            "uneven spread {counts:?}: each slave must be within ±20% of 333"
        );
    }
    client.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_calls_from_three_clients_make_one_activation() {
    let cluster = TestCluster::builder().slaves(3).build().await.unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(cluster.client().await.unwrap());
    }
    let mut calls = Vec::new();
    for client in &clients {
        for _ in 0..100 {
            let g = client.grain::<Counter>("contended");
            calls.push(tokio::spawn(async move { g.ask(Add(1)).await }));
        }
    }
    let mut values = Vec::new();
    for call in calls {
        values.push(call.await.unwrap().unwrap());
    }
    values.sort_unstable();
    assert_eq!(
        values,
        (1..=300).collect::<Vec<i64>>(),
        "every add applied exactly once, in one activation"
    );
    assert_eq!(hosts(&cluster, &counter("contended")).len(), 1);
    for client in &clients {
        client.close().await;
    }
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grains_call_grains_across_silos() {
    let cluster = TestCluster::builder().slaves(2).build().await.unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    let client = cluster.client().await.unwrap();
    for i in 0..20 {
        let n = client
            .grain::<Account>(format!("fan-{i}"))
            .ask(Follow("star".into()))
            .await
            .unwrap();
        assert_eq!(n, i + 1);
    }
    assert_eq!(
        client
            .grain::<Account>("star")
            .ask(Followers)
            .await
            .unwrap(),
        20
    );
    // With 21 accounts on 2 slaves, some follows crossed silos.
    let star = GrainId::new(Account::TYPE_NAME, "star");
    let star_host = hosts(&cluster, &star)[0];
    let remote_fans = (0..20)
        .filter(|i| {
            hosts(
                &cluster,
                &GrainId::new(Account::TYPE_NAME, format!("fan-{i}")),
            ) != [star_host]
        })
        .count();
    assert!(remote_fans > 0, "no follow crossed silos");
    // A grain can also be called from inside the cluster, through any silo.
    let greeting = cluster
        .master()
        .grain::<Greeter>("g")
        .ask(Hello("master".into()))
        .await
        .unwrap();
    assert!(greeting.contains("master"));
    client.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_grains_release_their_directory_entries_and_come_back_with_state() {
    let cluster = TestCluster::builder()
        .slaves(2)
        .silo_config(SiloConfig::default().with_idle_timeout(Duration::from_millis(300)))
        .build()
        .await
        .unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    let client = cluster.client().await.unwrap();
    for i in 0..10 {
        client
            .grain::<Counter>(format!("idle-{i}"))
            .ask(Add(i))
            .await
            .unwrap();
    }
    let directory = cluster.master().directory().unwrap().clone();
    eventually(
        "idle grains deactivated and released",
        Duration::from_secs(10),
        || directory.is_empty() && cluster.slaves().all(|(_, s)| s.activation_count() == 0),
    )
    .await;
    for i in 0..10 {
        assert_eq!(
            client
                .grain::<Counter>(format!("idle-{i}"))
                .ask(Get)
                .await
                .unwrap(),
            i
        );
    }
    client.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_slave_s_grains_come_back_elsewhere_with_their_state() {
    let mut cluster = TestCluster::builder().slaves(3).build().await.unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    let client = cluster.client().await.unwrap();
    for i in 0..60 {
        assert_eq!(
            client
                .grain::<Counter>(format!("k-{i}"))
                .ask(Add(10))
                .await
                .unwrap(),
            10
        );
    }
    let victim = 1;
    let lost: Vec<String> = (0..60)
        .map(|i| format!("k-{i}"))
        .filter(|k| hosts(&cluster, &counter(k)) == [victim])
        .collect();
    assert!(!lost.is_empty());

    // A call in flight on the victim fails fast instead of waiting for its timeout.
    let started = Instant::now();
    cluster.kill_silo(victim).await;
    let mut served_again = HashSet::new();
    while served_again.len() < lost.len() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "grains of the dead slave not served again within 5 s"
        );
        for key in &lost {
            if served_again.contains(key) {
                continue;
            }
            match client
                .grain::<Counter>(key)
                .ask(Get)
                .timeout(Duration::from_secs(2))
                .await
            {
                Ok(value) => {
                    assert_eq!(value, 10, "{key} lost its acknowledged state");
                    served_again.insert(key.clone());
                }
                Err(CallError::Unreachable(_) | CallError::Lost(_) | CallError::Timeout) => {}
                Err(e) => panic!("unexpected error for {key}: {e}"),
            }
        }
    }
    for key in &lost {
        assert!(!hosts(&cluster, &counter(key)).is_empty());
    }
    client.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_saves_state_and_stops_every_silo() {
    let cluster = TestCluster::builder().slaves(2).build().await.unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    let storage = cluster.storage().clone();
    let client = cluster.client().await.unwrap();
    client
        .grain::<Account>("ann")
        .ask(Follow("ben".into()))
        .await
        .unwrap();
    client.close().await;
    let started = Instant::now();
    cluster.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    let stored = storage
        .read(&GrainId::new(Account::TYPE_NAME, "ben"))
        .await
        .unwrap();
    assert!(stored.is_some(), "state was not written before shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_master_rebuilds_its_directory_from_the_slaves() {
    let mut cluster = TestCluster::builder().slaves(2).build().await.unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    let client = cluster.client().await.unwrap();
    for i in 0..20 {
        assert_eq!(
            client
                .grain::<Counter>(format!("m-{i}"))
                .ask(Add(1))
                .await
                .unwrap(),
            1
        );
    }
    client.close().await;
    let created: u64 = cluster.slaves().map(|(_, s)| s.activations_created()).sum();
    assert_eq!(created, 20);
    // The master restarts with an empty directory (a new epoch). The slaves keep their
    // grains and report them; the new master rebuilds its directory from the reports.
    let epoch = cluster.master().membership().epoch;
    cluster.restart_master().await.unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    assert!(cluster.master().membership().epoch > epoch);
    let directory = cluster.master().directory().unwrap().clone();
    eventually("every grain reported", Duration::from_secs(10), || {
        directory.len() == 20
    })
    .await;
    let client = cluster.client().await.unwrap();
    for i in 0..20 {
        let key = format!("m-{i}");
        assert_eq!(client.grain::<Counter>(&key).ask(Add(1)).await.unwrap(), 2);
        let host = hosts(&cluster, &counter(&key));
        assert_eq!(host.len(), 1, "{key} is active on more than one slave");
        assert_eq!(
            directory.lookup(&counter(&key)),
            Some(cluster.slave(host[0]).unwrap().addr())
        );
    }
    let created: u64 = cluster.slaves().map(|(_, s)| s.activations_created()).sum();
    assert_eq!(created, 20, "no grain was re-activated");
    client.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slave_never_reactivates_a_grain_from_its_own_stale_cache() {
    let cluster = TestCluster::builder()
        .slaves(2)
        .silo_config(SiloConfig::default().with_idle_timeout(Duration::from_millis(300)))
        .build()
        .await
        .unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    let directory = cluster.master().directory().unwrap().clone();
    let (x, slave) = cluster.slaves().next().unwrap();
    // Calls made on slave `x` itself (as a grain there would make them); find a key
    // the master places on `x`.
    let mut key = None;
    for i in 0..50 {
        let k = format!("local-{i}");
        slave.grain::<Counter>(&k).ask(Add(1)).await.unwrap();
        if hosts(&cluster, &counter(&k)) == [x] {
            key = Some(k);
            break;
        }
    }
    let key = key.expect("some key was placed on slave x");
    eventually(
        "idle grains deactivated and released",
        Duration::from_secs(10),
        || directory.is_empty() && cluster.slaves().all(|(_, s)| s.activation_count() == 0),
    )
    .await;
    // `x` still caches "key -> x"; calling again from `x` must go through the master.
    assert_eq!(slave.grain::<Counter>(&key).ask(Add(1)).await.unwrap(), 2);
    let host = hosts(&cluster, &counter(&key));
    assert_eq!(host.len(), 1);
    assert_eq!(
        directory.lookup(&counter(&key)),
        Some(cluster.slave(host[0]).unwrap().addr()),
        "activated without a directory entry: another silo could activate it too"
    );
    cluster.shutdown().await;
}
