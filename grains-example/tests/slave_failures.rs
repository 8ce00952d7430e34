//! A slave dies or leaves under the real binaries: `kill -9` of a slave under load (no
//! acknowledged increment lost, none applied twice, failover within 5 s), and SIGTERM of
//! a slave (its grains handed over with their state, without waiting for the lease).
//! Helpers: [`support`].

mod support;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use granary_client::Client;
use granary_example::{Add, Counter};
use granary_proto::CallError;
use support::{bounded, connect, get_counter, Procs, KEY};
use tokio::time::Instant;

// ---------------------------------------------------------------------------------------
// kill -9 of a slave under load
// ---------------------------------------------------------------------------------------

/// What the load saw for one counter.
#[derive(Default)]
struct KeyStats {
    /// Increments acknowledged with `Ok`.
    acked: AtomicU64,
    /// Increments whose outcome is unknown (`Timeout`, `Lost`, or an unexpected error).
    unknown: AtomicU64,
}

struct Load {
    keys: Vec<String>,
    stats: Vec<KeyStats>,
    /// Calls that certainly were not delivered (and are simply retried).
    not_delivered: AtomicU64,
    /// How many calls ended with each kind of error.
    errors: Mutex<BTreeMap<String, u64>>,
    /// Errors other than not-delivered, `Timeout` and `Lost`.
    unexpected: Mutex<Vec<String>>,
    /// Replies that contradict the acknowledged history of their counter.
    violations: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Load {
    fn acked(&self, k: usize) -> u64 {
        self.stats[k].acked.load(Ordering::SeqCst)
    }

    fn unknown(&self, k: usize) -> u64 {
        self.stats[k].unknown.load(Ordering::SeqCst)
    }

    /// Books a failed increment of counter `k`.
    async fn on_error(&self, k: usize, e: CallError) {
        match e {
            CallError::Timeout | CallError::Lost(_) => {
                self.stats[k].unknown.fetch_add(1, Ordering::SeqCst);
            }
            e if e.is_not_delivered() => {
                self.not_delivered.fetch_add(1, Ordering::SeqCst);
                // Not delivered (e.g. no directory entry yet): a short pause.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            e => {
                self.stats[k].unknown.fetch_add(1, Ordering::SeqCst);
                self.unexpected
                    .lock()
                    .unwrap()
                    .push(format!("{}: {e:?}", self.keys[k]));
            }
        }
    }

    /// One worker: increments its counters (every `workers`-th key) round-robin, one
    /// call at a time, so it alone writes them and can check every reply.
    async fn run(self: Arc<Self>, client: Client, worker: usize, workers: usize) {
        let mine: Vec<usize> = (worker..self.keys.len()).step_by(workers).collect();
        while !self.stop.load(Ordering::SeqCst) {
            for &k in &mine {
                if self.stop.load(Ordering::SeqCst) {
                    return;
                }
                let key = &self.keys[k];
                let stats = &self.stats[k];
                match client
                    .grain::<Counter>(key)
                    .ask(Add(1))
                    .timeout(Duration::from_secs(2))
                    .await
                {
                    Ok(value) => {
                        let acked = stats.acked.fetch_add(1, Ordering::SeqCst) + 1;
                        let unknown = stats.unknown.load(Ordering::SeqCst);
                        let value = u64::try_from(value).unwrap_or(0);
                        if value < acked || value > acked + unknown {
                            self.violations.lock().unwrap().push(format!(
                                "{key}: Add replied {value} after {acked} acked and {unknown} unknown increments"
                            ));
                        }
                    }
                    Err(e) => {
                        let kind = format!("{e:?}");
                        let kind = kind.split('(').next().unwrap_or_default().to_owned();
                        *self.errors.lock().unwrap().entry(kind).or_default() += 1;
                        self.on_error(k, e).await;
                    }
                }
            }
        }
    }
}

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

    let load = Arc::new(Load {
        keys: (0..KEYS).map(|i| format!("load-{i}")).collect(),
        stats: (0..KEYS).map(|_| KeyStats::default()).collect(),
        not_delivered: AtomicU64::new(0),
        errors: Mutex::new(BTreeMap::new()),
        unexpected: Mutex::new(Vec::new()),
        violations: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    let load_client = connect(&[gateway]).await;
    let load_started = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| tokio::spawn(load.clone().run(load_client.clone(), w, WORKERS)))
        .collect();

    // At least a second of load, and every counter placed and acknowledged once.
    let deadline = Instant::now() + Duration::from_secs(15);
    while load_started.elapsed() < Duration::from_secs(1) || (0..KEYS).any(|k| load.acked(k) == 0) {
        assert!(
            Instant::now() < deadline,
            "the load did not touch every counter"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

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
    let acked_before = (0..KEYS).map(|k| load.acked(k)).sum::<u64>();

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
    load.stop.store(true, Ordering::SeqCst);
    for worker in workers {
        tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("a load worker did not stop")
            .unwrap();
    }

    // Every acknowledged increment is still there, and nothing was applied twice.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lost_acks = Vec::new();
    let (mut acked, mut unknown) = (0, 0);
    for (k, key) in load.keys.iter().enumerate() {
        let value = u64::try_from(get_counter(&probe, key, deadline).await).unwrap();
        let (a, u) = (load.acked(k), load.unknown(k));
        acked += a;
        unknown += u;
        if value < a || value > a + u {
            lost_acks.push(format!("{key}: value {value}, acked {a}, unknown {u}"));
        }
    }
    eprintln!(
        "kill -9 load: {acked} acked increments ({acked_before} before the kill), {unknown} unknown, \
         {} not delivered; errors by kind {:?}",
        load.not_delivered.load(Ordering::SeqCst),
        load.errors.lock().unwrap()
    );
    assert!(
        lost_acks.is_empty(),
        "acked <= value <= acked + unknown violated: {lost_acks:#?}"
    );
    let violations = load.violations.lock().unwrap().clone();
    assert!(
        violations.is_empty(),
        "replies contradicting the history: {violations:#?}"
    );
    let unexpected = load.unexpected.lock().unwrap().clone();
    assert!(
        unexpected.is_empty(),
        "unexpected call errors: {unexpected:#?}"
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
