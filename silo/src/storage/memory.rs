//! In-memory provider: a `HashMap` behind a mutex. Lost when the process exits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;
use granary_proto::GrainId;
use granary_runtime::{Etag, GrainStorage, StorageError, StoredState};

/// Keeps grain state in process memory. Writes are atomic per grain and etag-checked,
/// exactly like the durable providers, so tests exercise the same conflict paths.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    /// Records by grain. Never locked across an `.await`.
    records: Mutex<HashMap<GrainId, StoredState>>,
    /// Source of fresh etags; unique for the life of the store.
    next_etag: AtomicU64,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of stored records (for tests and metrics).
    pub fn len(&self) -> usize {
        self.records.lock().expect("memory storage poisoned").len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn fresh_etag(&self) -> Etag {
        format!("m{}", self.next_etag.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

fn check(
    grain: &GrainId,
    current: Option<&StoredState>,
    expected: Option<&str>,
) -> Result<(), StorageError> {
    let found = current.map(|r| r.etag.as_str());
    if found == expected {
        Ok(())
    } else {
        Err(StorageError::Conflict {
            grain: grain.clone(),
            expected: expected.map(str::to_owned),
            found: found.map(str::to_owned),
        })
    }
}

#[async_trait]
impl GrainStorage for MemoryStorage {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn read(&self, grain: &GrainId) -> Result<Option<StoredState>, StorageError> {
        Ok(self
            .records
            .lock()
            .expect("memory storage poisoned")
            .get(grain)
            .cloned())
    }

    async fn write(
        &self,
        grain: &GrainId,
        data: &[u8],
        expected: Option<&str>,
    ) -> Result<Etag, StorageError> {
        let etag = self.fresh_etag();
        let mut records = self.records.lock().expect("memory storage poisoned");
        check(grain, records.get(grain), expected)?;
        records.insert(
            grain.clone(),
            StoredState {
                data: data.to_vec(),
                etag: etag.clone(),
            },
        );
        Ok(etag)
    }

    async fn clear(&self, grain: &GrainId, expected: Option<&str>) -> Result<(), StorageError> {
        let mut records = self.records.lock().expect("memory storage poisoned");
        check(grain, records.get(grain), expected)?;
        records.remove(grain);
        Ok(())
    }
}
