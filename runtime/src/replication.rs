//! Replication policies a grain type declares ([`Grain::REPLICATION`](crate::Grain::REPLICATION)),
//! and what the runtime needs to run copies of one grain (host-facing).
//!
//! - [`Replication::Single`] (the default): exactly one activation, never replicated.
//! - [`Replication::StatelessWorker`]: any number of interchangeable activations, on one
//!   silo and on several; the type keeps no state (`type State = ()`, checked at compile
//!   time by `register_grain!`).
//! - [`Replication::ReadReplicas`]: one *primary* runs every message that may change
//!   state and writes the state through to storage after every turn that changed it;
//!   read-only messages (listed in `register_grain!`'s `reads = [...]` and handled by a
//!   [`ReadHandler`](crate::ReadHandler)) may run on *replicas*, which receive the
//!   primary's state after every write.
//!
//! Copies are created only while a grain is hot, as [`Scaling`] says.
//!
//! # Versions
//! A read-replicated grain's stored record carries a **version**: the number of writes
//! of that record since it was created (a write is conditioned on the etag, so the
//! store's history of one grain is a single line, and its *n*-th write is the same
//! record for every reader). A primary starts at the version it reads from storage and
//! adds one per write; replicas only ever hold versions that are durable; replies carry
//! the version they were served at. `clear_state` on such a grain writes the default
//! state under the next version instead of deleting the record, so versions never go
//! back, also across a primary's re-activation from storage.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// How a grain type may be copied when it is hot. See the [module docs](self).
///
/// ```
/// use granary_runtime::replication::{Replication, Scaling};
/// use std::time::Duration;
/// // declared in `impl Grain for …`:
/// const REPLICATION: Replication =
///     Replication::ReadReplicas(Scaling::DEFAULT.max_copies(3).cool_down(Duration::from_secs(60)));
/// # let _ = REPLICATION;
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replication {
    /// One activation per grain, cluster-wide (the default).
    Single,
    /// Interchangeable copies without state, like Orleans' `[StatelessWorker]`, on this
    /// silo and on others. The type must keep no state:
    ///
    /// ```compile_fail
    /// # use granary_runtime::prelude::*;
    /// # #[derive(Default, serde::Serialize, serde::Deserialize)] pub struct Total(u64);
    /// pub struct Worker;
    /// #[async_trait]
    /// impl Grain for Worker {
    ///     const TYPE_NAME: &'static str = "doc.worker/v1";
    ///     type State = Total; // a stateless worker with state: does not compile
    ///     const REPLICATION: Replication = Replication::STATELESS_WORKER;
    ///     async fn on_activate(_: &mut GrainContext<Self>) -> Result<Self, GrainError> { Ok(Worker) }
    /// }
    /// granary_runtime::register_grain!(Worker, handles = []);
    /// ```
    StatelessWorker(Scaling),
    /// One primary (writes) and read replicas (read-only messages).
    ReadReplicas(Scaling),
}

impl Replication {
    /// Stateless workers with the default [`Scaling`].
    pub const STATELESS_WORKER: Replication = Replication::StatelessWorker(Scaling::DEFAULT);
    /// Read replicas with the default [`Scaling`].
    pub const READ_REPLICAS: Replication = Replication::ReadReplicas(Scaling::DEFAULT);

    /// The scaling settings, `None` for [`Replication::Single`].
    pub const fn scaling(&self) -> Option<&Scaling> {
        match self {
            Replication::Single => None,
            Replication::StatelessWorker(s) | Replication::ReadReplicas(s) => Some(s),
        }
    }

    /// The policy in a few words, for logs.
    pub fn describe(&self) -> &'static str {
        match self {
            Replication::Single => "single activation",
            Replication::StatelessWorker(_) => "stateless worker",
            Replication::ReadReplicas(_) => "read replicas",
        }
    }

    /// This policy with other scaling settings (a `Single` policy stays `Single`).
    pub fn with_scaling(self, scaling: Scaling) -> Replication {
        match self {
            Replication::Single => Replication::Single,
            Replication::StatelessWorker(_) => Replication::StatelessWorker(scaling),
            Replication::ReadReplicas(_) => Replication::ReadReplicas(scaling),
        }
    }
}

/// When a grain counts as hot, how far it may be copied, and when copies go away.
///
/// A grain is hot when, averaged over `window`, its copies together need more copies
/// than they are by any of the thresholds: handler time (`hot_busy_pct` per copy),
/// queued messages (`hot_queue` per copy) or message rate (`hot_rate` per copy; 0 turns
/// the rate threshold off). The master then adds copies up to that need (at most
/// `max_copies`). When the need, measured every report interval, has stayed below the
/// copy count for `cool_down`, the extra copies are removed. Builders are `const`, so a
/// grain declares its settings in a `const`; a silo can override them per type
/// (`SiloConfig::with_type_scaling`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scaling {
    /// Most silos a grain's copies spread over, home included (at least 1).
    pub max_copies: u16,
    /// Stateless workers only: most activations of one grain on one silo. 0: one per
    /// core of the silo's machine.
    pub max_local: u16,
    /// Percentage of wall time a copy spends in handlers above which it is hot.
    pub hot_busy_pct: u16,
    /// Messages waiting per copy above which it is hot.
    pub hot_queue: u32,
    /// Messages per second per copy above which it is hot; 0: no rate threshold.
    pub hot_rate: u32,
    /// The sliding window load is averaged over before copies are added.
    pub window: Duration,
    /// How long the load must stay low before extra copies are removed.
    pub cool_down: Duration,
}

impl Scaling {
    /// The defaults: up to 4 silos, busy 75 %, 8 queued messages, no rate threshold,
    /// a 5 s window and a 30 s cool-down.
    pub const DEFAULT: Scaling = Scaling {
        max_copies: 4,
        max_local: 0,
        hot_busy_pct: 75,
        hot_queue: 8,
        hot_rate: 0,
        window: Duration::from_secs(5),
        cool_down: Duration::from_secs(30),
    };

    /// Sets [`Scaling::max_copies`] (at least 1).
    pub const fn max_copies(mut self, n: u16) -> Self {
        self.max_copies = if n == 0 { 1 } else { n };
        self
    }

    /// Sets [`Scaling::max_local`].
    pub const fn max_local(mut self, n: u16) -> Self {
        self.max_local = n;
        self
    }

    /// Sets [`Scaling::hot_busy_pct`].
    pub const fn hot_busy_pct(mut self, pct: u16) -> Self {
        self.hot_busy_pct = pct;
        self
    }

    /// Sets [`Scaling::hot_queue`].
    pub const fn hot_queue(mut self, messages: u32) -> Self {
        self.hot_queue = messages;
        self
    }

    /// Sets [`Scaling::hot_rate`].
    pub const fn hot_rate(mut self, per_second: u32) -> Self {
        self.hot_rate = per_second;
        self
    }

    /// Sets [`Scaling::window`].
    pub const fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Sets [`Scaling::cool_down`].
    pub const fn cool_down(mut self, cool_down: Duration) -> Self {
        self.cool_down = cool_down;
        self
    }
}

impl Default for Scaling {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The state of a read-replicated grain at one version, as the primary ships it.
#[derive(Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The state's version (see the [module docs](self)).
    pub version: u64,
    /// The state, encoded by `granary_proto::codec`.
    pub state: Arc<Vec<u8>>,
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Snapshot(v{}, {} bytes)", self.version, self.state.len())
    }
}

/// Where a primary publishes its durable snapshots (the host subscribes).
pub type SnapshotSender = watch::Sender<Option<Snapshot>>;
/// Where a replica receives them (the host feeds it from the primary).
pub type SnapshotReceiver = watch::Receiver<Option<Snapshot>>;

/// The host's word on whether a replica may serve reads right now: it holds an
/// unexpired lease from its primary. Checked at the start of every turn of a replica.
pub trait ReplicaGate: Send + Sync + 'static {
    /// True while the replica's lease runs.
    fn may_serve(&self) -> bool;
}

/// What kind of copy of a read-replicated grain an activation is, with the channel that
/// connects it to the others (single activations and stateless workers have none).
pub enum CopyLink {
    /// The primary of a read-replicated grain: publishes every durable state here.
    Primary(SnapshotSender),
    /// A read replica: takes its state from here, and serves while `gate` allows.
    Replica {
        /// Snapshots from the primary (the first one is its initial state).
        updates: SnapshotReceiver,
        /// The lease.
        gate: Arc<dyn ReplicaGate>,
    },
}

impl fmt::Debug for CopyLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CopyLink::Primary(_) => "Primary",
            CopyLink::Replica { .. } => "Replica",
        })
    }
}

/// First bytes of a versioned record (see the [module docs](self)).
const RECORD_MAGIC: &[u8; 4] = b"GRV1";

/// The stored form of state `state` at `version`: magic, version (u64 LE), state.
pub(crate) fn versioned_record(version: u64, state: &[u8]) -> Vec<u8> {
    let mut record = Vec::with_capacity(RECORD_MAGIC.len() + 8 + state.len());
    record.extend_from_slice(RECORD_MAGIC);
    record.extend_from_slice(&version.to_le_bytes());
    record.extend_from_slice(state);
    record
}

/// Splits a stored record into version and state. A record written before the type
/// was read-replicated (no magic) is version 0.
pub(crate) fn split_record(record: &[u8]) -> (u64, &[u8]) {
    match record.strip_prefix(RECORD_MAGIC.as_slice()) {
        Some(rest) if rest.len() >= 8 => {
            let (version, state) = rest.split_at(8);
            let version = u64::from_le_bytes(version.try_into().expect("8 bytes"));
            (version, state)
        }
        _ => (0, record),
    }
}

/// `register_grain!` evaluates this in a `const`, so a stateless worker that declares
/// state does not compile.
#[doc(hidden)]
pub const fn check_policy(replication: Replication, state_size: usize) {
    if let Replication::StatelessWorker(_) = replication {
        if state_size != 0 {
            panic!("a StatelessWorker grain keeps no state: declare `type State = ();`");
        }
    }
}

#[cfg(test)]
mod tests;
