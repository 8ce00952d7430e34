//! The clustered silo's background tasks: load reports for heartbeats, the acting
//! master's directory sweep and placement-storm watch, and the membership watcher
//! (departures, fencing, master changes), which also feeds the [`EventLog`].

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
use crate::membership::{Hosting, MemberStatus, MembershipSnapshot, SiloRole};
use crate::observe::EventLog;
use crate::replication::controller::Controller;
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
                load.send_replace(LoadReport { activations: activations as u64, queue_depth: queued as u64, suspended: false });
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

/// Reacts to membership changes: departed silos lose their directory entries (acting
/// master), cached routes and connections (everyone, so calls in flight fail fast); a
/// slave records its fencing and the acting masters it follows.
pub(super) async fn watch_membership(
    mut updates: watch::Receiver<Arc<MembershipSnapshot>>,
    role: SiloRole,
    (directory, replication): (Option<Arc<Directory>>, Option<Arc<Controller>>),
    router: Arc<ClusterRouter>,
    local: Arc<SiloLocal>,
    events: Arc<EventLog>,
    stop: CancellationToken,
) {
    let mut handled = std::collections::HashSet::new();
    let mut joined = std::collections::HashSet::new();
    let mut master_seen = None;
    let mut serving = false;
    loop {
        let snapshot = updates.borrow_and_update().clone();
        if let (Some(old), Some(new)) = (master_seen, snapshot.master) {
            if old != new {
                // Slaves keep their grains: they report them to the new master.
                events.record(
                    ClusterEventKind::MasterChanged,
                    new,
                    format!("{new} acts as master (epoch {}); was {old}", snapshot.epoch),
                );
            }
        }
        if snapshot.master.is_some() {
            master_seen = snapshot.master;
        }
        let acting = snapshot.is_acting_master();
        for member in snapshot.members.values() {
            if acting
                && member.id != snapshot.me
                && !member.is_candidate
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
            if let (Some(replication), true, false) = (&replication, acting, member.is_candidate) {
                replication.silo_gone(addr);
            }
            if let (Some(directory), true, false) = (&directory, acting, member.is_candidate) {
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
        // Candidates never host grains; a slave hosts none while fenced.
        let fenced = role == SiloRole::Master || snapshot.hosting == Hosting::Fenced;
        if local.set_fenced(fenced) && role == SiloRole::Slave && fenced {
            router.forget_all();
        }
        let now_serving = role == SiloRole::Slave && snapshot.hosting == Hosting::Serving;
        if now_serving && !serving {
            if let Some(master) = snapshot.master {
                tracing::info!(
                    "serving grains for the acting master {} (epoch {})",
                    master.tcp,
                    snapshot.epoch
                );
            }
        }
        serving = now_serving;
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
