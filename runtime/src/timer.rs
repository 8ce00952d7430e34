//! Grain timers: a message a grain sends itself on a schedule, while it is active.
//!
//! A grain registers a timer with [`GrainContext::register_timer`]: after `due`, and then
//! every `period` (or once, with no period), the activation hands a clone of the timer's
//! message to the grain's own [`Handler`] for it. What Orleans promises, Granary does too:
//! - a tick is a **normal turn**: it never runs while a message is being handled (or
//!   another tick), and it sees and changes the grain's state like any handler;
//! - a timer lives in its activation: it **stops at deactivation** and is not
//!   persisted (use a reminder for work that must survive; see [`crate::reminder`]);
//! - a tick **does not keep the grain alive**: the idle timeout counts messages only,
//!   so a grain whose only activity is its timers deactivates on schedule (Orleans'
//!   timers behave the same way);
//! - ticks never queue up: after a turn that outlasted several periods the timer fires
//!   once, late, and then goes on at the next multiple of its period (the missed ticks
//!   are skipped);
//! - a due tick is taken before the next queued message, so a busy grain's timers are
//!   not starved;
//! - while the silo's hosting lease has lapsed (see [`crate::HostingLease`]), ticks are
//!   skipped (a one-shot timer retries every 100 ms), as no turn may run then.
//!
//! The tick's message need not be listed in `register_grain!` (it never crosses the
//! wire; nobody else can send it). The handler's reply is dropped; an error is logged.
//!
//! Accuracy: a tick starts within a millisecond or so of its time on an idle runtime
//! (tokio's timer wheel has 1 ms resolution), later if the grain is in a long turn.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use granary_proto::frame::TraceContext;
use granary_proto::CallError;
use tokio::time::{Instant, Sleep};
use tracing::Instrument;

use crate::activation::{handler_error, panic_message, Live, TurnFuture, TurnObserver};
use crate::envelope::ReplyValue;
use crate::grain::{Grain, GrainContext, Handler, Message};
use crate::lease::HostingLease;
use crate::trace::{SpanId, TraceId, TurnIds};

/// The shortest timer period; a shorter one is raised to it.
pub const MIN_TIMER_PERIOD: Duration = Duration::from_millis(1);

/// How soon a one-shot tick that fell while the hosting lease had lapsed is tried again.
const LEASE_RETRY: Duration = Duration::from_millis(100);

/// The name a timer turn has in the [`TurnObserver`] (the per-type metrics).
pub const TIMER_TURN: &str = "(timer)";

/// Starts the turn of one tick: clones the message of type `M` out of the `Arc` and
/// runs `G`'s handler for it in the slot.
type StartFn<G> =
    fn(&mut TurnFuture<G>, Box<Live<G>>, Arc<dyn Any + Send + Sync>, TraceContext, tracing::Span);

/// The timers of one activation (kept boxed in its context, only once one is
/// registered, so grains without timers pay one word).
pub(crate) struct Timers<G: Grain> {
    /// Registered timers, in registration order (few per grain: searched linearly).
    entries: Vec<Entry<G>>,
    /// Something changed since the turn loop last aimed its alarm.
    changed: bool,
    /// Distinguishes a timer from a later one registered under the same name.
    next_id: u64,
}

/// One registered timer.
struct Entry<G: Grain> {
    /// Unique within the activation.
    id: u64,
    /// The name it was registered under (registering the name again replaces it).
    name: String,
    /// When it is next due.
    next: Instant,
    /// `None`: fires once.
    period: Option<Duration>,
    /// The message each tick hands to the handler (cloned per tick).
    message: Arc<dyn Any + Send + Sync>,
    /// Runs the handler of the message's type.
    start: StartFn<G>,
}

impl<G: Grain> Default for Timers<G> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            changed: false,
            next_id: 0,
        }
    }
}

impl<G: Grain> fmt::Debug for Timers<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| (&e.name, e.next, e.period)))
            .finish()
    }
}

/// A tick taken from [`Timers`], about to run.
struct Tick<G: Grain> {
    id: u64,
    name: String,
    scheduled: Instant,
    message: Arc<dyn Any + Send + Sync>,
    start: StartFn<G>,
}

impl<G: Grain> Timers<G> {
    fn insert(&mut self, mut entry: Entry<G>) {
        entry.id = self.next_id;
        self.next_id += 1;
        self.entries.retain(|e| e.name != entry.name);
        self.entries.push(entry);
        self.changed = true;
    }

    fn remove(&mut self, name: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.name != name);
        self.changed = true;
        self.entries.len() != before
    }

    /// When the earliest timer is due.
    fn next_due(&self) -> Option<Instant> {
        self.entries.iter().map(|e| e.next).min()
    }

    /// The earliest timer due at `now`: a one-shot leaves the table, a periodic one stays
    /// until [`Self::after_tick`] moves it on.
    fn take_due(&mut self, now: Instant) -> Option<Tick<G>> {
        let (index, _) = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.next <= now)
            .min_by_key(|(_, e)| e.next)?;
        let entry = &self.entries[index];
        let tick = Tick {
            id: entry.id,
            name: entry.name.clone(),
            scheduled: entry.next,
            message: entry.message.clone(),
            start: entry.start,
        };
        if entry.period.is_none() {
            self.entries.remove(index);
        }
        Some(tick)
    }

    /// Moves a periodic timer on after its tick scheduled at `scheduled` (unless the
    /// tick's own turn unregistered or replaced it): to the next multiple of its period
    /// that is still ahead, so missed ticks are skipped, never queued.
    fn after_tick(&mut self, id: u64, scheduled: Instant, now: Instant) {
        self.changed = true;
        let Some(entry) = self.entries.iter_mut().find(|e| e.id == id) else {
            return;
        };
        let Some(period) = entry.period else { return };
        entry.next = next_after(scheduled, period, now);
    }

    /// A tick that could not run (the lease had lapsed): a periodic timer waits for its
    /// next period, a one-shot one (already taken out) is put back to be tried again soon.
    fn put_back(&mut self, tick: Tick<G>, now: Instant) {
        self.changed = true;
        if let Some(entry) = self.entries.iter_mut().find(|e| e.id == tick.id) {
            if let Some(period) = entry.period {
                entry.next = next_after(tick.scheduled, period, now);
            }
            return;
        }
        if self.entries.iter().any(|e| e.name == tick.name) {
            return;
        }
        self.entries.push(Entry {
            id: tick.id,
            name: tick.name,
            next: now + LEASE_RETRY,
            period: None,
            message: tick.message,
            start: tick.start,
        });
    }
}

/// The first `scheduled + k·period` (k ≥ 1) later than `now`.
fn next_after(scheduled: Instant, period: Duration, now: Instant) -> Instant {
    let next = scheduled + period;
    if next > now {
        return next;
    }
    let behind = now.duration_since(next).as_nanos();
    let period_ns = period.as_nanos().max(1);
    let skipped = behind / period_ns + 1;
    let skip = Duration::from_nanos(u64::try_from(skipped * period_ns).unwrap_or(u64::MAX));
    next + skip
}

impl<G: Grain> GrainContext<G> {
    /// Registers (or replaces) the timer `name`: after `due`, and then every `period`
    /// (`None`: only once), `message` is handed to this grain's [`Handler<M>`] in a turn
    /// of its own. See [`crate::timer`] for what a timer guarantees: ticks never overlap
    /// messages, stop at deactivation, and do not keep the grain alive.
    ///
    /// ```
    /// # use granary_runtime::prelude::*;
    /// # use std::time::Duration;
    /// # #[derive(Clone, serde::Serialize, serde::Deserialize)] struct Flush;
    /// # struct Buffer;
    /// # #[async_trait] impl Grain for Buffer { const TYPE_NAME: &'static str = "doc.buffer/v1"; type State = ();
    /// async fn on_activate(ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
    ///     // Every 5 s while active, starting in 5 s.
    ///     let every = Duration::from_secs(5);
    ///     ctx.register_timer("flush", every, Some(every), Flush);
    ///     Ok(Buffer)
    /// }
    /// # }
    /// # #[async_trait] impl Handler<Flush> for Buffer { type Reply = ();
    /// #   async fn handle(&mut self, _: Flush, _: &mut GrainContext<Self>) -> Result<(), GrainError> { Ok(()) } }
    /// ```
    pub fn register_timer<M>(
        &mut self,
        name: impl Into<String>,
        due: Duration,
        period: Option<Duration>,
        message: M,
    ) where
        G: Handler<M>,
        M: Message + Clone + Sync,
    {
        let timers = self.timers.get_or_insert_with(Box::default);
        timers.insert(Entry {
            id: 0,
            name: name.into(),
            next: Instant::now() + due,
            period: period.map(|p| p.max(MIN_TIMER_PERIOD)),
            message: Arc::new(message),
            start: start_tick::<G, M>,
        });
    }

    /// Stops the timer `name`. False if there was none. A tick already running finishes.
    pub fn unregister_timer(&mut self, name: &str) -> bool {
        self.timers.as_mut().is_some_and(|t| t.remove(name))
    }

    /// The names of this activation's timers, in registration order.
    pub fn timer_names(&self) -> Vec<&str> {
        self.timers
            .as_ref()
            .map(|t| t.entries.iter().map(|e| e.name.as_str()).collect())
            .unwrap_or_default()
    }
}

fn start_tick<G: Handler<M>, M: Message + Clone + Sync>(
    slot: &mut TurnFuture<G>,
    mut live: Box<Live<G>>,
    message: Arc<dyn Any + Send + Sync>,
    trace: TraceContext,
    span: tracing::Span,
) {
    slot.set(
        crate::trace::scoped(trace, async move {
            let msg = message
                .downcast_ref::<M>()
                .expect("a timer keeps the message type it was registered with")
                .clone();
            drop(message);
            let Live { grain, ctx } = &mut *live;
            let result = grain
                .handle(msg, ctx)
                .await
                .map(|_| ReplyValue::None)
                .map_err(handler_error);
            (live, result)
        })
        .instrument(span),
    );
}

/// The turn loop's alarm for the earliest timer of its grain: no allocation and never
/// ready while the grain has no timer.
#[derive(Default)]
pub(crate) struct TimerAlarm {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl fmt::Debug for TimerAlarm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.sleep.as_ref().map(|s| s.deadline());
        f.debug_struct("TimerAlarm").field("at", &at).finish()
    }
}

impl TimerAlarm {
    /// Re-aims the alarm if the grain's timers changed since the last call (cheap when
    /// they did not: the turn loop calls it after every turn).
    pub(crate) fn update<G: Grain>(&mut self, ctx: &mut GrainContext<G>) {
        let Some(timers) = ctx.timers.as_deref_mut() else {
            return;
        };
        if !std::mem::take(&mut timers.changed) {
            return;
        }
        match (timers.next_due(), &mut self.sleep) {
            (None, _) => self.sleep = None,
            (Some(at), Some(sleep)) => sleep.as_mut().reset(at),
            (Some(at), None) => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
        }
    }

    /// Resolves when the earliest timer is due (never, without timers).
    pub(crate) fn ring(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| match &mut self.sleep {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => std::task::Poll::Pending,
        })
    }
}

/// Runs the due tick of `live` as a turn in `slot`. Returns the grain, or `None` if the
/// handler panicked (the grain then goes down, as after a panicking message).
pub(crate) async fn fire<G: Grain>(
    mut live: Box<Live<G>>,
    slot: &mut TurnFuture<G>,
    lease: &HostingLease,
    observer: &dyn TurnObserver,
) -> Option<Box<Live<G>>> {
    let now = Instant::now();
    let Some(timers) = live.ctx.timers.as_deref_mut() else {
        return Some(live);
    };
    timers.changed = true;
    let Some(tick) = timers.take_due(now) else {
        return Some(live);
    };
    if !lease.is_valid() {
        tracing::debug!(grain_type = G::TYPE_NAME, timer = %tick.name, "timer tick skipped: the hosting lease has lapsed");
        timers.put_back(tick, now);
        return Some(live);
    }
    let Tick {
        id,
        name,
        scheduled,
        message,
        start,
    } = tick;
    let ids = TurnIds::new(None);
    let span = tracing::debug_span!(
        target: "granary_runtime::trace",
        parent: None,
        "grain_call",
        grain_type = G::TYPE_NAME,
        key = %live.ctx.key(),
        message = TIMER_TURN,
        timer = %name,
        trace_id = %TraceId(ids.trace_id),
        span_id = %SpanId(ids.span_id),
    );
    start(slot, live, message, ids.for_children(), span);
    let started = Instant::now();
    let outcome = AssertUnwindSafe(std::future::poll_fn(|cx| slot.poll(cx)))
        .catch_unwind()
        .await;
    // The turn box is not kept for ticks: they are rare next to messages.
    let finished = match outcome {
        Ok((live, result)) => Ok((live, result)),
        Err(panic) => Err(panic_message(&*panic)),
    };
    slot.set(std::future::pending());
    match finished {
        Ok((mut live, result)) => {
            observer.turn(TIMER_TURN, started.elapsed(), result.as_ref().err());
            if let Err(e) = &result {
                tracing::warn!(grain = %live.ctx.id(), timer = %name, error = %e, "timer tick failed");
            }
            if let Some(timers) = live.ctx.timers.as_deref_mut() {
                timers.after_tick(id, scheduled, Instant::now());
            }
            Some(live)
        }
        Err(msg) => {
            tracing::error!(grain_type = G::TYPE_NAME, timer = %name, panic = %msg, "timer tick panicked; deactivating");
            observer.turn(
                TIMER_TURN,
                started.elapsed(),
                Some(&CallError::Panicked(msg)),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests;
