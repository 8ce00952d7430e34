//! The read-replica side of a [`CopyTable`]: starting a replica that follows its
//! primary, what the host checks before handing it a read ([`ReplicaView`]), and the
//! primary's answer to a replica's sync.

use std::sync::Arc;
use std::time::Duration;

use granary_proto::frame::SiloAddr;
use granary_proto::replication::{CopyRole, ReplicaResponse};
use granary_proto::GrainId;
use granary_runtime::replication::{CopyLink, Snapshot, SnapshotReceiver};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{CopyEnv, CopyTable, Group, Link};
use crate::dispatcher::Dispatcher;
use crate::replication::replica::{follow, Follow, Lease};

/// How long a replica behind its caller's version waits for the newer state before
/// the read goes to the primary instead.
const CATCH_UP_WAIT: Duration = Duration::from_millis(50);

/// What the host checks before handing a read to a replica.
#[derive(Debug)]
pub(super) struct ReplicaView {
    /// The snapshots the replica receives (the newest is the version it serves).
    updates: SnapshotReceiver,
    /// Its lease.
    lease: Arc<Lease>,
}

impl ReplicaView {
    /// Waits (a little, within `deadline`) until the replica holds version
    /// `min_version` or newer under a running lease.
    pub(super) async fn ready(&self, min_version: u64, deadline: Instant) -> bool {
        let fresh = |s: &Option<Snapshot>| s.as_ref().is_some_and(|s| s.version >= min_version);
        if !fresh(&self.updates.borrow()) {
            let until = (Instant::now() + CATCH_UP_WAIT).min(deadline);
            let mut updates = self.updates.clone();
            if !matches!(
                tokio::time::timeout_at(until, updates.wait_for(fresh)).await,
                Ok(Ok(_))
            ) {
                return false;
            }
        }
        self.lease.is_valid()
    }
}

impl CopyTable {
    /// Starts a replica of `grain` following the primary on `primary`.
    pub(super) fn start_replica(
        &self,
        d: &Arc<Dispatcher>,
        env: &CopyEnv,
        group: &mut Group,
        grain: &GrainId,
        primary: SiloAddr,
    ) {
        let (updates_tx, updates) = watch::channel(None);
        let lease = Arc::new(Lease::new());
        let copy = CopyLink::Replica {
            updates: updates.clone(),
            gate: lease.clone(),
        };
        let slot = d.spawn_activation(grain.clone(), Some(copy), self.extra_idle(d));
        let task = follow(Follow {
            grain: grain.clone(),
            me: env.me,
            primary,
            peers: env.peers.clone(),
            lease: lease.clone(),
            updates: updates_tx,
            stop_replica: slot.stop.clone(),
            stop: slot.stop.clone(),
            poll: env.lease / 4,
        });
        d.shared().tracker.spawn(task);
        let view = Arc::new(ReplicaView { updates, lease });
        self.add(group, slot, CopyRole::Replica, Link::Replica(view));
    }

    /// Answers a replica's sync: the primary's newest state (waiting up to `wait` for
    /// one newer than `have`) and a lease of `lease`.
    pub(crate) async fn sync(
        &self,
        key: &str,
        (from, activation, have): (SiloAddr, Option<u64>, u64),
        wait: Duration,
        lease: Duration,
    ) -> ReplicaResponse {
        let found = {
            let groups = self.lock();
            groups.get(key).and_then(|group| {
                let in_set = group
                    .set
                    .as_ref()
                    .is_some_and(|s| s.members.contains(&from));
                group.copies.iter().find_map(|c| match &c.link {
                    Link::Primary(snapshots) if in_set && !c.slot.stop.is_cancelled() => {
                        Some((snapshots.clone(), c.slot.activation_id))
                    }
                    _ => None,
                })
            })
        };
        let Some((mut snapshots, id)) = found else {
            return ReplicaResponse::NotPrimary;
        };
        if activation.is_some_and(|a| a != id) {
            return ReplicaResponse::NotPrimary;
        }
        let first = activation.is_none();
        let newer = |s: &Option<Snapshot>| s.as_ref().is_some_and(|s| first || s.version > have);
        let closed = matches!(
            tokio::time::timeout(wait, snapshots.wait_for(newer)).await,
            Ok(Err(_))
        );
        if closed {
            return ReplicaResponse::NotPrimary; // the primary ended while we waited
        }
        let lease_ms = u32::try_from(lease.as_millis()).unwrap_or(u32::MAX);
        let snapshot = snapshots.borrow().clone();
        match snapshot {
            Some(s) => ReplicaResponse::Synced {
                activation: id,
                version: s.version,
                state: (first || s.version > have).then(|| s.state.to_vec()),
                lease_ms,
            },
            // Still loading: no state yet, and no lease a replica could serve with.
            None => ReplicaResponse::Synced {
                activation: id,
                version: have,
                state: None,
                lease_ms: 0,
            },
        }
    }
}
