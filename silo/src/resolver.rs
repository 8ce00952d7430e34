//! [`SiloResolver`]: where a grain lives, answered by the acting master's directory
//! (locally on the acting master, over TCP from a slave or a standby candidate).
//!
//! Every answer carries the acting master's epoch; an answer from an older epoch than
//! one this silo already knows is stale and is retried. During an election (no acting
//! master known) and while a new master rebuilds its directory, callers get
//! `Unreachable` ("not delivered"), which routers retry until their deadline: calls wait
//! out a failover instead of failing.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use granary_net::routing::Resolve;
use granary_net::transport::Peers;
use granary_proto::frame::{Request, Response, SiloAddr};
use granary_proto::{CallError, GrainId};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::directory::{Candidate, Directory, Resolution};
use crate::dispatcher::ReleaseHook;
use crate::membership::{Leadership, MemberInfo, MembershipSnapshot};
use granary_proto::packet::SiloId;

/// The silo-address form of a membership id.
pub(crate) fn silo_addr(id: &SiloId) -> SiloAddr {
    SiloAddr::new(id.tcp, id.generation)
}

/// The request a slave sends to release a grain's directory entry.
fn unregister_request(grain: GrainId, silo: SiloAddr) -> Request {
    Request::DirectoryUnregister { grain, silo }
}

/// How long a slave waits for the master to acknowledge a released grain.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one resolve waits on the acting master for a rebuild to settle before it
/// answers "not yet" (the caller retries, within its own deadline).
const REBUILD_WAIT: Duration = Duration::from_millis(500);

/// Resolves grains through the acting master.
#[derive(Debug)]
pub(crate) struct SiloResolver {
    /// The directory, on master candidates (it serves only while this one acts).
    directory: Option<Arc<Directory>>,
    /// This candidate's leadership (never acting on a slave).
    leadership: watch::Receiver<Leadership>,
    /// Membership view: the acting master, live slaves and their load.
    membership: watch::Receiver<Arc<MembershipSnapshot>>,
    /// Connections (to the acting master).
    peers: Peers,
    /// This silo, named in its own resolves so the master can confirm its entries.
    me: SiloAddr,
    /// How a new epoch's directory starts (see [`Directory::ensure_epoch`]).
    epochs: EpochRules,
}

/// How a newly elected master's directory starts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EpochRules {
    /// Unclaimed grains wait this long after an election.
    pub(crate) rebuild_window: Duration,
    /// Epochs are persisted, so epoch 1 is the cluster's first ever (no window).
    pub(crate) durable: bool,
}

impl SiloResolver {
    pub(crate) fn new(
        directory: Option<Arc<Directory>>,
        leadership: watch::Receiver<Leadership>,
        membership: watch::Receiver<Arc<MembershipSnapshot>>,
        peers: Peers,
        me: SiloAddr,
        epochs: EpochRules,
    ) -> Self {
        Self {
            directory,
            leadership,
            membership,
            peers,
            me,
            epochs,
        }
    }

    /// Live slaves as placement candidates: those that hold their hosting lease, or, if
    /// none does (a cluster starting, a failover), every live slave (their grains wait
    /// for the lease rather than fail).
    pub(crate) fn candidates(snapshot: &MembershipSnapshot) -> Vec<Candidate> {
        let candidate = |m: &MemberInfo| Candidate {
            silo: silo_addr(&m.id),
            queue_depth: m.load.queue_depth,
        };
        let serving: Vec<Candidate> = snapshot
            .active_slaves()
            .filter(|m| !m.load.suspended)
            .map(candidate)
            .collect();
        if !serving.is_empty() {
            return serving;
        }
        snapshot.active_slaves().map(candidate).collect()
    }

    /// The epoch this silo acts as master for, if it does.
    pub(crate) fn acting_epoch(&self) -> Option<u64> {
        self.directory.as_ref()?;
        self.leadership.borrow().acting_epoch()
    }

    /// The directory of the epoch this silo acts for, begun if it is new.
    pub(crate) fn acting_directory(&self) -> Option<(u64, &Arc<Directory>)> {
        let directory = self.directory.as_ref()?;
        let epoch = self.leadership.borrow().acting_epoch()?;
        directory.ensure_epoch(
            epoch,
            self.epochs.rebuild_window,
            self.epochs.durable && epoch == 1,
        );
        Some((epoch, directory))
    }

    /// The acting master's TCP address, waiting (until `deadline`) for this silo to learn
    /// one other than itself. The last known master is used even while it is silent: a
    /// master that said SHUTDOWN still serves the directory and store until its slaves
    /// are done, and a dead one fails the call as "not delivered".
    pub(crate) async fn master(
        &self,
        deadline: Instant,
    ) -> Result<std::net::SocketAddr, CallError> {
        let mut updates = self.membership.clone();
        loop {
            if let Some(master) = updates.borrow_and_update().master {
                if silo_addr(&master) != self.me {
                    return Ok(master.tcp);
                }
            }
            match tokio::time::timeout_at(deadline, updates.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(CallError::ShuttingDown),
                Err(_) => {
                    return Err(CallError::Unreachable(
                        "no acting master known (an election may be running)".into(),
                    ))
                }
            }
        }
    }

    /// The hook that releases a grain's directory entry when it deactivates here.
    pub(crate) fn release_hook(self: &Arc<Self>, me: SiloAddr) -> ReleaseHook {
        let resolver = self.clone();
        Arc::new(move |grain: GrainId| {
            let resolver = resolver.clone();
            Box::pin(async move {
                let deadline = Instant::now() + RELEASE_TIMEOUT;
                let master = match resolver.master(deadline).await {
                    Ok(master) => master,
                    Err(e) => {
                        tracing::debug!(%grain, error = %e, "could not release the grain's directory entry");
                        return;
                    }
                };
                if let Err(e) = resolver
                    .peers
                    .call(master, unregister_request(grain.clone(), me), deadline)
                    .await
                {
                    // The master drops our entries when it declares us dead; an entry left
                    // behind only points calls here, where the grain is activated again.
                    tracing::debug!(%grain, error = %e, "could not release the grain's directory entry");
                }
            })
        })
    }

    /// On the acting master: the directory's answer, waiting (briefly) while a rebuild
    /// keeps an unclaimed grain unplaced.
    async fn resolve_here(
        &self,
        directory: &Directory,
        epoch: u64,
        grain: &GrainId,
        from: Option<SiloAddr>,
        deadline: Instant,
    ) -> Result<SiloAddr, CallError> {
        let give_up = deadline.min(Instant::now() + REBUILD_WAIT);
        loop {
            if self.leadership.borrow().acting_epoch() != Some(epoch) {
                return Err(CallError::Unreachable(
                    "this silo stopped acting as master".into(),
                ));
            }
            let snapshot = self.membership.borrow().clone();
            match directory.resolve(grain, &Self::candidates(&snapshot), from)? {
                Resolution::Owner(silo) => return Ok(silo),
                Resolution::Wait(until) => {
                    if Instant::now() >= give_up {
                        return Err(CallError::Unreachable(
                            "the newly elected master is rebuilding its directory from the slaves' reports".into(),
                        ));
                    }
                    directory.changed_or(until.min(give_up)).await;
                }
            }
        }
    }

    /// Resolves `grain` on behalf of `from` (this silo, or a client whose request this
    /// gateway forwards): answered by the directory on the acting master, else by the
    /// acting master over TCP. Returns the answering master's epoch with the answer.
    pub(crate) async fn resolve_for(
        &self,
        grain: &GrainId,
        from: Option<SiloAddr>,
        deadline: Instant,
    ) -> (u64, Result<SiloAddr, CallError>) {
        if let Some((epoch, directory)) = self.acting_directory() {
            let owner = self
                .resolve_here(directory, epoch, grain, from, deadline)
                .await;
            return (epoch, owner);
        }
        let master = match self.master(deadline).await {
            Ok(master) => master,
            Err(e) => return (0, Err(e)),
        };
        let request = Request::DirectoryResolve {
            grain: grain.clone(),
            from,
        };
        let known = self.membership.borrow().epoch;
        match self.peers.call(master, request, deadline).await {
            Ok(Response::Directory { epoch, .. }) if epoch < known => (
                epoch,
                Err(CallError::Unreachable(format!(
                    "a directory answer from epoch {epoch}, older than the known {known}"
                ))),
            ),
            Ok(Response::Directory {
                epoch,
                result: Ok(Some(silo)),
            }) => (epoch, Ok(silo)),
            Ok(Response::Directory {
                epoch,
                result: Ok(None),
            }) => (
                epoch,
                Err(CallError::Unreachable(
                    "the master placed the grain nowhere".into(),
                )),
            ),
            Ok(Response::Directory {
                epoch,
                result: Err(e),
            }) => (epoch, Err(e)),
            Ok(other) => (
                0,
                Err(CallError::Codec(format!(
                    "unexpected directory answer: {other:?}"
                ))),
            ),
            // A directory question has no effect on any grain: whatever went wrong on
            // the way, nothing was delivered, so the caller may ask again.
            Err(e) => (
                0,
                Err(CallError::Unreachable(format!(
                    "asking the acting master at {master}: {e}"
                ))),
            ),
        }
    }
}

#[async_trait]
impl Resolve for SiloResolver {
    async fn resolve(&self, grain: &GrainId, deadline: Instant) -> Result<SiloAddr, CallError> {
        self.resolve_for(grain, Some(self.me), deadline).await.1
    }
}
