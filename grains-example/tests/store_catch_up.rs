//! Snapshot catch-up of the replicated embedded store, in process: three master
//! candidates and two slaves on 127.0.0.1.
//!
//! A standby (A) is down while the acting master and the other standby (B) take writes.
//! Then the acting master dies and A returns: B is the only one that can win, and its new
//! epoch's log does not start where A stands, so A can only catch up by a snapshot — and
//! B serves only once A holds its barrier. Then B dies and the old master returns: A must
//! win and serve every acknowledged write, those it only ever got from the snapshot
//! included (the old master missed B's epoch, and gets A's store by a snapshot in turn).
//! The slaves are replaced before the final read, so every value comes from A's store.

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use granary_client::Client;
use granary_example::{Add, Counter, Get};
use granary_silo::testing::{eventually, TestCluster};
use tokio::time::Instant;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

const STABLE: Duration = Duration::from_secs(20);
/// Keys written while standby A is down (A gets them only from a snapshot).
const EARLY_KEYS: usize = 50;
/// Increments of each early key.
const EARLY_ADDS: u64 = 2;
/// Keys written in B's epoch (A gets them as batches after the snapshot).
const LATE_KEYS: usize = 5;

/// Keeps the messages the replicated store logs at info.
#[derive(Clone, Default)]
struct StoreLog(Arc<Mutex<Vec<String>>>);

impl StoreLog {
    /// Installs the capture (and, with `RUST_LOG`, a log on the test's output) for the
    /// whole test binary.
    fn install() -> Self {
        let log = Self::default();
        let capture = log.clone().with_filter(
            Targets::new().with_target("granary_silo::storage::replicated", Level::INFO),
        );
        let print = std::env::var_os("RUST_LOG").map(|_| {
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(EnvFilter::from_default_env())
        });
        tracing::subscriber::set_global_default(
            tracing_subscriber::registry().with(capture).with(print),
        )
        .expect("the only subscriber of this test binary");
        log
    }

    /// The snapshots sent to the standby at `addr`, as logged.
    fn snapshots_to(&self, addr: SocketAddr) -> Vec<String> {
        let needle = format!("sent a snapshot of the store to the standby at {addr} ");
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|m| m.starts_with(&needle))
            .cloned()
            .collect()
    }
}

struct Message<'a>(&'a mut Option<String>);

impl Visit for Message<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            *self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S: Subscriber> Layer<S> for StoreLog {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut message = None;
        event.record(&mut Message(&mut message));
        if let Some(message) = message {
            self.0.lock().unwrap().push(message);
        }
    }
}

/// Per key: increments acknowledged, and those of unknown outcome.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    acked: u64,
    unknown: u64,
}

/// Adds 1 to `key` until an increment is acknowledged; fails at `deadline`.
async fn add_until_acked(client: &Client, key: &str, tally: &mut Tally, deadline: Instant) {
    loop {
        let result = client
            .grain::<Counter>(key)
            .ask(Add(1))
            .timeout(Duration::from_secs(3))
            .await;
        match result {
            Ok(_) => {
                tally.acked += 1;
                return;
            }
            Err(e) => {
                if !e.is_not_delivered() {
                    tally.unknown += 1;
                }
                assert!(
                    Instant::now() < deadline,
                    "{key}: no increment acknowledged in time (last error: {e})"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Every acknowledged increment of `key` is there, and none applied twice.
async fn check(client: &Client, key: &str, tally: Tally) {
    let value = client
        .grain::<Counter>(key)
        .ask(Get)
        .timeout(Duration::from_secs(10))
        .await
        .unwrap_or_else(|e| panic!("reading {key}: {e}"));
    let value = u64::try_from(value).unwrap();
    assert!(
        value >= tally.acked && value <= tally.acked + tally.unknown,
        "{key}: {value} after {} acknowledged and {} unknown increments",
        tally.acked,
        tally.unknown
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_that_missed_an_epoch_catches_up_by_a_snapshot() {
    let log = StoreLog::install();
    let started = Instant::now();
    let mut cluster = TestCluster::builder()
        .candidates(3)
        .slaves(2)
        .build()
        .await
        .unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    let client = cluster.client().await.unwrap();

    // Standby A dies; the acting master and standby B (a majority) take the early writes.
    let acting = cluster.acting_master().unwrap();
    let a = (0..3).find(|i| *i != acting).unwrap();
    let a_tcp = cluster.candidate(a).unwrap().id().tcp;
    cluster.kill_candidate(a).await;
    let early: Vec<String> = (0..EARLY_KEYS).map(|i| format!("cu-early-{i}")).collect();
    let mut early_tallies = vec![Tally::default(); EARLY_KEYS];
    let deadline = Instant::now() + Duration::from_secs(20);
    for _ in 0..EARLY_ADDS {
        for (key, tally) in early.iter().zip(&mut early_tallies) {
            add_until_acked(&client, key, tally, deadline).await;
        }
    }

    // The master dies (whichever acts now: both live candidates hold every acknowledged
    // write) and A returns: only B, ahead of A, can be elected, and it serves once A holds
    // its barrier — which A, behind B's new epoch's log, can only get by a snapshot.
    let m = cluster
        .acting_master()
        .expect("a master acts after the early writes");
    let b = (0..3).find(|i| *i != a && *i != m).unwrap();
    let m_tcp = cluster.candidate(m).unwrap().id().tcp;
    let epoch_1 = cluster.master().membership().epoch;
    cluster.kill_candidate(m).await;
    cluster.restart_candidate(a).await.unwrap();
    let elected = cluster.wait_for_acting_master(STABLE).await.unwrap();
    assert_eq!(elected, b, "the more advanced store wins");
    let epoch_2 = cluster.master().membership().epoch;
    assert!(epoch_2 > epoch_1);
    let late: Vec<String> = (0..LATE_KEYS).map(|i| format!("cu-late-{i}")).collect();
    let mut late_tallies = vec![Tally::default(); LATE_KEYS];
    let deadline = Instant::now() + Duration::from_secs(20);
    for (key, tally) in late.iter().zip(&mut late_tallies) {
        add_until_acked(&client, key, tally, deadline).await;
    }
    eventually("B logged a snapshot sent to A", STABLE, || {
        !log.snapshots_to(a_tcp).is_empty()
    })
    .await;

    // B dies and the old master returns: A holds B's epoch, so A wins, and catches the old
    // master up by a snapshot of its own before it serves.
    cluster.kill_candidate(b).await;
    cluster.restart_candidate(m).await.unwrap();
    let elected = cluster.wait_for_acting_master(STABLE).await.unwrap();
    assert_eq!(elected, a, "the store that holds epoch {epoch_2} wins");
    assert!(cluster.master().membership().epoch > epoch_2);
    let deadline = Instant::now() + Duration::from_secs(20);
    for (key, tally) in late.iter().zip(&mut late_tallies) {
        add_until_acked(&client, key, tally, deadline).await;
    }
    eventually("A logged a snapshot sent to the old master", STABLE, || {
        !log.snapshots_to(m_tcp).is_empty()
    })
    .await;
    client.close().await;

    // Fresh slaves: no activation keeps a value in memory, every read loads A's store.
    let slaves: Vec<usize> = cluster.slaves().map(|(i, _)| i).collect();
    for &i in &slaves {
        cluster.kill_silo(i).await;
    }
    for _ in &slaves {
        cluster.start_additional_silo().await.unwrap();
    }
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    assert_eq!(cluster.acting_master(), Some(a), "not disturbed");
    let client = cluster.client().await.unwrap();
    for (key, tally) in early.iter().zip(&early_tallies) {
        check(&client, key, *tally).await;
    }
    for (key, tally) in late.iter().zip(&late_tallies) {
        check(&client, key, *tally).await;
    }
    eprintln!(
        "store catch-up: {:?} to A, {:?} to the old master; {:?} in all",
        log.snapshots_to(a_tcp),
        log.snapshots_to(m_tcp),
        started.elapsed()
    );
    client.close().await;
    cluster.shutdown().await;
}
