//! The turn loop of one activation: the task that owns a grain instance.
//!
//! This is host-facing API (silos use it; grain authors never do). A host creates the
//! mailbox, calls the grain type's `spawn` with [`ActivationArgs`], and the loop below:
//! loads state, runs `on_activate`, then handles one message at a time until it is idle
//! for `idle_timeout`, asked to stop, asked to deactivate, or a handler panics. On the
//! way out it runs `on_deactivate`, writes dirty state, and hands the mailbox back to the
//! host through [`ActivationHost::retire`] so queued messages reach the next activation.
//!
//! Timer ticks (see [`crate::timer`]) are turns of the same loop.
//!
//! A copy of a read-replicated grain runs the same loop (see `replica`): a primary
//! writes changed state through after each turn and publishes it; a replica starts from
//! its primary's state, takes its newest snapshot before each turn, and sends on what
//! it may not serve (a write, or anything once its lease has run out).
//!
//! ```text
//! activate ── load state ── on_activate ──┬─► turn ─► turn ─► … (one at a time)
//!                                         └─ idle / stop / deactivate / panic
//!                                                 └─► on_deactivate ─► write ─► retire
//! ```

use std::any::Any;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::FutureExt;
use granary_proto::frame::TraceContext;
use granary_proto::{codec, CallError, GrainId};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, ReusableBoxFuture};
use tracing::Instrument;

use crate::cancellation::TurnScope;
use crate::envelope::{Body, Envelope, LocalValue, ReplyKind, ReplyShape, ReplyTo, ReplyValue};
use crate::grain::{Grain, GrainContext, GrainError, Handler, Message, ReadHandler};
use crate::lease::HostingLease;
use crate::replication::CopyLink;
use crate::router::Router;
use crate::storage::{GrainStorage, StorageError};
use crate::timer::{self, TimerAlarm};
use crate::trace::{SpanId, TraceId, TurnIds};

/// The receiving end of an activation's mailbox. Envelopes are boxed so an empty
/// mailbox stays small (a channel allocates its first block of slots up front).
pub type Mailbox = mpsc::Receiver<Box<Envelope>>;

/// The sending end of an activation's mailbox.
pub type MailboxSender = mpsc::Sender<Box<Envelope>>;

/// What the host gives a new activation.
pub struct ActivationArgs {
    /// The grain to activate.
    pub id: GrainId,
    /// Host-assigned id of this activation (distinguishes successive activations).
    pub activation_id: u64,
    /// The receiving end of the grain's bounded mailbox.
    pub mailbox: Mailbox,
    /// The state provider.
    pub storage: Arc<dyn GrainStorage>,
    /// How the grain reaches other grains.
    pub router: Arc<dyn Router>,
    /// The host, which owns the task and takes the mailbox back at the end.
    pub host: Arc<dyn ActivationHost>,
    /// Deactivate after this long without messages.
    pub idle_timeout: Duration,
    /// Cancelled when the host wants the activation gone (shutdown, fencing).
    pub stop: CancellationToken,
    /// Counters the host reads for placement and replication decisions.
    pub stats: Arc<ActivationStats>,
    /// Sees every turn (the host's per-type metrics).
    pub observer: Arc<dyn TurnObserver>,
    /// The silo's right to run turns and write state (see [`HostingLease`]).
    pub lease: Arc<HostingLease>,
    /// For a copy of a read-replicated grain: its role and channel to the others
    /// (`None` for every other activation; boxed, so they pay one word for it).
    pub copy: Option<Box<CopyLink>>,
}

/// Sees every message an activation handles: which one, how long the handler took and
/// how it ended. The host implements it for its metrics; it runs on the turn's task, so
/// it must be cheap and never block.
pub trait TurnObserver: Send + Sync + 'static {
    /// One message was handled. `message` is its wire name; `failed` is the error the
    /// call ended with (the handler's own error, a storage error, a panic), if any.
    fn turn(&self, message: &'static str, elapsed: Duration, failed: Option<&CallError>);
}

/// A [`TurnObserver`] that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl TurnObserver for NoObserver {
    fn turn(&self, _message: &'static str, _elapsed: Duration, _failed: Option<&CallError>) {}
}

impl fmt::Debug for ActivationArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActivationArgs")
            .field("id", &self.id)
            .field("activation_id", &self.activation_id)
            .field("idle_timeout", &self.idle_timeout)
            .field("copy", &self.copy)
            .finish_non_exhaustive()
    }
}

/// What happens to messages still queued when an activation ends.
#[derive(Debug, Clone)]
pub enum Leftovers {
    /// Hand them to a fresh activation (normal deactivation).
    Redeliver,
    /// Fail them with this error (the activation could not start).
    Fail(CallError),
}

/// The host side of an activation.
pub trait ActivationHost: Send + Sync + 'static {
    /// Runs the activation's task; the host tracks it so shutdown can wait for it.
    fn spawn(&self, task: BoxFuture<'static, ()>);

    /// Called after the final state write and before [`ActivationHost::retire`]: a
    /// clustered host removes the grain's directory entry here, while messages still
    /// queue in this activation's mailbox (they are handed on by `retire`).
    fn release(&self, _id: &GrainId) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }

    /// Called once, when the activation is done. The host removes activation
    /// `activation_id` of `id` from its table and closes `mailbox`, then deals with what
    /// is still queued as `leftovers` says (or fails it if the host is shutting down).
    /// Messages racing in after this are received by the activation and re-delivered
    /// through its router.
    fn retire(&self, id: &GrainId, activation_id: u64, mailbox: &mut Mailbox, leftovers: Leftovers);
}

/// What an activation's task and its host share: live counters written by the task and
/// read by the host, and the host's request to discard the activation.
#[derive(Debug)]
pub struct ActivationStats {
    /// Set by the host before it stops the activation: end without `on_deactivate` and
    /// without writing state (another activation may own the grain now).
    discard: AtomicBool,
    /// When the activation was created (base of the millisecond fields).
    created: Instant,
    /// Messages handled so far.
    messages: AtomicU64,
    /// Milliseconds after `created` of the last handled message.
    last_active_ms: AtomicU64,
    /// Messages per second over the last completed window, as `f64` bits.
    rate_bits: AtomicU64,
    /// Time spent in handlers so far, in microseconds.
    busy_us: AtomicU64,
}

/// How long a message-rate window lasts.
const RATE_WINDOW: Duration = Duration::from_secs(1);

impl Default for ActivationStats {
    fn default() -> Self {
        Self::new()
    }
}

impl ActivationStats {
    /// Fresh counters, created now.
    pub fn new() -> Self {
        Self {
            discard: AtomicBool::new(false),
            created: Instant::now(),
            messages: AtomicU64::new(0),
            last_active_ms: AtomicU64::new(0),
            rate_bits: AtomicU64::new(0f64.to_bits()),
            busy_us: AtomicU64::new(0),
        }
    }

    /// Time spent in handlers so far (for hotness: busy time per interval).
    pub fn busy(&self) -> Duration {
        Duration::from_micros(self.busy_us.load(Ordering::Relaxed))
    }

    /// Messages handled so far.
    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    /// When the activation last handled a message (or was created).
    pub fn last_active(&self) -> Instant {
        self.created + Duration::from_millis(self.last_active_ms.load(Ordering::Relaxed))
    }

    /// Asks the activation to end without `on_deactivate` and without writing its state
    /// when it is next stopped (the host then cancels its stop token).
    pub fn discard(&self) {
        self.discard.store(true, Ordering::Release);
    }

    /// True once [`Self::discard`] was called.
    pub fn discarded(&self) -> bool {
        self.discard.load(Ordering::Acquire)
    }

    /// Messages per second over the last one-second window.
    pub fn message_rate(&self) -> f64 {
        f64::from_bits(self.rate_bits.load(Ordering::Relaxed))
    }

    fn record_turn(&self, now: Instant, window: &mut (Instant, u64), busy: Duration) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        let busy_us = u64::try_from(busy.as_micros()).unwrap_or(u64::MAX);
        self.busy_us.fetch_add(busy_us, Ordering::Relaxed);
        let ms = now.saturating_duration_since(self.created).as_millis() as u64;
        self.last_active_ms.store(ms, Ordering::Relaxed);
        window.1 += 1;
        let elapsed = now.saturating_duration_since(window.0);
        if elapsed >= RATE_WINDOW {
            let rate = window.1 as f64 / elapsed.as_secs_f64();
            self.rate_bits.store(rate.to_bits(), Ordering::Relaxed);
            *window = (now, 0);
        }
    }
}

/// Why the turn loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exit {
    Idle,
    Stop,
    Requested,
    Panicked,
}

/// The grain instance and its context: owned by the turn loop between turns, moved into
/// each turn's future and handed back by it, so that future borrows nothing and its
/// allocation can be reused from one turn to the next (see [`TurnFuture`]).
pub struct Live<G: Grain> {
    pub(crate) grain: G,
    pub(crate) ctx: GrainContext<G>,
}

impl<G: Grain> fmt::Debug for Live<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Live")
            .field("ctx", &self.ctx)
            .finish_non_exhaustive()
    }
}

/// What a turn's future returns: the grain back, and the call's result.
pub type TurnOutput<G> = (Box<Live<G>>, Result<ReplyValue, CallError>);

/// The box an activation runs its turns in. A turn of the same message type as the
/// last one reuses the allocation (same future layout), so a busy grain allocates no
/// future of its own per message.
pub type TurnFuture<G> = ReusableBoxFuture<'static, TurnOutput<G>>;

/// Starts one message on a grain: stores into `slot` the future that decodes or
/// unboxes it, calls the handler and shapes the reply (or streams its items).
///
/// The handler runs inside `span` with `scope` (trace context, cancellation, deadline)
/// inherited by the calls it makes; both live in the turn's future, so an idle
/// activation's task stays small.
pub type HandleFn<G> =
    fn(&mut TurnFuture<G>, Box<Live<G>>, Body, ReplyShape, TurnScope, tracing::Span);

/// One row of a grain type's handler table.
pub struct HandlerEntry<G: Grain> {
    /// The message's wire name.
    pub message: &'static str,
    /// Its handler.
    pub handle: HandleFn<G>,
    /// The handler only reads (a [`ReadHandler`]): a read replica may run it.
    pub read: bool,
}

impl<G: Grain> HandlerEntry<G> {
    /// The row for `M`, named `message` on the wire.
    pub const fn new<M: Message>(message: &'static str) -> Self
    where
        G: Handler<M>,
    {
        Self {
            message,
            handle: handle_message::<G, M>,
            read: false,
        }
    }

    /// The row for the read-only message `M`.
    pub const fn new_read<M: Message>(message: &'static str) -> Self
    where
        G: ReadHandler<M>,
    {
        Self {
            message,
            handle: handle_message::<G, M>,
            read: true,
        }
    }

    /// The row for `M` answered with a stream of replies, named `message` on the wire.
    pub const fn stream<M: Message>(message: &'static str) -> Self
    where
        G: crate::streaming::StreamHandler<M>,
    {
        Self {
            message,
            handle: crate::streaming::handle_stream_message::<G, M>,
            read: false,
        }
    }
}

impl<G: Grain> fmt::Debug for HandlerEntry<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HandlerEntry({})", self.message)
    }
}

fn handle_message<G: Handler<M>, M: Message>(
    slot: &mut TurnFuture<G>,
    mut live: Box<Live<G>>,
    body: Body,
    shape: ReplyShape,
    scope: TurnScope,
    span: tracing::Span,
) {
    slot.set(
        crate::cancellation::scoped(scope, async move {
            let result = call_handler::<G, M>(&mut live, body, shape).await;
            (live, result)
        })
        .instrument(span),
    );
}

async fn call_handler<G: Handler<M>, M: Message>(
    live: &mut Live<G>,
    body: Body,
    shape: ReplyShape,
) -> Result<ReplyValue, CallError> {
    let ReplyShape::One(kind) = shape else {
        return Err(CallError::Codec(format!(
            "`{}` answers with one reply: call it with `ask`, not `ask_stream`",
            std::any::type_name::<M>()
        )));
    };
    let msg: M = decode_message(body)?;
    let Live { grain, ctx } = live;
    let reply = grain.handle(msg, ctx).await.map_err(handler_error)?;
    match kind {
        ReplyKind::None => Ok(ReplyValue::None),
        ReplyKind::Local => Ok(ReplyValue::Local(LocalValue::new(reply))),
        ReplyKind::Encoded => codec::encode(&reply)
            .map(ReplyValue::Encoded)
            .map_err(|e| CallError::Codec(e.to_string())),
        ReplyKind::Stream => Err(CallError::Codec("a stream's items were taken twice".into())),
    }
}

/// The message of a call, unboxed or decoded.
pub(crate) fn decode_message<M: Message>(body: Body) -> Result<M, CallError> {
    match body {
        Body::Local { value, .. } => value
            .downcast::<M>()
            .map_err(|_| CallError::Codec("message type mismatch".into())),
        Body::Encoded { bytes, .. } => {
            codec::decode(&bytes).map_err(|e| CallError::Codec(e.to_string()))
        }
    }
}

/// Maps a handler's error to the call error the caller sees.
///
/// A handler that returns [`CallError::Cancelled`] (a call it made was cancelled because
/// its own caller gave up, and it passed that on with `?`) ends as cancelled, not as a
/// handler failure. Other call errors a handler returns stay handler failures: passing,
/// say, a nested call's "not delivered" through would tell the caller that its own call
/// is safe to resend, after the handler may have acted.
pub(crate) fn handler_error(err: GrainError) -> CallError {
    if let Some(storage) = err.downcast_ref::<StorageError>() {
        return CallError::Storage(storage.to_string());
    }
    if let Some(CallError::Cancelled) = err.downcast_ref::<CallError>() {
        return CallError::Cancelled;
    }
    if let Some(stream) = err.downcast_ref::<crate::streaming::SendError>() {
        return stream.to_call_error();
    }
    CallError::Handler(err.to_string())
}

/// Starts the activation task for grain type `G` (called through the registry).
pub fn spawn_activation<G: Grain>(args: ActivationArgs, handlers: &'static [HandlerEntry<G>]) {
    let host = args.host.clone();
    host.spawn(Box::pin(run::<G>(args, handlers)));
}

/// How long an activation keeps its turn box (see [`TurnFuture`]) after its last
/// message: a busy grain reuses it, an idle one gives the memory back.
const TURN_BOX_KEPT: Duration = Duration::from_millis(100);

async fn run<G: Grain>(args: ActivationArgs, handlers: &'static [HandlerEntry<G>]) {
    let ActivationArgs {
        id,
        activation_id,
        mut mailbox,
        storage,
        router,
        host,
        idle_timeout,
        stop,
        stats,
        observer,
        lease,
        copy,
    } = args;
    // Activation and deactivation run once each: boxed, so their state does not enlarge
    // the task that every idle activation keeps.
    let ctx = GrainContext::<G>::new(id.clone(), storage, router.clone(), lease.clone());
    let (ctx, mut replica) = link(ctx, copy);
    let live = match Box::pin(activate(ctx, replica.as_deref_mut(), &stop)).await {
        Ok(live) => live,
        Err(err) => {
            tracing::warn!(grain = %id, error = %err, "activation failed");
            Box::pin(fail_activation(
                &*host,
                &id,
                activation_id,
                &mut mailbox,
                err,
            ))
            .await;
            return;
        }
    };
    tracing::trace!(grain = %id, "activated");
    // `None` only after a handler panicked (the grain went down with its turn).
    let mut live = Some(live);
    let mut slot: TurnFuture<G> = ReusableBoxFuture::new(std::future::pending());
    let mut slot_kept = false;

    let mut window = (Instant::now(), 0u64);
    let mut last_active = Instant::now();
    // Fires at the idle timeout, and earlier to free the turn box of a quiet grain.
    let idle = tokio::time::sleep(idle_timeout);
    tokio::pin!(idle);
    // Built once: re-creating `cancelled()` per turn costs several lock operations.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    // A message taken from the mailbox while the silo's lease had run out: it waits for
    // a renewal, and goes to the next activation if this one stops first.
    let mut held: Option<Box<Envelope>> = None;
    // Rings when the grain's earliest timer is due (see `crate::timer`).
    let mut alarm = TimerAlarm::default();
    if let Some(current) = live.as_mut() {
        alarm.update(&mut current.ctx);
    }
    let exit = loop {
        let exit = loop {
            tokio::select! {
                biased;
                () = &mut stopped => break Exit::Stop,
                // A tick is a turn like a message, taken first so a busy grain's timers
                // still run; it does not count as activity for the idle timeout.
                () = alarm.ring() => {
                    let taken = live.take().expect("the grain is live between turns");
                    live = timer::fire(taken, &mut slot, &lease, observer.as_ref()).await;
                    let Some(current) = live.as_mut() else {
                        break Exit::Panicked;
                    };
                    if current.ctx.is_primary() {
                        // A primary's tick is written through like a message's turn.
                        if let Err(e) = Box::pin(current.ctx.write_through()).await {
                            tracing::warn!(grain = %current.ctx.id(), error = %e, "write-through after a timer tick failed; dropping the unwritten state");
                        }
                    }
                    if current.ctx.is_unsettled() {
                        Box::pin(current.ctx.settle()).await;
                    }
                    alarm.update(&mut current.ctx);
                    if current.ctx.take_deactivate_request() {
                        break Exit::Requested;
                    }
                }
                next = mailbox.recv() => {
                    let Some(mut envelope) = next else { break Exit::Stop };
                    if !lease.is_valid() {
                        held = Some(envelope);
                        tokio::select! {
                            biased;
                            () = &mut stopped => break Exit::Stop,
                            () = lease.wait_valid() => {}
                        }
                        envelope = held.take().expect("held just above");
                    }
                    // Decided before the turn, so nothing of it is kept while it runs.
                    let current = live.as_mut().expect("the grain is live between turns");
                    let call = match admit(&mut current.ctx, handlers, envelope, replica.as_deref_mut()) {
                        Ok(call) => call,
                        Err(refused) => {
                            if let Refused::Bounced(envelope) = refused {
                                bounce(*envelope, &router, host.as_ref());
                            }
                            if current.ctx.take_deactivate_request() {
                                break Exit::Requested;
                            }
                            continue;
                        }
                    };
                    let taken = live.take().expect("the grain is live between turns");
                    let busy;
                    (live, busy) = turn(taken, &mut slot, call, observer.as_ref()).await;
                    last_active = Instant::now();
                    stats.record_turn(last_active, &mut window, busy);
                    let Some(current) = live.as_mut() else {
                        break Exit::Panicked;
                    };
                    if !slot_kept {
                        slot_kept = true;
                        idle.as_mut().reset((last_active + TURN_BOX_KEPT).min(last_active + idle_timeout));
                    }
                    if current.ctx.is_unsettled() {
                        // Before the next message may read the state (boxed: rare, and the
                        // task stays small).
                        Box::pin(current.ctx.settle()).await;
                    }
                    alarm.update(&mut current.ctx);
                    if current.ctx.take_deactivate_request() {
                        break Exit::Requested;
                    }
                }
                () = &mut idle => {
                    let now = Instant::now();
                    if slot_kept && now >= last_active + TURN_BOX_KEPT {
                        slot.set(std::future::pending());
                        slot_kept = false;
                    }
                    let due = last_active + idle_timeout;
                    if now >= due {
                        break Exit::Idle;
                    }
                    let next = if slot_kept { (last_active + TURN_BOX_KEPT).min(due) } else { due };
                    idle.as_mut().reset(next);
                }
            }
        };
        let Some(current) = live.as_deref_mut() else {
            break exit;
        };
        if exit == Exit::Stop && stats.discarded() {
            break exit;
        }
        if Box::pin(deactivate(current, exit, &id)).await {
            break exit;
        }
        // Keep the only copy of the state in memory rather than lose it; try again at
        // the next idle timeout.
        last_active = Instant::now();
        idle.as_mut().reset(last_active + idle_timeout);
    };
    tracing::trace!(grain = %id, reason = ?exit, "deactivated");

    host.release(&id).await;
    host.retire(&id, activation_id, &mut mailbox, Leftovers::Redeliver);
    // The message held for a lease renewal, and senders that raced the close: their
    // messages still go to the next activation (none of them ran here).
    if let Some(envelope) = held {
        let deadline = Instant::now() + crate::DEFAULT_CALL_TIMEOUT;
        let _ = router.deliver(*envelope, deadline).await;
    }
    while let Some(envelope) = mailbox.recv().await {
        let deadline = Instant::now() + crate::DEFAULT_CALL_TIMEOUT;
        let _ = router.deliver(*envelope, deadline).await;
    }
}

/// Loads the state (a replica: waits for its primary's) and runs `on_activate`: the live
/// grain, or why it could not start.
async fn activate<G: Grain>(
    mut ctx: GrainContext<G>,
    replica: Option<&mut ReplicaLink>,
    stop: &CancellationToken,
) -> Result<Box<Live<G>>, CallError> {
    let activated = AssertUnwindSafe(async {
        match replica {
            None => ctx.load_state().await,
            Some(link) => link.first_state(&mut ctx, stop).await,
        }
        .map_err(|e| CallError::ActivationFailed(format!("reading state: {e}")))?;
        G::on_activate(&mut ctx)
            .await
            .map_err(|e| CallError::ActivationFailed(e.to_string()))
    })
    .catch_unwind()
    .await
    .unwrap_or_else(|panic| {
        Err(CallError::ActivationFailed(format!(
            "on_activate panicked: {}",
            panic_message(&*panic)
        )))
    });
    activated.map(|grain| Box::new(Live { grain, ctx }))
}

/// An activation that could not start: fails what is queued and what still arrives.
async fn fail_activation(
    host: &dyn ActivationHost,
    id: &GrainId,
    activation_id: u64,
    mailbox: &mut Mailbox,
    err: CallError,
) {
    host.release(id).await;
    host.retire(id, activation_id, mailbox, Leftovers::Fail(err.clone()));
    while let Some(envelope) = mailbox.recv().await {
        envelope.reply.fail(err.clone());
    }
}

/// Runs `on_deactivate` and writes dirty state before the activation leaves (`exit`
/// says why). False when an idle grain must stay: its state could not be written.
async fn deactivate<G: Grain>(live: &mut Live<G>, exit: Exit, id: &GrainId) -> bool {
    let Live { grain, ctx } = live;
    match AssertUnwindSafe(grain.on_deactivate(ctx))
        .catch_unwind()
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(grain = %id, error = %e, "on_deactivate failed"),
        Err(p) => {
            tracing::error!(grain = %id, panic = panic_message(&*p), "on_deactivate panicked")
        }
    }
    if ctx.needs_final_write() {
        if let Err(e) = ctx.write_final().await {
            if exit == Exit::Idle && !e.is_conflict() {
                tracing::warn!(grain = %id, error = %e, "state write failed; staying active");
                return false;
            }
            tracing::error!(grain = %id, error = %e, "state write at deactivation failed");
        }
    }
    true
}

/// Why a message gets no turn here.
enum Refused {
    /// Its call was answered with an error already.
    Answered,
    /// A replica could not serve it: it goes to the primary.
    Bounced(Box<Envelope>),
}

/// A message admitted to a turn: its handler and the parts of its envelope the turn uses.
struct Call<G: Grain> {
    entry: &'static HandlerEntry<G>,
    target: GrainId,
    body: Body,
    reply: ReplyTo,
    trace: Option<TraceContext>,
    deadline: Option<tokio::time::Instant>,
}

/// Decides, before the turn, whether this activation runs `envelope`: its message must
/// be handled here, a replica must hold a lease (else the message goes to the primary)
/// and no copy may be behind its caller. Not `async`, so the envelope takes no room in
/// the activation's task.
fn admit<G: Grain>(
    ctx: &mut GrainContext<G>,
    handlers: &'static [HandlerEntry<G>],
    envelope: Box<Envelope>,
    replica: Option<&mut ReplicaLink>,
) -> Result<Call<G>, Refused> {
    if !matches!(envelope.reply, ReplyTo::None) && envelope.reply.is_closed() {
        // The caller left before the turn started: the message is never handled.
        tracing::trace!(grain = %envelope.target, "skipped a call its caller gave up on");
        return Err(Refused::Answered);
    }
    let Some(entry) = handlers.iter().find(|h| h.message == envelope.body.name()) else {
        envelope.reply.fail(CallError::UnknownMessage {
            grain_type: G::TYPE_NAME.to_owned(),
            message: envelope.body.name().to_owned(),
        });
        return Err(Refused::Answered);
    };
    if let Some(replica) = replica {
        if !replica.admit(ctx, entry.read) {
            return Err(Refused::Bounced(envelope));
        }
    }
    if ctx.version().is_some_and(|v| v < envelope.copy.min_version) {
        // The caller has seen a newer state than this copy holds: a replica sends the
        // message to its primary; a primary is stale (another one wrote meanwhile) and
        // leaves memory, so the next activation reads the newer state.
        if !ctx.is_primary() {
            return Err(Refused::Bounced(envelope));
        }
        tracing::warn!(grain = %ctx.id(), version = ?ctx.version(), caller = envelope.copy.min_version, "primary behind a caller's version: deactivating to re-read the state");
        ctx.deactivate_on_idle();
        envelope.reply.fail(CallError::Unreachable(
            "the grain's primary was stale and is re-reading its state; try again".into(),
        ));
        return Err(Refused::Answered);
    }
    let Envelope {
        target,
        body,
        reply,
        trace,
        deadline,
        ..
    } = *envelope;
    Ok(Call {
        entry,
        target,
        body,
        reply,
        trace,
        deadline,
    })
}

/// Runs one admitted message in `slot`. Returns the grain (`None` if the handler
/// panicked) and the time the turn took.
async fn turn<G: Grain>(
    live: Box<Live<G>>,
    slot: &mut TurnFuture<G>,
    call: Call<G>,
    observer: &dyn TurnObserver,
) -> (Option<Box<Live<G>>>, Duration) {
    let Call {
        entry,
        target,
        body,
        mut reply,
        trace,
        deadline,
    } = call;
    let shape = reply.shape();
    let ids = TurnIds::new(trace);
    // Fields are formatted only by a subscriber that records the span. No `tracing`
    // parent: the caller's turn ran on another task, maybe in another process; the ids
    // are the link (see `crate::trace`). Span and context move into the turn's future.
    let span = tracing::debug_span!(
        target: "granary_runtime::trace",
        parent: None,
        "grain_call",
        grain_type = G::TYPE_NAME,
        key = %live.ctx.key(),
        message = entry.message,
        trace_id = %TraceId(ids.trace_id),
        span_id = %SpanId(ids.span_id),
        parent_span_id = tracing::field::Empty,
    );
    if let Some(parent) = ids.parent_span_id {
        span.record("parent_span_id", tracing::field::display(SpanId(parent)));
    }
    let cancel = (!matches!(reply, ReplyTo::None)).then(CancellationToken::new);
    let mut live = live;
    live.ctx.turn_cancel = cancel.clone();
    live.ctx.turn_deadline = deadline;
    let scope = TurnScope {
        trace: ids.for_children(),
        cancel: cancel.clone(),
        deadline,
    };
    (entry.handle)(slot, live, body, shape, scope, span);
    let started = Instant::now();
    // The handler runs while the caller waits; when the caller leaves, the turn's token
    // is cancelled (the handler and the calls it makes see it) and the turn runs on.
    let mut watching = cancel.is_some();
    let running = std::future::poll_fn(|cx| {
        if watching && reply.poll_closed(cx).is_ready() {
            watching = false;
            if let Some(cancel) = &cancel {
                cancel.cancel();
            }
        }
        slot.poll(cx)
    });
    match AssertUnwindSafe(running).catch_unwind().await {
        Ok((mut live, result)) if live.ctx.is_copy() => {
            live.ctx.turn_cancel = None;
            live.ctx.turn_deadline = None;
            // Boxed: the write-through's future would otherwise make every activation's
            // task larger, replicated or not.
            let (live, result) = Box::pin(finish_copy_turn(live, result, &target)).await;
            let busy = started.elapsed();
            observer.turn(entry.message, busy, result.as_ref().err());
            let version = live.ctx.version().unwrap_or_default();
            if result.is_ok() {
                live.ctx.router.observed(&target, version);
            }
            reply.complete_at(result, version);
            (Some(live), busy)
        }
        Ok((mut live, result)) => {
            live.ctx.turn_cancel = None;
            live.ctx.turn_deadline = None;
            let busy = started.elapsed();
            observer.turn(entry.message, busy, result.as_ref().err());
            reply.complete(result);
            (Some(live), busy)
        }
        Err(panic) => {
            let msg = panic_message(&*panic);
            tracing::error!(grain = %target, message = entry.message, panic = %msg, "handler panicked; deactivating");
            let err = CallError::Panicked(msg);
            let busy = started.elapsed();
            observer.turn(entry.message, busy, Some(&err));
            reply.fail(err);
            // The panicked future (and the grain in it) is dropped here.
            slot.set(std::future::pending());
            (None, busy)
        }
    }
}

/// After a turn of a read-replicated copy: the primary writes the state the handler
/// changed through before the reply; if that fails, the reply is the storage error.
async fn finish_copy_turn<G: Grain>(
    mut live: Box<Live<G>>,
    result: Result<ReplyValue, CallError>,
    target: &GrainId,
) -> TurnOutput<G> {
    match live.ctx.write_through().await {
        Ok(()) => (live, result),
        Err(e) => {
            tracing::warn!(grain = %target, error = %e, "write-through failed; dropping the unwritten state");
            (live, Err(CallError::Storage(e.to_string())))
        }
    }
}

pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

mod replica;
use replica::{bounce, link, ReplicaLink};

#[cfg(test)]
mod tests;
