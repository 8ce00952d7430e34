//! Durable reminders: a [`Reminder`] message delivered to a grain on a schedule that
//! outlives its activations, its silo and the whole cluster.
//!
//! A grain registers a reminder with [`GrainContext::register_reminder`]: its first tick
//! is due after `due`, then one every `period`. Each tick is delivered as a [`Reminder`]
//! message, which activates the grain if it is not active (the grain type must handle
//! `Reminder` and list it in its `register_grain!` line; that is checked at compile
//! time). A reminder stays until [`GrainContext::unregister_reminder`].
//!
//! # Where reminders live
//! Reminders are kept by [`REMINDER_SHARDS`] system grains of type [`SHARD_TYPE`]
//! ([`ReminderShard`]); a grain's reminders belong to the shard its id hashes to. A
//! shard's table is its grain state, so it is stored like any state (embedded store
//! replicated among master candidates, or MongoDB), written before a registration is
//! acknowledged; the shard runs a timer for its earliest tick and delivers ticks with
//! `tell`. The shards are placed over the slaves like any grain, which spreads the work,
//! and they keep the guarantees of any grain: one activation at a time, fenced writes,
//! re-activation elsewhere when their slave dies. The acting master's silo keeps them
//! running: every second it wakes each shard that has a stored table (see
//! `granary_silo`'s reminder keeper), so after a crash or a full restart each shard comes
//! back within about a second of the cluster being able to place it.
//!
//! # What a tick guarantees
//! - A tick is recorded as delivered once it is in the grain's mailbox; the shard
//!   records it in its table right after (one state write per firing turn).
//! - A tick that cannot be delivered (the grain's silo is unreachable, the grain cannot
//!   be activated) is tried again, after 0.5 s and then with doubling pauses up to 10 s,
//!   until it is delivered or the next tick replaces it.
//! - Ticks missed while a reminder could not fire (its shard's slave died, the cluster
//!   was down) are **coalesced**: one tick is delivered as soon as the shard runs again,
//!   carrying the time of the latest missed tick and the number of earlier ones it
//!   stands for ([`Reminder::missed`]). No due tick is silently dropped.
//! - A tick may be delivered **twice** if the shard's silo dies between delivering it
//!   and recording it (a window of one store write), or if a tick sits in the mailbox
//!   of a grain whose silo dies before handling it — then that tick is lost, and the
//!   next one comes on schedule. Handlers should be idempotent per
//!   [`Reminder::due_unix_ms`].
//! - A master failover does not stop reminders: the shards run on slaves, which keep
//!   their grains through a failover (ticks pause only while a slave's hosting lease is
//!   lapsed).
//!
//! The minimum period is [`MIN_REMINDER_PERIOD`] (1 s). Times are wall-clock
//! milliseconds (a shard measures them from its activation on the monotonic clock).

mod shard;

use std::fmt;
use std::time::Duration;

use granary_proto::{CallError, GrainId};
use serde::{Deserialize, Serialize};

use crate::grain::{Grain, GrainContext};
use crate::registry::RegisteredMessage;

pub use shard::{ReminderShard, ShardList, ShardRegister, ShardTable, ShardUnregister, ShardWake};

/// Wire name of the reminder shard grains.
pub const SHARD_TYPE: &str = "granary.reminders/v1";

/// How many shards hold the cluster's reminders. Part of the stored layout: a grain's
/// reminders are found in shard `hash(grain) % REMINDER_SHARDS`, so it never changes.
pub const REMINDER_SHARDS: u32 = 16;

/// The shortest reminder period (Orleans: 1 minute).
pub const MIN_REMINDER_PERIOD: Duration = Duration::from_secs(1);

/// How long a grain waits for its shard to answer a registration.
const SHARD_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The message a reminder delivers. A grain that registers reminders implements
/// `Handler<Reminder>` and lists `Reminder` in its `register_grain!` line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reminder {
    /// The name the reminder was registered under.
    pub name: String,
    /// When this tick was due, in milliseconds since the Unix epoch.
    pub due_unix_ms: u64,
    /// The reminder's period.
    pub period: Duration,
    /// Earlier ticks this one stands for: ticks that fell while the reminder could not
    /// be delivered (0 normally).
    pub missed: u64,
}

/// A reminder as its shard keeps it (see [`GrainContext::reminders`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReminderInfo {
    /// Its name.
    pub name: String,
    /// Its period.
    pub period: Duration,
    /// When its next tick is due, in milliseconds since the Unix epoch.
    pub next_due_unix_ms: u64,
    /// When the last delivered tick was due (`None`: none delivered yet).
    pub last_delivered_unix_ms: Option<u64>,
}

/// Why registering, unregistering or listing reminders failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ReminderError {
    /// The period is shorter than [`MIN_REMINDER_PERIOD`]. Nothing was registered.
    #[error("a reminder period of {period:?} is shorter than the minimum of {min:?}")]
    PeriodTooShort {
        /// The period asked for.
        period: Duration,
        /// [`MIN_REMINDER_PERIOD`].
        min: Duration,
    },
    /// The name is empty. Nothing was registered.
    #[error("a reminder needs a non-empty name")]
    EmptyName,
    /// The shard could not store the change (its store refused or failed the write).
    /// The change may or may not be stored; registering again is safe.
    #[error("the reminder table could not be written: {0}")]
    Storage(String),
    /// The shard could not be reached or did not answer in time. The change may or may
    /// not have been applied (see the [`CallError`]); registering again is safe.
    #[error("the reminder service did not answer: {0}")]
    Unavailable(CallError),
}

impl From<CallError> for ReminderError {
    fn from(err: CallError) -> Self {
        match err {
            CallError::Storage(msg) => ReminderError::Storage(msg),
            other => ReminderError::Unavailable(other),
        }
    }
}

/// The shard that keeps `grain`'s reminders (FNV-1a of its type and key: stable across
/// builds and machines, unlike `std`'s hasher).
pub fn shard_of(grain: &GrainId) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = grain
        .type_name
        .as_bytes()
        .iter()
        .chain([0u8].iter())
        .chain(grain.key.as_bytes());
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(REMINDER_SHARDS)) as u32
}

/// The key of shard `shard` (`"00"` … `"15"`).
pub fn shard_key(shard: u32) -> String {
    format!("{shard:02}")
}

/// The id of shard `shard`'s grain (its stored table is that grain's state).
pub fn shard_id(shard: u32) -> GrainId {
    GrainId::new(SHARD_TYPE, shard_key(shard))
}

impl<G: Grain> GrainContext<G> {
    /// Registers (or replaces) this grain's reminder `name`: a [`Reminder`] tick after
    /// `due`, then every `period`, until it is unregistered. Returns once the reminder is
    /// stored durably. Registering an existing name again restarts its schedule (as
    /// Orleans' `RegisterOrUpdateReminder` does); check [`Self::reminders`] first to keep
    /// it. See [`crate::reminder`] for the delivery guarantees.
    ///
    /// ```
    /// # use granary_runtime::prelude::*;
    /// # use granary_runtime::reminder::Reminder;
    /// # use std::time::Duration;
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Subscribe;
    /// # struct Invoice;
    /// # #[async_trait] impl Grain for Invoice { const TYPE_NAME: &'static str = "doc.invoice/v1"; type State = ();
    /// #   async fn on_activate(_: &mut GrainContext<Self>) -> Result<Self, GrainError> { Ok(Invoice) } }
    /// #[async_trait]
    /// impl Handler<Subscribe> for Invoice {
    ///     type Reply = ();
    ///     async fn handle(&mut self, _: Subscribe, ctx: &mut GrainContext<Self>) -> Result<(), GrainError> {
    ///         let day = Duration::from_secs(24 * 3600);
    ///         ctx.register_reminder("bill", day, day).await?;
    ///         Ok(())
    ///     }
    /// }
    /// #[async_trait]
    /// impl Handler<Reminder> for Invoice {
    ///     type Reply = ();
    ///     async fn handle(&mut self, tick: Reminder, _: &mut GrainContext<Self>) -> Result<(), GrainError> {
    ///         // bill once per `tick.due_unix_ms` (a tick may come twice after a crash)
    ///         Ok(())
    ///     }
    /// }
    /// granary_runtime::register_grain!(Invoice, handles = [Subscribe, Reminder]);
    /// ```
    pub async fn register_reminder(
        &self,
        name: impl Into<String>,
        due: Duration,
        period: Duration,
    ) -> Result<(), ReminderError>
    where
        G: RegisteredMessage<Reminder>,
    {
        let name = name.into();
        if name.is_empty() {
            return Err(ReminderError::EmptyName);
        }
        if period < MIN_REMINDER_PERIOD {
            return Err(ReminderError::PeriodTooShort {
                period,
                min: MIN_REMINDER_PERIOD,
            });
        }
        let register = ShardRegister {
            grain: self.id().clone(),
            name,
            due_ms: millis(due),
            period_ms: millis(period),
        };
        self.shard()
            .ask(register)
            .timeout(SHARD_CALL_TIMEOUT)
            .await?;
        Ok(())
    }

    /// Removes this grain's reminder `name`. Returns false if there was none. A tick
    /// already on its way may still arrive.
    pub async fn unregister_reminder(&self, name: &str) -> Result<bool, ReminderError> {
        let unregister = ShardUnregister {
            grain: self.id().clone(),
            name: name.to_owned(),
        };
        Ok(self
            .shard()
            .ask(unregister)
            .timeout(SHARD_CALL_TIMEOUT)
            .await?)
    }

    /// This grain's reminders, by name.
    pub async fn reminders(&self) -> Result<Vec<ReminderInfo>, ReminderError> {
        let list = ShardList {
            grain: self.id().clone(),
        };
        Ok(self.shard().ask(list).timeout(SHARD_CALL_TIMEOUT).await?)
    }

    fn shard(&self) -> crate::GrainRef<ReminderShard> {
        self.grain::<ReminderShard>(shard_key(shard_of(self.id())))
    }
}

/// A duration in whole milliseconds (saturating).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl fmt::Display for ReminderInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} every {:?}, next due at {} ms",
            self.name, self.period, self.next_due_unix_ms
        )
    }
}

#[cfg(test)]
mod tests;
