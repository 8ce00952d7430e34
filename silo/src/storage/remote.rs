//! [`RemoteStorage`]: a slave's view of the acting master's grain store, over the
//! cluster's TCP transport. The acting master serves its own provider (embedded by
//! default, replicated to the standby candidates), so a cluster on one machine needs no
//! database.
//!
//! During a failover a request waits (up to its deadline) for the next acting master:
//! it is sent again while it certainly was not served — no master known, the silo asked
//! is not the acting master (`NotLeader`), or the connection could not be made. A
//! request that was sent and then lost is not repeated (its outcome is unknown).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use granary_net::transport::Peers;
use granary_net::transport::TransportError;
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
        let mut membership = self.membership.clone();
        let mut last = String::from("no acting master known yet");
        loop {
            // The last known master, even while UDP says it is unreachable: a master that
            // is shutting down keeps serving its store until the slaves have saved.
            let master = membership.borrow_and_update().master.map(|m| m.tcp);
            if let Some(master) = master {
                match self.peers.call(master, request.clone(), deadline).await {
                    Ok(response) if !not_leader(&response) => return Ok(response),
                    Ok(response) => {
                        last = format!("{master} is not the acting master: {response:?}")
                    }
                    // Not sent: the master is gone or not up yet.
                    Err(e @ (TransportError::Unreachable(_) | TransportError::Closed)) => {
                        last = format!("master store: {e}");
                    }
                    Err(e) => return Err(StorageError::Unavailable(format!("master store: {e}"))),
                }
            }
            // Wait for the membership to name another master, or retry shortly.
            let pause = (Instant::now() + RETRY_PAUSE).min(deadline);
            tokio::select! {
                _ = membership.changed() => {}
                () = tokio::time::sleep_until(pause) => {}
            }
            if Instant::now() >= deadline {
                return Err(StorageError::Unavailable(last));
            }
        }
    }
}

/// How long a request waits before asking again during a failover.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// True for the answer of a silo that is not the acting master's store.
fn not_leader(response: &Response) -> bool {
    matches!(
        response,
        Response::StorageRead(Err(WireStorageError::NotLeader(_)))
            | Response::StorageWrite(Err(WireStorageError::NotLeader(_)))
            | Response::StorageClear(Err(WireStorageError::NotLeader(_)))
    )
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
        WireStorageError::NotLeader(m) => {
            StorageError::Unavailable(format!("not the acting master: {m}"))
        }
    }
}
