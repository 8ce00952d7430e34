//! The acting master's side of the slave protocol, as a pure state machine (no I/O, no
//! clock).
//!
//! While a candidate acts as master (for one epoch), it admits slaves (HANDSHAKE →
//! WELCOME), answers every slave HEARTBEAT with one of its own that renews the slave's
//! hosting lease, announces every change to the other slaves (SLAVE_CONNECT /
//! SLAVE_DISCONNECT, one per change, each numbered with the master's `view`), and
//! declares a slave dead when it has been silent for longer than `dead_after`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Instant;

use granary_proto::packet::{
    DepartureReason, LoadReport, Packet, PacketBody, ProtocolParams, SiloId,
};

use super::config::Timing;
use super::protocol::Outbox;
use super::snapshot::MemberStatus;
use super::table::Table;

/// The acting master's state for one epoch.
#[derive(Debug)]
pub(super) struct Master {
    /// This silo.
    me: SiloId,
    /// The epoch this master acts for; stamped on WELCOME and HEARTBEAT.
    epoch: u64,
    /// Every slave (and this silo), with tombstones.
    pub(super) table: Table,
    /// The timing handed to slaves in WELCOME; also the master's own.
    params: ProtocolParams,
    /// No standby candidates: a graceful leave shuts the whole cluster down.
    lone: bool,
    /// Membership version on the wire: +1 per announced change.
    view: u64,
    /// Slaves admitted again after this master declared them dead (their grains may
    /// live elsewhere now), with the view of that admission. Every WELCOME lists them as
    /// suspended, which tells the slave it is an admission (report before serving),
    /// until a heartbeat shows it applied a WELCOME of that view or later. (Not their
    /// load: the slave's own heartbeats overwrite that, and may come first.)
    readmitted: BTreeMap<SiloId, u64>,
}

impl Master {
    /// A master for `epoch` with no slaves yet.
    pub(super) fn new(
        me: SiloId,
        epoch: u64,
        params: ProtocolParams,
        lone: bool,
        now: Instant,
    ) -> Self {
        Self {
            me,
            epoch,
            table: Table::new(me, true, now),
            params,
            lone,
            view: 1,
            readmitted: BTreeMap::new(),
        }
    }

    /// The epoch this master acts for.
    pub(super) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Handles one authenticated packet from a slave at `src`.
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
            PacketBody::Heartbeat {
                epoch,
                load,
                view,
                ack,
            } => {
                let Some(entry) = self.table.active_mut(&from) else {
                    if epoch != 0 && epoch < self.epoch {
                        // A slave of an earlier master: admit it; it reports its grains
                        // to this master and keeps them.
                        self.on_handshake(now, src, from, seq, out);
                    } else {
                        // Declared dead (or departed) under this master: its grains may
                        // live elsewhere now. It must drop them and join again.
                        tracing::debug!(%from, %src, "heartbeat from a non-member; asking it to rejoin");
                        out.push((src, PacketBody::Rejoin));
                    }
                    return;
                };
                entry.last_heard = now;
                entry.addr = src;
                self.table.set_load(&from, load);
                if self.readmitted.get(&from).is_some_and(|&at| view >= at) {
                    self.readmitted.remove(&from);
                }
                if view < self.view || epoch != self.epoch {
                    // It missed a SLAVE_CONNECT/DISCONNECT, or the WELCOME of this epoch:
                    // resend the whole list (with the epoch).
                    out.push((src, self.welcome()));
                }
                // The answer renews the slave's lease from when it sent `ack`.
                out.push((
                    src,
                    PacketBody::Heartbeat {
                        epoch: self.epoch,
                        load: self.my_load(),
                        view: self.view,
                        ack,
                    },
                ));
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

    fn my_load(&self) -> LoadReport {
        self.table
            .get(&self.me)
            .map(|e| e.info.load)
            .unwrap_or_default()
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
            // A member that handshakes again has not heard this master lately and may be
            // deaf to us: only heartbeats keep it alive (a slave that never hears the
            // WELCOME is declared dead once its last heartbeat is `dead_after` old, so
            // its grains move). Its last heartbeats said whether it still held its
            // hosting lease (`LoadReport::suspended`), and placement avoids it if not.
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
        if rejoin {
            // Declared dead or departed before: placement avoids it until a heartbeat
            // says it holds its hosting lease again.
            self.table.set_load(
                &from,
                LoadReport {
                    suspended: true,
                    ..LoadReport::default()
                },
            );
        }
        self.view += 1;
        if rejoin {
            self.readmitted.insert(from, self.view);
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
        self.readmitted.remove(id);
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
        let mut members = self.table.wire_members();
        for m in &mut members {
            if self.readmitted.contains_key(&m.id) {
                m.load.suspended = true;
            }
        }
        PacketBody::Welcome {
            epoch: self.epoch,
            view: self.view,
            params: self.params,
            members,
        }
    }

    /// Every candidate tick: record this silo's load and declare silent slaves dead.
    /// (Slaves are heartbeated in answer to their own heartbeats.)
    pub(super) fn on_tick(&mut self, now: Instant, load: LoadReport, out: &mut Outbox) {
        self.table.set_load(&self.me, load);
        let dead_after = Timing::new(self.params).dead_after;
        let expired: Vec<SiloId> = self
            .table
            .active_peers()
            .filter(|e| now.saturating_duration_since(e.last_heard) > dead_after)
            .map(|e| e.info.id)
            .collect();
        for id in expired {
            tracing::warn!(
                "slave {id} declared dead: no heartbeat for {}",
                humantime::format_duration(dead_after)
            );
            self.remove(&id, DepartureReason::Dead, out);
        }
    }

    /// Graceful leave. A lone master tells every slave to shut down (the cluster stops
    /// with it); a master with standbys just stops acting, and the slaves find the next
    /// acting master.
    pub(super) fn on_leave(&mut self, out: &mut Outbox) {
        self.table.set_my_status(MemberStatus::ShuttingDown);
        if self.lone {
            for peer in self.table.active_peers() {
                out.push((peer.addr, PacketBody::Shutdown));
            }
        }
    }
}
