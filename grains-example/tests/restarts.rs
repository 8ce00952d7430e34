//! Silos restarted on the same ports: a `kill -9`ed slave rejoins as a new generation
//! and gets its grains back with their state; a `kill -9`ed master restarted on the same
//! store takes its slaves back. Helpers: [`support`].

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use granary_example::{Add, Counter};
use support::{bounded, connect, get_counter, Procs, KEY, START};
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------
// A slave restarted on the same ports
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_slave_rejoins_as_a_new_generation() {
    let mut procs = Procs::new("restart");
    bounded(Duration::from_secs(60), restarted_slave(&mut procs)).await;
}

async fn restarted_slave(procs: &mut Procs) {
    const KEYS: i64 = 40;
    let cluster = procs.start_cluster("", 2, Some(KEY)).await;
    let client = connect(&[procs.ports(cluster.master).tcp]).await;
    for i in 0..KEYS {
        assert_eq!(
            client
                .grain::<Counter>(format!("r-{i}"))
                .ask(Add(i + 1))
                .await
                .unwrap(),
            i + 1
        );
    }
    let hosted: BTreeMap<usize, usize> = cluster
        .slaves
        .iter()
        .map(|&s| (s, procs.activated::<Counter>(s).len()))
        .collect();
    let victim = *hosted.iter().max_by_key(|(_, n)| **n).unwrap().0;
    assert!(hosted[&victim] > 0);

    procs.kill9(victim);
    let killed = Instant::now();
    let reborn = procs.restart(victim);
    procs
        .wait_joined(reborn, killed + START)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rejoined = killed.elapsed();

    // The master saw a new generation on the old addresses and dropped the old one at
    // once (no lease wait).
    let replaced = format!("slave restarted: {}/udp:", procs.ports(victim).tcp);
    assert!(
        procs.log(cluster.master).lines().any(
            |line| line.contains(&replaced) && line.contains("(the old run is declared dead)")
        ),
        "the master did not log `{replaced}… (the old run is declared dead)`"
    );
    // The old grains come back with their state. `client` still caches the old
    // generation's address, which the new process now answers.
    let deadline = killed + Duration::from_secs(10);
    for i in 0..KEYS {
        assert_eq!(
            get_counter(&client, &format!("r-{i}"), deadline).await,
            i + 1
        );
    }
    eprintln!(
        "restarted slave: rejoined {rejoined:?} and all {KEYS} counters served {:?} after the kill",
        killed.elapsed()
    );
    // And new grains are placed on it again.
    for i in 0..60 {
        client
            .grain::<Counter>(format!("new-{i}"))
            .ask(Add(1))
            .await
            .unwrap();
    }
    let placed = procs
        .activated::<Counter>(reborn)
        .iter()
        .filter(|k| k.starts_with("new-"))
        .count();
    eprintln!("restarted slave: {placed} of 60 new counters placed on it");
    assert!(placed > 0, "no new grain was placed on the restarted slave");
    for i in [cluster.master, reborn]
        .into_iter()
        .chain(cluster.slaves.iter().copied().filter(|&s| s != victim))
    {
        procs.check_alive(i).unwrap_or_else(|e| panic!("{e}"));
    }
    client.close().await;
}

// ---------------------------------------------------------------------------------------
// The master restarted on the same ports and store
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_master_takes_its_slaves_back() {
    let mut procs = Procs::new("master-restart");
    bounded(Duration::from_secs(60), restarted_master(&mut procs)).await;
}

async fn restarted_master(procs: &mut Procs) {
    const KEYS: i64 = 20;
    let cluster = procs.start_cluster("", 2, Some(KEY)).await;
    let client = connect(&[procs.ports(cluster.master).tcp]).await;
    for i in 0..KEYS {
        let value = client
            .grain::<Counter>(format!("m-{i}"))
            .ask(Add(i + 1))
            .await
            .unwrap();
        assert_eq!(value, i + 1);
    }

    procs.kill9(cluster.master);
    let killed = Instant::now();
    let master = procs.restart(cluster.master);
    // The new master (a new epoch) admits the slaves again; they keep their grains and
    // report them, and it rebuilds its directory from the reports. They do not exit.
    let deadline = killed + START;
    for &slave in &cluster.slaves {
        let tcp = procs.ports(slave).tcp;
        while !procs.logged_slave(master, tcp, "joined") {
            procs.check_alive(master).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                Instant::now() < deadline,
                "{} did not rejoin the restarted master",
                procs.name(slave)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let rejoined = killed.elapsed();
    // The state written through the old master is in its store; the old client
    // reconnects to the new master on its own.
    let deadline = killed + Duration::from_secs(10);
    for i in 0..KEYS {
        assert_eq!(
            get_counter(&client, &format!("m-{i}"), deadline).await,
            i + 1
        );
    }
    let served = killed.elapsed();
    for i in 0..KEYS {
        let value = client
            .grain::<Counter>(format!("m-{i}"))
            .ask(Add(1))
            .timeout(Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(value, i + 2, "m-{i} after the master restart");
    }
    eprintln!(
        "restarted master: slaves rejoined {rejoined:?} and all {KEYS} counters served {served:?} after the kill"
    );
    for &slave in &cluster.slaves {
        procs.check_alive(slave).unwrap_or_else(|e| panic!("{e}"));
        let log = procs.log(slave);
        assert!(
            log.contains("following the acting master") && log.contains("reported"),
            "{} did not follow and report to the new master:\n{log}",
            procs.name(slave)
        );
    }
    procs.check_alive(master).unwrap_or_else(|e| panic!("{e}"));
    client.close().await;
}
