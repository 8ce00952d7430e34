//! A slave's side of the protocol, as a pure state machine (no I/O, no clock).
//!
//! States:
//! ```text
//!            WELCOME                 lease runs out / REJOIN / master SHUTDOWN
//! handshaking ──────────▶ joined ──────────────────────────────────────────▶ handshaking
//!   (HANDSHAKE every tick)   (HEARTBEAT every tick)
//! ```
//! `master_reachable` in the snapshot is exactly "joined". A slave that is not joined
//! must fence itself; it keeps sending HANDSHAKE every heartbeat interval, and the next
//! WELCOME (from the same master, or a restarted one) joins it again.
//!
//! After a REJOIN the slave keeps its [`SiloId`]: the master treats the HANDSHAKE as a
//! re-join of a member it had dropped (a fresh SLAVE_CONNECT to the others). That is
//! safe because the slave fences itself as soon as it is not joined, so nothing it
//! hosted survives into the new membership.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use granary_proto::packet::{
    AuthRejection, DepartureReason, LoadReport, Packet, PacketBody, ProtocolParams, SiloId,
    WireMember,
};

use super::protocol::Outbox;
use super::snapshot::{MemberStatus, MembershipSnapshot};
use super::table::Table;

/// A slave's state.
#[derive(Debug)]
pub(super) struct Slave {
    /// This silo.
    me: SiloId,
    /// The configured UDP address of the master; all packets go there, and only packets
    /// from there are believed.
    master_addr: SocketAddr,
    /// Members as learned from WELCOME / SLAVE_CONNECT / SLAVE_DISCONNECT.
    pub(super) table: Table,
    /// Heartbeat timing: this silo's own until the first WELCOME, then the master's.
    params: ProtocolParams,
    /// The master that welcomed us last (kept while unreachable).
    master: Option<SiloId>,
    /// Joined to `master` (WELCOME received, lease not expired, no REJOIN since).
    joined: bool,
    /// The master's membership view we applied last.
    applied_view: u64,
    /// When an authenticated packet from `master` last arrived.
    last_heard: Instant,
    /// Highest sequence number accepted from `master`.
    master_seq: u64,
    /// The master said SHUTDOWN: this silo should shut down.
    shutdown_requested: bool,
    /// Why we are not joined, reported once per back-off step.
    unjoined: Unjoined,
}

/// The longest a slave stays quiet about not reaching its master.
const REPORT_MAX: Duration = Duration::from_secs(60);

/// While a slave is not joined: what it reports, and when. The first line comes after
/// two unanswered HANDSHAKEs (or at the next tick when the master rejects our cluster
/// key), then after silences of 4, 8, 16 … heartbeat intervals, up to [`REPORT_MAX`]:
/// one line per back-off step.
#[derive(Debug)]
struct Unjoined {
    /// When the slave started handshaking.
    since: Instant,
    /// HANDSHAKEs sent since.
    handshakes: u32,
    /// When the next line is due.
    next_report: Instant,
    /// The silence after that line.
    every: Duration,
    /// Lines reported since `since`.
    reports: u32,
    /// The master's last auth rejection, if any.
    rejected: Option<AuthRejection>,
}

impl Unjoined {
    fn new(now: Instant, interval: Duration) -> Self {
        let first = interval * 2;
        Self {
            since: now,
            handshakes: 0,
            next_report: now + first,
            every: first,
            reports: 0,
            rejected: None,
        }
    }
}

impl Slave {
    /// A slave that has not joined yet.
    pub(super) fn new(
        me: SiloId,
        master_addr: SocketAddr,
        params: ProtocolParams,
        now: Instant,
    ) -> Self {
        Self {
            me,
            master_addr,
            table: Table::new(me, false, now),
            params,
            master: None,
            joined: false,
            applied_view: 0,
            last_heard: now,
            master_seq: 0,
            shutdown_requested: false,
            unjoined: Unjoined::new(now, params.heartbeat_interval()),
        }
    }

    /// Lines reported since the slave last started handshaking.
    #[cfg(test)]
    pub(super) fn unjoined_reports(&self) -> u32 {
        self.unjoined.reports
    }

    /// The master refused a packet of ours for its cluster key.
    pub(super) fn on_rejected(&mut self, now: Instant, src: SocketAddr, reason: AuthRejection) {
        if src != self.master_addr || self.joined {
            return;
        }
        if self.unjoined.rejected.is_none() && self.unjoined.reports == 0 {
            // A wrong key is certain at once: say so on the next tick.
            self.unjoined.next_report = now;
        }
        self.unjoined.rejected = Some(reason);
    }

    /// One line saying why this slave is not joined, once per back-off step.
    fn report_unjoined(&mut self, now: Instant) {
        let u = &mut self.unjoined;
        u.handshakes += 1;
        if now < u.next_report {
            return;
        }
        let addr = self.master_addr;
        let waited = humantime::format_duration(Duration::from_secs(
            now.saturating_duration_since(u.since).as_secs(),
        ));
        match u.rejected {
            Some(AuthRejection::WrongKey) => tracing::warn!(
                "wrong cluster key: the master at {addr} rejects this silo's packets; \
                 give every silo and client the same --cluster-key (GRANARY_CLUSTER_KEY)"
            ),
            Some(AuthRejection::KeyRequired) => tracing::warn!(
                "the master at {addr} requires a cluster key and this silo has none: \
                 pass --cluster-key (GRANARY_CLUSTER_KEY)"
            ),
            Some(AuthRejection::NoKeyExpected) => tracing::warn!(
                "this silo has a cluster key but the master at {addr} has none: \
                 give both the same --cluster-key, or neither"
            ),
            None => tracing::warn!(
                "cannot reach the master at {addr}: no answer to {} HANDSHAKE(s) in {waited}; \
                 check that it runs and that --master names its --udp address (still trying)",
                u.handshakes
            ),
        }
        u.reports += 1;
        u.every = (u.every * 2).min(REPORT_MAX);
        u.next_report = now + u.every;
    }

    /// Current timing (the master's once welcomed).
    pub(super) fn params(&self) -> ProtocolParams {
        self.params
    }

    /// True once the master said SHUTDOWN.
    pub(super) fn shutdown_requested(&self) -> bool {
        self.shutdown_requested
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
        if src != self.master_addr && from.udp != self.master_addr {
            tracing::debug!(%from, %src, kind = body.name(), "slave ignores packets from non-masters");
            return;
        }
        match self.master {
            Some(current) if from == current => {
                if seq <= self.master_seq {
                    tracing::debug!(%from, seq, kind = body.name(), "dropping replayed or reordered packet");
                    return;
                }
                self.master_seq = seq;
                self.last_heard = now;
            }
            Some(current) if from.generation < current.generation => {
                tracing::debug!(%from, %current, "dropping packet from an older master generation");
                return;
            }
            // Not (yet) our master: only a WELCOME or a REJOIN means anything.
            _ if !matches!(body, PacketBody::Welcome { .. } | PacketBody::Rejoin) => {
                tracing::debug!(%from, kind = body.name(), "ignoring packet from a master we have not joined");
                return;
            }
            _ => {}
        }
        match body {
            PacketBody::Welcome {
                view,
                params,
                members,
            } => self.on_welcome(now, from, seq, view, params, members),
            PacketBody::Rejoin => {
                tracing::warn!("the master at {} does not know this silo (it restarted, or declared us dead): fencing and re-joining", self.master_addr);
                self.unjoin(now);
                out.push((self.master_addr, PacketBody::Handshake));
            }
            PacketBody::Heartbeat { load, .. } => self.table.set_load(&from, load),
            PacketBody::SlaveConnect { member, view } => {
                if member == self.me {
                } else if self.joined && view <= self.applied_view {
                    // Already covered by our view (the SLAVE_CONNECTs that follow a
                    // WELCOME): add the member if missing, never revive a departed one.
                    if self.table.get(&member).is_none() {
                        self.table.activate(member, member.udp, now, false);
                    }
                } else if self.next_view(view) {
                    self.table.activate(member, member.udp, now, false);
                }
            }
            PacketBody::SlaveDisconnect {
                member,
                reason,
                view,
            } => {
                if self.next_view(view) && member != self.me {
                    let status = match reason {
                        DepartureReason::Left => MemberStatus::ShuttingDown,
                        DepartureReason::Dead => MemberStatus::Dead,
                    };
                    self.table.depart(&member, status);
                }
            }
            PacketBody::Shutdown => {
                tracing::info!("the master {from} is shutting the cluster down");
                self.table.depart(&from, MemberStatus::ShuttingDown);
                self.unjoin(now);
                self.shutdown_requested = true;
            }
            PacketBody::Handshake => {}
        }
    }

    /// True when `view` is exactly the next master view (then it is applied). A gap is
    /// left alone: our next heartbeat reports the old view and the master resends the
    /// whole list in a WELCOME.
    fn next_view(&mut self, view: u64) -> bool {
        if !self.joined || view != self.applied_view + 1 {
            tracing::debug!(
                view,
                applied = self.applied_view,
                "membership update out of order; waiting for a WELCOME"
            );
            return false;
        }
        self.applied_view = view;
        true
    }

    /// WELCOME: adopt the master, its parameters and its member list.
    fn on_welcome(
        &mut self,
        now: Instant,
        from: SiloId,
        seq: u64,
        view: u64,
        params: ProtocolParams,
        members: Vec<WireMember>,
    ) {
        if let Some(old) = self.master.filter(|old| *old != from) {
            tracing::info!("the master restarted: {old} is now {from}");
            self.table.depart(&old, MemberStatus::Dead);
        }
        if self.master != Some(from) {
            self.master = Some(from);
            self.table.dirty.membership = true;
        }
        self.master_seq = seq;
        self.last_heard = now;
        if params.heartbeat_interval_ms > 0 && params.missed_heartbeats > 0 {
            self.params = params;
        } else {
            tracing::warn!(
                "the master sent unusable heartbeat parameters ({} ms × {}); keeping ours",
                params.heartbeat_interval_ms,
                params.missed_heartbeats
            );
        }
        self.applied_view = view;
        let listed: BTreeSet<SiloId> = members.iter().map(|m| m.id).collect();
        for gone in self.table.active_peer_ids() {
            if !listed.contains(&gone) && gone != from {
                self.table.depart(&gone, MemberStatus::Dead);
            }
        }
        self.table.activate(from, self.master_addr, now, true);
        for m in members.iter().filter(|m| m.id != self.me) {
            self.table.activate(m.id, m.id.udp, now, m.id == from);
            self.table.set_load(&m.id, m.load);
        }
        if !self.joined {
            tracing::info!("joined the master {from} ({} members)", listed.len());
            self.joined = true;
            self.table.dirty.membership = true;
        }
    }

    /// Leaves the joined state (fence), keeping the known members.
    fn unjoin(&mut self, now: Instant) {
        if self.joined {
            self.joined = false;
            self.table.dirty.membership = true;
            self.unjoined = Unjoined::new(now, self.params.heartbeat_interval());
        }
    }

    /// Once per heartbeat interval: check the master's lease, then HEARTBEAT (joined) or
    /// HANDSHAKE (not joined) to the master.
    pub(super) fn on_tick(&mut self, now: Instant, load: LoadReport, out: &mut Outbox) {
        self.table.set_load(&self.me, load);
        let lease = self.lease();
        if self.joined && now.saturating_duration_since(self.last_heard) > lease {
            tracing::warn!(
                "lost the master at {}: silent for {}; fencing (this silo's grains are \
                 deactivated) until it answers again",
                self.master_addr,
                humantime::format_duration(lease)
            );
            self.unjoin(now);
        }
        if !self.joined {
            self.report_unjoined(now);
        }
        let body = if self.joined {
            PacketBody::Heartbeat {
                load,
                view: self.applied_view,
            }
        } else {
            PacketBody::Handshake
        };
        out.push((self.master_addr, body));
    }

    /// How long the master may stay silent.
    fn lease(&self) -> Duration {
        self.params.lease()
    }

    /// Graceful leave: tell the master.
    pub(super) fn on_leave(&mut self, out: &mut Outbox) {
        self.table.set_my_status(MemberStatus::ShuttingDown);
        self.joined = false;
        self.table.dirty.membership = true;
        out.push((self.master_addr, PacketBody::Shutdown));
    }

    /// The slave's snapshot.
    pub(super) fn snapshot(&self, version: u64) -> MembershipSnapshot {
        self.table.snapshot(version, self.master, self.joined)
    }
}
