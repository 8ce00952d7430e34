//! [`ReplicatedStore`]: the embedded store replicated from the acting master to the
//! standby candidates, so that no acknowledged write is lost when the acting master dies.
//!
//! ```text
//! ReplicatedStore (on every candidate; its own redb file is its replica)
//! ├── feeder task (while acting): batches the writer committed → the log, and the
//! │   callers waiting for them → the waiting list
//! ├── one sender task per standby (while acting): StoreAppend in order from the log,
//! │   or StoreSnapshot when the standby is too far behind or elsewhere
//! └── leadership task: on election, accept writes for the new epoch, commit its barrier
//!     batch, and serve once a majority holds it; on losing the role, refuse and fail
//!     the waiting callers as "outcome unknown"
//! ```
//!
//! **When a write is acknowledged.** The acting master commits a batch durably on its own
//! disk, then answers its callers once a *majority of the candidates* (itself included:
//! 2 of 3) hold the batch durably. Elections need a majority too, and a candidate only
//! votes for one whose store is at least as far as its own, so every majority that can
//! elect the next master contains a candidate holding every acknowledged write, and the
//! one it elects holds them as well. A new master serves only after its first batch (the
//! *barrier*) is held by a majority, so what it serves can never be lost by a later
//! election either.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use granary_net::transport::Peers;
use granary_proto::frame::{Request, Response};
use granary_proto::replica::{ReplicaError, StoreChange, StorePosition};
use granary_proto::GrainId;
use granary_runtime::{Etag, GrainStorage, StorageError, StoredState};
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::embedded::{Committed, LeaderHook, Waiter};
use super::EmbeddedStorage;
use crate::membership::{Leadership, MembershipSnapshot};

/// Most bytes of recent batches the acting master keeps for standbys catching up;
/// beyond that a standby gets a snapshot.
const LOG_BYTES: usize = 64 * 1024 * 1024;
/// A snapshot travels in chunks of about this size.
const SNAPSHOT_CHUNK: usize = 1024 * 1024;
/// A batch larger than this goes to a standby as a snapshot instead (frames are capped).
const MAX_APPEND_BYTES: usize = 6 * 1024 * 1024;
/// Deadline of one replication request.
const REPLICATE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a standby could not be reached.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// Longest pause between snapshot attempts to a standby that keeps failing them.
const SNAPSHOT_RETRY_MAX: Duration = Duration::from_secs(5);

/// One committed batch in the acting master's log.
#[derive(Debug)]
struct Batch {
    prev: StorePosition,
    next: StorePosition,
    changes: Vec<StoreChange>,
    bytes: usize,
}

/// The acting master's replication state for one epoch.
#[derive(Debug, Default)]
struct Epoch {
    /// The epoch (0: not acting).
    epoch: u64,
    /// Recent batches of this epoch, oldest first.
    log: VecDeque<Arc<Batch>>,
    /// Bytes in `log`.
    log_bytes: usize,
    /// The newest committed position.
    head: StorePosition,
    /// Where each standby durably stands (by TCP address), as it last said.
    matched: HashMap<SocketAddr, StorePosition>,
    /// Callers waiting for a batch, oldest first.
    waiting: VecDeque<(StorePosition, Vec<Waiter>)>,
}

/// What the tasks share.
#[derive(Debug)]
struct Shared {
    /// This candidate's own store.
    local: Arc<EmbeddedStorage>,
    /// Hands the writer's committed batches over; sets the epoch writes are taken for.
    hook: Arc<LeaderHook>,
    /// Candidates, this one included (a majority of them must hold a batch).
    candidates: usize,
    /// The replication state (never locked across an `.await`).
    state: Mutex<Epoch>,
    /// Woken when the log grows, for the senders.
    grown: Notify,
    /// The epoch this store serves for (its barrier is held by a majority); 0: none.
    serving: watch::Sender<u64>,
    /// Where this store stands, for elections.
    position: watch::Sender<StorePosition>,
    /// Connections to the other candidates.
    peers: Peers,
    /// Who the other candidates are, and which epoch is the newest known.
    membership: watch::Receiver<Arc<MembershipSnapshot>>,
    /// This candidate's leadership.
    leadership: watch::Receiver<Leadership>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Epoch> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn majority(&self) -> usize {
        self.candidates / 2 + 1
    }

    /// Completes the callers whose batch a majority now holds — only while this
    /// candidate's lease is valid: no other master can have been elected then, so the
    /// majority that holds the batch will hand it to every later master.
    fn advance(&self) {
        let done = {
            let mut state = self.lock();
            if self.leadership.borrow().acting_epoch() != Some(state.epoch) {
                return;
            }
            let mut held: Vec<StorePosition> = state.matched.values().copied().collect();
            held.push(state.head);
            held.resize(self.candidates.max(held.len()), StorePosition::default());
            held.sort_unstable_by(|a, b| b.cmp(a));
            let committed = held[self.majority() - 1];
            let mut done = Vec::new();
            while state.waiting.front().is_some_and(|(position, _)| {
                *position <= committed && position.epoch == state.epoch
            }) {
                if let Some((_, waiters)) = state.waiting.pop_front() {
                    done.extend(waiters);
                }
            }
            done
        };
        for waiter in done {
            waiter.complete();
        }
    }
}

/// The embedded store of a master candidate, replicated among the candidates: the acting
/// master answers a write once a majority of the candidates hold it durably, and serves
/// only once a majority confirmed its epoch's first batch; standbys apply its batches in
/// order (or a snapshot when they are too far behind).
#[derive(Clone)]
pub struct ReplicatedStore {
    shared: Arc<Shared>,
}

impl fmt::Debug for ReplicatedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicatedStore")
            .field("candidates", &self.shared.candidates)
            .field("serving", &*self.shared.serving.borrow())
            .finish_non_exhaustive()
    }
}

impl ReplicatedStore {
    /// Replicates `local` among `candidates` candidates (this one included), following
    /// this candidate's `leadership`. The tasks stop with `stop` and are owned by
    /// `tasks`. `position` receives where the store stands.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn start(
        local: Arc<EmbeddedStorage>,
        candidates: usize,
        peers: Peers,
        membership: watch::Receiver<Arc<MembershipSnapshot>>,
        leadership: watch::Receiver<Leadership>,
        position: watch::Sender<StorePosition>,
        tasks: &TaskTracker,
        stop: CancellationToken,
    ) -> Result<Self, StorageError> {
        let (committed_tx, committed_rx) = mpsc::unbounded_channel();
        let hook = Arc::new(LeaderHook::new(committed_tx));
        if !local.attach_leader_hook(hook.clone()) {
            return Err(StorageError::Failed(
                "the embedded store is replicated twice".into(),
            ));
        }
        position.send_replace(local.position()?);
        let shared = Arc::new(Shared {
            local,
            hook,
            candidates: candidates.max(1),
            state: Mutex::new(Epoch::default()),
            grown: Notify::new(),
            serving: watch::channel(0).0,
            position,
            peers,
            membership,
            leadership,
        });
        tasks.spawn(feed(shared.clone(), committed_rx, stop.clone()));
        tasks.spawn(follow_leadership(shared.clone(), tasks.clone(), stop));
        Ok(Self { shared })
    }

    /// The epoch this store serves the acting master's grains for, if it does (its
    /// barrier is held by a majority and the lease is valid).
    pub(crate) fn serving_epoch(&self) -> Option<u64> {
        let epoch = *self.shared.serving.borrow();
        (epoch != 0 && self.shared.leadership.borrow().acting_epoch() == Some(epoch))
            .then_some(epoch)
    }

    fn check_serving(&self) -> Result<u64, StorageError> {
        self.serving_epoch().ok_or_else(|| {
            StorageError::Unavailable(
                "not the acting master's store (a standby, or a master not yet confirmed by a majority)".into(),
            )
        })
    }

    /// On a standby: applies the acting master's batch or snapshot chunk, if it comes from
    /// a master this standby may follow.
    pub(crate) async fn on_replica_request(
        &self,
        request: Request,
    ) -> Result<StorePosition, ReplicaError> {
        let known = self.shared.membership.borrow().epoch;
        let own = self.shared.hook.epoch();
        let epoch = match &request {
            Request::StoreAppend { epoch, .. } | Request::StoreSnapshot { epoch, .. } => *epoch,
            _ => return Err(ReplicaError::Failed("not a replication request".into())),
        };
        if epoch < known.max(own) || (own != 0 && epoch == own) {
            return Err(ReplicaError::StaleEpoch {
                current: known.max(own),
            });
        }
        let result = match request {
            Request::StoreAppend {
                prev,
                next,
                changes,
                ..
            } => self.shared.local.replicate(prev, next, changes).await,
            Request::StoreSnapshot {
                start,
                records,
                done,
                ..
            } => {
                self.shared
                    .local
                    .install_snapshot(start, records, done)
                    .await
            }
            _ => unreachable!("checked above"),
        };
        if let Ok(position) = result {
            self.shared.position.send_replace(position);
        }
        result
    }
}

#[async_trait]
impl GrainStorage for ReplicatedStore {
    fn name(&self) -> &'static str {
        "embedded (replicated)"
    }

    async fn read(&self, grain: &GrainId) -> Result<Option<StoredState>, StorageError> {
        self.check_serving()?;
        self.shared.local.read(grain).await
    }

    async fn write(
        &self,
        grain: &GrainId,
        data: &[u8],
        expected: Option<&str>,
    ) -> Result<Etag, StorageError> {
        self.check_serving()?;
        self.shared.local.write(grain, data, expected).await
    }

    async fn clear(&self, grain: &GrainId, expected: Option<&str>) -> Result<(), StorageError> {
        self.check_serving()?;
        self.shared.local.clear(grain, expected).await
    }
}

/// Moves the writer's committed batches into the log and the waiting list.
async fn feed(
    shared: Arc<Shared>,
    mut committed: mpsc::UnboundedReceiver<Committed>,
    stop: CancellationToken,
) {
    loop {
        let batch = tokio::select! {
            () = stop.cancelled() => return,
            batch = committed.recv() => match batch { Some(batch) => batch, None => return },
        };
        let Committed {
            prev,
            next,
            changes,
            waiters,
        } = batch;
        shared.position.send_replace(next);
        let refused = {
            let mut state = shared.lock();
            if state.epoch != next.epoch {
                Some(waiters)
            } else {
                let bytes = changes
                    .iter()
                    .map(|c| match c {
                        StoreChange::Put { id, record } => id.len() + record.len(),
                        StoreChange::Delete { id } => id.len(),
                    })
                    .sum::<usize>()
                    + 32;
                state.head = next;
                state.log_bytes += bytes;
                state.log.push_back(Arc::new(Batch {
                    prev,
                    next,
                    changes,
                    bytes,
                }));
                while state.log_bytes > LOG_BYTES && state.log.len() > 1 {
                    if let Some(old) = state.log.pop_front() {
                        state.log_bytes -= old.bytes;
                    }
                }
                state.waiting.push_back((next, waiters));
                None
            }
        };
        match refused {
            Some(waiters) => {
                for waiter in waiters {
                    waiter.fail(StorageError::Unavailable(
                        "this candidate stopped acting as master before the write was replicated: its outcome is unknown".into(),
                    ));
                }
            }
            None => {
                shared.grown.notify_waiters();
                shared.advance();
            }
        }
    }
}

/// Follows this candidate's leadership: starts and stops the epoch's replication.
async fn follow_leadership(shared: Arc<Shared>, tasks: TaskTracker, stop: CancellationToken) {
    let mut leadership = shared.leadership.clone();
    let mut running: Option<(u64, CancellationToken)> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let acting = leadership.borrow_and_update().acting_epoch();
        match (acting, &running) {
            (Some(epoch), Some((current, _))) if epoch == *current => {}
            (acting, _) => {
                if let Some((old, senders)) = running.take() {
                    senders.cancel();
                    end_epoch(&shared, old);
                }
                if let Some(epoch) = acting {
                    let senders = stop.child_token();
                    begin_epoch(&shared, epoch, &tasks, senders.clone());
                    running = Some((epoch, senders));
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => {
                if let Some((old, senders)) = running.take() {
                    senders.cancel();
                    end_epoch(&shared, old);
                }
                return;
            }
            changed = leadership.changed() => if changed.is_err() { return },
            // A lease that runs out changes nothing in the watch: look now and then.
            _ = tick.tick() => {}
        }
    }
}

/// Becomes the acting master's store for `epoch`: takes writes, starts a sender per
/// standby, and serves once the epoch's barrier is held by a majority.
fn begin_epoch(shared: &Arc<Shared>, epoch: u64, tasks: &TaskTracker, senders: CancellationToken) {
    let head = match shared.local.position() {
        Ok(position) => position,
        Err(e) => {
            tracing::error!("cannot read the store's position: {e}; not serving the store");
            return;
        }
    };
    {
        let mut state = shared.lock();
        *state = Epoch {
            epoch,
            head,
            ..Epoch::default()
        };
    }
    shared.hook.set_epoch(epoch);
    let others: Vec<SocketAddr> = {
        let snapshot = shared.membership.borrow();
        snapshot
            .members
            .values()
            .filter(|m| m.is_candidate && m.id != snapshot.me)
            .map(|m| m.id.tcp)
            .collect()
    };
    if others.len() + 1 < shared.candidates {
        tracing::info!(
            "replicating the store to the {} standby candidate(s) heard from so far; the others are added as they appear",
            others.len()
        );
    }
    tasks.spawn(watch_standbys(
        shared.clone(),
        tasks.clone(),
        senders.clone(),
        others,
    ));
    let barrier = {
        let shared = shared.clone();
        async move {
            match shared.local.barrier(epoch).await {
                Ok(()) => {
                    let still = shared.lock().epoch == epoch;
                    if still {
                        tracing::info!(
                            "the store serves for epoch {epoch}: a majority of the candidates holds everything up to {}",
                            shared.lock().head
                        );
                        shared.serving.send_replace(epoch);
                    }
                }
                Err(e) => tracing::warn!("the barrier of epoch {epoch} failed: {e}"),
            }
        }
    };
    tasks.spawn(async move {
        tokio::select! {
            () = senders.cancelled() => {}
            () = barrier => {}
        }
    });
}

/// Stops being the acting master's store: refuses writes and fails the waiting callers.
fn end_epoch(shared: &Shared, epoch: u64) {
    shared.hook.set_epoch(0);
    shared.serving.send_replace(0);
    // One lock for both: a batch fed in between would otherwise join the list after it
    // was emptied, still matching the epoch, and its callers would wait for nothing.
    let waiting = {
        let mut state = shared.lock();
        state.epoch = 0;
        std::mem::take(&mut state.waiting)
    };
    let stranded: usize = waiting.iter().map(|(_, w)| w.len()).sum();
    if stranded > 0 {
        tracing::warn!("stopped acting as master for epoch {epoch} with {stranded} write(s) not yet held by a majority: their outcome is unknown");
    }
    for (_, waiters) in waiting {
        for waiter in waiters {
            waiter.fail(StorageError::Unavailable(
                "the acting master lost its role before a majority held the write: its outcome is unknown".into(),
            ));
        }
    }
}

/// Starts a sender for every standby candidate, as they become known.
async fn watch_standbys(
    shared: Arc<Shared>,
    tasks: TaskTracker,
    stop: CancellationToken,
    initial: Vec<SocketAddr>,
) {
    let mut started: Vec<SocketAddr> = Vec::new();
    let mut membership = shared.membership.clone();
    let mut known = initial;
    loop {
        for addr in known.drain(..) {
            if !started.contains(&addr) {
                started.push(addr);
                tasks.spawn(send_to(shared.clone(), addr, stop.clone()));
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = membership.changed() => if changed.is_err() { return },
        }
        let snapshot = membership.borrow_and_update().clone();
        known = snapshot
            .members
            .values()
            .filter(|m| m.is_candidate && m.id != snapshot.me)
            .map(|m| m.id.tcp)
            .collect();
    }
}

/// What to send a standby next.
enum Next {
    /// It is up to date: wait for the log to grow.
    Wait,
    /// The batch that follows its position.
    Append(Arc<Batch>),
    /// It is elsewhere, or too far behind: a full copy.
    Snapshot,
}

fn next_for(shared: &Shared, at: Option<StorePosition>) -> Next {
    let state = shared.lock();
    let Some(at) = at else {
        // Unknown: probe with the first batch of the log, or wait for one.
        return match state.log.front() {
            Some(first) => Next::Append(first.clone()),
            None => Next::Wait,
        };
    };
    if at == state.head {
        return Next::Wait;
    }
    match state.log.iter().find(|b| b.prev == at) {
        Some(batch) if batch.bytes <= MAX_APPEND_BYTES => Next::Append(batch.clone()),
        _ => Next::Snapshot,
    }
}

/// Keeps one standby in step with this master's log, in order.
async fn send_to(shared: Arc<Shared>, addr: SocketAddr, stop: CancellationToken) {
    let epoch = shared.lock().epoch;
    let mut at: Option<StorePosition> = None;
    let mut snapshot_failures: u32 = 0;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let grown = shared.grown.notified();
        let request = match next_for(&shared, at) {
            Next::Wait => {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = grown => {}
                }
                continue;
            }
            Next::Append(batch) => Request::StoreAppend {
                epoch,
                prev: batch.prev,
                next: batch.next,
                changes: batch.changes.clone(),
            },
            Next::Snapshot => {
                match send_snapshot(&shared, addr, epoch, &stop).await {
                    Ok(position) => {
                        snapshot_failures = 0;
                        tracing::info!(
                            "sent a snapshot of the store to the standby at {addr} (at {position})"
                        );
                        at = Some(position);
                        record(&shared, addr, position);
                    }
                    Err(e) => {
                        // The standby answered (it is behind or elsewhere) but could not
                        // take the copy: that keeps it, and possibly a new master's
                        // barrier, from progressing. Warn on the first failure of a streak
                        // and at each doubling; back off, since every try exports the
                        // whole store again.
                        snapshot_failures += 1;
                        let wait = RETRY_PAUSE
                            .saturating_mul(1 << snapshot_failures.min(6))
                            .min(SNAPSHOT_RETRY_MAX);
                        if snapshot_failures.is_power_of_two() {
                            tracing::warn!(
                                "a snapshot of the store to the standby at {addr} failed ({snapshot_failures} in a row): {e}; retrying in {wait:?}"
                            );
                        }
                        pause(&stop, wait).await;
                    }
                }
                continue;
            }
        };
        let deadline = Instant::now() + REPLICATE_TIMEOUT;
        match shared.peers.call(addr, request, deadline).await {
            Ok(Response::StoreReplica(Ok(position))) => {
                at = Some(position);
                record(&shared, addr, position);
            }
            Ok(Response::StoreReplica(Err(ReplicaError::Diverged { position }))) => {
                at = Some(position);
                record(&shared, addr, position);
            }
            Ok(Response::StoreReplica(Err(ReplicaError::StaleEpoch { current }))) => {
                tracing::warn!(
                    "the standby at {addr} follows epoch {current}, newer than ours ({epoch})"
                );
                pause(&stop, RETRY_PAUSE).await;
            }
            Ok(Response::StoreReplica(Err(e))) => {
                tracing::warn!("the standby at {addr} could not apply a batch: {e}");
                pause(&stop, RETRY_PAUSE).await;
            }
            Ok(other) => {
                tracing::warn!("unexpected answer from the standby at {addr}: {other:?}");
                pause(&stop, RETRY_PAUSE).await;
            }
            Err(e) => {
                tracing::debug!("replicating to the standby at {addr}: {e}");
                at = None;
                pause(&stop, RETRY_PAUSE).await;
            }
        }
    }
}

/// Waits `wait`, or less if the sender is stopped.
async fn pause(stop: &CancellationToken, wait: Duration) {
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(wait) => {}
    }
}

/// Notes where a standby durably stands and answers the callers a majority now covers.
fn record(shared: &Shared, addr: SocketAddr, position: StorePosition) {
    shared.lock().matched.insert(addr, position);
    shared.advance();
}

/// Sends a full copy of this store to the standby at `addr`; returns its position.
async fn send_snapshot(
    shared: &Shared,
    addr: SocketAddr,
    epoch: u64,
    stop: &CancellationToken,
) -> Result<StorePosition, String> {
    let mut chunks = shared.local.export(SNAPSHOT_CHUNK);
    let mut start = true;
    while let Some(chunk) = chunks.recv().await {
        if stop.is_cancelled() {
            return Err("stopped".into());
        }
        let (records, done) = chunk.map_err(|e| e.to_string())?;
        let request = Request::StoreSnapshot {
            epoch,
            start,
            records,
            done,
        };
        start = false;
        let deadline = Instant::now() + REPLICATE_TIMEOUT;
        match shared.peers.call(addr, request, deadline).await {
            Ok(Response::StoreReplica(Ok(position))) if done.is_some() => return Ok(position),
            Ok(Response::StoreReplica(Ok(_))) => {}
            Ok(Response::StoreReplica(Err(e))) => return Err(e.to_string()),
            Ok(other) => return Err(format!("unexpected answer: {other:?}")),
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("the snapshot ended early".into())
}
