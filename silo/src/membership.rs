//! Cluster membership over UDP: one master silo, any number of slaves.
//!
//! A slave sends HANDSHAKE to the master until it gets a WELCOME (the member list and
//! the heartbeat parameters, which it adopts). From then on master and slave heartbeat
//! each other every interval; heartbeats carry the sender's [`LoadReport`]. The master
//! tells the other slaves about every join (SLAVE_CONNECT) and departure
//! (SLAVE_DISCONNECT). Packets are defined, signed and size-checked by
//! [`granary_proto::packet`].
//!
//! # Failure handling
//! - A slave silent for longer than the lease (`missed_heartbeats × heartbeat_interval`)
//!   is declared dead by the master.
//! - A slave that has not heard from its master for a lease reports
//!   `master_reachable = false` and must fence itself (deactivate its grains). It keeps
//!   sending HANDSHAKE every interval and is joined again by the next WELCOME, from the
//!   same master or from a restarted one.
//! - A master that gets a HEARTBEAT from a silo it does not consider a member (declared
//!   dead, or the master restarted) answers REJOIN; the slave fences itself and sends
//!   HANDSHAKE with the *same* [`SiloId`], which the master treats as a re-join.
//! - A restarted slave has a new generation: when the master sees a HANDSHAKE from the
//!   address of an active member with a newer generation, the old one is declared dead
//!   and the new one joins. A HANDSHAKE from an older generation is ignored.
//! - Lost or reordered SLAVE_CONNECT/DISCONNECT datagrams heal: each carries the
//!   master's view number, a slave applies only the next one, and its heartbeats report
//!   the view it has, so the master resends the whole list in a WELCOME when it is
//!   behind. A newcomer gets the whole list in its WELCOME (one datagram, so no ordering
//!   race; 8 KiB list ~150 members) and then one SLAVE_CONNECT per existing slave, which
//!   it applies idempotently.
//! - The master's SHUTDOWN tells slaves to shut down ([`Membership::shutdown_requested`]).
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
//! └── membership task (owns the UdpSocket and the Protocol state machine)
//!     ├── publishes watch<Arc<MembershipSnapshot>>
//!     └── fires the shutdown-requested token when the master says SHUTDOWN
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use granary_proto::packet::PacketCodec;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod config;
mod driver;
mod master;
mod protocol;
mod slave;
mod snapshot;
mod table;

pub use config::{
    MembershipConfig, SiloRole, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_MAX_PACKET_BYTES,
    DEFAULT_MISSED_HEARTBEATS,
};
pub use granary_proto::packet::{LoadReport, PacketError, SiloId};
pub use snapshot::{MemberInfo, MemberStatus, MembershipSnapshot};

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
    /// A `wait_*` call ran out of time.
    #[error("membership condition not reached within {0:?}")]
    Timeout(Duration),
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
    /// Fired by the task when the master says SHUTDOWN.
    shutdown_requested: CancellationToken,
    /// Asks the task to send SHUTDOWN and stop.
    leave: CancellationToken,
    /// Asks the task to stop at once.
    abort: CancellationToken,
    /// Asks the task to send SHUTDOWN (repeatedly) but keep running.
    announce: CancellationToken,
    /// Owns the task; `leave`/`abort` wait on it.
    tasks: TaskTracker,
    /// Polling period of the `wait_*` helpers (load updates do not wake watchers).
    poll: Duration,
}

impl Membership {
    /// Starts the protocol on an already-bound socket. `me` is this silo's id. `load` is
    /// read each time a heartbeat is sent. Must be called inside a Tokio runtime.
    pub fn start(
        config: MembershipConfig,
        socket: UdpSocket,
        me: SiloId,
        load: watch::Receiver<LoadReport>,
    ) -> Result<Self, MembershipError> {
        config.validate()?;
        let codec = PacketCodec::new(config.cluster_key.as_deref(), config.max_packet)?;
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| MembershipError::NoRuntime)?;
        let protocol = Protocol::new(&config, me, Instant::now());
        let (snapshots_tx, snapshots) = watch::channel(Arc::new(protocol.snapshot(1)));
        let shutdown_requested = CancellationToken::new();
        let leave = CancellationToken::new();
        let abort = CancellationToken::new();
        let announce = CancellationToken::new();
        let driver = Driver {
            socket,
            codec,
            protocol,
            me,
            seq: 0,
            version: 1,
            load_pending: false,
            snapshots: snapshots_tx,
            load,
            shutdown_requested: shutdown_requested.clone(),
            drop_warnings: Throttle::default(),
            io_warnings: Throttle::default(),
            last_rejection: None,
        };
        let signed = if config.cluster_key.is_some() {
            "signed with the cluster key"
        } else {
            "unsigned: no cluster key"
        };
        match (config.role, config.master) {
            (SiloRole::Slave, Some(master)) => tracing::debug!(
                "membership: joining the master at {master} as {me} (packets {signed})"
            ),
            _ => tracing::debug!("membership: master {me} (packets {signed})"),
        }
        let tasks = TaskTracker::new();
        tasks.spawn_on(
            driver.run(leave.clone(), abort.clone(), announce.clone()),
            &runtime,
        );
        tasks.close();
        Ok(Self {
            me,
            role: config.role,
            snapshots,
            shutdown_requested,
            leave,
            abort,
            announce,
            tasks,
            poll: config.heartbeat_interval.min(Duration::from_millis(50)),
        })
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
        self.tasks.wait()
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.abort.cancel();
    }
}

#[cfg(test)]
mod tests;
