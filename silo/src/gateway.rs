//! [`Gateway`]: what a silo answers on its TCP port, for clients and other silos.
//!
//! - grain calls: delivered here if this silo hosts (or the directory places) the grain,
//!   else answered `Moved(owner)`;
//! - directory requests: answered by the acting master (a slave or a standby forwards
//!   resolves to it), with its epoch; slaves' reports after an election;
//! - storage requests: served by the acting master from its store (`NotLeader` elsewhere);
//! - store replication: applied by a standby candidate;
//! - status: this silo's report; the cluster's (assembled by the acting master);
//! - hot-grain replication: copy sets from the acting master, replicas' syncs, load
//!   reports (acting master);
//! - ping.

use std::net::SocketAddr;
use std::sync::Arc;

use std::time::Duration;

use async_trait::async_trait;
use granary_net::routing::ClusterRouter;
use granary_net::transport::StreamSender;
use granary_proto::frame::{
    GrainCall, ReportOutcome, Request, Response, SiloAddr, WireStorageError,
};
use granary_proto::replica::ReplicaError;
use granary_proto::replication::{ReplicaRequest, ReplicaResponse};
use granary_proto::status::SiloState;
use granary_proto::{CallError, GrainId};
use granary_runtime::{GrainStorage, DEFAULT_CALL_TIMEOUT};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::catalog::Catalog;
use crate::directory::Directory;
use crate::membership::MembershipSnapshot;
use crate::observe::metrics::CallStats;
use crate::observe::status::StatusSource;
use crate::replication::controller::Controller;
use crate::resolver::{silo_addr, SiloResolver};
use crate::storage::remote::to_wire;
use crate::storage::ReplicatedStore;
use crate::transport::RequestHandler;

/// How long a report waits for its slave to appear in the master's membership (the
/// WELCOME may go out just before the master's snapshot is published).
const MEMBER_WAIT: Duration = Duration::from_secs(1);

/// Serves a silo's TCP requests.
#[derive(Debug)]
pub(crate) struct Gateway {
    /// Delivers grain calls.
    router: Arc<ClusterRouter>,
    /// Answers (or forwards) directory resolves.
    resolver: Arc<SiloResolver>,
    /// The directory, on master candidates (it serves while this one acts).
    directory: Option<Arc<Directory>>,
    /// The grain store served to slaves while this candidate acts.
    store: Option<Arc<dyn GrainStorage>>,
    /// The same store when it is replicated among the candidates: it serves only once
    /// a majority confirmed the epoch, and applies the acting master's batches here.
    replicated: Option<ReplicatedStore>,
    /// Who is a member (reports from non-members are refused).
    membership: watch::Receiver<Arc<MembershipSnapshot>>,
    /// Builds status reports.
    status: Arc<StatusSource>,
    /// Counts the grain calls served (the `granary_call*` metrics).
    calls: Arc<CallStats>,
    /// Copy sets and replica syncs are applied here.
    catalog: Arc<Catalog>,
    /// The master's replication decisions (`None` on a slave).
    controller: Option<Arc<Controller>>,
    /// The read lease primaries here grant.
    lease: std::time::Duration,
}

/// What a gateway serves besides grain calls: the catalog's copies, the master's
/// replication controller, and the read lease it grants.
#[derive(Debug)]
pub(crate) struct ReplicationParts {
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) controller: Option<Arc<Controller>>,
    pub(crate) lease: std::time::Duration,
}

/// What a gateway serves beyond grain calls: the master candidate's parts.
#[derive(Debug, Default)]
pub(crate) struct MasterParts {
    /// The directory.
    pub(crate) directory: Option<Arc<Directory>>,
    /// The grain store it serves while acting.
    pub(crate) store: Option<Arc<dyn GrainStorage>>,
    /// The store's replication, when replicated.
    pub(crate) replicated: Option<ReplicatedStore>,
}

impl Gateway {
    pub(crate) fn new(
        router: Arc<ClusterRouter>,
        resolver: Arc<SiloResolver>,
        master: MasterParts,
        membership: watch::Receiver<Arc<MembershipSnapshot>>,
        status: Arc<StatusSource>,
        calls: Arc<CallStats>,
        replication: ReplicationParts,
    ) -> Self {
        Self {
            router,
            resolver,
            directory: master.directory,
            store: master.store,
            replicated: master.replicated,
            membership,
            status,
            calls,
            catalog: replication.catalog,
            controller: replication.controller,
            lease: replication.lease,
        }
    }

    async fn replica(&self, request: ReplicaRequest) -> ReplicaResponse {
        match request {
            ReplicaRequest::Copies { grain, set } => {
                let state = self.status.state();
                if state != SiloState::Active && self.controller.is_none() {
                    // Fenced, joining or leaving: this silo hosts no new copies.
                    return ReplicaResponse::Failed(CallError::Unreachable(format!(
                        "this silo is {}",
                        state.as_str()
                    )));
                }
                self.catalog.apply_copy_set(&grain, set);
                ReplicaResponse::Applied
            }
            ReplicaRequest::Sync {
                grain,
                from,
                activation,
                have,
                wait_ms,
            } => {
                let wait = std::time::Duration::from_millis(u64::from(wait_ms)).min(self.lease / 2);
                self.catalog
                    .sync_replica(&grain, (from, activation, have), wait, self.lease)
                    .await
            }
            ReplicaRequest::Report { from, grains } => match &self.controller {
                Some(controller) if self.resolver.acting_epoch().is_some() => {
                    controller.report(from, grains);
                    ReplicaResponse::Applied
                }
                _ => ReplicaResponse::Failed(CallError::Unreachable(
                    "this silo is not the acting master".into(),
                )),
            },
        }
    }

    /// The store, while this silo acts as master (and, replicated, a majority confirmed
    /// its epoch).
    fn store(&self) -> Result<&Arc<dyn GrainStorage>, WireStorageError> {
        let store = self.store.as_ref().ok_or_else(|| {
            WireStorageError::NotLeader("this silo does not serve the grain store".into())
        })?;
        if self.resolver.acting_epoch().is_none() {
            return Err(WireStorageError::NotLeader(
                "this candidate is a standby".into(),
            ));
        }
        if let Some(replicated) = &self.replicated {
            if replicated.serving_epoch().is_none() {
                return Err(WireStorageError::NotLeader(
                    "the new acting master waits for a majority of candidates to confirm its store"
                        .into(),
                ));
            }
        }
        Ok(store)
    }

    /// A slave's report to this acting master: its claims, or why they are refused.
    async fn report(&self, epoch: u64, silo: SiloAddr, grains: Vec<GrainId>) -> ReportOutcome {
        let Some((acting, directory)) = self.resolver.acting_directory() else {
            return ReportOutcome::NotLeader {
                epoch: self.membership.borrow().epoch,
            };
        };
        if acting != epoch {
            return ReportOutcome::NotLeader { epoch: acting };
        }
        let member = |snapshot: &MembershipSnapshot| {
            snapshot.active_slaves().any(|m| silo_addr(&m.id) == silo)
        };
        let mut membership = self.membership.clone();
        let until = Instant::now() + MEMBER_WAIT;
        while !member(&membership.borrow_and_update()) {
            if tokio::time::timeout_at(until, membership.changed())
                .await
                .is_err()
            {
                return ReportOutcome::NotMember;
            }
        }
        let count = grains.len();
        let rejected = directory.claim(silo, grains);
        tracing::info!(
            "slave {silo} reported {count} grain(s) for epoch {epoch}{}",
            if rejected.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} claimed elsewhere already (dropped there)",
                    rejected.len()
                )
            }
        );
        ReportOutcome::Accepted { rejected }
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
                let (epoch, owner) = self.resolver.resolve_for(&grain, from, deadline).await;
                Response::Directory {
                    epoch,
                    result: owner.map(Some),
                }
            }
            Request::DirectoryUnregister { grain, silo } => {
                match (&self.directory, self.resolver.acting_epoch()) {
                    (Some(directory), Some(epoch)) => {
                        directory.unregister(&grain, silo);
                        if let Some(controller) = &self.controller {
                            controller.released(&grain, silo);
                        }
                        Response::Directory {
                            epoch,
                            result: Ok(None),
                        }
                    }
                    _ => Response::Directory {
                        epoch: 0,
                        result: Err(CallError::Unreachable(
                            "this silo is not the acting master".into(),
                        )),
                    },
                }
            }
            Request::DirectoryReport {
                epoch,
                silo,
                grains,
            } => Response::DirectoryReport(self.report(epoch, silo, grains).await),
            request @ (Request::StoreAppend { .. } | Request::StoreSnapshot { .. }) => {
                Response::StoreReplica(match &self.replicated {
                    Some(replicated) => replicated.on_replica_request(request).await,
                    None => Err(ReplicaError::Failed(
                        "this silo keeps no replica of the store".into(),
                    )),
                })
            }
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
            Request::Replica(request) => Response::Replica(self.replica(request).await),
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

    async fn handle_stream(
        &self,
        call: GrainCall,
        items: StreamSender,
        _peer: SocketAddr,
    ) -> Response {
        let counted = self.calls.begin();
        let response = self.router.inbound_stream(call, items).await;
        counted.finish(&response);
        response
    }
}
