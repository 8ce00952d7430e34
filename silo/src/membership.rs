//! Cluster membership over UDP: master candidates (one acting master, elected for an
//! epoch, and standbys) and any number of slaves.
//!
//! A slave sends HANDSHAKE to every candidate it knows until the acting master answers
//! WELCOME (the member list and the heartbeat parameters, which it adopts; standbys
//! answer NOT_LEADER and name the master). From then on the slave heartbeats that master
//! every interval, and the master answers each heartbeat; the answer renews the slave's
//! *hosting lease* (see [`slave`](self) docs below). Heartbeats carry the sender's
//! [`LoadReport`]. The master tells the other slaves about every join (SLAVE_CONNECT) and
//! departure (SLAVE_DISCONNECT). Packets are defined, signed and size-checked by
//! [`granary_proto::packet`].
//!
//! # Candidates and election
//! Candidates beat each other; a majority elects the acting master for a new epoch and
//! keeps renewing its lease, Bully-ordered (the strongest live candidate campaigns
//! first). A candidate persists its election state ([`ElectionState`], through an
//! [`ElectionStore`]) before it votes. The acting master publishes [`Leadership`]; the
//! directory and the store serve only while it is valid. With a store shared by every
//! silo (MongoDB), the lease is a document in that store instead
//! ([`ElectionMode::SharedStore`]). The rules and timings are in the `candidate`
//! module and [`Timing`].
//!
//! # Failure handling
//! - A slave silent for longer than `dead_after` (`missed_heartbeats ×
//!   heartbeat_interval`) is declared dead by the acting master.
//! - A slave whose hosting lease runs out (`dead_after − interval/2` after it sent the
//!   last heartbeat the master answered) is *suspended*: its grains stay in memory but
//!   run no turn and write nothing. It keeps heartbeating its master and handshakes
//!   every candidate, and resumes when a master renews the lease — after a new master
//!   (a newer epoch) accepted its directory report.
//! - A slave the acting master does not count as a member gets REJOIN and is *fenced*:
//!   its grains are dropped without writing, and it joins again with none. So is a
//!   suspended slave that heard from no candidate for a lease.
//! - A restarted slave has a new generation: when the master sees a HANDSHAKE from the
//!   address of an active member with a newer generation, the old one is declared dead
//!   and the new one joins. A HANDSHAKE from an older generation is ignored.
//! - Lost or reordered SLAVE_CONNECT/DISCONNECT datagrams heal: each carries the
//!   master's view number, a slave applies only the next one, and its heartbeats report
//!   the view it has, so the master resends the whole list in a WELCOME when it is
//!   behind. A newcomer gets the whole list in its WELCOME (one datagram, so no ordering
//!   race; 8 KiB list ~150 members) and then one SLAVE_CONNECT per existing slave, which
//!   it applies idempotently.
//! - A lone master's SHUTDOWN tells slaves to shut down
//!   ([`Membership::shutdown_requested`]); a master with standbys just stops acting.
//! - Garbage, wrong-version, oversized, unsigned or wrongly signed datagrams are dropped
//!   with a warning (at most one line per second per kind of problem).
//!
//! # Snapshots
//! The current view is published as `watch<Arc<MembershipSnapshot>>`. Its `version`
//! increases with every membership or status change. Load figures are refreshed
//! silently once per heartbeat interval (the value is replaced, `version` stays and
//! watchers are not woken), so heartbeats do not wake every watcher.
//!
//! # Tasks
//! ```text
//! Membership (handle: leave() / abort() stop the task and wait for it; Drop aborts)
//! └── membership thread, with a runtime of its own (so grain work never delays a
//!     heartbeat): one task owns the UdpSocket and the Protocol state machine
//!     ├── publishes watch<Arc<MembershipSnapshot>> and watch<Leadership>
//!     ├── renews the slave's HostingLease
//!     ├── persists the candidate's ElectionState before sending what depends on it
//!     └── fires the shutdown-requested token when the master says SHUTDOWN
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use granary_proto::packet::PacketCodec;
use granary_runtime::HostingLease;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

mod candidate;
mod config;
mod driver;
mod election;
mod master;
mod protocol;
mod slave;
mod snapshot;
mod table;

pub use candidate::{ElectionState, ExternalLease};
pub use config::{
    ElectionMode, MembershipConfig, SiloRole, Timing, DEFAULT_HEARTBEAT_INTERVAL,
    DEFAULT_MAX_PACKET_BYTES, DEFAULT_MISSED_HEARTBEATS,
};
pub use election::{ElectionStore, Leadership, MemoryElectionStore};
pub use granary_proto::packet::{LoadReport, PacketError, SiloId};
pub use granary_proto::replica::StorePosition;
pub use snapshot::{Hosting, MemberInfo, MemberStatus, MembershipSnapshot};

use driver::{Driver, Throttle};
use protocol::Protocol;

/// Why membership could not start, or a wait ran out.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// A slave needs the master's UDP address.
    #[error("a slave needs the master's UDP address")]
    MissingMaster,
    /// A setting is out of range.
    #[error("invalid membership config: {0}")]
    InvalidConfig(&'static str),
    /// The cluster key or the packet size cap was rejected.
    #[error("invalid membership packet settings: {0}")]
    Packet(#[from] PacketError),
    /// [`Membership::start`] was called outside a Tokio runtime.
    #[error("membership must be started inside a Tokio runtime")]
    NoRuntime,
    /// The membership socket or thread could not be set up.
    #[error("membership socket or thread: {0}")]
    Socket(std::io::Error),
    /// A `wait_*` call ran out of time.
    #[error("membership condition not reached within {0:?}")]
    Timeout(Duration),
    /// A candidate could not read its persisted election state.
    #[error("cannot read the election state: {0}")]
    ElectionState(String),
}

/// What the membership task reads from and writes to the rest of the silo.
#[derive(Debug)]
pub struct MembershipIo {
    /// This silo's load, read at every heartbeat.
    pub load: watch::Receiver<LoadReport>,
    /// A candidate's replicated-store position (votes go to candidates at least as far).
    pub position: watch::Receiver<StorePosition>,
    /// A slave: the newest epoch whose acting master accepted its directory report.
    pub reported: watch::Receiver<u64>,
    /// Shared-store mode: the lease task's verdicts.
    pub external: Option<mpsc::Receiver<ExternalLease>>,
    /// A slave's hosting lease, renewed by the membership task.
    pub hosting: Arc<HostingLease>,
    /// Where a candidate persists its election state.
    pub election: Arc<dyn ElectionStore>,
}

impl MembershipIo {
    /// Inputs with no position, no report, no external lease, and a hosting lease that
    /// nothing else reads.
    pub fn new(load: watch::Receiver<LoadReport>, election: Arc<dyn ElectionStore>) -> Self {
        Self {
            load,
            position: watch::channel(StorePosition::default()).1,
            reported: watch::channel(0).1,
            external: None,
            hosting: Arc::new(HostingLease::new(Duration::ZERO)),
            election,
        }
    }
}

/// A running membership protocol: the handle the silo keeps.
///
/// Dropping it stops the task abruptly, like [`Membership::abort`] but without waiting.
#[derive(Debug)]
pub struct Membership {
    /// This silo.
    me: SiloId,
    /// Master or slave.
    role: SiloRole,
    /// The latest snapshot.
    snapshots: watch::Receiver<Arc<MembershipSnapshot>>,
    /// This candidate's leadership (never valid on a slave).
    leadership: watch::Receiver<Leadership>,
    /// Fired by the task when the master says SHUTDOWN.
    shutdown_requested: CancellationToken,
    /// Asks the task to send SHUTDOWN and stop.
    leave: CancellationToken,
    /// Asks the task to stop at once.
    abort: CancellationToken,
    /// Asks the task to send SHUTDOWN (repeatedly) but keep running.
    announce: CancellationToken,
    /// Cancelled when the membership thread has ended; `leave`/`abort` wait on it.
    finished: CancellationToken,
    /// Polling period of the `wait_*` helpers (load updates do not wake watchers).
    poll: Duration,
}

impl Membership {
    /// Starts the protocol on an already-bound socket with no inputs beyond the load (a
    /// candidate keeps its election state in memory; a slave's hosting lease is not
    /// shared with anything). `me` is this silo's id. Must be called inside a Tokio
    /// runtime.
    pub fn start(
        config: MembershipConfig,
        socket: UdpSocket,
        me: SiloId,
        load: watch::Receiver<LoadReport>,
    ) -> Result<Self, MembershipError> {
        let io = MembershipIo::new(load, Arc::new(MemoryElectionStore::default()));
        Self::start_with(config, socket, me, io)
    }

    /// Starts the protocol on an already-bound socket, wired to the rest of the silo
    /// through `io`. Must be called inside a Tokio runtime.
    pub fn start_with(
        config: MembershipConfig,
        socket: UdpSocket,
        me: SiloId,
        io: MembershipIo,
    ) -> Result<Self, MembershipError> {
        config.validate()?;
        let codec = PacketCodec::new(config.cluster_key.as_deref(), config.max_packet)?;
        tokio::runtime::Handle::try_current().map_err(|_| MembershipError::NoRuntime)?;
        // The socket moves to the membership thread's own runtime.
        let socket = socket.into_std().map_err(MembershipError::Socket)?;
        let mut election = io.election.load().map_err(MembershipError::ElectionState)?;
        if config.role == SiloRole::Master
            && config.election == ElectionMode::Quorum
            && !io.election.is_durable()
        {
            // Nothing survives a restart: start from the clock, so a restarted master's
            // epochs still grow past its previous run's. (With a shared store, epochs come
            // from the lease record there.)
            let floor = SiloId::generation_now();
            if election.epoch < floor {
                election.epoch = floor;
                election.promised = election.promised.max(floor);
            }
        }
        let now = Instant::now();
        let protocol = Protocol::new(&config, me, election, now);
        let (snapshots_tx, snapshots) = watch::channel(Arc::new(protocol.snapshot(1, now)));
        let (leadership_tx, leadership) = watch::channel(Leadership::default());
        let shutdown_requested = CancellationToken::new();
        let leave = CancellationToken::new();
        let abort = CancellationToken::new();
        let announce = CancellationToken::new();
        let signed = if config.cluster_key.is_some() {
            "signed with the cluster key"
        } else {
            "unsigned: no cluster key"
        };
        match config.role {
            SiloRole::Slave => tracing::debug!(
                "membership: joining the master among {:?} as {me} (packets {signed})",
                config.masters
            ),
            SiloRole::Master => tracing::debug!(
                "membership: master candidate {me} with {} other candidate(s) (packets {signed})",
                config.peers.len()
            ),
        }
        // Heartbeats and lease renewals run on a thread of their own, so a silo busy
        // with grain work (or a starved test runtime) never misses them: a late
        // heartbeat answer would suspend a slave's grains, a late LEADER_BEAT the master.
        let finished = CancellationToken::new();
        let run = {
            let (leave, abort, announce, finished) = (
                leave.clone(),
                abort.clone(),
                announce.clone(),
                finished.clone(),
            );
            let shutdown_requested = shutdown_requested.clone();
            move || {
                let _done = finished.drop_guard();
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        tracing::error!("cannot start the membership runtime: {e}");
                        return;
                    }
                };
                runtime.block_on(async move {
                    match UdpSocket::from_std(socket) {
                        Ok(socket) => {
                            Driver {
                                socket,
                                codec,
                                protocol,
                                me,
                                seq: 0,
                                version: 1,
                                load_pending: false,
                                snapshots: snapshots_tx,
                                load: io.load,
                                position: io.position,
                                reported: io.reported,
                                reported_seen: 0,
                                external: io.external,
                                hosting: io.hosting,
                                hosting_published: None,
                                election: io.election,
                                leadership: leadership_tx,
                                shutdown_requested,
                                drop_warnings: Throttle::default(),
                                io_warnings: Throttle::default(),
                                last_rejection: None,
                            }
                            .run(leave, abort, announce)
                            .await
                        }
                        Err(e) => tracing::error!("membership socket: {e}"),
                    }
                });
            }
        };
        std::thread::Builder::new()
            .name("granary-membership".into())
            .spawn(run)
            .map_err(MembershipError::Socket)?;
        Ok(Self {
            me,
            role: config.role,
            snapshots,
            leadership,
            shutdown_requested,
            leave,
            abort,
            announce,
            finished,
            poll: config.heartbeat_interval.min(Duration::from_millis(50)),
        })
    }

    /// This candidate's leadership, as a receiver woken when it changes (gained, lost,
    /// lease renewed).
    pub fn leadership(&self) -> watch::Receiver<Leadership> {
        self.leadership.clone()
    }

    /// This silo's id.
    pub fn me(&self) -> SiloId {
        self.me
    }

    /// This silo's role.
    pub fn role(&self) -> SiloRole {
        self.role
    }

    /// The current snapshot (with the freshest load figures).
    pub fn snapshot(&self) -> Arc<MembershipSnapshot> {
        self.snapshots.borrow().clone()
    }

    /// A receiver that wakes on every membership change (not on load-only refreshes).
    pub fn subscribe(&self) -> watch::Receiver<Arc<MembershipSnapshot>> {
        self.snapshots.clone()
    }

    /// Resolves when the master told this slave to shut down (master SHUTDOWN); the silo
    /// then shuts itself down. Never resolves on the master.
    pub async fn shutdown_requested(&self) {
        self.shutdown_requested.cancelled().await;
    }

    /// A token cancelled when the master tells this slave to shut down (a child token:
    /// cancelling it does not affect membership).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown_requested.child_token()
    }

    /// Waits until `condition` holds for the current snapshot, up to `timeout`.
    ///
    /// Checks on every membership change and also polls (load figures change without
    /// waking watchers), so conditions on load work too.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut condition: impl FnMut(&MembershipSnapshot) -> bool,
    ) -> Result<Arc<MembershipSnapshot>, MembershipError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut rx = self.snapshots.clone();
        let mut task_alive = true;
        loop {
            let current = rx.borrow_and_update().clone();
            if condition(&current) {
                return Ok(current);
            }
            let wake = tokio::time::sleep(self.poll);
            tokio::select! {
                changed = rx.changed(), if task_alive => task_alive = changed.is_ok(),
                () = wake => {}
                () = tokio::time::sleep_until(deadline) => {
                    let last = self.snapshot();
                    return if condition(&last) { Ok(last) } else { Err(MembershipError::Timeout(timeout)) };
                }
            }
        }
    }

    /// Waits until this silo is joined: on a slave, welcomed by a reachable master.
    /// Returns at once on the master.
    pub async fn wait_joined(
        &self,
        timeout: Duration,
    ) -> Result<Arc<MembershipSnapshot>, MembershipError> {
        self.wait_for(timeout, MembershipSnapshot::is_joined).await
    }

    /// Starts a graceful leave without stopping: sends SHUTDOWN now and at every tick
    /// instead of heartbeats (a master's slaves then shut down and leave one by one,
    /// which the snapshots show), until [`Membership::leave`] or
    /// [`Membership::abort`].
    pub fn announce_shutdown(&self) {
        self.announce.cancel();
    }

    /// Graceful leave: sends SHUTDOWN (a master to every slave, a slave to the master),
    /// stops the task and waits for it. The socket is closed when this returns.
    pub async fn leave(self) {
        self.leave.cancel();
        self.stopped().await;
    }

    /// Stops abruptly without sending anything (a simulated crash), and waits for the
    /// task. The socket is closed when this returns.
    pub async fn abort(self) {
        self.abort.cancel();
        self.stopped().await;
    }

    /// Resolves when the task has ended.
    fn stopped(&self) -> impl Future<Output = ()> + '_ {
        self.finished.cancelled()
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.abort.cancel();
    }
}

#[cfg(test)]
mod tests;
