//! [`Protocol`]: the role-independent face of the master and slave state machines.
//!
//! The state machines take the current time and an inbound packet or a tick, and push
//! the packets to send into an [`Outbox`]; the driver does the I/O. That keeps every
//! protocol rule unit-testable without sockets or sleeps.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use granary_proto::packet::{AuthRejection, LoadReport, Packet, PacketBody, SiloId};

use super::config::{MembershipConfig, SiloRole};
use super::master::Master;
use super::slave::Slave;
use super::snapshot::MembershipSnapshot;
use super::table::Dirty;

/// Packets to send: destination and body (the driver stamps sender and sequence).
pub(super) type Outbox = Vec<(SocketAddr, PacketBody)>;

/// Either role's state machine.
#[derive(Debug)]
pub(super) enum Protocol {
    /// This silo is the master.
    Master(Master),
    /// This silo is a slave.
    Slave(Slave),
}

impl Protocol {
    /// The state machine for `config.role`. `config` must have been validated.
    pub(super) fn new(config: &MembershipConfig, me: SiloId, now: Instant) -> Self {
        match (config.role, config.master) {
            (SiloRole::Slave, Some(master)) => {
                Protocol::Slave(Slave::new(me, master, config.params(), now))
            }
            _ => Protocol::Master(Master::new(me, config.params(), now)),
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
            Protocol::Master(m) => m.on_packet(now, src, packet, out),
            Protocol::Slave(s) => s.on_packet(now, src, packet, out),
        }
    }

    /// Runs the periodic work (lease checks, heartbeats) with this silo's current load.
    /// The peer at `src` refused a packet of ours for its cluster key (a hint only: the
    /// datagram is unauthenticated, so it changes what is logged, nothing else).
    pub(super) fn on_rejected(&mut self, now: Instant, src: SocketAddr, reason: AuthRejection) {
        match self {
            Protocol::Master(_) => {
                tracing::debug!(%src, %reason, "a peer rejected our packet");
            }
            Protocol::Slave(s) => s.on_rejected(now, src, reason),
        }
    }

    pub(super) fn on_tick(&mut self, now: Instant, load: LoadReport, out: &mut Outbox) {
        match self {
            Protocol::Master(m) => m.on_tick(now, load, out),
            Protocol::Slave(s) => s.on_tick(now, load, out),
        }
    }

    /// Graceful leave: the SHUTDOWN packets to send.
    pub(super) fn on_leave(&mut self, out: &mut Outbox) {
        match self {
            Protocol::Master(m) => m.on_leave(out),
            Protocol::Slave(s) => s.on_leave(out),
        }
    }

    /// The current heartbeat interval (a slave adopts the master's).
    pub(super) fn tick_interval(&self) -> Duration {
        match self {
            Protocol::Master(m) => m.params().heartbeat_interval(),
            Protocol::Slave(s) => s.params().heartbeat_interval(),
        }
    }

    /// True once the master told this (slave) silo to shut down.
    pub(super) fn shutdown_requested(&self) -> bool {
        match self {
            Protocol::Master(_) => false,
            Protocol::Slave(s) => s.shutdown_requested(),
        }
    }

    /// Returns and clears what changed since the last call.
    pub(super) fn take_dirty(&mut self) -> Dirty {
        let table = match self {
            Protocol::Master(m) => &mut m.table,
            Protocol::Slave(s) => &mut s.table,
        };
        std::mem::take(&mut table.dirty)
    }

    /// A snapshot with the given version.
    pub(super) fn snapshot(&self, version: u64) -> MembershipSnapshot {
        match self {
            Protocol::Master(m) => m.snapshot(version),
            Protocol::Slave(s) => s.snapshot(version),
        }
    }
}
