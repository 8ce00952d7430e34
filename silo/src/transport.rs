//! TCP transport, serving side: [`serve`] answers [`Request`]s on an already-bound
//! listener through a [`RequestHandler`]. The calling side ([`Peers`]) and the shared
//! [`TransportConfig`] live in `granary-client` and are re-exported here.
//!
//! ```text
//! serve (owns the listener, a connection Semaphore, a TaskTracker)
//! └── connection task (one per accepted socket; holds a Semaphore permit)
//!     ├── writer task (drains a bounded mpsc of encoded frames, batches writes)
//!     └── request tasks (JoinSet, one per in-flight request; capped per connection)
//! ```

use std::net::SocketAddr;

use async_trait::async_trait;
use granary_proto::frame::{GrainCall, ReportOutcome, Request, Response, WireStorageError};
use granary_proto::replica::ReplicaError;
use granary_proto::CallError;

mod server;

use granary_net::transport::StreamSender;
pub use granary_net::transport::{
    Peers, TransportConfig, TransportError, DEFAULT_BACKOFF_INITIAL, DEFAULT_BACKOFF_MAX,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_SHUTDOWN_GRACE, DEFAULT_WRITE_QUEUE,
};
pub use server::serve;

/// Serves requests arriving on connections accepted by [`serve`].
#[async_trait]
pub trait RequestHandler: Send + Sync + 'static {
    /// Handles one request from a peer. For `Frame::OneWay` the result is discarded.
    ///
    /// Runs concurrently with the connection's other requests. If it panics, the peer
    /// gets an error response of the matching kind (`CallError::Panicked` for grain and
    /// directory requests, `WireStorageError::Failed` for storage ones).
    async fn handle(&self, request: Request, peer: SocketAddr) -> Response;

    /// Handles a grain call answered with a stream ([`GrainCall::stream`]): sends its
    /// items through `items` and returns the closing response. The default refuses it
    /// (`CallError::UnknownMessage`), for servers that host no grains.
    async fn handle_stream(
        &self,
        call: GrainCall,
        items: StreamSender,
        peer: SocketAddr,
    ) -> Response {
        let _ = (items, peer);
        Response::Grain(Err(CallError::UnknownMessage {
            grain_type: call.target.type_name.into_owned(),
            message: call.message,
        }))
    }
}

/// Why the server answers a request with an error of its own.
#[derive(Clone, Debug)]
enum Failure {
    /// The handler panicked.
    Panicked(String),
    /// The handler's response could not be encoded (e.g. it exceeds the frame limit).
    Unencodable(String),
}

impl Failure {
    fn call_error(&self) -> CallError {
        match self {
            Failure::Panicked(why) => CallError::Panicked(why.clone()),
            Failure::Unencodable(why) => CallError::Codec(why.clone()),
        }
    }

    fn storage_error(&self) -> WireStorageError {
        match self {
            Failure::Panicked(why) => WireStorageError::Failed(format!("handler panicked: {why}")),
            Failure::Unencodable(why) => WireStorageError::Failed(why.clone()),
        }
    }
}

/// The shape of a request, kept after the request itself moved into the handler, so
/// the server can still answer with an error of the right kind.
#[derive(Clone, Copy, Debug)]
enum RequestKind {
    Grain,
    Directory,
    DirectoryReport,
    Replica,
    StorageRead,
    StorageWrite,
    StorageClear,
    Ping,
    Status,
    HotGrains,
}

impl RequestKind {
    fn of(request: &Request) -> Self {
        match request {
            Request::Grain(_) => RequestKind::Grain,
            Request::DirectoryResolve { .. } | Request::DirectoryUnregister { .. } => {
                RequestKind::Directory
            }
            Request::DirectoryReport { .. } => RequestKind::DirectoryReport,
            Request::StoreAppend { .. } | Request::StoreSnapshot { .. } => RequestKind::Replica,
            Request::StorageRead { .. } => RequestKind::StorageRead,
            Request::StorageWrite { .. } => RequestKind::StorageWrite,
            Request::StorageClear { .. } => RequestKind::StorageClear,
            Request::Ping => RequestKind::Ping,
            Request::SiloStatus | Request::ClusterStatus => RequestKind::Status,
            Request::Replica(_) => RequestKind::HotGrains,
        }
    }

    /// The kind in a log line.
    fn name(self) -> &'static str {
        match self {
            RequestKind::Grain => "grain call",
            RequestKind::Directory => "directory",
            RequestKind::DirectoryReport => "directory report",
            RequestKind::Replica => "store replication",
            RequestKind::StorageRead => "storage read",
            RequestKind::StorageWrite => "storage write",
            RequestKind::StorageClear => "storage clear",
            RequestKind::Ping => "ping",
            RequestKind::Status => "status",
            RequestKind::HotGrains => "hot-grain replication",
        }
    }

    /// The response of this kind that reports `failure` (`Ping` cannot fail: `Pong`).
    fn failure(self, failure: &Failure) -> Response {
        match self {
            RequestKind::Grain => Response::Grain(Err(failure.call_error())),
            RequestKind::Directory => Response::Directory {
                epoch: 0,
                result: Err(failure.call_error()),
            },
            // "Not the master of any epoch": the slave tries again later.
            RequestKind::DirectoryReport => {
                Response::DirectoryReport(ReportOutcome::NotLeader { epoch: 0 })
            }
            RequestKind::Replica => Response::StoreReplica(Err(ReplicaError::Failed(
                failure.storage_error().to_string(),
            ))),
            RequestKind::StorageRead => Response::StorageRead(Err(failure.storage_error())),
            RequestKind::StorageWrite => Response::StorageWrite(Err(failure.storage_error())),
            RequestKind::StorageClear => Response::StorageClear(Err(failure.storage_error())),
            RequestKind::Ping => Response::Pong,
            RequestKind::Status => Response::ClusterStatus(Err(failure.call_error())),
            RequestKind::HotGrains => Response::Replica(
                granary_proto::replication::ReplicaResponse::Failed(failure.call_error()),
            ),
        }
    }
}

#[cfg(test)]
mod tests;
