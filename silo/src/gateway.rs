//! [`Gateway`]: what a silo answers on its TCP port, for clients and other silos.
//!
//! - grain calls: delivered here if this silo hosts (or the directory places) the grain,
//!   else answered `Moved(owner)`;
//! - directory requests: answered by the master (a slave forwards resolves to it);
//! - storage requests: served by the master from its store;
//! - status: this silo's report; the cluster's (assembled by the master);
//! - ping.

use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use granary_net::routing::ClusterRouter;
use granary_proto::frame::{Request, Response, WireStorageError};
use granary_proto::CallError;
use granary_runtime::{GrainStorage, DEFAULT_CALL_TIMEOUT};
use tokio::time::Instant;

use crate::directory::Directory;
use crate::observe::metrics::CallStats;
use crate::observe::status::StatusSource;
use crate::resolver::SiloResolver;
use crate::storage::remote::to_wire;
use crate::transport::RequestHandler;

/// Serves a silo's TCP requests.
#[derive(Debug)]
pub(crate) struct Gateway {
    /// Delivers grain calls.
    router: Arc<ClusterRouter>,
    /// Answers (or forwards) directory resolves.
    resolver: Arc<SiloResolver>,
    /// The directory, on the master.
    directory: Option<Arc<Directory>>,
    /// The grain store served to slaves, on the master.
    store: Option<Arc<dyn GrainStorage>>,
    /// Builds status reports.
    status: Arc<StatusSource>,
    /// Counts the grain calls served (the `granary_call*` metrics).
    calls: Arc<CallStats>,
}

impl Gateway {
    pub(crate) fn new(
        router: Arc<ClusterRouter>,
        resolver: Arc<SiloResolver>,
        directory: Option<Arc<Directory>>,
        store: Option<Arc<dyn GrainStorage>>,
        status: Arc<StatusSource>,
        calls: Arc<CallStats>,
    ) -> Self {
        Self {
            router,
            resolver,
            directory,
            store,
            status,
            calls,
        }
    }

    fn store(&self) -> Result<&Arc<dyn GrainStorage>, WireStorageError> {
        self.store.as_ref().ok_or_else(|| {
            WireStorageError::Unavailable("this silo does not serve the grain store".into())
        })
    }
}

#[async_trait]
impl RequestHandler for Gateway {
    async fn handle(&self, request: Request, _peer: SocketAddr) -> Response {
        match request {
            Request::Grain(call) => {
                let one_way = call.one_way;
                let counted = self.calls.begin();
                let response = self.router.inbound(call, one_way).await;
                counted.finish(&response);
                response
            }
            Request::DirectoryResolve { grain, from } => {
                let deadline = Instant::now() + DEFAULT_CALL_TIMEOUT;
                let owner = self.resolver.resolve_for(&grain, from, deadline).await;
                Response::Directory(owner.map(Some))
            }
            Request::DirectoryUnregister { grain, silo } => match &self.directory {
                Some(directory) => {
                    directory.unregister(&grain, silo);
                    Response::Directory(Ok(None))
                }
                None => Response::Directory(Err(CallError::Unreachable(
                    "this silo is not the master".into(),
                ))),
            },
            Request::StorageRead { grain } => Response::StorageRead(match self.store() {
                Ok(store) => store
                    .read(&grain)
                    .await
                    .map(|found| found.map(|s| (s.data, s.etag)))
                    .map_err(to_wire),
                Err(e) => Err(e),
            }),
            Request::StorageWrite {
                grain,
                data,
                expected,
            } => Response::StorageWrite(match self.store() {
                Ok(store) => store
                    .write(&grain, &data, expected.as_deref())
                    .await
                    .map_err(to_wire),
                Err(e) => Err(e),
            }),
            Request::StorageClear { grain, expected } => {
                Response::StorageClear(match self.store() {
                    Ok(store) => store
                        .clear(&grain, expected.as_deref())
                        .await
                        .map_err(to_wire),
                    Err(e) => Err(e),
                })
            }
            Request::Ping => Response::Pong,
            Request::SiloStatus => Response::SiloStatus(Box::new(self.status.silo_status())),
            Request::ClusterStatus => Response::ClusterStatus(
                self.status
                    .cluster_status(self.router.peers())
                    .await
                    .map(Box::new),
            ),
        }
    }
}
