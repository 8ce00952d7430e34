//! [`CounterLoad`]: workers that increment counters one call at a time per counter and
//! keep the books needed to prove nothing was lost or applied twice: per counter, the
//! increments acknowledged and those of unknown outcome, and every reply checked
//! against that history as it arrives.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use granary_client::Client;
use granary_example::{Add, Counter};
use granary_proto::CallError;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::get_counter;

/// What the load saw for one counter.
#[derive(Default)]
struct KeyStats {
    /// Increments acknowledged with `Ok`.
    acked: AtomicU64,
    /// Increments whose outcome is unknown (`Timeout`, `Lost`, `Storage`, or an
    /// unexpected error).
    unknown: AtomicU64,
}

/// The books of a counter load.
pub struct CounterLoad {
    pub keys: Vec<String>,
    stats: Vec<KeyStats>,
    /// Calls that certainly were not delivered (and are simply retried).
    not_delivered: AtomicU64,
    /// How many calls ended with each kind of error.
    errors: Mutex<BTreeMap<String, u64>>,
    /// Errors other than not-delivered and the unknown-outcome kinds.
    unexpected: Mutex<Vec<String>>,
    /// Replies that contradict the acknowledged history of their counter.
    violations: Mutex<Vec<String>>,
    stop: AtomicBool,
}

/// Running workers of a [`CounterLoad`].
pub struct Running {
    pub load: Arc<CounterLoad>,
    workers: Vec<JoinHandle<()>>,
}

impl CounterLoad {
    /// Books for `keys` counters named `PREFIX-i`.
    pub fn new(prefix: &str, keys: usize) -> Arc<Self> {
        Arc::new(Self {
            keys: (0..keys).map(|i| format!("{prefix}-{i}")).collect(),
            stats: (0..keys).map(|_| KeyStats::default()).collect(),
            not_delivered: AtomicU64::new(0),
            errors: Mutex::new(BTreeMap::new()),
            unexpected: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        })
    }

    /// Starts `workers` tasks on `client`; each increments its share of the counters.
    pub fn start(self: &Arc<Self>, client: &Client, workers: usize) -> Running {
        Running {
            load: self.clone(),
            workers: (0..workers)
                .map(|w| tokio::spawn(self.clone().run(client.clone(), w, workers)))
                .collect(),
        }
    }

    pub fn acked(&self, k: usize) -> u64 {
        self.stats[k].acked.load(Ordering::SeqCst)
    }

    pub fn unknown(&self, k: usize) -> u64 {
        self.stats[k].unknown.load(Ordering::SeqCst)
    }

    /// Increments acknowledged so far, every counter together.
    pub fn acked_total(&self) -> u64 {
        (0..self.keys.len()).map(|k| self.acked(k)).sum()
    }

    /// Errors by kind so far.
    pub fn errors(&self) -> BTreeMap<String, u64> {
        self.errors.lock().unwrap().clone()
    }

    pub fn not_delivered(&self) -> u64 {
        self.not_delivered.load(Ordering::SeqCst)
    }

    /// Waits until every counter has been acknowledged at least once (and the load ran
    /// for `at_least`); panics after `within`.
    pub async fn warm_up(&self, at_least: Duration, within: Duration) {
        let started = Instant::now();
        while started.elapsed() < at_least || (0..self.keys.len()).any(|k| self.acked(k) == 0) {
            assert!(
                started.elapsed() < within,
                "the load did not touch every counter; errors {:?}",
                self.errors()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `n` more increments are acknowledged; returns how long it took.
    /// Panics after `within`.
    pub async fn progress(&self, n: u64, within: Duration) -> Duration {
        let start = self.acked_total();
        let started = Instant::now();
        while self.acked_total() < start + n {
            assert!(
                started.elapsed() < within,
                "no progress within {within:?}; errors {:?}",
                self.errors()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        started.elapsed()
    }

    /// Books a failed increment of counter `k`.
    async fn on_error(&self, k: usize, e: CallError) {
        let kind = format!("{e:?}");
        let kind = kind.split('(').next().unwrap_or_default().to_owned();
        *self.errors.lock().unwrap().entry(kind).or_default() += 1;
        match e {
            CallError::Timeout | CallError::Lost(_) | CallError::Storage(_) => {
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
                    Err(e) => self.on_error(k, e).await,
                }
            }
        }
    }

    /// Reads every counter through `probe` and checks it against the books: every
    /// acknowledged increment is there and none was applied twice (`acked <= value <=
    /// acked + unknown`); no reply contradicted the history; no unexpected error.
    /// Returns (acknowledged, unknown) over all counters.
    pub async fn check(&self, probe: &Client, within: Duration) -> (u64, u64) {
        let deadline = Instant::now() + within;
        let mut lost = Vec::new();
        let (mut acked, mut unknown) = (0, 0);
        for (k, key) in self.keys.iter().enumerate() {
            let value = u64::try_from(get_counter(probe, key, deadline).await).unwrap();
            let (a, u) = (self.acked(k), self.unknown(k));
            acked += a;
            unknown += u;
            if value < a || value > a + u {
                lost.push(format!("{key}: value {value}, acked {a}, unknown {u}"));
            }
        }
        assert!(
            lost.is_empty(),
            "acked <= value <= acked + unknown violated: {lost:#?}"
        );
        let violations = self.violations.lock().unwrap().clone();
        assert!(
            violations.is_empty(),
            "replies contradicting the history: {violations:#?}"
        );
        let unexpected = self.unexpected.lock().unwrap().clone();
        assert!(
            unexpected.is_empty(),
            "unexpected call errors: {unexpected:#?}"
        );
        (acked, unknown)
    }
}

impl Running {
    /// Stops the workers and waits for them.
    pub async fn stop(self) -> Arc<CounterLoad> {
        self.load.stop.store(true, Ordering::SeqCst);
        for worker in self.workers {
            tokio::time::timeout(Duration::from_secs(5), worker)
                .await
                .expect("a load worker did not stop")
                .unwrap();
        }
        self.load
    }
}
