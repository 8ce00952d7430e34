//! What a grain author works with: the traits to implement ([`Grain`] once,
//! [`Handler<M>`] per message, or [`ReadHandler<M>`] for a message that only reads) and
//! the [`GrainContext`] every hook and handler gets (the grain's identity and persistent
//! state). They name each other, so they live together.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use granary_proto::{codec, GrainId};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::lease::HostingLease;
use crate::replication::{self, Replication, Snapshot, SnapshotSender};
use crate::router::Router;
use crate::storage::{Etag, GrainStorage, StorageError};

/// A handler's or lifecycle hook's error. Any `std::error::Error` converts with `?`.
pub type GrainError = Box<dyn Error + Send + Sync + 'static>;

/// Anything that can be sent to a grain: it may cross the network, so it is serde.
pub trait Message: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Message for T {}

/// A grain type: the unit of state and single-threaded computation.
///
/// The runtime activates an instance on the first message for a key, after loading
/// [`Grain::State`] from storage into the [`GrainContext`]. It deactivates the instance
/// after [`Grain::IDLE_TIMEOUT`] (or the silo's default) without messages, writing the
/// state back if it changed since the last write.
#[async_trait]
pub trait Grain: Sized + Send + 'static {
    /// Stable wire name, unique in the cluster. Part of every stored key and every
    /// message on the wire: never rename it, version it (`"shop.cart/v2"`).
    const TYPE_NAME: &'static str;

    /// Persistent state, loaded before [`Grain::on_activate`] and written on
    /// deactivation when dirty. Use `()` for a grain that keeps nothing: it then costs
    /// no storage I/O at all.
    type State: Serialize + DeserializeOwned + Default + Send + Sync + 'static;

    /// How long an activation may sit without messages before it is deactivated.
    /// `None` uses the silo's setting (15 minutes by default, as in Orleans).
    const IDLE_TIMEOUT: Option<Duration> = None;

    /// Whether the grain may be copied when it is hot (see [`Replication`]). The
    /// default, [`Replication::Single`], never copies it.
    const REPLICATION: Replication = Replication::Single;

    /// Builds the in-memory grain. `ctx.state()` already holds the stored state (or
    /// its default). An error fails the message that triggered the activation.
    async fn on_activate(ctx: &mut GrainContext<Self>) -> Result<Self, GrainError>;

    /// Runs before the activation leaves memory (idle timeout, explicit request or
    /// silo shutdown; not after a panic). Dirty state is written after it returns.
    async fn on_deactivate(&mut self, _ctx: &mut GrainContext<Self>) -> Result<(), GrainError> {
        Ok(())
    }
}

/// Handles one message type `M` with a typed reply.
///
/// Turns never interleave: while `handle` awaits, the grain's next message waits.
/// A grain that asks *itself* (directly or through a cycle) therefore waits for its own
/// turn and times out, as in Orleans without reentrancy.
#[async_trait]
pub trait Handler<M: Message>: Grain {
    /// What `ask` returns. Use `()` for messages that are only told.
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// Processes `msg`. An `Err` fails the call with [`crate::CallError::Handler`]
    /// (or [`crate::CallError::Storage`] when it came from storage); the grain stays active.
    async fn handle(
        &mut self,
        msg: M,
        ctx: &mut GrainContext<Self>,
    ) -> Result<Self::Reply, GrainError>;
}

/// Handles one message type `M` without changing anything: `&self` and a shared
/// [`GrainContext`], so the handler can read the state but not change or write it.
///
/// Every `ReadHandler<M>` is also a [`Handler<M>`]. List `M` in the grain's
/// `register_grain!(…, reads = [M])`: on a [`Replication::ReadReplicas`] grain such
/// messages may be served by a replica; a message listed there whose handler may write
/// does not compile. Fields of the grain value itself are per copy (each replica runs
/// `on_activate` on the state it receives), so keep everything a read must see in
/// [`Grain::State`].
///
/// ```
/// # use granary_runtime::prelude::*;
/// # #[derive(Default, serde::Serialize, serde::Deserialize)] pub struct Profile { name: String }
/// # pub struct User;
/// # #[async_trait] impl Grain for User {
/// #     const TYPE_NAME: &'static str = "doc.user/v1"; type State = Profile;
/// #     const REPLICATION: Replication = Replication::READ_REPLICAS;
/// #     async fn on_activate(_: &mut GrainContext<Self>) -> Result<Self, GrainError> { Ok(User) }
/// # }
/// #[derive(serde::Serialize, serde::Deserialize)]
/// pub struct Name;
///
/// #[async_trait]
/// impl ReadHandler<Name> for User {
///     type Reply = String;
///     async fn handle(&self, _: Name, ctx: &GrainContext<Self>) -> Result<String, GrainError> {
///         Ok(ctx.state().name.clone())
///     }
/// }
/// granary_runtime::register_grain!(User, handles = [], reads = [Name]);
/// ```
///
/// A message whose handler may write cannot be listed as a read:
///
/// ```compile_fail
/// # use granary_runtime::prelude::*;
/// # #[derive(Default, serde::Serialize, serde::Deserialize)] pub struct Count { n: u64 }
/// # pub struct Tally;
/// # #[async_trait] impl Grain for Tally {
/// #     const TYPE_NAME: &'static str = "doc.tally/v1"; type State = Count;
/// #     async fn on_activate(_: &mut GrainContext<Self>) -> Result<Self, GrainError> { Ok(Tally) }
/// # }
/// #[derive(serde::Serialize, serde::Deserialize)]
/// pub struct Bump;
/// #[async_trait]
/// impl Handler<Bump> for Tally {
///     type Reply = u64;
///     async fn handle(&mut self, _: Bump, ctx: &mut GrainContext<Self>) -> Result<u64, GrainError> {
///         ctx.state_mut().n += 1;
///         Ok(ctx.state().n)
///     }
/// }
/// granary_runtime::register_grain!(Tally, handles = [], reads = [Bump]); // does not compile
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` handles `{M}` with a `Handler`, which may change state",
    label = "`{M}` is listed in `reads = [...]`",
    note = "implement `ReadHandler<{M}>` for `{Self}` (`handle(&self, …, ctx: &GrainContext<Self>)`), or move `{M}` to `handles = [...]`"
)]
#[async_trait]
pub trait ReadHandler<M: Message>: Grain + Sync {
    /// What `ask` returns.
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// Answers `msg` from the grain and its state, changing neither.
    async fn handle(&self, msg: M, ctx: &GrainContext<Self>) -> Result<Self::Reply, GrainError>;
}

#[async_trait]
impl<G: ReadHandler<M>, M: Message> Handler<M> for G {
    type Reply = <G as ReadHandler<M>>::Reply;

    async fn handle(
        &mut self,
        msg: M,
        ctx: &mut GrainContext<Self>,
    ) -> Result<Self::Reply, GrainError> {
        ReadHandler::handle(&*self, msg, &*ctx).await
    }
}

/// How many times a write or clear whose answer was lost (`Unavailable`) is sent again,
/// under the same etag, before the handler sees the error. Resending is safe because
/// every write is conditional: if the first attempt landed, the resend meets a conflict
/// and [`GrainContext::reconcile`] recognises the grain's own write.
const RESENDS: u32 = 3;

/// Pause before the n-th resend (times n): lets a failover elect its next master.
const RESEND_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// A write or clear whose answer was lost.
#[derive(Debug)]
enum Unknown {
    /// A write of these bytes.
    Write(Vec<u8>),
    /// A clear.
    Clear,
}

/// A grain's identity, its persistent state and its way to reach other grains.
///
/// The context belongs to one activation and is only touched by its turn loop, so
/// handlers get `&mut` access without locks.
pub struct GrainContext<G: Grain> {
    /// This grain's address.
    id: GrainId,
    /// The persistent state, loaded before `on_activate`.
    state: G::State,
    /// Etag of the stored record this state came from (`None`: no record yet).
    etag: Option<Etag>,
    /// The state changed since it was last read or written.
    dirty: bool,
    /// A write hit an etag conflict: the state is stale and must never be written.
    conflicted: bool,
    /// The last write or clear whose answer was lost (it may have landed): a later etag
    /// conflict is checked against it before the state is declared stale.
    unknown: Option<Unknown>,
    /// A handler's write or clear failed without a conflict during this turn: before
    /// the next turn, [`settle`](Self::settle) finds out whether it landed.
    unsettled: bool,
    /// The state in memory may never reach the store (a failed write did not land): it
    /// is dropped, never written, and the grain deactivates.
    unsaved: bool,
    /// Deactivate after the current turn.
    deactivate: bool,
    /// Where the state lives.
    storage: Arc<dyn GrainStorage>,
    /// How references reach other grains (see `GrainContext::grain` in `reference`).
    pub(crate) router: Arc<dyn Router>,
    /// The silo's right to write state: checked before and after every write.
    lease: Arc<HostingLease>,
    /// This activation's timers (see [`crate::timer`]); boxed, allocated by the first.
    pub(crate) timers: Option<Box<crate::timer::Timers<G>>>,
    /// The primary or a replica of a read-replicated grain: its version and role. Boxed
    /// so every other activation pays one word for it.
    copy: Option<Box<CopyState>>,
    /// The running turn's cancellation (see [`crate::cancellation`]); `None` between
    /// turns and in a tell's turn.
    pub(crate) turn_cancel: Option<tokio_util::sync::CancellationToken>,
    /// When the running turn's caller stops waiting.
    pub(crate) turn_deadline: Option<tokio::time::Instant>,
}

/// What a copy of a read-replicated grain adds to its context.
struct CopyState {
    /// The version of `GrainContext::state` (see [`crate::replication`]).
    version: u64,
    /// Where a primary publishes its durable states; `None` on a replica.
    publish: Option<SnapshotSender>,
    /// The state must be dropped, never written (a write-through failed: the state in
    /// memory is not durable and must not be served).
    discard: bool,
    /// A replica has received its first snapshot.
    received: bool,
}

impl<G: Grain> GrainContext<G> {
    pub(crate) fn new(
        id: GrainId,
        storage: Arc<dyn GrainStorage>,
        router: Arc<dyn Router>,
        lease: Arc<HostingLease>,
    ) -> Self {
        Self {
            lease,
            id,
            state: G::State::default(),
            etag: None,
            dirty: false,
            conflicted: false,
            unknown: None,
            unsettled: false,
            unsaved: false,
            deactivate: false,
            storage,
            router,
            timers: None,
            copy: None,
            turn_cancel: None,
            turn_deadline: None,
        }
    }

    /// Makes this the context of a read-replicated copy: the primary publishes to
    /// `publish`; a replica (`None`) takes its state from the host.
    pub(crate) fn set_copy(&mut self, publish: Option<SnapshotSender>) {
        self.copy = Some(Box::new(CopyState {
            version: 0,
            publish,
            discard: false,
            received: false,
        }));
    }

    /// True when `G::State` carries no data, so storage is never touched.
    fn stateless() -> bool {
        std::mem::size_of::<G::State>() == 0
    }

    /// This grain's address.
    pub fn id(&self) -> &GrainId {
        &self.id
    }

    /// This grain's key.
    pub fn key(&self) -> &str {
        &self.id.key
    }

    /// The current state.
    pub fn state(&self) -> &G::State {
        &self.state
    }

    /// The current state, for changing it. Marks it dirty: it is written at
    /// deactivation unless [`write_state`](Self::write_state) runs first.
    pub fn state_mut(&mut self) -> &mut G::State {
        self.dirty = true;
        &mut self.state
    }

    /// True when the state changed since the last read or write.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Etag of the stored record (`None` when nothing is stored yet).
    pub fn etag(&self) -> Option<&str> {
        self.etag.as_deref()
    }

    /// The version of the state, for a [`Replication::ReadReplicas`] grain (the number
    /// of writes of its record; see [`crate::replication`]); `None` for other grains.
    pub fn version(&self) -> Option<u64> {
        self.copy.as_ref().map(|c| c.version)
    }

    /// Writes the state now, guarded by the etag it was read with.
    ///
    /// On `Ok` the write is durable (as durable as the provider). On
    /// [`StorageError::Conflict`] someone else wrote newer state: nothing is written, and
    /// the grain deactivates after this turn so the next activation reads the newer state.
    /// On other errors (store unreachable, disk full, an answer lost in a failover) the
    /// write may or may not have landed, and no later message may read a value the store
    /// might never hold. A write that failed with `Unavailable` (its answer lost, e.g. the
    /// acting master died) is first sent again by the runtime, a few times under the same
    /// etag, which is safe because the write is conditional; only then does the handler
    /// see the error. The handler may retry within its turn; if the turn ends with the
    /// write still failed, the runtime reads the store before the next message: if it
    /// holds exactly this write, the grain goes on from it; otherwise the grain
    /// deactivates *without* writing this state, and its next activation reads what the
    /// store holds. A retry whose etag conflicts because the first attempt did land is
    /// recognised as such (the store holds exactly that write) and goes on from it.
    ///
    /// In a cluster, a slave that lost its hosting lease (cut off from the acting master)
    /// refuses the write with [`StorageError::Unavailable`] before sending it; a write the
    /// store acknowledges only after the lease ran out fails with `Unavailable` too (its
    /// outcome is unknown to the caller) and the grain deactivates.
    pub async fn write_state(&mut self) -> Result<(), StorageError> {
        let result = self.store_state().await;
        self.note_outcome(&result);
        result
    }

    /// The final write of write-behind state at deactivation: on failure the grain keeps
    /// its state (the only copy) and the activation tries again later.
    pub(crate) async fn write_final(&mut self) -> Result<(), StorageError> {
        self.store_state().await
    }

    /// Writes the state under its etag (see [`write_state`](Self::write_state)).
    async fn store_state(&mut self) -> Result<(), StorageError> {
        if Self::stateless() {
            self.dirty = false;
            return Ok(());
        }
        if self.conflicted {
            return Err(self.stale_error());
        }
        match &self.copy {
            Some(copy) if copy.publish.is_none() => {
                return Err(StorageError::Failed(
                    "a read replica cannot write state; only its primary writes".into(),
                ))
            }
            Some(copy) if copy.discard => {
                return Err(StorageError::Failed(
                    "the state was dropped after a failed write; the grain is deactivating".into(),
                ))
            }
            _ => {}
        }
        self.check_lease()?;
        let data = codec::encode(&self.state).map_err(|e| StorageError::Failed(e.to_string()))?;
        let mut resends = 0;
        loop {
            // A read-replicated grain's record carries the next version (recomputed
            // after a reconcile: a lost write that landed took one).
            let record =
                (self.copy.as_ref()).map(|c| replication::versioned_record(c.version + 1, &data));
            let bytes = record.as_deref().unwrap_or(&data);
            match self
                .storage
                .write(&self.id, bytes, self.etag.as_deref())
                .await
            {
                Ok(etag) => {
                    self.etag = Some(etag);
                    self.dirty = false;
                    self.unknown = None;
                    let acknowledged = self.check_acknowledged_in_time();
                    if let Some(copy) = &mut self.copy {
                        copy.version += 1;
                        if acknowledged.is_ok() {
                            copy.publish(data);
                        }
                    }
                    return acknowledged;
                }
                // A conflict after an attempt of unknown outcome: was it our own write?
                // (`reconcile` consumes that attempt, so this arm cannot loop.)
                Err(err) if err.is_conflict() && self.reconcile().await => {}
                Err(err) if self.may_resend(&err, &mut resends).await => {
                    // What the store holds if it landed (a versioned record for a copy).
                    let attempt = record.unwrap_or_else(|| data.clone());
                    self.unknown = Some(Unknown::Write(attempt));
                }
                Err(err) => {
                    self.failed(&err, Unknown::Write(record.unwrap_or(data)));
                    return Err(err);
                }
            }
        }
    }

    /// Deletes the stored record and resets the state to its default. The hosting lease
    /// is checked as for [`write_state`](Self::write_state).
    ///
    /// On a [`Replication::ReadReplicas`] grain the record is not deleted: the default
    /// state is written under the next version, so versions never go back.
    pub async fn clear_state(&mut self) -> Result<(), StorageError> {
        let result = self.clear_stored().await;
        self.note_outcome(&result);
        result
    }

    async fn clear_stored(&mut self) -> Result<(), StorageError> {
        if self.copy.is_some() && !Self::stateless() {
            self.state = G::State::default();
            self.dirty = true;
            return self.store_state().await;
        }
        if !Self::stateless() {
            if self.conflicted {
                return Err(self.stale_error());
            }
            self.check_lease()?;
            let mut resends = 0;
            loop {
                match self.storage.clear(&self.id, self.etag.as_deref()).await {
                    Ok(()) => break,
                    Err(err) if err.is_conflict() && self.reconcile().await => {}
                    Err(err) if self.may_resend(&err, &mut resends).await => {
                        self.unknown = Some(Unknown::Clear);
                    }
                    Err(err) => {
                        self.failed(&err, Unknown::Clear);
                        return Err(err);
                    }
                }
            }
        }
        self.etag = None;
        self.unknown = None;
        self.state = G::State::default();
        self.dirty = false;
        if Self::stateless() {
            Ok(())
        } else {
            self.check_acknowledged_in_time()
        }
    }

    /// After a write or clear failed with `err`: true (after a pause) when it should be
    /// sent again — its answer was lost (`Unavailable`: a failover, a dropped connection),
    /// resends are left, and this silo still holds its hosting lease.
    async fn may_resend(&self, err: &StorageError, resends: &mut u32) -> bool {
        if !matches!(err, StorageError::Unavailable(_)) || *resends >= RESENDS {
            return false;
        }
        if !self.lease.is_valid() {
            return false;
        }
        *resends += 1;
        tracing::info!(grain = %self.id, error = %err, resend = *resends, "a state write's outcome is unknown; sending it again under the same etag");
        tokio::time::sleep(RESEND_PAUSE * *resends).await;
        true
    }

    /// A handler's write or clear: success settles the turn; a failure other than a
    /// conflict leaves it to [`settle`](Self::settle).
    fn note_outcome(&mut self, result: &Result<(), StorageError>) {
        match result {
            Ok(()) => self.unsettled = false,
            Err(err) if !err.is_conflict() && !self.conflicted => self.unsettled = true,
            Err(_) => {}
        }
    }

    /// True when a write or clear of this turn failed and was not retried successfully.
    pub(crate) fn is_unsettled(&self) -> bool {
        self.unsettled
    }

    /// Runs between turns after [`is_unsettled`](Self::is_unsettled): reads the store.
    /// If it holds exactly what the failed attempt wrote, the attempt landed and the
    /// grain goes on from it. Otherwise (it holds something else, or cannot be read) the
    /// state in memory may never be stored: it is dropped unwritten and the grain
    /// deactivates, so its next activation serves what the store holds.
    pub(crate) async fn settle(&mut self) {
        self.unsettled = false;
        if self.conflicted {
            return;
        }
        let landed = match (self.unknown.take(), self.storage.read(&self.id).await) {
            (Some(Unknown::Write(data)), Ok(Some(stored))) if stored.data == data => {
                // A read-replicated grain's version counts that write, and its replicas
                // may serve it (it is durable) unless the state was dropped.
                if let Some(copy) = &mut self.copy {
                    let (version, state) = replication::split_record(&stored.data);
                    copy.version = version;
                    if !copy.discard {
                        copy.publish(state.to_vec());
                    }
                }
                Some(Some(stored.etag))
            }
            (Some(Unknown::Clear), Ok(None)) => Some(None),
            _ => None,
        };
        match landed {
            Some(etag) => {
                tracing::info!(grain = %self.id, "a failed state write had landed; going on from it");
                self.etag = etag;
            }
            None => {
                tracing::warn!(grain = %self.id, "a state write failed and did not land; dropping the unsaved state (the grain deactivates)");
                self.unsaved = true;
                self.deactivate = true;
            }
        }
    }

    /// After a failed write or clear: a conflict makes the state stale (the grain
    /// deactivates); an answer that was lost leaves `attempt` of unknown outcome.
    fn failed(&mut self, err: &StorageError, attempt: Unknown) {
        if err.is_conflict() {
            self.conflicted = true;
            self.deactivate = true;
            tracing::warn!(grain = %self.id, error = %err, "etag conflict; deactivating the grain");
        } else if matches!(err, StorageError::Unavailable(_) | StorageError::Failed(_)) {
            self.unknown = Some(attempt);
        }
    }

    /// An etag conflict after a write or clear of unknown outcome: if the store holds
    /// exactly what that attempt wrote (or, for a clear, nothing), the attempt landed and
    /// its answer was lost (a master died after making it durable). Then the state here
    /// is current: take the stored etag and go on. Returns true in that case.
    async fn reconcile(&mut self) -> bool {
        let Some(attempt) = self.unknown.take() else {
            return false;
        };
        let landed = match (self.storage.read(&self.id).await, attempt) {
            (Ok(Some(stored)), Unknown::Write(data)) if stored.data == data => {
                // A read-replicated grain's version counts that write.
                if let Some(copy) = &mut self.copy {
                    copy.version = replication::split_record(&stored.data).0;
                }
                Some(Some(stored.etag))
            }
            (Ok(None), Unknown::Clear) => Some(None),
            _ => None,
        };
        match landed {
            Some(etag) => {
                tracing::info!(grain = %self.id, "a state write whose answer was lost had landed; going on from it");
                self.etag = etag;
                true
            }
            None => false,
        }
    }

    /// Refuses a write while the silo's hosting lease is not held.
    fn check_lease(&self) -> Result<(), StorageError> {
        if self.lease.is_valid() {
            Ok(())
        } else {
            Err(StorageError::Unavailable(
                "this silo lost its hosting lease (cut off from the acting master): nothing was written".into(),
            ))
        }
    }

    /// After the store acknowledged a write: if the lease ran out meanwhile, another
    /// activation may already serve this grain without having seen the write, so the
    /// caller must not be told it is done. The state here is not trusted any more.
    fn check_acknowledged_in_time(&mut self) -> Result<(), StorageError> {
        if self.lease.acknowledged_in_time(std::time::Instant::now()) {
            return Ok(());
        }
        self.conflicted = true;
        self.deactivate = true;
        let late = self
            .lease
            .valid_until()
            .map(|until| std::time::Instant::now().saturating_duration_since(until));
        tracing::warn!(grain = %self.id, ?late, "a state write was acknowledged after this silo's hosting lease ran out; deactivating the grain");
        Err(StorageError::Unavailable(
            "this silo's hosting lease ran out while the write was in flight: its outcome is unknown".into(),
        ))
    }

    /// Asks the runtime to deactivate this grain once the current turn ends
    /// (Orleans' `DeactivateOnIdle`). Dirty state is written first.
    pub fn deactivate_on_idle(&mut self) {
        self.deactivate = true;
    }

    fn stale_error(&self) -> StorageError {
        StorageError::Conflict {
            grain: self.id.clone(),
            expected: self.etag.clone(),
            found: None,
        }
    }

    /// Loads the stored state (called by the activation before `on_activate`). A
    /// primary publishes what it read as its first snapshot.
    pub(crate) async fn load_state(&mut self) -> Result<(), StorageError> {
        if Self::stateless() {
            return Ok(());
        }
        let stored = self.storage.read(&self.id).await?;
        match &mut self.copy {
            None => {
                if let Some(stored) = stored {
                    self.state = codec::decode(&stored.data)
                        .map_err(|e| StorageError::Corrupt(e.to_string()))?;
                    self.etag = Some(stored.etag);
                }
            }
            Some(copy) => {
                let (version, data) = match &stored {
                    Some(stored) => {
                        let (version, data) = replication::split_record(&stored.data);
                        self.state = codec::decode(data)
                            .map_err(|e| StorageError::Corrupt(e.to_string()))?;
                        (version, data.to_vec())
                    }
                    None => (
                        0,
                        codec::encode(&self.state)
                            .map_err(|e| StorageError::Failed(e.to_string()))?,
                    ),
                };
                self.etag = stored.map(|s| s.etag);
                copy.version = version;
                copy.publish(data);
            }
        }
        self.dirty = false;
        Ok(())
    }

    /// A replica takes `snapshot` as its state if it is newer than what it holds.
    pub(crate) fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let Some(copy) = &mut self.copy else {
            return Ok(());
        };
        if copy.received && copy.version >= snapshot.version {
            return Ok(());
        }
        if !Self::stateless() {
            self.state =
                codec::decode(&snapshot.state).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        }
        copy.version = snapshot.version;
        copy.received = true;
        Ok(())
    }

    /// The primary of a read-replicated grain after a turn: state the handler changed
    /// but did not write is written now, before the reply; if that fails the state in
    /// memory is not durable, so it is dropped (the grain deactivates without writing)
    /// and the write's error is returned.
    pub(crate) async fn write_through(&mut self) -> Result<(), StorageError> {
        if !self.is_primary() || !self.dirty || self.conflicted || Self::stateless() {
            return Ok(());
        }
        let result = self.write_state().await;
        if result.is_err() {
            if let Some(copy) = &mut self.copy {
                copy.discard = true;
            }
            self.deactivate = true;
        }
        result
    }

    /// True for a read-replicated copy (primary or replica): replies carry a version.
    pub(crate) fn is_copy(&self) -> bool {
        self.copy.is_some()
    }

    /// True for the primary of a read-replicated grain.
    pub(crate) fn is_primary(&self) -> bool {
        self.copy.as_ref().is_some_and(|c| c.publish.is_some())
    }

    pub(crate) fn take_deactivate_request(&mut self) -> bool {
        std::mem::take(&mut self.deactivate)
    }

    /// Whether deactivation should write the state.
    pub(crate) fn needs_final_write(&self) -> bool {
        let copy_ok = match &self.copy {
            None => true,
            Some(copy) => copy.publish.is_some() && !copy.discard,
        };
        self.dirty && !self.conflicted && !self.unsaved && !Self::stateless() && copy_ok
    }
}

impl CopyState {
    /// Publishes the durable state `data` at this copy's version (primaries only).
    fn publish(&self, data: Vec<u8>) {
        if let Some(publish) = &self.publish {
            publish.send_replace(Some(Snapshot {
                version: self.version,
                state: Arc::new(data),
            }));
        }
    }
}

impl<G: Grain> fmt::Debug for GrainContext<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrainContext")
            .field("id", &self.id)
            .field("etag", &self.etag)
            .field("dirty", &self.dirty)
            .field("storage", &self.storage.name())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
