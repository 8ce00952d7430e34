//! The clustered silo's background tasks: load reports for heartbeats, the master's
//! directory sweep and placement-storm watch, and the membership watcher (departures,
//! fencing, master changes), which also feeds the [`EventLog`].

use std::sync::Arc;
use std::time::Duration;

use granary_net::routing::ClusterRouter;
use granary_proto::packet::LoadReport;
use granary_proto::status::ClusterEventKind;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::SiloLocal;
use crate::catalog::Catalog;
use crate::directory::{Directory, TENTATIVE_TTL};
use crate::membership::{MemberStatus, MembershipSnapshot, SiloRole};
use crate::observe::EventLog;
use crate::resolver::silo_addr;

/// Publishes this silo's load for heartbeats, once per heartbeat interval.
pub(super) async fn report_load(
    catalog: Arc<Catalog>,
    load: watch::Sender<LoadReport>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                let (activations, queued) = catalog.load();
                load.send_replace(LoadReport { activations: activations as u64, queue_depth: queued as u64 });
            }
        }
    }
}

/// On the master: drops placements nobody confirmed (see [`crate::directory`]).
pub(super) async fn sweep_directory(directory: Arc<Directory>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                let swept = directory.sweep(TENTATIVE_TTL);
                if swept > 0 {
                    tracing::info!(entries = swept, "dropped directory placements that were never activated");
                }
            }
        }
    }
}

/// How often the master sweeps unconfirmed directory placements.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// Reacts to membership changes: departed silos lose their directory entries (master),
/// cached routes and connections (everyone, so calls in flight fail fast); a slave cut
/// off from its master fences itself.
pub(super) async fn watch_membership(
    mut updates: watch::Receiver<Arc<MembershipSnapshot>>,
    role: SiloRole,
    directory: Option<Arc<Directory>>,
    router: Arc<ClusterRouter>,
    local: Arc<SiloLocal>,
    events: Arc<EventLog>,
    stop: CancellationToken,
) {
    let mut handled = std::collections::HashSet::new();
    let mut joined = std::collections::HashSet::new();
    let mut master_seen = None;
    loop {
        let snapshot = updates.borrow_and_update().clone();
        if role == SiloRole::Slave {
            if let (Some(old), Some(new)) = (master_seen, snapshot.master) {
                if old != new {
                    // A new master (a restart) starts with an empty directory: grains
                    // active here are unknown to it and could be placed elsewhere too.
                    tracing::warn!(
                        "the master restarted ({old} is now {new}): deactivating every grain here"
                    );
                    events.record(
                        ClusterEventKind::MasterChanged,
                        new,
                        format!("the master restarted ({old} is now {new})"),
                    );
                    local.deactivate_all();
                    router.forget_all();
                }
            }
            if snapshot.master.is_some() {
                master_seen = snapshot.master;
            }
        }
        for member in snapshot.members.values() {
            if role == SiloRole::Master
                && member.id != snapshot.me
                && member.status == MemberStatus::Active
                && joined.insert(member.id)
            {
                events.record(
                    ClusterEventKind::Joined,
                    member.id,
                    format!("slave {} joined", member.id),
                );
            }
            if member.id == snapshot.me
                || member.status == MemberStatus::Active
                || !handled.insert(member.id)
            {
                continue;
            }
            let addr = silo_addr(&member.id);
            if let Some(directory) = &directory {
                let dropped = directory.remove_silo(addr);
                let how = match member.status {
                    MemberStatus::Dead => "died",
                    _ => "left",
                };
                tracing::info!(
                    "silo {} {how} ({dropped} directory entries dropped)",
                    member.id
                );
                let (kind, detail) = match member.status {
                    MemberStatus::Dead => (
                        ClusterEventKind::Died,
                        format!(
                            "slave {} missed its heartbeats and was declared dead; {dropped} of its grains will be placed elsewhere",
                            member.id
                        ),
                    ),
                    _ => (
                        ClusterEventKind::Left,
                        format!("slave {} left", member.id),
                    ),
                };
                events.record(kind, member.id, detail);
            }
            router.forget_silo(addr);
            if member.status == MemberStatus::Dead {
                // Calls in flight to a dead silo fail now, not at their deadline. A silo
                // that leaves gracefully keeps its connections until it has answered.
                router.peers().disconnect(addr.addr);
            }
        }
        let fenced = role == SiloRole::Slave && !snapshot.master_reachable;
        if local.set_fenced(fenced) {
            if fenced {
                let master_leaving = snapshot
                    .master
                    .and_then(|m| snapshot.get(&m))
                    .is_some_and(|m| m.status == MemberStatus::ShuttingDown);
                let me_leaving = snapshot
                    .get(&snapshot.me)
                    .is_some_and(|m| m.status == MemberStatus::ShuttingDown);
                if me_leaving {
                    tracing::debug!("leaving the cluster: no new grains here");
                } else if master_leaving {
                    tracing::info!("the master is shutting down: deactivating every grain here");
                } else {
                    tracing::warn!(
                        "cut off from the master: fencing (deactivating every grain here)"
                    );
                    events.record(
                        ClusterEventKind::Fenced,
                        snapshot.me,
                        "cut off from the master: fenced, hosting nothing until it rejoins",
                    );
                }
                router.forget_all();
            } else if role == SiloRole::Slave {
                match snapshot.master {
                    Some(master) => tracing::info!(
                        "joined the cluster of master {}: serving grains",
                        master.tcp
                    ),
                    None => tracing::info!("joined the cluster: serving grains"),
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = updates.changed() => if changed.is_err() { return },
        }
    }
}

/// Placements within one second that count as a placement storm.
pub(super) const PLACEMENT_STORM: u64 = 1_000;

/// On the master: records a [`ClusterEventKind::PlacementStorm`] when more than
/// [`PLACEMENT_STORM`] grains are placed within a second (a burst of first calls, or a
/// dead slave's grains coming back elsewhere), once per storm.
pub(super) async fn watch_placements(
    directory: Arc<Directory>,
    me: granary_proto::packet::SiloId,
    events: Arc<EventLog>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = directory.placements();
    let mut storming = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                let now = directory.placements();
                let placed = now - last;
                last = now;
                if placed > PLACEMENT_STORM && !storming {
                    events.record(
                        ClusterEventKind::PlacementStorm,
                        me,
                        format!("{placed} grains placed in the last second"),
                    );
                }
                storming = placed > PLACEMENT_STORM;
            }
        }
    }
}
