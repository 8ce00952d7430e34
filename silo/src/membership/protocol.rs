//! [`Protocol`]: the role-independent face of the candidate and slave state machines.
//!
//! The state machines take the current time and an inbound packet or a tick, and push
//! the packets to send into an [`Outbox`]; the driver does the I/O. That keeps every
//! protocol rule unit-testable without sockets or sleeps.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use granary_proto::packet::{AuthRejection, LoadReport, Packet, PacketBody, SiloId};
use granary_proto::replica::StorePosition;

use super::candidate::{Candidate, ElectionState, ExternalLease};
use super::config::{MembershipConfig, SiloRole, Timing};
use super::slave::Slave;
use super::snapshot::MembershipSnapshot;
use super::table::Dirty;

/// Packets to send: destination and body (the driver stamps sender and sequence).
pub(super) type Outbox = Vec<(SocketAddr, PacketBody)>;

/// Either role's state machine.
#[derive(Debug)]
pub(super) enum Protocol {
    /// This silo is a master candidate (acting or standby).
    Candidate(Candidate),
    /// This silo is a slave.
    Slave(Slave),
}

impl Protocol {
    /// The state machine for `config.role`. `config` must have been validated; `election`
    /// is what a candidate persisted in its last run.
    pub(super) fn new(
        config: &MembershipConfig,
        me: SiloId,
        election: ElectionState,
        now: Instant,
    ) -> Self {
        match config.role {
            SiloRole::Slave => {
                Protocol::Slave(Slave::new(me, config.masters.clone(), config.params(), now))
            }
            SiloRole::Master => Protocol::Candidate(Candidate::new(config, me, election, now)),
        }
    }

    /// Handles one authenticated packet.
    pub(super) fn on_packet(
        &mut self,
        now: Instant,
        src: SocketAddr,
        packet: Packet,
        out: &mut Outbox,
    ) {
        match self {
            Protocol::Candidate(c) => c.on_packet(now, src, packet, out),
            Protocol::Slave(s) => s.on_packet(now, src, packet, out),
        }
    }

    /// The peer at `src` refused a packet of ours for its cluster key (a hint only: the
    /// datagram is unauthenticated, so it changes what is logged, nothing else).
    pub(super) fn on_rejected(&mut self, now: Instant, src: SocketAddr, reason: AuthRejection) {
        match self {
            Protocol::Candidate(_) => {
                tracing::debug!(%src, %reason, "a peer rejected our packet");
            }
            Protocol::Slave(s) => s.on_rejected(now, src, reason),
        }
    }

    /// Runs the periodic work (leases, heartbeats, elections) with this silo's load.
    pub(super) fn on_tick(&mut self, now: Instant, load: LoadReport, out: &mut Outbox) {
        match self {
            Protocol::Candidate(c) => c.on_tick(now, load, out),
            Protocol::Slave(s) => s.on_tick(now, load, out),
        }
    }

    /// Graceful leave: the SHUTDOWN packets to send.
    pub(super) fn on_leave(&mut self, now: Instant, out: &mut Outbox) {
        match self {
            Protocol::Candidate(c) => c.on_leave(now, out),
            Protocol::Slave(s) => s.on_leave(out),
        }
    }

    /// How often [`Self::on_tick`] must run: candidates tick (and the acting master
    /// beats) eight times per heartbeat interval; a slave adopts the master's interval
    /// (four times faster while its master is quiet).
    pub(super) fn tick_interval(&self) -> Duration {
        match self {
            Protocol::Candidate(c) => Timing::new(c.params()).leader_beat,
            Protocol::Slave(s) => s.tick_interval(),
        }
    }

    /// True once the master told this (slave) silo to shut down.
    pub(super) fn shutdown_requested(&self) -> bool {
        match self {
            Protocol::Candidate(_) => false,
            Protocol::Slave(s) => s.shutdown_requested(),
        }
    }

    /// Returns and clears what changed since the last call.
    pub(super) fn take_dirty(&mut self) -> Dirty {
        match self {
            Protocol::Candidate(c) => c.take_dirty(),
            Protocol::Slave(s) => std::mem::take(&mut s.table.dirty),
        }
    }

    /// A snapshot with the given version.
    pub(super) fn snapshot(&self, version: u64, now: Instant) -> MembershipSnapshot {
        match self {
            Protocol::Candidate(c) => c.snapshot(version, now),
            Protocol::Slave(s) => s.snapshot(version),
        }
    }

    /// A candidate's store position (read before every event); ignored by slaves.
    pub(super) fn set_position(&mut self, position: StorePosition) {
        if let Protocol::Candidate(c) = self {
            c.set_position(position);
        }
    }

    /// The election state a candidate must persist before the outbox is sent.
    pub(super) fn take_persist(&mut self) -> Option<ElectionState> {
        match self {
            Protocol::Candidate(c) => c.take_persist(),
            Protocol::Slave(_) => None,
        }
    }

    /// `(epoch, lease end)` while this candidate acts as master.
    pub(super) fn leadership(&self) -> Option<(u64, Instant)> {
        match self {
            Protocol::Candidate(c) => c.leadership(),
            Protocol::Slave(_) => None,
        }
    }

    /// Shared-store mode: the lease task's verdict (candidates only).
    pub(super) fn on_external(&mut self, now: Instant, lease: ExternalLease, out: &mut Outbox) {
        if let Protocol::Candidate(c) = self {
            c.on_external(now, lease, out);
        }
    }

    /// A slave's directory report for admission `admission` was accepted.
    pub(super) fn set_reported(&mut self, admission: u64) {
        if let Protocol::Slave(s) = self {
            s.set_reported(admission);
        }
    }

    /// When a slave's hosting lease runs out (`None`: not held); candidates host
    /// nothing and hold no lease.
    pub(super) fn hosting_until(&self) -> Option<Instant> {
        match self {
            Protocol::Candidate(_) => None,
            Protocol::Slave(s) => s.hosting_until(),
        }
    }

    /// True for a slave (whose hosting lease the driver publishes).
    pub(super) fn is_slave(&self) -> bool {
        matches!(self, Protocol::Slave(_))
    }
}
