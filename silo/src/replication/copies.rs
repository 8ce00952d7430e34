//! [`CopyTable`]: the activations of a replicated grain type on this silo, several per
//! key.
//!
//! Per key, a *group* holds what this silo hosts of the grain and the copy set it last
//! heard of from the master:
//!
//! - **stateless workers**: one or more interchangeable workers. A message goes to the
//!   first worker with an empty mailbox, else to the least queued one; when even that
//!   one has `hot_queue` messages waiting and the silo runs fewer than `max_local`
//!   workers, another worker starts (Orleans' `[StatelessWorker]`). Extra workers, and
//!   workers on member silos, leave after being idle for the cool-down.
//! - **read replicas**: the primary (on the home silo) or one replica (on a member).
//!   The primary takes every message; a replica takes read-only messages once it holds
//!   its primary's state at the caller's version (waiting a little for it) under a
//!   running lease; otherwise the message goes to the primary.
//!
//! A group's activations release the grain's directory entry (or its place in the copy
//! set) only when the last of them ends.
//!
//! Children: `replicas` (starting a replica, its readiness, a primary's answer to a
//! replica's sync) and `figures` (counts, roles, load, report samples).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use granary_net::transport::Peers;
use granary_proto::frame::SiloAddr;
use granary_proto::replication::{CopyKind, CopyRole, CopySet, SetVersion};
use granary_proto::{CallError, GrainId};
use granary_runtime::activation::Mailbox;
use granary_runtime::envelope::Envelope;
use granary_runtime::replication::{CopyLink, SnapshotReceiver};
use granary_runtime::{Replication, Scaling};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::config::max_local;
use crate::dispatcher::{Dispatcher, Slot};

/// What copies need from a clustered silo (none in a stand-alone silo).
#[derive(Debug, Clone)]
pub(crate) struct CopyEnv {
    /// This silo's address (its place in copy sets).
    pub(crate) me: SiloAddr,
    /// Connections (replicas reach their primaries).
    pub(crate) peers: Peers,
    /// The read lease a primary here grants; replicas here poll every quarter of it.
    pub(crate) lease: Duration,
}

/// The copies of one replicated grain type on this silo.
#[derive(Debug)]
pub(crate) struct CopyTable {
    /// Stateless workers or read replicas.
    kind: CopyKind,
    /// The type's scaling, with this silo's overrides.
    scaling: Scaling,
    /// Workers per key on this silo.
    max_local: usize,
    /// Key → what this silo hosts of it; never locked across an `.await`.
    groups: Mutex<HashMap<Arc<str>, Group>>,
}

/// What this silo hosts of one grain.
#[derive(Debug, Default)]
struct Group {
    /// The newest copy set heard of (`None`: never replicated beyond its home).
    set: Option<Arc<CopySet>>,
    /// The activations here.
    copies: Vec<Copy>,
    /// Activations started and not yet released.
    live: usize,
}

/// One activation of the group.
#[derive(Debug)]
struct Copy {
    slot: Slot,
    role: CopyRole,
    link: Link,
}

/// How a copy is connected to the others.
#[derive(Debug)]
enum Link {
    /// A worker.
    None,
    /// A primary: its published snapshots (what replicas' syncs wait on).
    Primary(SnapshotReceiver),
    /// A replica: the state it holds and its lease.
    Replica(Arc<ReplicaView>),
}

/// Where a message goes.
enum Choice {
    /// Not here: back to the router (`to_primary`: a read a replica here could not
    /// take; the router sends it to the primary).
    HandBack { to_primary: bool },
    /// To this mailbox (a replica's, with its view, once it is ready).
    Copy(mpsc::Sender<Box<Envelope>>, Option<Arc<ReplicaView>>),
}

impl CopyTable {
    /// The table of a type with `policy`; `None` for a single-activation type.
    pub(crate) fn new(policy: Replication) -> Option<Self> {
        let (kind, scaling) = match policy {
            Replication::Single => return None,
            Replication::StatelessWorker(s) => (CopyKind::StatelessWorker, s),
            Replication::ReadReplicas(s) => (CopyKind::ReadReplicas, s),
        };
        Some(Self {
            kind,
            scaling,
            max_local: max_local(&scaling),
            groups: Mutex::new(HashMap::new()),
        })
    }

    /// Stateless workers or read replicas.
    pub(crate) fn kind(&self) -> CopyKind {
        self.kind
    }

    /// The scaling this silo runs the type with.
    pub(crate) fn scaling(&self) -> &Scaling {
        &self.scaling
    }

    /// Workers per key on this silo.
    pub(crate) fn max_local(&self) -> usize {
        self.max_local
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Group>> {
        self.groups.lock().expect("copy table poisoned")
    }

    /// Idle timeout of a copy that exists only because the grain was hot.
    fn extra_idle(&self, d: &Dispatcher) -> Duration {
        d.idle_timeout().min(self.scaling.cool_down)
    }

    /// Delivers `envelope` to a copy here, as [`Dispatcher::deliver`] does for a
    /// single activation; `Ok(Some)` hands it back to the router.
    pub(crate) async fn deliver(
        &self,
        d: &Arc<Dispatcher>,
        envelope: Envelope,
        deadline: Instant,
        activate: bool,
    ) -> Result<Option<Envelope>, CallError> {
        let mut envelope = Box::new(envelope);
        let read = self.kind == CopyKind::ReadReplicas
            && !envelope.copy.primary
            && d.is_read(&envelope.body);
        loop {
            let choice = {
                let mut groups = self.lock();
                if d.shared().closing.load(Ordering::Acquire) {
                    drop(groups);
                    envelope.reply.fail(CallError::ShuttingDown);
                    return Err(CallError::ShuttingDown);
                }
                match self.kind {
                    CopyKind::StatelessWorker => {
                        self.choose_worker(d, &mut groups, &envelope.target, activate)
                    }
                    CopyKind::ReadReplicas => {
                        self.choose_copy(d, &mut groups, &envelope.target, read, activate)
                    }
                }
            };
            let (sender, replica) = match choice {
                Choice::HandBack { to_primary } => {
                    envelope.copy.primary |= to_primary;
                    return Ok(Some(*envelope));
                }
                Choice::Copy(sender, replica) => (sender, replica),
            };
            if let Some(view) = replica {
                if !view.ready(envelope.copy.min_version, deadline).await {
                    envelope.copy.primary = true;
                    return Ok(Some(*envelope));
                }
            }
            match sender.try_send(envelope) {
                Ok(()) => return Ok(None),
                Err(mpsc::error::TrySendError::Full(back)) => {
                    match tokio::time::timeout_at(deadline, sender.send(back)).await {
                        Ok(Ok(())) => return Ok(None),
                        Ok(Err(mpsc::error::SendError(back))) => envelope = back,
                        Err(_) => return Err(CallError::MailboxFull),
                    }
                }
                Err(mpsc::error::TrySendError::Closed(back)) => envelope = back,
            }
            // That copy ended without retiring (it cannot, normally): drop it, go round.
            if let Some(group) = self.lock().get_mut(&envelope.target.key) {
                group.copies.retain(|c| !c.slot.sender.is_closed());
            }
        }
    }

    /// A stateless worker for a message to `grain`.
    fn choose_worker(
        &self,
        d: &Arc<Dispatcher>,
        groups: &mut HashMap<Arc<str>, Group>,
        grain: &GrainId,
        activate: bool,
    ) -> Choice {
        let me = d.shared().copies.get().map(|env| env.me);
        let group = group_of(groups, &grain.key);
        if let Some((index, queued)) = least_queued(&group.copies) {
            let hot = queued >= self.scaling.hot_queue.max(1) as usize;
            if hot && group.copies.len() < self.max_local {
                let n = group.copies.len() + 1;
                tracing::info!(
                    %grain,
                    "stateless worker: starting local copy {n} of at most {} here: every copy has {queued} or more messages waiting (threshold {})",
                    self.max_local,
                    self.scaling.hot_queue
                );
                let slot = d.spawn_activation(grain.clone(), None, self.extra_idle(d));
                return Choice::Copy(self.add(group, slot, CopyRole::Worker, Link::None), None);
            }
            return Choice::Copy(group.copies[index].slot.sender.clone(), None);
        }
        let member = group
            .set
            .as_ref()
            .zip(me)
            .is_some_and(|(set, me)| set.members.contains(&me));
        if !activate && !member {
            if group.copies.is_empty() && group.set.is_none() {
                groups.remove(&grain.key);
            }
            return Choice::HandBack { to_primary: false };
        }
        let idle = if member {
            self.extra_idle(d)
        } else {
            d.idle_timeout()
        };
        let slot = d.spawn_activation(grain.clone(), None, idle);
        Choice::Copy(self.add(group, slot, CopyRole::Worker, Link::None), None)
    }

    /// The primary or replica for a message to a read-replicated `grain`.
    fn choose_copy(
        &self,
        d: &Arc<Dispatcher>,
        groups: &mut HashMap<Arc<str>, Group>,
        grain: &GrainId,
        read: bool,
        activate: bool,
    ) -> Choice {
        let group = group_of(groups, &grain.key);
        if let Some(primary) = group.copies.iter().find(|c| c.role == CopyRole::Primary) {
            return Choice::Copy(primary.slot.sender.clone(), None);
        }
        let replica = group.copies.iter().find_map(|c| match &c.link {
            Link::Replica(view) => Some((c, view)),
            _ => None,
        });
        if let (true, Some((copy, view))) = (read, replica) {
            return Choice::Copy(copy.slot.sender.clone(), Some(view.clone()));
        }
        if !activate {
            if group.copies.is_empty() && group.set.is_none() {
                groups.remove(&grain.key);
            }
            return Choice::HandBack { to_primary: false };
        }
        // The directory places the grain here: a replica left from an earlier primary
        // goes; the new primary starts from storage.
        for copy in &group.copies {
            copy.slot.stop.cancel();
        }
        let (publish, snapshots) = watch::channel(None);
        let slot = d.spawn_activation(
            grain.clone(),
            Some(CopyLink::Primary(publish)),
            d.idle_timeout(),
        );
        Choice::Copy(
            self.add(group, slot, CopyRole::Primary, Link::Primary(snapshots)),
            None,
        )
    }

    /// Records a new activation in `group`; returns its mailbox.
    fn add(
        &self,
        group: &mut Group,
        slot: Slot,
        role: CopyRole,
        link: Link,
    ) -> mpsc::Sender<Box<Envelope>> {
        let sender = slot.sender.clone();
        group.copies.push(Copy { slot, role, link });
        group.live += 1;
        sender
    }

    /// Applies the master's new copy set for `grain`: this silo hosts a copy if it is
    /// a member and drops its copies if it is neither member nor home. Older sets than
    /// the one applied are ignored.
    pub(crate) fn apply_set(&self, d: &Arc<Dispatcher>, grain: &GrainId, set: CopySet) {
        let Some(env) = d.shared().copies.get() else {
            return;
        };
        let mut groups = self.lock();
        let group = group_of(&mut groups, &grain.key);
        if group
            .set
            .as_ref()
            .is_some_and(|old| old.version >= set.version)
        {
            return;
        }
        let member = set.members.contains(&env.me);
        let home = set.home == env.me;
        let set = Arc::new(set);
        group.set = Some(set.clone());
        if home {
            if group.copies.is_empty() {
                groups.remove(&grain.key);
            }
            return;
        }
        if !member {
            if !group.copies.is_empty() {
                tracing::info!(%grain, "copy set {}: dropping the {} copy(ies) here", describe(&set), group.copies.len());
            }
            for copy in &group.copies {
                copy.slot.stop.cancel();
            }
            if group.copies.is_empty() {
                groups.remove(&grain.key);
            }
            return;
        }
        match self.kind {
            CopyKind::StatelessWorker => {
                if group.copies.is_empty() {
                    tracing::info!(%grain, "copy set {}: starting a stateless worker here", describe(&set));
                    let slot = d.spawn_activation(grain.clone(), None, self.extra_idle(d));
                    self.add(group, slot, CopyRole::Worker, Link::None);
                }
            }
            CopyKind::ReadReplicas => {
                for copy in group.copies.iter().filter(|c| c.role == CopyRole::Primary) {
                    // The directory homes the grain elsewhere: this one must not write.
                    copy.slot.stop.cancel();
                }
                let has_replica = group
                    .copies
                    .iter()
                    .any(|c| c.role == CopyRole::Replica && !c.slot.stop.is_cancelled());
                if !has_replica {
                    tracing::info!(%grain, "copy set {}: starting a read replica here", describe(&set));
                    self.start_replica(d, env, group, grain, set.home);
                }
            }
        }
    }

    /// An activation of `key` released: true when it was the last one here (the grain
    /// leaves the directory or its copy set).
    pub(crate) fn release(&self, key: &str) -> bool {
        let mut groups = self.lock();
        match groups.get_mut(key) {
            Some(group) => {
                group.live = group.live.saturating_sub(1);
                group.live == 0
            }
            None => true,
        }
    }

    /// Activation `activation_id` of `id` ended: it leaves the group, its mailbox is
    /// closed and what is still queued is returned.
    pub(crate) fn retire(
        &self,
        id: &GrainId,
        activation_id: u64,
        mailbox: &mut Mailbox,
    ) -> Vec<Envelope> {
        let mut groups = self.lock();
        if let Some(group) = groups.get_mut(&id.key) {
            if let Some(i) = group
                .copies
                .iter()
                .position(|c| c.slot.activation_id == activation_id)
            {
                let copy = group.copies.remove(i);
                if copy.role == CopyRole::Worker && !group.copies.is_empty() {
                    tracing::info!(grain = %id, "stateless worker: local copy stopped ({} left here)", group.copies.len());
                }
            }
            if group.copies.is_empty() {
                groups.remove(&id.key);
            }
        }
        mailbox.close();
        let mut queued = Vec::new();
        while let Ok(envelope) = mailbox.try_recv() {
            queued.push(*envelope);
        }
        queued
    }

    /// The copy set to tell a caller about: this silo's set for `key` when it is newer
    /// than `seen`.
    pub(crate) fn newer_set(&self, key: &str, seen: Option<SetVersion>) -> Option<CopySet> {
        let groups = self.lock();
        let set = groups.get(key)?.set.as_ref()?;
        (Some(set.version) > seen).then(|| CopySet::clone(set))
    }
}

/// The group of `key`, created empty if need be (without allocating when it exists:
/// this is on every message's path).
fn group_of<'a>(groups: &'a mut HashMap<Arc<str>, Group>, key: &Arc<str>) -> &'a mut Group {
    if !groups.contains_key(key) {
        groups.insert(key.clone(), Group::default());
    }
    groups.get_mut(key).expect("just inserted")
}

/// The copy with an empty mailbox that comes first, else the least queued one, with
/// its queue length.
fn least_queued(copies: &[Copy]) -> Option<(usize, usize)> {
    let mut best: Option<(usize, usize)> = None;
    for (i, copy) in copies.iter().enumerate() {
        if copy.slot.stop.is_cancelled() {
            continue;
        }
        let queued = copy.slot.queued();
        if queued == 0 {
            return Some((i, 0));
        }
        if best.is_none_or(|(_, q)| queued < q) {
            best = Some((i, queued));
        }
    }
    best
}

/// A set in a log line: version, home, members.
fn describe(set: &CopySet) -> String {
    let members: Vec<String> = set.members.iter().map(ToString::to_string).collect();
    format!(
        "v{}.{} (home {}, members [{}])",
        set.version.epoch,
        set.version.seq,
        set.home,
        members.join(", ")
    )
}

mod figures;
mod replicas;

use replicas::ReplicaView;
