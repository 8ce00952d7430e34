//! Storage doubles: memory storage that is slow or fails on demand.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use granary_proto::GrainId;
use granary_runtime::prelude::*;
use granary_runtime::{GrainStorage, StoredState};
use granary_silo::storage::MemoryStorage;

/// Memory storage whose writes take `delay` (to hold a deactivation open).
#[derive(Debug)]
pub struct SlowStorage {
    inner: MemoryStorage,
    delay: Duration,
    writes: AtomicUsize,
}

impl SlowStorage {
    pub fn new(delay: Duration) -> Self {
        Self {
            inner: MemoryStorage::new(),
            delay,
            writes: AtomicUsize::new(0),
        }
    }
    pub fn writes_started(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl GrainStorage for SlowStorage {
    fn name(&self) -> &'static str {
        "slow"
    }
    async fn read(&self, grain: &GrainId) -> Result<Option<StoredState>, StorageError> {
        self.inner.read(grain).await
    }
    async fn write(
        &self,
        grain: &GrainId,
        data: &[u8],
        expected: Option<&str>,
    ) -> Result<String, StorageError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.inner.write(grain, data, expected).await
    }
    async fn clear(&self, grain: &GrainId, expected: Option<&str>) -> Result<(), StorageError> {
        self.inner.clear(grain, expected).await
    }
}

/// Memory storage whose writes fail with `Unavailable` while `fail` is set.
#[derive(Debug, Default)]
pub struct FlakyStorage {
    inner: MemoryStorage,
    pub fail: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl GrainStorage for FlakyStorage {
    fn name(&self) -> &'static str {
        "flaky"
    }
    async fn read(&self, grain: &GrainId) -> Result<Option<StoredState>, StorageError> {
        self.inner.read(grain).await
    }
    async fn write(
        &self,
        grain: &GrainId,
        data: &[u8],
        expected: Option<&str>,
    ) -> Result<String, StorageError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StorageError::Unavailable("test outage".into()));
        }
        self.inner.write(grain, data, expected).await
    }
    async fn clear(&self, grain: &GrainId, expected: Option<&str>) -> Result<(), StorageError> {
        self.inner.clear(grain, expected).await
    }
}
