//! Closed-loop load on the hot grain and its figures.

use std::time::Duration;

use granary_bench::stats::percentile;
use granary_client::Client;
use granary_example::{Bump, Digest, Gauge, Hash, Level};
use tokio::time::Instant;

/// Deadline of every call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What the callers do.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scenario {
    /// `Digest.Hash` with `rounds` of work, on key `hot`.
    Worker {
        /// Hash rounds per message.
        rounds: u32,
    },
    /// `Gauge` on key `hot`: 9 `Level` in 10, else `Bump(1)`.
    ReadMostly,
}

impl Scenario {
    /// `a` or `b`.
    pub(crate) fn letter(self) -> &'static str {
        match self {
            Scenario::Worker { .. } => "a",
            Scenario::ReadMostly => "b",
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Scenario::Worker { .. } => "(a) stateless worker, CPU-bound",
            Scenario::ReadMostly => "(b) read replicas, 90% reads",
        }
    }
}

/// One run: calls that succeeded, failed, how long, and their latencies (sorted).
#[derive(Debug, Default)]
pub(crate) struct Figures {
    pub(crate) ops: usize,
    pub(crate) errors: usize,
    pub(crate) first_error: Option<String>,
    pub(crate) elapsed: Duration,
    pub(crate) latencies: Vec<Duration>,
}

impl Figures {
    /// Calls per second.
    pub(crate) fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn p50_us(&self) -> f64 {
        percentile(&self.latencies, 0.5).as_secs_f64() * 1e6
    }

    pub(crate) fn p99_us(&self) -> f64 {
        percentile(&self.latencies, 0.99).as_secs_f64() * 1e6
    }

    /// One line for the progress output.
    pub(crate) fn line(&self) -> String {
        let mut line = format!(
            "{:>9.0} calls/s  p50 {:>7.0} µs  p99 {:>8.0} µs",
            self.rate(),
            self.p50_us(),
            self.p99_us()
        );
        if self.errors > 0 {
            line += &format!(
                "  {} errors (first: {})",
                self.errors,
                self.first_error.as_deref().unwrap_or("?")
            );
        }
        line
    }
}

/// `callers` callers, caller `i` on `clients[i % n]`, each with one call in flight,
/// for `length`.
pub(crate) async fn closed_loop(
    clients: &[Client],
    scenario: Scenario,
    callers: usize,
    length: Duration,
) -> Figures {
    let started = Instant::now();
    let stop = started + length;
    let tasks: Vec<_> = (0..callers)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            tokio::spawn(async move {
                let mut run = Figures::default();
                let digest = client.grain::<Digest>("hot");
                let gauge = client.grain::<Gauge>("hot");
                let mut n = i;
                while Instant::now() < stop {
                    n += 1;
                    let t = Instant::now();
                    let result = match scenario {
                        Scenario::Worker { rounds } => digest
                            .ask(Hash {
                                seed: n as u64,
                                rounds,
                            })
                            .timeout(CALL_TIMEOUT)
                            .await
                            .map(drop),
                        Scenario::ReadMostly if n.is_multiple_of(10) => {
                            gauge.ask(Bump(1)).timeout(CALL_TIMEOUT).await.map(drop)
                        }
                        Scenario::ReadMostly => {
                            gauge.ask(Level).timeout(CALL_TIMEOUT).await.map(drop)
                        }
                    };
                    match result {
                        Ok(()) => {
                            run.latencies.push(t.elapsed());
                            run.ops += 1;
                        }
                        Err(e) => {
                            run.errors += 1;
                            run.first_error.get_or_insert(e.to_string());
                        }
                    }
                }
                run
            })
        })
        .collect();
    let mut all = Figures::default();
    for task in tasks {
        if let Ok(run) = task.await {
            all.ops += run.ops;
            all.errors += run.errors;
            if all.first_error.is_none() {
                all.first_error = run.first_error;
            }
            all.latencies.extend(run.latencies);
        }
    }
    all.elapsed = started.elapsed();
    all.latencies.sort_unstable();
    all
}
