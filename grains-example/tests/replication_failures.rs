//! Read replicas under `kill -9`, with the real binaries (a master and three slaves):
//!
//! - kill -9 the slave of a replica during load: calls keep succeeding (reads lost with
//!   the replica are asked of the primary), every reply still checked;
//! - kill -9 the slave of the primary: no replica is promoted, the grain comes back
//!   from storage with every acknowledged write, and no caller ever reads older state
//!   than it wrote or read before, across the failover.
//!
//! Each caller is its own client (its own router and version token) doing one call at
//! a time: 1 `Bump(1)` in 10, else `Level`. Helpers: [`support`].

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use granary_client::Client;
use granary_example::{Bump, Gauge, Level};
use granary_proto::CallError;
use support::{bounded, connect, Procs, KEY};
use tokio::time::Instant;

const CALLERS: usize = 8;
const GRAIN_LOG: &str = "grain=example.gauge/v1/hot";
/// Replicas appear quickly (1 s window, low thresholds) and stay (60 s cool-down).
const SCALING: &str = "example.gauge/v1:window=1s,cool-down=60s,queue=2,busy=5,max-copies=3";

/// What the callers saw.
#[derive(Default)]
struct Seen {
    acked_writes: AtomicU64,
    /// Writes whose outcome is unknown (`Lost`, `Timeout`).
    unknown_writes: AtomicU64,
    reads: AtomicU64,
    /// Failed calls by error kind.
    failures: Mutex<BTreeMap<&'static str, u64>>,
    violations: Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Seen {
    fn failed(&self) -> u64 {
        self.failures.lock().unwrap().values().sum()
    }
}

async fn caller(i: usize, client: Client, seen: Arc<Seen>) {
    let gauge = client.grain::<Gauge>("hot");
    let mut floor = 0i64;
    let mut n = 0usize;
    while !seen.stop.load(Ordering::SeqCst) {
        n += 1;
        let write = (n + i).is_multiple_of(10);
        let reply = if write {
            gauge.ask(Bump(1)).timeout(Duration::from_secs(10)).await
        } else {
            gauge.ask(Level).timeout(Duration::from_secs(10)).await
        };
        match reply {
            Ok(level) => {
                let older = if write { level <= floor } else { level < floor };
                if older {
                    let what = if write { "Bump" } else { "Level" };
                    seen.violations.lock().unwrap().push(format!(
                        "caller {i}: {what} replied {level} after it had seen {floor}"
                    ));
                }
                floor = floor.max(level);
                let counter = if write {
                    &seen.acked_writes
                } else {
                    &seen.reads
                };
                counter.fetch_add(1, Ordering::SeqCst);
            }
            Err(e) => {
                if write && matches!(e, CallError::Timeout | CallError::Lost(_)) {
                    seen.unknown_writes.fetch_add(1, Ordering::SeqCst);
                }
                *seen.failures.lock().unwrap().entry(e.kind()).or_default() += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// A cluster of three slaves, the callers running, and replicas of the gauge serving.
struct Running {
    clients: Vec<Client>,
    seen: Arc<Seen>,
    callers: Vec<tokio::task::JoinHandle<()>>,
    /// The slave of the primary, and those of the replicas.
    primary: usize,
    replicas: Vec<usize>,
}

async fn start(procs: &mut Procs) -> Running {
    procs.env_all("GRANARY_SCALING", SCALING);
    let cluster = procs.start_cluster("", 3, Some(KEY)).await;
    let gateway = procs.ports(cluster.master).tcp;
    let seen = Arc::new(Seen::default());
    let mut clients = Vec::new();
    for _ in 0..CALLERS {
        clients.push(connect(&[gateway]).await);
    }
    let callers = clients
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, c)| tokio::spawn(caller(i, c, seen.clone())))
        .collect();
    // The replicas start (the slaves log it), then serve for a second.
    let deadline = Instant::now() + Duration::from_secs(30);
    let replicas = loop {
        let replicas: Vec<usize> = cluster
            .slaves
            .iter()
            .copied()
            .filter(|&s| {
                procs
                    .log(s)
                    .lines()
                    .any(|l| l.contains("starting a read replica here") && l.contains(GRAIN_LOG))
            })
            .collect();
        if replicas.len() >= 2 {
            break replicas;
        }
        assert!(
            Instant::now() < deadline,
            "no replicas of the hot gauge after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let primary = cluster
        .slaves
        .iter()
        .copied()
        .find(|s| !replicas.contains(s))
        .expect("three slaves, two replicas");
    let activated = format!("activated {GRAIN_LOG}");
    assert!(
        procs.log(primary).contains(&activated),
        "the third slave hosts the primary:\n{}",
        procs.log(primary)
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    Running {
        clients,
        seen,
        callers,
        primary,
        replicas,
    }
}

impl Running {
    /// Waits until `n` more calls of each kind are acknowledged, or fails at `timeout`.
    async fn progress(&self, n: u64, timeout: Duration) {
        let (w, r) = (
            self.seen.acked_writes.load(Ordering::SeqCst),
            self.seen.reads.load(Ordering::SeqCst),
        );
        let deadline = Instant::now() + timeout;
        while self.seen.acked_writes.load(Ordering::SeqCst) < w + n
            || self.seen.reads.load(Ordering::SeqCst) < r + n
        {
            assert!(Instant::now() < deadline, "no progress for {timeout:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the callers; returns the final level (read at the primary).
    async fn stop(self) -> (i64, Arc<Seen>) {
        self.seen.stop.store(true, Ordering::SeqCst);
        for caller in self.callers {
            caller.await.unwrap();
        }
        let level = self.clients[0]
            .grain::<Gauge>("hot")
            .ask(Bump(0))
            .timeout(Duration::from_secs(10))
            .await
            .expect("the gauge answers");
        for client in self.clients {
            client.close().await;
        }
        (level, self.seen)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_of_a_replicas_slave_keeps_calls_succeeding() {
    let mut procs = Procs::new("repl-kill-replica");
    bounded(Duration::from_secs(120), async {
        let running = start(&mut procs).await;
        let failed_before = running.seen.failed();
        let victim = running.replicas[0];
        procs.kill9(victim);
        let killed = Instant::now();
        // Through the death being noticed (3 heartbeats of 1 s) and after it.
        while killed.elapsed() < Duration::from_secs(6) {
            running.progress(5, Duration::from_secs(10)).await;
        }
        let (level, seen) = running.stop().await;
        let violations = seen.violations.lock().unwrap().clone();
        assert!(violations.is_empty(), "{violations:#?}");
        let failures = seen.failures.lock().unwrap().clone();
        assert_eq!(seen.failed(), failed_before, "calls failed after the kill: {failures:?}");
        let acked = seen.acked_writes.load(Ordering::SeqCst) as i64;
        assert_eq!(level, acked, "every acknowledged write, once");
        eprintln!(
            "replica's slave killed: {acked} writes and {} reads acknowledged, failures {failures:?}",
            seen.reads.load(Ordering::SeqCst)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_dash_nine_of_the_primarys_slave_loses_no_acknowledged_write() {
    let mut procs = Procs::new("repl-kill-primary");
    bounded(Duration::from_secs(120), async {
        let running = start(&mut procs).await;
        let replicas = running.replicas.clone();
        procs.kill9(running.primary);
        let killed = Instant::now();
        // The grain comes back from storage (after the death is noticed) and serves.
        running.progress(20, Duration::from_secs(20)).await;
        eprintln!("writes and reads acknowledged again {:?} after the kill", killed.elapsed());
        let (level, seen) = running.stop().await;
        let violations = seen.violations.lock().unwrap().clone();
        assert!(violations.is_empty(), "{violations:#?}");
        let acked = seen.acked_writes.load(Ordering::SeqCst) as i64;
        let unknown = seen.unknown_writes.load(Ordering::SeqCst) as i64;
        assert!(
            level >= acked && level <= acked + unknown,
            "level {level}: {acked} acknowledged and {unknown} unknown writes"
        );
        // Nothing was promoted: each replica stopped (its lease ran out and it gave up on
        // its primary), or the master dropped it with its primary, whichever came first.
        for &replica in &replicas {
            let log = procs.log(replica);
            assert!(
                log.contains("replica lost its primary") || log.contains("dropping the 1 copy"),
                "{log}"
            );
        }
        eprintln!(
            "primary's slave killed: level {level}, {acked} writes acknowledged, {unknown} unknown, {} reads, failures {:?}",
            seen.reads.load(Ordering::SeqCst),
            seen.failures.lock().unwrap()
        );
    })
    .await;
}
