//! One [`Dispatcher`] per grain type: owns that type's activations on this silo.
//!
//! The dispatcher's table maps keys to live activations. Delivery is a double-checked
//! get-or-create under one short `std::sync::Mutex` (never held across `.await`), so
//! concurrent first calls to a key create exactly one activation. The table is also
//! where per-grain load is read: message rate, queue depth, last-active time.

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
use granary_runtime::envelope::Envelope;
use granary_runtime::registry::GrainTypeEntry;
use granary_runtime::{GrainStorage, HostingLease, Router};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::observe::TypeStats;

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
}

/// Removes a grain's directory entry (set by the cluster layer).
pub(crate) type ReleaseHook = Arc<dyn Fn(GrainId) -> BoxFuture<'static, ()> + Send + Sync>;

/// One live activation in the table.
struct Slot {
    /// Distinguishes this activation from earlier/later ones of the same key.
    activation_id: u64,
    /// Mailbox sender; dropping the slot does not stop the task (its `stop` does).
    sender: MailboxSender,
    /// Counters written by the activation task.
    stats: Arc<ActivationStats>,
    /// Stops just this activation.
    stop: CancellationToken,
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
        })
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
            idle_timeout: self.idle_timeout,
            stop: stop.clone(),
            stats: stats.clone(),
            observer: self.type_stats.clone(),
            lease: self.shared.lease.clone(),
        });
        self.type_stats.activation_created();
        Slot {
            activation_id,
            sender,
            stats,
            stop,
        }
    }

    fn router(&self) -> Arc<dyn Router> {
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
        self.table().len()
    }

    /// True if `key` has a live activation here.
    pub fn is_active(&self, key: &str) -> bool {
        self.table().contains_key(key)
    }

    /// Asks the activation of `key`, if any, to deactivate (after its current turn).
    pub fn deactivate(&self, key: &str) -> bool {
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
        for slot in self.table().values() {
            slot.stop.cancel();
        }
    }

    /// Drops the activation of `key`, if any, without `on_deactivate` and without
    /// writing its state: the directory gave the grain to another silo. Messages still
    /// queued for it go to that silo. Returns true if there was one.
    pub fn discard(&self, key: &str) -> bool {
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
        for slot in self.table().values() {
            slot.stats.discard();
            slot.stop.cancel();
        }
    }

    /// The keys of every live activation, for a directory report.
    pub fn keys(&self) -> Vec<String> {
        self.table().keys().map(|k| k.to_string()).collect()
    }

    /// Current load figures.
    pub fn stats(&self) -> DispatcherStats {
        let now = Instant::now();
        let table = self.table();
        let grains: Vec<GrainStats> = table
            .iter()
            .map(|(key, slot)| GrainStats {
                key: key.to_string(),
                messages: slot.stats.messages(),
                message_rate: slot.stats.message_rate(),
                queue_depth: slot.sender.max_capacity() - slot.sender.capacity(),
                idle_for: now.saturating_duration_since(slot.stats.last_active()),
            })
            .collect();
        DispatcherStats {
            grain_type: self.entry.type_name,
            activations: grains.len(),
            queue_depth: grains.iter().map(|g| g.queue_depth).sum(),
            grains,
        }
    }

    /// `(activations, queued messages)`, cheaper than [`Dispatcher::stats`].
    pub fn load(&self) -> (usize, usize) {
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
        let err = if self.shared.closing.load(Ordering::Acquire) {
            Some(CallError::ShuttingDown)
        } else if let Leftovers::Fail(err) = leftovers {
            Some(err)
        } else {
            None
        };
        if let Some(err) = err {
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
            let router = self.router();
            self.shared.tracker.spawn(async move {
                for envelope in queued {
                    let deadline = Instant::now() + granary_runtime::DEFAULT_CALL_TIMEOUT;
                    let _ = router.deliver(*envelope, deadline).await;
                }
            });
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
    fn self_arc(&self) -> Arc<Dispatcher> {
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
