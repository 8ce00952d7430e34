//! Grain state storage: one async trait, optimistic concurrency by etag.
//!
//! Providers (in-memory, embedded on-disk, MongoDB, the master-served remote store)
//! live in `granary-silo`; grains only ever see this trait through their
//! [`GrainContext`](crate::GrainContext).

use std::fmt::Debug;

use async_trait::async_trait;
use granary_proto::GrainId;

/// Opaque version tag of a stored record. A new tag is issued on every write.
pub type Etag = String;

/// A stored record: the encoded state and the etag that guards its next write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredState {
    /// The grain state, encoded by `granary_proto::codec`.
    pub data: Vec<u8>,
    /// Version of this record; pass it back to [`GrainStorage::write`].
    pub etag: Etag,
}

/// Why a storage operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The record's etag is not the one the writer last saw: someone else wrote it
    /// (another activation, or an operator). Nothing was written. The runtime
    /// deactivates the grain rather than overwrite newer state.
    #[error("etag conflict on {grain}: expected {expected:?}, found {found:?}")]
    Conflict {
        /// The grain whose record changed underneath us.
        grain: GrainId,
        /// The etag the writer held (`None`: it believed there was no record).
        expected: Option<Etag>,
        /// The etag the store holds (`None`: no record), when the store can tell.
        found: Option<Etag>,
    },
    /// The store could not be reached or did not answer in time. Nothing is known to
    /// be written; the grain stays active and the write can be retried.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The state is larger than the provider accepts. Nothing was written.
    #[error("state of {size} bytes exceeds the provider's limit of {max} bytes")]
    TooLarge {
        /// Encoded state size.
        size: usize,
        /// Provider's limit.
        max: usize,
    },
    /// The store refused or failed the operation for another reason (disk full,
    /// permission, corrupt file). Nothing is known to be written.
    #[error("storage failed: {0}")]
    Failed(String),
    /// Stored bytes could not be decoded as the grain's state type.
    #[error("stored state is unreadable: {0}")]
    Corrupt(String),
}

impl StorageError {
    /// True for [`StorageError::Conflict`].
    pub fn is_conflict(&self) -> bool {
        matches!(self, StorageError::Conflict { .. })
    }
}

/// A grain-state provider.
///
/// Contract, checked by the conformance suite in `granary-silo/tests`:
/// - `read` of a grain never written returns `Ok(None)`;
/// - `write` with `expected: None` creates the record and fails with
///   [`StorageError::Conflict`] if one exists;
/// - `write` with `expected: Some(etag)` replaces the record only if its etag still
///   matches, and returns the new etag; otherwise it fails with `Conflict`;
/// - of concurrent writers holding the same etag, exactly one succeeds;
/// - `clear` removes the record under the same etag rule (clearing a missing record
///   with `expected: None` succeeds); the next write then uses `expected: None`.
#[async_trait]
pub trait GrainStorage: Send + Sync + Debug + 'static {
    /// Short provider name for logs (`"memory"`, `"embedded"`, `"mongodb"`).
    fn name(&self) -> &'static str;

    /// Reads the record of `grain`, if any.
    async fn read(&self, grain: &GrainId) -> Result<Option<StoredState>, StorageError>;

    /// Writes `data` if the stored etag equals `expected`; returns the new etag.
    async fn write(
        &self,
        grain: &GrainId,
        data: &[u8],
        expected: Option<&str>,
    ) -> Result<Etag, StorageError>;

    /// Deletes the record of `grain` if its etag equals `expected`.
    async fn clear(&self, grain: &GrainId, expected: Option<&str>) -> Result<(), StorageError>;
}
