//! No single point of failure, in process: three master candidates (each with its own
//! embedded store, replicated from the acting master) and slaves on 127.0.0.1.
//! - the acting master is killed under a counter load: another acts, no acknowledged
//!   increment is lost, the slaves' grains are not re-activated;
//! - a second candidate is killed: with no majority the cluster refuses (clearly) rather
//!   than lose anything, and serves again, complete, once a candidate returns;
//! - with a store every silo shares, the last candidate standing serves alone;
//! - a restarted old master rejoins as a standby and a later failover onto it loses
//!   nothing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use granary_client::Client;
use granary_example::{Add, Counter, Get};
use granary_proto::CallError;
use granary_silo::storage::MemoryStorage;
use granary_silo::testing::{eventually, TestCluster};
use tokio::time::Instant;

const STABLE: Duration = Duration::from_secs(20);

/// Per key: increments acknowledged, and those of unknown outcome.
#[derive(Default)]
struct Tally {
    acked: AtomicU64,
    unknown: AtomicU64,
}

/// Increments counters from several tasks until stopped, one call at a time per key.
struct Load {
    keys: Vec<String>,
    tallies: Vec<Tally>,
    stop: AtomicBool,
    errors: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl Load {
    fn new(keys: usize) -> Arc<Self> {
        Arc::new(Self {
            keys: (0..keys).map(|i| format!("fo-{i}")).collect(),
            tallies: (0..keys).map(|_| Tally::default()).collect(),
            stop: AtomicBool::new(false),
            errors: Default::default(),
        })
    }

    async fn run(self: Arc<Self>, client: Client, worker: usize, workers: usize) {
        let mine: Vec<usize> = (worker..self.keys.len()).step_by(workers).collect();
        while !self.stop.load(Ordering::SeqCst) {
            for &k in &mine {
                let result = client
                    .grain::<Counter>(&self.keys[k])
                    .ask(Add(1))
                    .timeout(Duration::from_secs(3))
                    .await;
                match result {
                    Ok(_) => {
                        self.tallies[k].acked.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) if e.is_not_delivered() => {
                        self.note(&e);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(e) => {
                        self.note(&e);
                        self.tallies[k].unknown.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }
    }

    fn note(&self, e: &CallError) {
        let kind = format!("{e:?}");
        let kind = kind.split('(').next().unwrap_or_default().to_owned();
        *self.errors.lock().unwrap().entry(kind).or_default() += 1;
    }

    fn acked_total(&self) -> u64 {
        self.tallies
            .iter()
            .map(|t| t.acked.load(Ordering::SeqCst))
            .sum()
    }

    /// Every acknowledged increment is there, and none applied twice.
    async fn check(&self, client: &Client) {
        for (k, key) in self.keys.iter().enumerate() {
            let value = u64::try_from(
                client
                    .grain::<Counter>(key)
                    .ask(Get)
                    .timeout(Duration::from_secs(10))
                    .await
                    .unwrap_or_else(|e| panic!("reading {key}: {e}")),
            )
            .unwrap();
            let acked = self.tallies[k].acked.load(Ordering::SeqCst);
            let unknown = self.tallies[k].unknown.load(Ordering::SeqCst);
            assert!(
                value >= acked && value <= acked + unknown,
                "{key}: {value} after {acked} acknowledged and {unknown} unknown increments"
            );
        }
    }
}

/// Runs `load` with `workers` tasks on `client` until the returned handle is stopped.
fn start_load(
    load: &Arc<Load>,
    client: &Client,
    workers: usize,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|w| tokio::spawn(load.clone().run(client.clone(), w, workers)))
        .collect()
}

async fn stop_load(load: &Load, tasks: Vec<tokio::task::JoinHandle<()>>) {
    load.stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.unwrap();
    }
}

/// Waits until the acked count grows by `n` (the cluster serves).
async fn progress(load: &Load, n: u64, within: Duration) {
    let start = load.acked_total();
    let deadline = Instant::now() + within;
    while load.acked_total() < start + n {
        assert!(
            Instant::now() < deadline,
            "no progress within {within:?} (errors: {:?})",
            load.errors.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_acting_master_dies_under_load_and_nothing_is_lost() {
    if std::env::var_os("RUST_LOG").is_some() {
        granary_silo::cli::init_logging(granary_silo::cli::LogFormat::Text);
    }
    // Slower beats than the builder's default (300 ms × 10: a slave's hosting lease is
    // 2.85 s, the acting master's 0.75 s): an election slowed by a loaded machine must
    // still end before the slaves' leases run out, or they drop their grains by design.
    let mut cluster = TestCluster::builder()
        .candidates(3)
        .slaves(2)
        .heartbeats(Duration::from_millis(300), 10)
        .build()
        .await
        .unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    let client = cluster.client().await.unwrap();
    let load = Load::new(12);
    let tasks = start_load(&load, &client, 4);
    progress(&load, 100, Duration::from_secs(20)).await;
    let created: u64 = cluster.slaves().map(|(_, s)| s.activations_created()).sum();
    assert_eq!(created, 12);

    let old = cluster.acting_master().unwrap();
    let epoch = cluster.master().membership().epoch;
    let before = load.acked_total();
    let killed = Instant::now();
    cluster.kill_candidate(old).await;
    let new = cluster
        .wait_for_acting_master(Duration::from_secs(10))
        .await
        .unwrap();
    let elected = killed.elapsed();
    assert_ne!(new, old);
    assert!(cluster.master().membership().epoch > epoch);
    // Calls in flight at the kill may still complete; count from the election on.
    let acked_at_election = load.acked_total();
    progress(&load, 1, Duration::from_secs(20)).await;
    let served = killed.elapsed();
    progress(&load, 100, Duration::from_secs(20)).await;
    stop_load(&load, tasks).await;
    eprintln!(
        "failover: a new master acted {elected:?} after the kill and acknowledged a write {served:?} after it \
         ({} acknowledged between the kill and the election); errors {:?}",
        acked_at_election - before,
        load.errors.lock().unwrap()
    );
    assert!(elected < Duration::from_secs(5), "took {elected:?}");
    load.check(&client).await;
    let created: u64 = cluster.slaves().map(|(_, s)| s.activations_created()).sum();
    assert_eq!(
        created, 12,
        "grains on the healthy slaves were re-activated"
    );
    client.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_majority_the_cluster_refuses_and_loses_nothing() {
    let mut cluster = TestCluster::builder()
        .candidates(3)
        .slaves(2)
        .build()
        .await
        .unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    let client = cluster.client().await.unwrap();
    let load = Load::new(6);
    let tasks = start_load(&load, &client, 3);
    progress(&load, 50, Duration::from_secs(20)).await;
    // Two of three candidates die: the last one can never gather a majority.
    let first = cluster.acting_master().unwrap();
    let second = (0..3).find(|i| *i != first).unwrap();
    cluster.kill_candidate(first).await;
    cluster.kill_candidate(second).await;
    let third = (0..3).find(|i| *i != first && *i != second).unwrap();
    // Writes stop being acknowledged: they fail as "not delivered" or of unknown
    // outcome, never as success.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let stalled = load.acked_total();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        load.acked_total(),
        stalled,
        "nothing is acknowledged without a majority"
    );
    assert!(cluster.acting_master().is_none());
    assert!(cluster.candidate(third).is_some());
    // One candidate comes back: a majority again; everything acknowledged is there.
    cluster.restart_candidate(first).await.unwrap();
    cluster
        .wait_for_acting_master(Duration::from_secs(20))
        .await
        .unwrap();
    progress(&load, 50, Duration::from_secs(20)).await;
    stop_load(&load, tasks).await;
    load.check(&client).await;
    client.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_shared_store_the_last_candidate_serves_alone() {
    let store = Arc::new(MemoryStorage::new());
    let mut cluster = TestCluster::builder()
        .candidates(3)
        .slaves(2)
        .shared_storage(store)
        .build()
        .await
        .unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    let client = cluster.client().await.unwrap();
    let load = Load::new(6);
    let tasks = start_load(&load, &client, 3);
    progress(&load, 50, Duration::from_secs(20)).await;
    for _ in 0..2 {
        let acting = cluster.acting_master().unwrap();
        cluster.kill_candidate(acting).await;
        cluster
            .wait_for_acting_master(Duration::from_secs(20))
            .await
            .unwrap();
        progress(&load, 50, Duration::from_secs(20)).await;
    }
    stop_load(&load, tasks).await;
    load.check(&client).await;
    client.close().await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_master_rejoins_as_a_standby_and_a_later_failover_onto_it_loses_nothing() {
    let mut cluster = TestCluster::builder()
        .candidates(3)
        .slaves(2)
        .build()
        .await
        .unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    let client = cluster.client().await.unwrap();
    let load = Load::new(8);
    let tasks = start_load(&load, &client, 4);
    progress(&load, 50, Duration::from_secs(20)).await;

    let first = cluster.acting_master().unwrap();
    cluster.kill_candidate(first).await;
    let second = cluster
        .wait_for_acting_master(Duration::from_secs(10))
        .await
        .unwrap();
    progress(&load, 50, Duration::from_secs(20)).await;
    // The old master comes back: it follows the acting master as a standby and catches
    // up its store (writes go on meanwhile).
    let epoch = cluster.master().membership().epoch;
    cluster.restart_candidate(first).await.unwrap();
    let back = cluster.candidate(first).unwrap();
    let second_id = cluster.candidate(second).unwrap().id();
    eventually("the old master follows as a standby", STABLE, || {
        back.membership().master == Some(second_id)
    })
    .await;
    progress(&load, 50, Duration::from_secs(20)).await;
    assert_eq!(cluster.acting_master(), Some(second), "not disturbed");
    assert_eq!(cluster.master().membership().epoch, epoch);
    // Now the third candidate dies too, then the second: the restarted one must act
    // (with the third back), with everything.
    let third = (0..3).find(|i| *i != first && *i != second).unwrap();
    cluster.kill_candidate(third).await;
    progress(&load, 20, Duration::from_secs(20)).await;
    cluster.restart_candidate(third).await.unwrap();
    progress(&load, 20, Duration::from_secs(20)).await;
    cluster.kill_candidate(second).await;
    let acting = cluster
        .wait_for_acting_master(Duration::from_secs(20))
        .await
        .unwrap();
    assert_ne!(acting, second);
    progress(&load, 50, Duration::from_secs(20)).await;
    stop_load(&load, tasks).await;
    load.check(&client).await;
    client.close().await;
    cluster.shutdown().await;
}
