//! What an activation does as a copy of a read-replicated grain: becoming one
//! ([`link`]), a replica's link to its primary ([`ReplicaLink`]: the first state, the
//! newest snapshot before each turn, the lease) and sending on what it cannot serve
//! ([`bounce`]).

use std::sync::Arc;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::ActivationHost;
use crate::envelope::Envelope;
use crate::grain::{Grain, GrainContext};
use crate::replication::{CopyLink, ReplicaGate, Replication, SnapshotReceiver};
use crate::router::Router;
use crate::storage::StorageError;

/// Makes `ctx` the context of the copy `copy` says; returns it with a replica's link.
/// (It takes and gives back `ctx` by value: a borrow would keep the context's room in
/// the activation's task for good.)
pub(super) fn link<G: Grain>(
    mut ctx: GrainContext<G>,
    copy: Option<Box<CopyLink>>,
) -> (GrainContext<G>, Option<Box<ReplicaLink>>) {
    let Some(copy) = copy else {
        // A read-replicated type keeps its versioned record and writes through even
        // while it runs as a single activation (replication off on this silo): its
        // stored form and its versions never depend on the silo's configuration.
        if matches!(G::REPLICATION, Replication::ReadReplicas(_)) {
            ctx.set_copy(Some(tokio::sync::watch::channel(None).0));
        }
        return (ctx, None);
    };
    let replica = match *copy {
        CopyLink::Primary(publish) => {
            ctx.set_copy(Some(publish));
            None
        }
        CopyLink::Replica { updates, gate } => {
            ctx.set_copy(None);
            Some(Box::new(ReplicaLink { updates, gate }))
        }
    };
    (ctx, replica)
}

/// The replica side of an activation: snapshots from the primary and the lease.
pub(super) struct ReplicaLink {
    /// Snapshots from the primary, applied before each turn.
    updates: SnapshotReceiver,
    /// Whether the lease still runs.
    gate: Arc<dyn ReplicaGate>,
}

impl ReplicaLink {
    /// Waits for the primary's first snapshot (the replica's initial state).
    pub(super) async fn first_state<G: Grain>(
        &mut self,
        ctx: &mut GrainContext<G>,
        stop: &CancellationToken,
    ) -> Result<(), StorageError> {
        let snapshot = tokio::select! {
            () = stop.cancelled() => None,
            first = self.updates.wait_for(Option::is_some) => first.ok().and_then(|s| s.clone()),
        };
        match snapshot {
            Some(snapshot) => ctx.apply_snapshot(&snapshot),
            None => Err(StorageError::Unavailable(
                "the replica stopped before its primary sent the state".into(),
            )),
        }
    }

    /// Takes the newest snapshot, then says whether this replica may serve a message
    /// (`read`: it only reads) now.
    pub(super) fn admit<G: Grain>(&mut self, ctx: &mut GrainContext<G>, read: bool) -> bool {
        if self.updates.has_changed().unwrap_or(false) {
            let newest = self.updates.borrow_and_update().clone();
            if let Some(snapshot) = newest {
                if let Err(e) = ctx.apply_snapshot(&snapshot) {
                    tracing::error!(grain = %ctx.id(), error = %e, "replica could not apply its primary's state; deactivating");
                    ctx.deactivate_on_idle();
                    return false;
                }
            }
        }
        read && self.gate.may_serve()
    }
}

/// Sends a message a replica could not serve to its primary, from a task of its own
/// (the replica's turn loop does not wait for it).
pub(super) fn bounce(mut envelope: Envelope, router: &Arc<dyn Router>, host: &dyn ActivationHost) {
    envelope.copy.primary = true;
    let router = router.clone();
    host.spawn(Box::pin(async move {
        let deadline = Instant::now() + crate::DEFAULT_CALL_TIMEOUT;
        let _ = router.deliver(envelope, deadline).await;
    }));
}
