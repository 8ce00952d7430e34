//! Wire types of leader election and of the grain store the acting master replicates to
//! its standby candidates.
//!
//! The acting master numbers every batch of store changes it commits with a
//! [`StorePosition`]: its leadership epoch and a sequence number within that epoch. A
//! standby applies batches strictly in order, in the same durable transaction that
//! records its new position, so two candidates at the same position hold the same
//! records. Elections compare positions: a candidate behind a voter never gets its vote,
//! which is what keeps every acknowledged write on the next acting master.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a store stands in the acting masters' streams of changes: the epoch of the
/// master whose stream it last applied, and how far. Ordered by epoch, then sequence.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct StorePosition {
    /// Leadership epoch of the master that produced the last applied batch.
    pub epoch: u64,
    /// Number of that master's batches applied (1 for its first).
    pub seq: u64,
}

impl StorePosition {
    /// A position.
    pub fn new(epoch: u64, seq: u64) -> Self {
        Self { epoch, seq }
    }
}

impl fmt::Display for StorePosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.epoch, self.seq)
    }
}

/// One record change in a replicated batch. Records travel as the store holds them
/// (etag and state together), so a standby applies them without re-checking etags: the
/// acting master already did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreChange {
    /// Insert or replace the record `id` with `record`.
    Put {
        /// The record's id in the store.
        id: String,
        /// The stored bytes (format, etag, state).
        record: Vec<u8>,
    },
    /// Remove the record `id`.
    Delete {
        /// The record's id in the store.
        id: String,
    },
}

/// Why a standby did not apply what the acting master sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ReplicaError {
    /// The sender's epoch is older than one this standby knows: it is not the acting
    /// master any more.
    #[error("stale epoch: this standby already follows epoch {current}")]
    StaleEpoch {
        /// The newest epoch the standby knows.
        current: u64,
    },
    /// The batch does not continue from where this standby stands; the master must send
    /// what comes after `position` (or a snapshot).
    #[error("not at the batch's starting position: this standby is at {position}")]
    Diverged {
        /// Where the standby stands.
        position: StorePosition,
    },
    /// The standby could not apply the batch (e.g. its disk is full). Nothing of it was
    /// applied.
    #[error("the standby failed to apply the batch: {0}")]
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_by_epoch_then_sequence() {
        assert!(StorePosition::new(1, 9) < StorePosition::new(2, 0));
        assert!(StorePosition::new(2, 1) < StorePosition::new(2, 2));
        assert_eq!(StorePosition::default(), StorePosition::new(0, 0));
        assert_eq!(StorePosition::new(3, 7).to_string(), "3.7");
    }
}
