//! [`InstrumentedStorage`]: a [`GrainStorage`] decorator that times every operation of
//! the provider it wraps and counts its failures per [`StorageError`] kind, in plain
//! atomics ([`StorageStats`]) that the metrics exporter reads at scrape time.
//!
//! A clustered silo wraps its store in one: on a slave that is every state read, write
//! and clear of its grains (provider `master` when they go through the master); on the
//! master, the operations it serves to slaves on its own provider.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use granary_proto::status::{LatencyBuckets, LATENCY_BOUNDS_US};
use granary_proto::GrainId;
use granary_runtime::{Etag, GrainStorage, StorageError, StoredState};

/// The operations, in the order [`StorageStats`] keeps them: the `op` label.
pub(crate) const STORAGE_OPS: [&str; 3] = ["read", "write", "clear"];

/// [`StorageError`] kinds, the `kind` label: one per variant, in declaration order.
pub(crate) const STORAGE_ERROR_KINDS: [&str; 5] =
    ["conflict", "unavailable", "too_large", "failed", "corrupt"];

/// Index of `err`'s kind in [`STORAGE_ERROR_KINDS`].
fn error_kind(err: &StorageError) -> usize {
    match err {
        StorageError::Conflict { .. } => 0,
        StorageError::Unavailable(_) => 1,
        StorageError::TooLarge { .. } => 2,
        StorageError::Failed(_) => 3,
        StorageError::Corrupt(_) => 4,
    }
}

/// Counters of one operation.
#[derive(Debug)]
struct OpStats {
    /// Durations, one count per [`LATENCY_BOUNDS_US`] bucket plus overflow.
    latency: Vec<AtomicU64>,
    /// Sum of durations, in microseconds.
    sum_us: AtomicU64,
    /// Failures per [`STORAGE_ERROR_KINDS`] entry.
    errors: [AtomicU64; STORAGE_ERROR_KINDS.len()],
}

impl OpStats {
    fn new() -> Self {
        Self {
            latency: (0..=LATENCY_BOUNDS_US.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum_us: AtomicU64::new(0),
            errors: Default::default(),
        }
    }
}

/// What the wrapped provider did: per operation, a duration histogram (every
/// operation, failed ones included) and failures per error kind.
#[derive(Debug)]
pub(crate) struct StorageStats {
    /// The wrapped provider's name: the `provider` label.
    provider: &'static str,
    /// One per [`STORAGE_OPS`] entry.
    ops: [OpStats; STORAGE_OPS.len()],
}

/// One operation's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpSnapshot {
    /// The operation ([`STORAGE_OPS`]).
    pub(crate) op: &'static str,
    /// Its durations.
    pub(crate) latency: LatencyBuckets,
    /// Failures per kind (only kinds that occurred).
    pub(crate) errors: Vec<(&'static str, u64)>,
}

impl StorageStats {
    fn new(provider: &'static str) -> Self {
        Self {
            provider,
            ops: [OpStats::new(), OpStats::new(), OpStats::new()],
        }
    }

    /// The wrapped provider's name.
    pub(crate) fn provider(&self) -> &'static str {
        self.provider
    }

    fn record<T>(&self, op: usize, started: Instant, result: &Result<T, StorageError>) {
        let stats = &self.ops[op];
        let elapsed = started.elapsed();
        stats.latency[LatencyBuckets::bucket_of(elapsed)].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        stats.sum_us.fetch_add(us, Ordering::Relaxed);
        if let Err(e) = result {
            stats.errors[error_kind(e)].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every operation's counters now, in [`STORAGE_OPS`] order.
    pub(crate) fn snapshot(&self) -> Vec<OpSnapshot> {
        STORAGE_OPS
            .iter()
            .zip(&self.ops)
            .map(|(op, stats)| OpSnapshot {
                op,
                latency: LatencyBuckets {
                    counts: stats
                        .latency
                        .iter()
                        .map(|c| c.load(Ordering::Relaxed))
                        .collect(),
                    sum_us: stats.sum_us.load(Ordering::Relaxed),
                },
                errors: STORAGE_ERROR_KINDS
                    .iter()
                    .zip(&stats.errors)
                    .map(|(kind, n)| (*kind, n.load(Ordering::Relaxed)))
                    .filter(|(_, n)| *n > 0)
                    .collect(),
            })
            .collect()
    }
}

/// Times and counts the operations of the provider it wraps; otherwise transparent
/// (same name, same results).
#[derive(Debug)]
pub(crate) struct InstrumentedStorage {
    /// The provider doing the work.
    inner: Arc<dyn GrainStorage>,
    /// What it did; shared with the metrics exporter.
    stats: Arc<StorageStats>,
}

impl InstrumentedStorage {
    /// Wraps `inner`.
    pub(crate) fn new(inner: Arc<dyn GrainStorage>) -> Self {
        let stats = Arc::new(StorageStats::new(inner.name()));
        Self { inner, stats }
    }

    /// The counters, for the metrics exporter.
    pub(crate) fn stats(&self) -> Arc<StorageStats> {
        self.stats.clone()
    }
}

#[async_trait]
impl GrainStorage for InstrumentedStorage {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn read(&self, grain: &GrainId) -> Result<Option<StoredState>, StorageError> {
        let started = Instant::now();
        let result = self.inner.read(grain).await;
        self.stats.record(0, started, &result);
        result
    }

    async fn write(
        &self,
        grain: &GrainId,
        data: &[u8],
        expected: Option<&str>,
    ) -> Result<Etag, StorageError> {
        let started = Instant::now();
        let result = self.inner.write(grain, data, expected).await;
        self.stats.record(1, started, &result);
        result
    }

    async fn clear(&self, grain: &GrainId, expected: Option<&str>) -> Result<(), StorageError> {
        let started = Instant::now();
        let result = self.inner.clear(grain, expected).await;
        self.stats.record(2, started, &result);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    #[tokio::test]
    async fn every_operation_is_timed_and_failures_are_counted_by_kind() {
        let store = InstrumentedStorage::new(Arc::new(MemoryStorage::new()));
        assert_eq!(store.name(), "memory");
        let grain = GrainId::new("t/v1", "a");
        assert_eq!(store.read(&grain).await.unwrap(), None);
        let etag = store.write(&grain, b"1", None).await.unwrap();
        let stale = store.write(&grain, b"2", None).await.unwrap_err();
        assert!(stale.is_conflict());
        store.clear(&grain, Some(&etag)).await.unwrap();

        let stats = store.stats();
        assert_eq!(stats.provider(), "memory");
        let snap = stats.snapshot();
        let ops: Vec<_> = snap.iter().map(|s| (s.op, s.latency.count())).collect();
        assert_eq!(ops, vec![("read", 1), ("write", 2), ("clear", 1)]);
        assert_eq!(snap[1].errors, vec![("conflict", 1)]);
        assert!(snap[0].errors.is_empty() && snap[2].errors.is_empty());
    }
}
