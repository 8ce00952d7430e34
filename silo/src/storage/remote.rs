//! [`RemoteStorage`]: a slave's view of the master's grain store, over the cluster's TCP
//! transport. The master serves its own provider (embedded by default), so a cluster on
//! one machine needs no database.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use granary_net::transport::Peers;
use granary_proto::frame::{Request, Response, WireStorageError};
use granary_proto::GrainId;
use granary_runtime::{Etag, GrainStorage, StorageError, StoredState};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::membership::MembershipSnapshot;

/// Deadline of one storage request to the master.
pub(crate) const DEFAULT_REMOTE_STORAGE_TIMEOUT: Duration = Duration::from_secs(10);

/// Grain storage served by the master silo.
#[derive(Debug)]
pub struct RemoteStorage {
    /// Connections (shared with the silo's router).
    peers: Peers,
    /// Where the master is.
    membership: watch::Receiver<Arc<MembershipSnapshot>>,
    /// Deadline of each request.
    timeout: Duration,
}

impl RemoteStorage {
    /// Storage through the master named by `membership`.
    pub fn new(peers: Peers, membership: watch::Receiver<Arc<MembershipSnapshot>>) -> Self {
        Self {
            peers,
            membership,
            timeout: DEFAULT_REMOTE_STORAGE_TIMEOUT,
        }
    }

    async fn call(&self, request: Request) -> Result<Response, StorageError> {
        let deadline = Instant::now() + self.timeout;
        // The last known master, even while UDP says it is unreachable: a master that
        // is shutting down keeps serving its store until the slaves have saved.
        let master = match self.membership.borrow().master {
            Some(master) => master.tcp,
            None => return Err(StorageError::Unavailable("no master known yet".into())),
        };
        self.peers
            .call(master, request, deadline)
            .await
            .map_err(|e| StorageError::Unavailable(format!("master store: {e}")))
    }
}

fn unexpected(response: Response) -> StorageError {
    StorageError::Failed(format!(
        "unexpected answer from the master store: {response:?}"
    ))
}

#[async_trait]
impl GrainStorage for RemoteStorage {
    fn name(&self) -> &'static str {
        "master"
    }

    async fn read(&self, grain: &GrainId) -> Result<Option<StoredState>, StorageError> {
        match self
            .call(Request::StorageRead {
                grain: grain.clone(),
            })
            .await?
        {
            Response::StorageRead(result) => result
                .map(|found| found.map(|(data, etag)| StoredState { data, etag }))
                .map_err(|e| from_wire(grain, e)),
            other => Err(unexpected(other)),
        }
    }

    async fn write(
        &self,
        grain: &GrainId,
        data: &[u8],
        expected: Option<&str>,
    ) -> Result<Etag, StorageError> {
        let request = Request::StorageWrite {
            grain: grain.clone(),
            data: data.to_vec(),
            expected: expected.map(str::to_owned),
        };
        match self.call(request).await? {
            Response::StorageWrite(result) => result.map_err(|e| from_wire(grain, e)),
            other => Err(unexpected(other)),
        }
    }

    async fn clear(&self, grain: &GrainId, expected: Option<&str>) -> Result<(), StorageError> {
        let request = Request::StorageClear {
            grain: grain.clone(),
            expected: expected.map(str::to_owned),
        };
        match self.call(request).await? {
            Response::StorageClear(result) => result.map_err(|e| from_wire(grain, e)),
            other => Err(unexpected(other)),
        }
    }
}

/// A storage error as it crosses the wire.
pub(crate) fn to_wire(err: StorageError) -> WireStorageError {
    match err {
        StorageError::Conflict {
            expected, found, ..
        } => WireStorageError::Conflict { expected, found },
        StorageError::Unavailable(m) => WireStorageError::Unavailable(m),
        StorageError::TooLarge { size, max } => WireStorageError::TooLarge {
            size: size as u64,
            max: max as u64,
        },
        StorageError::Failed(m) => WireStorageError::Failed(m),
        StorageError::Corrupt(m) => WireStorageError::Corrupt(m),
    }
}

/// The storage error a wire error stands for.
pub(crate) fn from_wire(grain: &GrainId, err: WireStorageError) -> StorageError {
    match err {
        WireStorageError::Conflict { expected, found } => StorageError::Conflict {
            grain: grain.clone(),
            expected,
            found,
        },
        WireStorageError::Unavailable(m) => StorageError::Unavailable(m),
        WireStorageError::TooLarge { size, max } => StorageError::TooLarge {
            size: size as usize,
            max: max as usize,
        },
        WireStorageError::Failed(m) => StorageError::Failed(m),
        WireStorageError::Corrupt(m) => StorageError::Corrupt(m),
    }
}
