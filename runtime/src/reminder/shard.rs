//! [`ReminderShard`]: the system grain that keeps one shard of the cluster's reminders
//! and delivers their ticks.
//!
//! Its state is the shard's table: one row per (grain, reminder name) with the first
//! tick's time, the period and the time of the last tick delivered. A registration is
//! written before it is acknowledged. One timer (`fire`) is armed for the earliest due
//! tick; its turn delivers every due tick with a `tell` (concurrently, up to
//! [`DELIVERY_CONCURRENCY`] at once), records the delivered ones in one state write, and
//! arms the timer again. Ticks that could not be delivered are retried with a doubling
//! pause ([`RETRY_FIRST`] … [`RETRY_MAX`]), kept in memory only.

use std::any::TypeId;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use futures::StreamExt;
use granary_proto::{CallError, GrainId};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{shard_key, shard_of, Reminder, ReminderInfo, MIN_REMINDER_PERIOD, SHARD_TYPE};
use crate::envelope::{Body, Envelope, LocalValue, ReplyTo};
use crate::grain::{Grain, GrainContext, GrainError, Handler};
use crate::registry::registry;
use crate::router::Router;

/// Ticks delivered at once by one firing turn.
const DELIVERY_CONCURRENCY: usize = 64;
/// How long one delivery may wait (for the grain's placement, activation, mailbox room).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// First pause before a failed delivery is tried again; it doubles up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(500);
/// Longest pause between attempts to deliver a tick.
const RETRY_MAX: Duration = Duration::from_secs(10);
/// The shard's timer.
const FIRE: &str = "fire";

/// A row's key: grain type, grain key, reminder name.
type RowKey = (String, String, String);

/// One shard of the cluster's reminders (type [`SHARD_TYPE`], keys `"00"` … `"15"`).
/// Grains reach it through [`GrainContext::register_reminder`] and its siblings; the
/// acting master's silo wakes it with [`ShardWake`].
#[derive(Debug)]
pub struct ReminderShard {
    /// Wall-clock milliseconds, measured from the activation on the monotonic clock.
    clock: ShardClock,
    /// Rows whose last delivery failed: when to try again, and the pause after that.
    backoff: HashMap<RowKey, (u64, Duration)>,
}

/// The shard's stored table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardTable {
    rows: BTreeMap<RowKey, Row>,
}

impl ShardTable {
    /// Adds (or replaces) `grain`'s reminder `name`, first due at `first_due_unix_ms`,
    /// then every `period` (for tools and tests; grains use
    /// [`GrainContext::register_reminder`]).
    pub fn insert(
        &mut self,
        grain: &GrainId,
        name: &str,
        first_due_unix_ms: u64,
        period: Duration,
    ) {
        let row = Row {
            start_ms: first_due_unix_ms,
            period_ms: millis(period).max(1),
            last_ms: None,
        };
        self.rows.insert(row_key(grain, name.to_owned()), row);
    }

    /// How many reminders the table holds.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when it holds none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

/// One reminder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Row {
    /// When the first tick is due (Unix ms).
    start_ms: u64,
    /// The period, in ms (at least 1).
    period_ms: u64,
    /// When the last delivered tick was due (`None`: none delivered).
    last_ms: Option<u64>,
}

impl Row {
    /// The tick to deliver at `now`, if one is due: the latest tick time not after `now`
    /// that was not delivered, and how many earlier undelivered ticks it stands for.
    fn due(&self, now: u64) -> Option<(u64, u64)> {
        if now < self.start_ms {
            return None;
        }
        let k = (now - self.start_ms) / self.period_ms;
        let tick = self.start_ms + k * self.period_ms;
        match self.last_ms {
            Some(last) if last >= tick => None,
            Some(last) if last >= self.start_ms => Some((tick, (tick - last) / self.period_ms - 1)),
            _ => Some((tick, k)),
        }
    }

    /// When this row next wants a delivery: `now` if a tick is due, else its next tick.
    fn next_tick(&self, now: u64) -> u64 {
        if self.due(now).is_some() {
            return now;
        }
        if now < self.start_ms {
            return self.start_ms;
        }
        let k = (now - self.start_ms) / self.period_ms;
        self.start_ms + (k + 1) * self.period_ms
    }
}

/// Wall-clock time in ms, read once at activation and advanced by the monotonic clock
/// (so a shard keeps time with its timers, also on a test's paused clock).
#[derive(Debug)]
struct ShardClock {
    wall_ms: u64,
    at: Instant,
}

impl ShardClock {
    fn new() -> Self {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Self {
            wall_ms,
            at: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        let elapsed = u64::try_from(self.at.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.wall_ms.saturating_add(elapsed)
    }
}

/// Adds or replaces a reminder (sent by [`GrainContext::register_reminder`]). Answered
/// once the table is written.
#[derive(Debug, Serialize, Deserialize)]
pub struct ShardRegister {
    /// The grain reminded.
    pub grain: GrainId,
    /// The reminder's name.
    pub name: String,
    /// Milliseconds until the first tick.
    pub due_ms: u64,
    /// Milliseconds between ticks.
    pub period_ms: u64,
}

/// Removes a reminder; answers whether there was one.
#[derive(Debug, Serialize, Deserialize)]
pub struct ShardUnregister {
    /// The grain reminded.
    pub grain: GrainId,
    /// The reminder's name.
    pub name: String,
}

/// Lists a grain's reminders.
#[derive(Debug, Serialize, Deserialize)]
pub struct ShardList {
    /// The grain.
    pub grain: GrainId,
}

/// Keeps the shard active (asked every second by the acting master's silo of each shard
/// with a stored table). Answers whether the shard still holds reminders; one that holds
/// none deactivates.
#[derive(Debug, Serialize, Deserialize)]
pub struct ShardWake;

/// The shard's own timer message: deliver what is due.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Fire;

impl ReminderShard {
    /// Aims the `fire` timer at the earliest tick to deliver (or removes it).
    fn arm(&self, ctx: &mut GrainContext<Self>) {
        let now = self.clock.now_ms();
        let next = ctx
            .state()
            .rows
            .iter()
            .map(|(key, row)| {
                let at = row.next_tick(now);
                match self.backoff.get(key) {
                    Some((retry, _)) if at <= now => (*retry).max(now),
                    _ => at,
                }
            })
            .min();
        match next {
            Some(at) => {
                let due = Duration::from_millis(at.saturating_sub(now));
                ctx.register_timer(FIRE, due, None, Fire);
            }
            None => {
                ctx.unregister_timer(FIRE);
            }
        }
    }

    /// Whether `key`'s delivery waits for a retry at `now`.
    fn backing_off(&self, key: &RowKey, now: u64) -> bool {
        self.backoff.get(key).is_some_and(|(retry, _)| *retry > now)
    }

    fn failed(&mut self, key: RowKey, now: u64, err: &CallError) {
        let pause = self
            .backoff
            .get(&key)
            .map_or(RETRY_FIRST, |(_, pause)| (*pause * 2).min(RETRY_MAX));
        tracing::warn!(
            grain = %format_args!("{}/{}", key.0, key.1),
            reminder = %key.2,
            error = %err,
            retry_in = ?pause,
            "a reminder tick could not be delivered; trying again"
        );
        self.backoff.insert(key, (now + millis(pause), pause));
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[async_trait]
impl Grain for ReminderShard {
    const TYPE_NAME: &'static str = SHARD_TYPE;
    type State = ShardTable;

    async fn on_activate(ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        let shard = ReminderShard {
            clock: ShardClock::new(),
            backoff: HashMap::new(),
        };
        let rows = ctx.state().rows.len();
        if rows > 0 {
            tracing::info!(shard = %ctx.key(), reminders = rows, "reminder shard activated");
        }
        shard.arm(ctx);
        Ok(shard)
    }
}

/// A stored key from a grain id and a reminder name.
fn row_key(grain: &GrainId, name: String) -> RowKey {
    (grain.type_name.to_string(), grain.key.to_string(), name)
}

/// Refuses a request for a grain that hashes to another shard.
fn check_shard(ctx: &GrainContext<ReminderShard>, grain: &GrainId) -> Result<(), GrainError> {
    if shard_key(shard_of(grain)) == ctx.key() {
        Ok(())
    } else {
        Err(format!(
            "the reminders of {grain} are not kept by shard {}",
            ctx.key()
        )
        .into())
    }
}

#[async_trait]
impl Handler<ShardRegister> for ReminderShard {
    type Reply = ();
    async fn handle(
        &mut self,
        m: ShardRegister,
        ctx: &mut GrainContext<Self>,
    ) -> Result<(), GrainError> {
        check_shard(ctx, &m.grain)?;
        if m.period_ms < millis(MIN_REMINDER_PERIOD) {
            return Err(
                format!("a reminder period must be at least {MIN_REMINDER_PERIOD:?}").into(),
            );
        }
        let key = row_key(&m.grain, m.name);
        let row = Row {
            start_ms: self.clock.now_ms().saturating_add(m.due_ms),
            period_ms: m.period_ms,
            last_ms: None,
        };
        ctx.state_mut().rows.insert(key.clone(), row);
        self.backoff.remove(&key);
        let written = ctx.write_state().await;
        self.arm(ctx);
        Ok(written?)
    }
}

#[async_trait]
impl Handler<ShardUnregister> for ReminderShard {
    type Reply = bool;
    async fn handle(
        &mut self,
        m: ShardUnregister,
        ctx: &mut GrainContext<Self>,
    ) -> Result<bool, GrainError> {
        check_shard(ctx, &m.grain)?;
        let key = row_key(&m.grain, m.name);
        if !ctx.state().rows.contains_key(&key) {
            return Ok(false);
        }
        ctx.state_mut().rows.remove(&key);
        self.backoff.remove(&key);
        let written = if ctx.state().rows.is_empty() {
            // An empty shard keeps no record, so the keeper stops waking it.
            ctx.deactivate_on_idle();
            ctx.clear_state().await
        } else {
            ctx.write_state().await
        };
        self.arm(ctx);
        written?;
        Ok(true)
    }
}

#[async_trait]
impl Handler<ShardList> for ReminderShard {
    type Reply = Vec<ReminderInfo>;
    async fn handle(
        &mut self,
        m: ShardList,
        ctx: &mut GrainContext<Self>,
    ) -> Result<Vec<ReminderInfo>, GrainError> {
        let now = self.clock.now_ms();
        let (type_name, key) = (m.grain.type_name.as_ref(), m.grain.key.as_ref());
        Ok(ctx
            .state()
            .rows
            .iter()
            .filter(|((t, k, _), _)| t == type_name && k == key)
            .map(|((_, _, name), row)| ReminderInfo {
                name: name.clone(),
                period: Duration::from_millis(row.period_ms),
                next_due_unix_ms: row.next_tick(now),
                last_delivered_unix_ms: row.last_ms,
            })
            .collect())
    }
}

#[async_trait]
impl Handler<ShardWake> for ReminderShard {
    type Reply = bool;
    async fn handle(
        &mut self,
        _: ShardWake,
        ctx: &mut GrainContext<Self>,
    ) -> Result<bool, GrainError> {
        let holds = !ctx.state().rows.is_empty();
        if !holds {
            ctx.deactivate_on_idle();
        }
        Ok(holds)
    }
}

#[async_trait]
impl Handler<Fire> for ReminderShard {
    type Reply = ();
    async fn handle(&mut self, _: Fire, ctx: &mut GrainContext<Self>) -> Result<(), GrainError> {
        let now = self.clock.now_ms();
        let due: Vec<(RowKey, Reminder)> = ctx
            .state()
            .rows
            .iter()
            .filter(|(key, _)| !self.backing_off(key, now))
            .filter_map(|(key, row)| {
                let (tick, missed) = row.due(now)?;
                let reminder = Reminder {
                    name: key.2.clone(),
                    due_unix_ms: tick,
                    period: Duration::from_millis(row.period_ms),
                    missed,
                };
                Some((key.clone(), reminder))
            })
            .collect();
        if !due.is_empty() {
            let router = ctx.router.clone();
            let results: Vec<_> = futures::stream::iter(due)
                .map(|(key, reminder)| {
                    let router = router.clone();
                    async move {
                        let tick = reminder.due_unix_ms;
                        let outcome = deliver(&router, &key, reminder).await;
                        (key, tick, outcome)
                    }
                })
                .buffer_unordered(DELIVERY_CONCURRENCY)
                .collect()
                .await;
            let mut delivered = 0usize;
            for (key, tick, outcome) in results {
                match outcome {
                    Ok(()) => {
                        self.backoff.remove(&key);
                        if let Some(row) = ctx.state_mut().rows.get_mut(&key) {
                            row.last_ms = Some(tick);
                            delivered += 1;
                        }
                    }
                    Err(err) => self.failed(key, now, &err),
                }
            }
            if delivered > 0 {
                if let Err(err) = ctx.write_state().await {
                    tracing::warn!(shard = %ctx.key(), error = %err, "delivered reminder ticks could not be recorded; they may be delivered again");
                }
            }
        }
        self.arm(ctx);
        Ok(())
    }
}

/// Puts one tick in its grain's mailbox (activating the grain where the directory places
/// it). `Ok` once it is there.
async fn deliver(
    router: &Arc<dyn Router>,
    key: &RowKey,
    reminder: Reminder,
) -> Result<(), CallError> {
    let entry = registry()
        .get(&key.0)
        .ok_or_else(|| CallError::UnknownGrainType(key.0.clone()))?;
    let vtable = entry
        .messages
        .iter()
        .find(|vt| (vt.message_type_id)() == TypeId::of::<Reminder>())
        .ok_or_else(|| CallError::UnknownMessage {
            grain_type: key.0.clone(),
            message: "Reminder".into(),
        })?;
    let envelope = Envelope {
        target: GrainId::new(entry.type_name, key.1.as_str()),
        body: Body::Local {
            value: LocalValue::new(reminder),
            vtable,
        },
        reply: ReplyTo::None,
        hops: 0,
        trace: crate::trace::current(),
        copy: crate::envelope::CopyHint::default(),
        deadline: None,
    };
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    match router.try_deliver(envelope)? {
        None => Ok(()),
        Some(envelope) => router.deliver(envelope, deadline).await,
    }
}

crate::register_grain!(
    ReminderShard,
    handles = [
        ShardRegister as "register",
        ShardUnregister as "unregister",
        ShardList as "list",
        ShardWake as "wake",
    ]
);

#[cfg(test)]
mod tests;
