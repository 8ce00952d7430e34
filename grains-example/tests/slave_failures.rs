//! A slave dies or leaves under the real binaries: `kill -9` of a slave under load (no
//! acknowledged increment lost, none applied twice, failover within 5 s), and SIGTERM of
//! a slave (its grains handed over with their state, without waiting for the lease).
//! Helpers: [`support`].

mod support;

use std::collections::HashSet;
use std::time::Duration;

use granary_example::{Add, Counter};
use support::{bounded, connect, get_counter, CounterLoad, Procs, KEY};
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------
// kill -9 of a slave under load
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_of_a_slave_under_load() {
    let mut procs = Procs::new("kill9");
    bounded(Duration::from_secs(60), kill_under_load(&mut procs)).await;
}

async fn kill_under_load(procs: &mut Procs) {
    const KEYS: usize = 60;
    const WORKERS: usize = 4;
    let cluster = procs.start_cluster("", 3, Some(KEY)).await;
    let gateway = procs.ports(cluster.master).tcp;

    let load = CounterLoad::new("load", KEYS);
    let load_client = connect(&[gateway]).await;
    let running = load.start(&load_client, WORKERS);
    // At least a second of load, and every counter placed and acknowledged once.
    load.warm_up(Duration::from_secs(1), Duration::from_secs(15))
        .await;

    // The victim: the slave hosting the most counters.
    let placement: Vec<(usize, HashSet<String>)> = cluster
        .slaves
        .iter()
        .map(|&s| (s, procs.activated::<Counter>(s)))
        .collect();
    let spread: Vec<usize> = placement.iter().map(|(_, keys)| keys.len()).collect();
    assert_eq!(
        spread.iter().sum::<usize>(),
        KEYS,
        "every counter is active exactly once: {spread:?}"
    );
    let (victim, lost) = placement
        .iter()
        .max_by_key(|(_, keys)| keys.len())
        .cloned()
        .unwrap();
    assert!(!lost.is_empty());
    let acked_before = load.acked_total();

    procs.kill9(victim);
    let killed = Instant::now();

    // Failover: every counter answers a Get again (the probe client has a cold cache).
    let probe = connect(&[gateway]).await;
    let deadline = killed + Duration::from_secs(15);
    let served: Vec<_> = load
        .keys
        .iter()
        .map(|key| {
            let (probe, key) = (probe.clone(), key.clone());
            tokio::spawn(async move {
                get_counter(&probe, &key, deadline).await;
                killed.elapsed()
            })
        })
        .collect();
    let mut failover = Duration::ZERO;
    for task in served {
        failover = failover.max(task.await.unwrap());
    }
    eprintln!(
        "kill -9 failover: all {KEYS} counters served again {failover:?} after the kill of {} \
         ({} counters lost their host; placement {spread:?}; heartbeat 1 s × 3)",
        procs.name(victim),
        lost.len()
    );
    assert!(
        failover < Duration::from_secs(5),
        "failover took {failover:?}"
    );

    // Load continues on the new hosts.
    let acked_at_recovery: Vec<u64> = (0..KEYS).map(|k| load.acked(k)).collect();
    let deadline = Instant::now() + Duration::from_secs(10);
    let resumed = Instant::now();
    while resumed.elapsed() < Duration::from_secs(2)
        || (0..KEYS).any(|k| load.acked(k) <= acked_at_recovery[k])
    {
        assert!(
            Instant::now() < deadline,
            "some counters accept no increments after the failover"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let load = running.stop().await;

    // Every acknowledged increment is still there, and nothing was applied twice.
    let (acked, unknown) = load.check(&probe, Duration::from_secs(10)).await;
    eprintln!(
        "kill -9 load: {acked} acked increments ({acked_before} before the kill), {unknown} unknown, \
         {} not delivered; errors by kind {:?}",
        load.not_delivered(),
        load.errors()
    );
    for &i in std::iter::once(&cluster.master).chain(&cluster.slaves) {
        if i != victim {
            procs.check_alive(i).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    // One activation per counter: the victim's counters were activated again on exactly
    // one survivor, the others never moved.
    let survivors: Vec<HashSet<String>> = cluster
        .slaves
        .iter()
        .filter(|&&s| s != victim)
        .map(|&s| procs.activated::<Counter>(s))
        .collect();
    for key in &load.keys {
        let hosts = survivors.iter().filter(|keys| keys.contains(key)).count();
        assert_eq!(hosts, 1, "{key} was activated on {hosts} surviving slaves");
    }
    load_client.close().await;
    probe.close().await;
}

// ---------------------------------------------------------------------------------------
// SIGTERM of one slave
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_a_slave_hands_its_grains_over_with_their_state() {
    let mut procs = Procs::new("slave-sigterm");
    bounded(Duration::from_secs(60), slave_sigterm(&mut procs)).await;
}

async fn slave_sigterm(procs: &mut Procs) {
    const KEYS: i64 = 30;
    let cluster = procs.start_cluster("", 2, Some(KEY)).await;
    let client = connect(&[procs.ports(cluster.master).tcp]).await;
    for i in 0..KEYS {
        let value = client
            .grain::<Counter>(format!("t-{i}"))
            .ask(Add(i + 1))
            .await
            .unwrap();
        assert_eq!(value, i + 1);
    }
    let (victim, heir) = {
        let (a, b) = (cluster.slaves[0], cluster.slaves[1]);
        if procs.activated::<Counter>(a).len() >= procs.activated::<Counter>(b).len() {
            (a, b)
        } else {
            (b, a)
        }
    };
    let handed_over = procs.activated::<Counter>(victim);
    assert!(!handed_over.is_empty());

    procs.sigterm(victim);
    let status = procs
        .wait_exit(victim, Instant::now() + Duration::from_secs(10))
        .await;
    assert!(status.success(), "the slave exited with {status}");
    let exited = Instant::now();

    // Its grains are served by the other slave, with their state, without waiting for
    // the 3 s lease: the master acted on the slave's SHUTDOWN.
    let deadline = exited + Duration::from_secs(10);
    let reads: Vec<_> = (0..KEYS)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { get_counter(&client, &format!("t-{i}"), deadline).await })
        })
        .collect();
    for (i, read) in (0..KEYS).zip(reads) {
        assert_eq!(read.await.unwrap(), i + 1, "t-{i} lost its state");
    }
    let took = exited.elapsed();
    eprintln!(
        "slave SIGTERM: its {} counters were served again {took:?} after it exited",
        handed_over.len()
    );
    assert!(
        took < Duration::from_millis(2500),
        "hand-over took {took:?}, as long as a lease"
    );
    let victim_tcp = procs.ports(victim).tcp;
    assert!(
        procs.logged_slave(cluster.master, victim_tcp, "left"),
        "the master did not log `slave {victim_tcp}/… left`"
    );
    let on_heir = procs.activated::<Counter>(heir);
    assert!(
        handed_over.is_subset(&on_heir),
        "not every grain moved to the remaining slave"
    );
    // New grains go to the remaining slave only.
    for i in 0..10 {
        client
            .grain::<Counter>(format!("after-{i}"))
            .ask(Add(1))
            .await
            .unwrap();
    }
    let on_heir = procs.activated::<Counter>(heir);
    assert!((0..10).all(|i| on_heir.contains(&format!("after-{i}"))));
    assert!(procs.alive(cluster.master) && procs.alive(heir));
    client.close().await;
}
