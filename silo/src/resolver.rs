//! [`SiloResolver`]: where a grain lives, answered by the master's directory (locally on
//! the master, over TCP from a slave).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use granary_net::routing::Resolve;
use granary_net::transport::Peers;
use granary_proto::frame::{Request, Response, SiloAddr};
use granary_proto::{CallError, GrainId};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::directory::{Candidate, Directory};
use crate::dispatcher::ReleaseHook;
use crate::membership::MembershipSnapshot;
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

/// Resolves grains through the master.
#[derive(Debug)]
pub(crate) struct SiloResolver {
    /// The directory, on the master.
    directory: Option<Arc<Directory>>,
    /// Membership view: the master's address, live slaves and their load.
    membership: watch::Receiver<Arc<MembershipSnapshot>>,
    /// Connections (to the master, from a slave).
    peers: Peers,
    /// This silo, named in its own resolves so the master can confirm its entries.
    me: SiloAddr,
}

impl SiloResolver {
    pub(crate) fn new(
        directory: Option<Arc<Directory>>,
        membership: watch::Receiver<Arc<MembershipSnapshot>>,
        peers: Peers,
        me: SiloAddr,
    ) -> Self {
        Self {
            directory,
            membership,
            peers,
            me,
        }
    }

    /// Live slaves as placement candidates.
    pub(crate) fn candidates(snapshot: &MembershipSnapshot) -> Vec<Candidate> {
        snapshot
            .active_slaves()
            .map(|m| Candidate {
                silo: silo_addr(&m.id),
                queue_depth: m.load.queue_depth,
            })
            .collect()
    }

    /// The master's TCP address, waiting (until `deadline`) for this slave to learn it.
    /// The last known master is used even while it is unreachable over UDP: a master
    /// that said SHUTDOWN still serves the directory and store until its slaves are done.
    pub(crate) async fn master(
        &self,
        deadline: Instant,
    ) -> Result<std::net::SocketAddr, CallError> {
        let mut updates = self.membership.clone();
        loop {
            if let Some(master) = updates.borrow_and_update().master {
                return Ok(master.tcp);
            }
            match tokio::time::timeout_at(deadline, updates.changed()).await {
                Ok(Ok(())) => continue,
                Ok(Err(_)) => return Err(CallError::ShuttingDown),
                Err(_) => return Err(CallError::Unreachable("no master known yet".into())),
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
}

impl SiloResolver {
    /// Resolves `grain` on behalf of `from` (this silo, or a client whose request this
    /// gateway forwards): answered by the directory on the master, else by the master.
    pub(crate) async fn resolve_for(
        &self,
        grain: &GrainId,
        from: Option<SiloAddr>,
        deadline: Instant,
    ) -> Result<SiloAddr, CallError> {
        if let Some(directory) = &self.directory {
            let snapshot = self.membership.borrow().clone();
            return directory.resolve(grain, &Self::candidates(&snapshot), from);
        }
        let master = self.master(deadline).await?;
        let request = Request::DirectoryResolve {
            grain: grain.clone(),
            from,
        };
        match self.peers.call(master, request, deadline).await {
            Ok(Response::Directory(Ok(Some(silo)))) => Ok(silo),
            Ok(Response::Directory(Ok(None))) => Err(CallError::Unreachable(
                "the master placed the grain nowhere".into(),
            )),
            Ok(Response::Directory(Err(e))) => Err(e),
            Ok(other) => Err(CallError::Codec(format!(
                "unexpected directory answer: {other:?}"
            ))),
            Err(e) => Err(e.into()),
        }
    }
}

#[async_trait]
impl Resolve for SiloResolver {
    async fn resolve(&self, grain: &GrainId, deadline: Instant) -> Result<SiloAddr, CallError> {
        self.resolve_for(grain, Some(self.me), deadline).await
    }
}
