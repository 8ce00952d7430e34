//! The master's side of the protocol, as a pure state machine (no I/O, no clock).
//!
//! The master admits slaves (HANDSHAKE → WELCOME), announces every change to the other
//! slaves (SLAVE_CONNECT / SLAVE_DISCONNECT, one per change, each numbered with the
//! master's `view`), heartbeats every active slave, and declares a slave dead when it
//! has been silent for longer than the lease.

use std::net::SocketAddr;
use std::time::Instant;

use granary_proto::packet::{
    DepartureReason, LoadReport, Packet, PacketBody, ProtocolParams, SiloId,
};

use super::protocol::Outbox;
use super::snapshot::{MemberStatus, MembershipSnapshot};
use super::table::Table;

/// The master's state.
#[derive(Debug)]
pub(super) struct Master {
    /// This silo.
    me: SiloId,
    /// Every slave (and this silo), with tombstones.
    pub(super) table: Table,
    /// The timing handed to slaves in WELCOME; also the master's own.
    params: ProtocolParams,
    /// Membership version on the wire: +1 per announced change.
    view: u64,
}

impl Master {
    /// A master with no slaves yet.
    pub(super) fn new(me: SiloId, params: ProtocolParams, now: Instant) -> Self {
        Self {
            me,
            table: Table::new(me, true, now),
            params,
            view: 1,
        }
    }

    /// The master's timing parameters.
    pub(super) fn params(&self) -> ProtocolParams {
        self.params
    }

    /// Handles one authenticated packet from `src`.
    pub(super) fn on_packet(
        &mut self,
        now: Instant,
        src: SocketAddr,
        packet: Packet,
        out: &mut Outbox,
    ) {
        let Packet { from, seq, body } = packet;
        if from == self.me {
            return;
        }
        if !self.table.accept_seq(&from, seq) {
            tracing::debug!(%from, seq, kind = body.name(), "dropping replayed or reordered packet");
            return;
        }
        match body {
            PacketBody::Handshake => self.on_handshake(now, src, from, seq, out),
            PacketBody::Heartbeat { load, view } => {
                let Some(entry) = self.table.active_mut(&from) else {
                    // Dead, departed, or from before a master restart: fence and rejoin.
                    tracing::debug!(%from, %src, "heartbeat from a non-member; asking it to rejoin");
                    out.push((src, PacketBody::Rejoin));
                    return;
                };
                entry.last_heard = now;
                entry.addr = src;
                self.table.set_load(&from, load);
                if view < self.view {
                    // It missed a SLAVE_CONNECT/DISCONNECT: resend the whole list.
                    out.push((src, self.welcome()));
                }
            }
            PacketBody::Shutdown => {
                if self.table.is_active(&from) {
                    tracing::info!("slave {from} left");
                    self.remove(&from, DepartureReason::Left, out);
                }
            }
            other => {
                tracing::debug!(%from, kind = other.name(), "master ignores this packet kind");
            }
        }
    }

    /// HANDSHAKE: admit `from`, or resend the WELCOME if it is already a member.
    fn on_handshake(
        &mut self,
        now: Instant,
        src: SocketAddr,
        from: SiloId,
        seq: u64,
        out: &mut Outbox,
    ) {
        if from.same_address(&self.me) {
            tracing::warn!("ignored a HANDSHAKE from {from}: it claims the master's own address");
            return;
        }
        if let Some(entry) = self.table.active_mut(&from) {
            entry.last_heard = now;
            entry.addr = src;
            out.push((src, self.welcome()));
            return;
        }
        // Another generation of the same silo?
        let same_silo: Vec<SiloId> = self
            .table
            .active_peers()
            .filter(|e| e.info.id.same_address(&from))
            .map(|e| e.info.id)
            .collect();
        if let Some(newer) = same_silo
            .iter()
            .find(|old| old.generation >= from.generation)
        {
            tracing::warn!("ignored a HANDSHAKE from {from}: {newer} is a newer run of that silo");
            return;
        }
        for old in same_silo {
            tracing::info!("slave restarted: {old} is now {from} (the old run is declared dead)");
            self.remove(&old, DepartureReason::Dead, out);
        }
        let rejoin = self.table.get(&from).is_some();
        self.table.activate(from, src, now, false);
        self.table.record_seq(&from, seq);
        self.view += 1;
        if rejoin {
            tracing::info!("slave {from} joined again (membership view {})", self.view);
        } else {
            tracing::info!("slave {from} joined (membership view {})", self.view);
        }
        let connect = PacketBody::SlaveConnect {
            member: from,
            view: self.view,
        };
        for peer in self.table.active_peers().filter(|e| e.info.id != from) {
            out.push((peer.addr, connect.clone()));
        }
        out.push((src, self.welcome()));
        // The WELCOME already lists every member; the newcomer also gets one
        // SLAVE_CONNECT per existing slave, as the protocol describes (idempotent there).
        for peer in self.table.active_peers().filter(|e| e.info.id != from) {
            let existing = PacketBody::SlaveConnect {
                member: peer.info.id,
                view: self.view,
            };
            out.push((src, existing));
        }
    }

    /// Turns `id` into a tombstone and tells the remaining slaves.
    fn remove(&mut self, id: &SiloId, reason: DepartureReason, out: &mut Outbox) {
        let status = match reason {
            DepartureReason::Left => MemberStatus::ShuttingDown,
            DepartureReason::Dead => MemberStatus::Dead,
        };
        if !self.table.depart(id, status) {
            return;
        }
        self.view += 1;
        let disconnect = PacketBody::SlaveDisconnect {
            member: *id,
            reason,
            view: self.view,
        };
        for peer in self.table.active_peers() {
            out.push((peer.addr, disconnect.clone()));
        }
    }

    /// The WELCOME for a (re)joining slave.
    fn welcome(&self) -> PacketBody {
        PacketBody::Welcome {
            view: self.view,
            params: self.params,
            members: self.table.wire_members(),
        }
    }

    /// Once per heartbeat interval: declare silent slaves dead, then heartbeat the rest.
    pub(super) fn on_tick(&mut self, now: Instant, load: LoadReport, out: &mut Outbox) {
        self.table.set_load(&self.me, load);
        let lease = self.params.lease();
        let expired: Vec<SiloId> = self
            .table
            .active_peers()
            .filter(|e| now.saturating_duration_since(e.last_heard) > lease)
            .map(|e| e.info.id)
            .collect();
        for id in expired {
            tracing::warn!(
                "slave {id} declared dead: no heartbeat for {}",
                humantime::format_duration(lease)
            );
            self.remove(&id, DepartureReason::Dead, out);
        }
        let heartbeat = PacketBody::Heartbeat {
            load,
            view: self.view,
        };
        for peer in self.table.active_peers() {
            out.push((peer.addr, heartbeat.clone()));
        }
    }

    /// Graceful leave: tell every slave to shut down.
    pub(super) fn on_leave(&mut self, out: &mut Outbox) {
        self.table.set_my_status(MemberStatus::ShuttingDown);
        for peer in self.table.active_peers() {
            out.push((peer.addr, PacketBody::Shutdown));
        }
    }

    /// The master's snapshot.
    pub(super) fn snapshot(&self, version: u64) -> MembershipSnapshot {
        self.table.snapshot(version, Some(self.me), true)
    }
}
