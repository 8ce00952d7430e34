//! One [`Dispatcher`] per grain type: owns that type's activations on this silo.
//!
//! The dispatcher's table maps keys to live activations. Delivery is a double-checked
//! get-or-create under one short `std::sync::Mutex` (never held across `.await`), so
//! concurrent first calls to a key create exactly one activation. The table is also
//! where per-grain load is read: message rate, queue depth, last-active time.
//!
//! A grain type that declares a replication policy (and runs on a silo with
//! replication on) keeps its activations in a `CopyTable` (`replication::copies`)
//! instead, which may hold several copies of one key; every method below hands such a
//! type over to it first.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use futures::future::BoxFuture;
use granary_proto::{CallError, GrainId};
use granary_runtime::activation::{
    ActivationHost, ActivationStats, Leftovers, Mailbox, MailboxSender,
};
use granary_runtime::envelope::{Body, Envelope};
use granary_runtime::registry::GrainTypeEntry;
use granary_runtime::replication::CopyLink;
use granary_runtime::{GrainStorage, HostingLease, Replication, Router};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::observe::TypeStats;
use crate::replication::copies::{CopyEnv, CopyTable};
use crate::replication::{CopyRole, HostedActivation};

/// What every dispatcher of a silo shares: storage, the router given to grains, the
/// stop signal and the tracker that owns every activation task.
pub(crate) struct HostShared {
    /// Grain state provider.
    pub(crate) storage: Arc<dyn GrainStorage>,
    /// Router handed to activations for grain-to-grain calls (set once at start).
    pub(crate) router: OnceLock<Arc<dyn Router>>,
    /// Cancelled at shutdown; every activation's stop token is a child.
    pub(crate) stop: CancellationToken,
    /// Owns all activation tasks; shutdown waits on it.
    pub(crate) tracker: TaskTracker,
    /// Set when shutdown starts: no new activations, deliveries fail with `ShuttingDown`.
    pub(crate) closing: AtomicBool,
    /// Source of activation ids.
    pub(crate) next_activation: AtomicU64,
    /// Clustered silos: releases a grain's directory entry at deactivation, and queued
    /// leftovers are re-routed through the router (the grain may move) instead of
    /// re-activated here.
    pub(crate) release: OnceLock<ReleaseHook>,
    /// The silo's right to run turns and write state (a slave's lease from the acting
    /// master; forever on a stand-alone silo).
    pub(crate) lease: Arc<HostingLease>,
    /// Clustered silos: what copies of replicated grains need (this silo's address,
    /// connections, the read lease).
    pub(crate) copies: OnceLock<CopyEnv>,
}

/// Removes a grain's directory entry (set by the cluster layer).
pub(crate) type ReleaseHook = Arc<dyn Fn(GrainId) -> BoxFuture<'static, ()> + Send + Sync>;

/// One live activation in the table.
#[derive(Debug)]
pub(crate) struct Slot {
    /// Distinguishes this activation from earlier/later ones of the same key.
    pub(crate) activation_id: u64,
    /// Mailbox sender; dropping the slot does not stop the task (its `stop` does).
    pub(crate) sender: MailboxSender,
    /// Counters written by the activation task.
    pub(crate) stats: Arc<ActivationStats>,
    /// Stops just this activation.
    pub(crate) stop: CancellationToken,
}

impl Slot {
    /// Messages waiting in the mailbox.
    pub(crate) fn queued(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }
}

/// What one attempt at delivery did.
enum Now {
    /// In the mailbox.
    Delivered,
    /// Not active here, and not to be activated: the envelope, back.
    NotActive(Box<Envelope>),
    /// The mailbox is full: the envelope back, and the mailbox to wait on.
    Full(Box<Envelope>, MailboxSender),
    /// Not delivered; the envelope's call has been failed with this error.
    Failed(CallError),
}

/// Hosts the activations of one grain type.
pub struct Dispatcher {
    /// The registered type.
    entry: &'static GrainTypeEntry,
    /// Idle time before deactivation, resolved from the config.
    idle_timeout: Duration,
    /// Mailbox capacity of each activation.
    mailbox_capacity: usize,
    /// Live activations by key.
    activations: Mutex<HashMap<Arc<str>, Slot>>,
    /// Silo-wide shared parts.
    shared: Arc<HostShared>,
    /// This dispatcher, for handing itself to new activations from `&self`.
    me: Weak<Dispatcher>,
    /// What the type's activations did (fed by every turn).
    type_stats: Arc<TypeStats>,
    /// The copies of a replicated type (`None`: single activation, the table above).
    copies: Option<CopyTable>,
}

/// Load of one activation.
#[derive(Debug, Clone)]
pub struct GrainStats {
    /// The grain's key.
    pub key: String,
    /// Messages handled by this activation.
    pub messages: u64,
    /// Messages per second over the last window.
    pub message_rate: f64,
    /// Messages waiting in the mailbox.
    pub queue_depth: usize,
    /// Time since the last handled message.
    pub idle_for: Duration,
    /// Copies of the grain in the cluster as this silo knows them: its activations
    /// here plus one per other silo of its copy set (1 for a single activation).
    pub copies: u32,
}

/// Load of one grain type on this silo.
#[derive(Debug, Clone)]
pub struct DispatcherStats {
    /// The grain type's wire name.
    pub grain_type: &'static str,
    /// Live activations.
    pub activations: usize,
    /// Messages waiting, summed over activations.
    pub queue_depth: usize,
    /// Per-activation figures.
    pub grains: Vec<GrainStats>,
}

impl Dispatcher {
    pub(crate) fn new(
        entry: &'static GrainTypeEntry,
        idle_timeout: Duration,
        mailbox_capacity: usize,
        shared: Arc<HostShared>,
        replication: Replication,
    ) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            entry,
            idle_timeout,
            mailbox_capacity,
            activations: Mutex::new(HashMap::new()),
            shared,
            me: me.clone(),
            type_stats: Arc::new(TypeStats::new(
                entry.type_name,
                entry.messages.iter().map(|m| m.message),
            )),
            copies: CopyTable::new(replication),
        })
    }

    /// The copies of a replicated type (`None` for a single-activation type).
    pub(crate) fn copies(&self) -> Option<&CopyTable> {
        self.copies.as_ref()
    }

    /// What the silo shares with every dispatcher.
    pub(crate) fn shared(&self) -> &Arc<HostShared> {
        &self.shared
    }

    /// True when `body` is a message this type lists in `reads = [...]`.
    pub(crate) fn is_read(&self, body: &Body) -> bool {
        match body {
            Body::Local { vtable, .. } => vtable.read,
            Body::Encoded { name, .. } => self
                .entry
                .messages
                .iter()
                .any(|m| m.read && m.message == name.as_str()),
        }
    }

    /// The grain type's wire name.
    pub fn grain_type(&self) -> &'static str {
        self.entry.type_name
    }

    /// The resolved idle timeout of this type.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Slot>> {
        self.activations.lock().expect("dispatcher table poisoned")
    }

    /// Puts `envelope` in its grain's mailbox. Waits for mailbox space until `deadline`,
    /// then fails with `MailboxFull`. If the grain is not active here, it is activated
    /// when `activate` is set; otherwise the envelope is handed back (`Ok(Some)`).
    pub(crate) async fn deliver(
        self: &Arc<Self>,
        envelope: Envelope,
        deadline: Instant,
        activate: bool,
    ) -> Result<Option<Envelope>, CallError> {
        if let Some(copies) = &self.copies {
            return copies.deliver(self, envelope, deadline, activate).await;
        }
        let mut envelope = Box::new(envelope);
        loop {
            let sender = match self.deliver_now(envelope, activate) {
                Now::Delivered => return Ok(None),
                Now::NotActive(back) => return Ok(Some(*back)),
                Now::Failed(err) => return Err(err),
                Now::Full(back, sender) => {
                    envelope = back;
                    sender
                }
            };
            match tokio::time::timeout_at(deadline, sender.send(envelope)).await {
                Ok(Ok(())) => return Ok(None),
                // Retired while we waited: go round and reach the next activation.
                Ok(Err(mpsc::error::SendError(back))) => envelope = back,
                Err(_) => return Err(CallError::MailboxFull),
            }
        }
    }

    /// [`Dispatcher::deliver`] without waiting: `Ok(Some)` hands the envelope back when
    /// the mailbox is full (or, without `activate`, the grain is not active here).
    pub(crate) fn try_deliver(
        self: &Arc<Self>,
        envelope: Envelope,
        activate: bool,
    ) -> Result<Option<Envelope>, CallError> {
        if self.copies.is_some() {
            // A copy may have to wait (a replica catching up): the async path decides.
            return Ok(Some(envelope));
        }
        match self.deliver_now(Box::new(envelope), activate) {
            Now::Delivered => Ok(None),
            Now::NotActive(back) | Now::Full(back, _) => Ok(Some(*back)),
            Now::Failed(err) => Err(err),
        }
    }

    /// One attempt at delivery under the table's lock: the double-checked
    /// get-or-create, then a `try_send` into the mailbox.
    fn deliver_now(self: &Arc<Self>, mut envelope: Box<Envelope>, activate: bool) -> Now {
        let mut table = self.table();
        if self.shared.closing.load(Ordering::Acquire) {
            drop(table);
            envelope.reply.fail(CallError::ShuttingDown);
            return Now::Failed(CallError::ShuttingDown);
        }
        loop {
            return match table.get(&envelope.target.key) {
                Some(slot) => match slot.sender.try_send(envelope) {
                    Ok(()) => Now::Delivered,
                    Err(TrySendError::Full(back)) => Now::Full(back, slot.sender.clone()),
                    Err(TrySendError::Closed(back)) => {
                        // The task ended without retiring (it cannot, normally).
                        envelope = back;
                        table.remove(&envelope.target.key);
                        continue;
                    }
                },
                None if !activate => Now::NotActive(envelope),
                None => {
                    let key = envelope.target.key.clone();
                    let slot = self.activate(envelope.target.clone());
                    let sent = slot.sender.try_send(envelope);
                    table.insert(key, slot);
                    debug_assert!(sent.is_ok(), "a fresh mailbox has room");
                    Now::Delivered
                }
            };
        }
    }

    /// Creates an activation (the caller inserts it in the table).
    fn activate(self: &Arc<Self>, id: GrainId) -> Slot {
        self.spawn_activation(id, None, self.idle_timeout)
    }

    /// Starts an activation of `id` as `copy`, idle for at most `idle_timeout` (the
    /// caller records it).
    pub(crate) fn spawn_activation(
        self: &Arc<Self>,
        id: GrainId,
        copy: Option<CopyLink>,
        idle_timeout: Duration,
    ) -> Slot {
        let (sender, mailbox) = mpsc::channel(self.mailbox_capacity);
        let activation_id = self.shared.next_activation.fetch_add(1, Ordering::Relaxed);
        let stats = Arc::new(ActivationStats::new());
        let stop = self.shared.stop.child_token();
        let router = self.router();
        (self.entry.spawn)(granary_runtime::__private::ActivationArgs {
            id,
            activation_id,
            mailbox,
            storage: self.shared.storage.clone(),
            router,
            host: self.clone(),
            idle_timeout,
            stop: stop.clone(),
            stats: stats.clone(),
            observer: self.type_stats.clone(),
            lease: self.shared.lease.clone(),
            copy: copy.map(Box::new),
        });
        self.type_stats.activation_created();
        Slot {
            activation_id,
            sender,
            stats,
            stop,
        }
    }

    pub(crate) fn router(&self) -> Arc<dyn Router> {
        self.shared
            .router
            .get()
            .expect("router is set before the silo serves")
            .clone()
    }

    /// What this type's activations did since the silo started.
    pub fn type_stats(&self) -> &Arc<TypeStats> {
        &self.type_stats
    }

    /// Number of live activations.
    pub fn activation_count(&self) -> usize {
        match &self.copies {
            Some(copies) => copies.activation_count(),
            None => self.table().len(),
        }
    }

    /// True if `key` has a live activation here (any copy).
    pub fn is_active(&self, key: &str) -> bool {
        match &self.copies {
            Some(copies) => copies.is_active(key),
            None => self.table().contains_key(key),
        }
    }

    /// The activations of this type here, with their roles.
    pub fn hosted(&self) -> Vec<HostedActivation> {
        match &self.copies {
            Some(copies) => copies.hosted(self.entry.type_name),
            None => self
                .table()
                .keys()
                .map(|key| HostedActivation {
                    grain: GrainId::new(self.entry.type_name, key.clone()),
                    role: CopyRole::Single,
                })
                .collect(),
        }
    }

    /// Asks the activation(s) of `key`, if any, to deactivate (after their turn).
    pub fn deactivate(&self, key: &str) -> bool {
        if let Some(copies) = &self.copies {
            return copies.deactivate(key);
        }
        match self.table().get(key) {
            Some(slot) => {
                slot.stop.cancel();
                true
            }
            None => false,
        }
    }

    /// Asks every activation of this type to deactivate.
    pub fn deactivate_all(&self) {
        if let Some(copies) = &self.copies {
            copies.deactivate_all();
        }
        for slot in self.table().values() {
            slot.stop.cancel();
        }
    }

    /// Drops the activation(s) of `key`, if any, without `on_deactivate` and without
    /// writing state: the directory gave the grain to another silo. Messages still
    /// queued for it go to that silo. Returns true if there was one.
    pub fn discard(&self, key: &str) -> bool {
        if let Some(copies) = &self.copies {
            return copies.discard(key);
        }
        match self.table().get(key) {
            Some(slot) => {
                slot.stats.discard();
                slot.stop.cancel();
                true
            }
            None => false,
        }
    }

    /// Drops every activation of this type as [`Dispatcher::discard`] does.
    pub fn discard_all(&self) {
        if let Some(copies) = &self.copies {
            copies.discard_all();
        }
        for slot in self.table().values() {
            slot.stats.discard();
            slot.stop.cancel();
        }
    }

    /// The keys of every grain this silo hosts as its directory owner, for a directory
    /// report (a replicated type's replicas, and its workers on a silo that is not the
    /// grain's home, are copies, not owners: they are not listed).
    pub fn keys(&self) -> Vec<String> {
        if let Some(copies) = &self.copies {
            return copies.owned_keys(self.shared.copies.get().map(|env| env.me));
        }
        self.table().keys().map(|k| k.to_string()).collect()
    }

    /// Current load figures (the copies of one key here count as one grain).
    pub fn stats(&self) -> DispatcherStats {
        let now = Instant::now();
        let grains: Vec<GrainStats> = match &self.copies {
            Some(copies) => copies.stats(now),
            None => self
                .table()
                .iter()
                .map(|(key, slot)| GrainStats {
                    key: key.to_string(),
                    messages: slot.stats.messages(),
                    message_rate: slot.stats.message_rate(),
                    queue_depth: slot.queued(),
                    idle_for: now.saturating_duration_since(slot.stats.last_active()),
                    copies: 1,
                })
                .collect(),
        };
        DispatcherStats {
            grain_type: self.entry.type_name,
            activations: grains.len(),
            queue_depth: grains.iter().map(|g| g.queue_depth).sum(),
            grains,
        }
    }

    /// `(activations, queued messages)`, cheaper than [`Dispatcher::stats`].
    pub fn load(&self) -> (usize, usize) {
        if let Some(copies) = &self.copies {
            return copies.load();
        }
        let table = self.table();
        let queued = table
            .values()
            .map(|s| s.sender.max_capacity() - s.sender.capacity())
            .sum();
        (table.len(), queued)
    }
}

impl ActivationHost for Dispatcher {
    fn spawn(&self, task: BoxFuture<'static, ()>) {
        self.shared.tracker.spawn(task);
    }

    fn release(&self, id: &GrainId) -> BoxFuture<'static, ()> {
        if let Some(copies) = &self.copies {
            if !copies.release(&id.key) {
                return Box::pin(async {});
            }
        }
        match self.shared.release.get() {
            Some(hook) => hook(id.clone()),
            None => Box::pin(async {}),
        }
    }

    fn retire(
        &self,
        id: &GrainId,
        activation_id: u64,
        mailbox: &mut Mailbox,
        leftovers: Leftovers,
    ) {
        self.type_stats.activation_ended();
        if let Some(copies) = &self.copies {
            let queued = copies.retire(id, activation_id, mailbox);
            self.hand_on(queued, leftovers);
            return;
        }
        let mut table = self.table();
        if table
            .get(&id.key)
            .is_some_and(|s| s.activation_id == activation_id)
        {
            table.remove(&id.key);
        }
        mailbox.close();
        let mut queued = Vec::new();
        while let Ok(envelope) = mailbox.try_recv() {
            queued.push(envelope);
        }
        if queued.is_empty() {
            return;
        }
        if let Some(err) = self.leftover_error(leftovers) {
            drop(table);
            for envelope in queued {
                envelope.fail(err.clone());
            }
            return;
        }
        if self.shared.release.get().is_some() {
            // Clustered: the entry is released, the grain may now live elsewhere. Re-route
            // the queue in order through the router.
            drop(table);
            self.reroute(queued.into_iter().map(|e| *e).collect());
            return;
        }
        // Hand the queue, in order, to the next activation before anyone else can reach it.
        let sender = match table.get(&id.key) {
            Some(slot) => slot.sender.clone(),
            None => {
                let me = self.self_arc();
                let slot = me.activate(id.clone());
                let sender = slot.sender.clone();
                table.insert(id.key.clone(), slot);
                sender
            }
        };
        drop(table);
        for envelope in queued {
            if let Err(e) = sender.try_send(envelope) {
                let envelope = match e {
                    TrySendError::Full(e) | TrySendError::Closed(e) => e,
                };
                envelope.fail(CallError::MailboxFull);
            }
        }
    }
}

impl Dispatcher {
    /// The error messages left in an ended activation's mailbox fail with: the silo is
    /// shutting down, or the activation could not start; `None`: hand them on.
    fn leftover_error(&self, leftovers: Leftovers) -> Option<CallError> {
        if self.shared.closing.load(Ordering::Acquire) {
            Some(CallError::ShuttingDown)
        } else if let Leftovers::Fail(err) = leftovers {
            Some(err)
        } else {
            None
        }
    }

    /// Re-routes `queued`, in order, through the router (from a task of its own).
    fn reroute(&self, queued: Vec<Envelope>) {
        let router = self.router();
        self.shared.tracker.spawn(async move {
            for envelope in queued {
                let deadline = Instant::now() + granary_runtime::DEFAULT_CALL_TIMEOUT;
                let _ = router.deliver(envelope, deadline).await;
            }
        });
    }

    /// Messages left in a retired copy's mailbox: failed at shutdown or when the
    /// activation could not start, else re-routed in order (another copy, or a new
    /// activation, takes them).
    fn hand_on(&self, queued: Vec<Envelope>, leftovers: Leftovers) {
        if queued.is_empty() {
            return;
        }
        match self.leftover_error(leftovers) {
            Some(err) => queued.into_iter().for_each(|e| e.fail(err.clone())),
            None => self.reroute(queued),
        }
    }

    pub(crate) fn self_arc(&self) -> Arc<Dispatcher> {
        self.me
            .upgrade()
            .expect("dispatcher is alive while its activations run")
    }
}

impl fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dispatcher")
            .field("grain_type", &self.entry.type_name)
            .field("idle_timeout", &self.idle_timeout)
            .field("activations", &self.activation_count())
            .finish()
    }
}
