//! A slave's side of the protocol, as a pure state machine (no I/O, no clock).
//!
//! A slave knows the master candidates' addresses. It sends HANDSHAKE to all of them
//! until the acting master answers WELCOME (standbys answer NOT_LEADER, naming the master
//! they follow), then heartbeats that master every interval.
//!
//! # The hosting lease
//! Each HEARTBEAT carries a number; the master answers it with a HEARTBEAT echoing the
//! number in `ack`, and the slave's hosting lease then runs for `hosting_lease` from when
//! it *sent* that heartbeat (not from when the answer arrived: a delayed answer never
//! stretches the lease). The master declares a slave dead only after `dead_after` of
//! silence, which is longer, so a slave cut off from its master has stopped running
//! grains before the master gives them to another.
//!
//! ```text
//!            lease renewed                     lease runs out
//!  Serving ◀──────────────── Suspended ◀─────────────────────── Serving
//!     │      (after the new master          (grains wait: no turn, no write;
//!     │       accepted our report)           HANDSHAKE to every candidate)
//!     └─ REJOIN, or every candidate silent for 2 × dead_after ──▶ Fenced (grains dropped)
//! ```
//!
//! After every *admission* — welcomed by a new master (or one of a newer epoch), welcomed
//! again after losing its master, or fenced — the slave must report its grains (none,
//! after fencing) before the master's answers renew its lease. The admission number is
//! in the snapshot; the cluster layer sends the report over TCP and tells the state
//! machine with [`Slave::set_reported`].
//!
//! A slave keeps its grains across an admission only if its lease never ran out: then no
//! master can have placed them elsewhere, and it reports them to the new master within
//! that master's rebuild window (the lease ends before the window does). A slave admitted
//! after its lease ran out is fenced instead: it drops its grains and reports an empty
//! silo. The directory, for its part, keeps a reported grain only if it already lives on
//! that slave or the rebuild window is still open. Packets from a master of an older
//! epoch than one the slave knows are ignored.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use granary_proto::packet::{
    AuthRejection, DepartureReason, LoadReport, Packet, PacketBody, ProtocolParams, SiloId,
    WireMember,
};

use super::config::Timing;
use super::protocol::Outbox;
use super::snapshot::{Hosting, MemberStatus, MembershipSnapshot};
use super::table::Table;

mod unjoined;

use unjoined::Unjoined;

/// Heartbeats remembered for matching the master's answers.
const SENT_MEMORY: usize = 64;
/// Addresses learned from NOT_LEADER hints, beyond the configured candidates.
const MAX_HINTS: usize = 8;

/// A slave's state.
#[derive(Debug)]
pub(super) struct Slave {
    /// This silo.
    me: SiloId,
    /// The configured candidates' UDP addresses.
    configured: Vec<SocketAddr>,
    /// Addresses of acting masters named by standbys, not configured.
    hints: Vec<SocketAddr>,
    /// Members as learned from WELCOME / SLAVE_CONNECT / SLAVE_DISCONNECT.
    pub(super) table: Table,
    /// Heartbeat timing: this silo's own until the first WELCOME, then the master's.
    params: ProtocolParams,
    /// The acting master followed (kept while unreachable).
    master: Option<SiloId>,
    /// Where it answered from.
    master_addr: Option<SocketAddr>,
    /// The newest leadership epoch known.
    epoch: u64,
    /// Welcomed by `master`, and neither told to rejoin nor silent for `dead_after`.
    joined: bool,
    /// The master's membership view we applied last.
    applied_view: u64,
    /// When an authenticated packet from `master` last arrived.
    last_heard: Instant,
    /// When any candidate last said anything.
    last_contact: Instant,
    /// Highest sequence number accepted from `master`.
    master_seq: u64,
    /// The master said SHUTDOWN: this silo should shut down.
    shutdown_requested: bool,
    /// Why we are not joined, reported once per back-off step.
    unjoined: Unjoined,
    /// Number of the next heartbeat.
    next_heartbeat: u64,
    /// Recent heartbeats: number and when it was sent.
    sent: VecDeque<(u64, Instant)>,
    /// When the hosting lease runs out (`None`: not held).
    lease_until: Option<Instant>,
    /// Admissions so far (see the module docs); a report is owed for the last one.
    admission: u64,
    /// The newest admission whose report the master accepted.
    reported: u64,
    /// Grains must be dropped; cleared once the cluster layer reported an empty silo.
    fenced: bool,
    /// Hosting state as of the last event or tick (what snapshots show).
    hosting: Hosting,
    /// The master went quiet (or the lease is not held): tick four times as often, to
    /// find the next acting master before the lease runs out.
    hurried: bool,
}

impl Slave {
    /// A slave that has not joined yet, knowing the candidates at `masters`.
    pub(super) fn new(
        me: SiloId,
        masters: Vec<SocketAddr>,
        params: ProtocolParams,
        now: Instant,
    ) -> Self {
        Self {
            me,
            configured: masters,
            hints: Vec::new(),
            table: Table::new(me, false, now),
            params,
            master: None,
            master_addr: None,
            epoch: 0,
            joined: false,
            applied_view: 0,
            last_heard: now,
            last_contact: now,
            master_seq: 0,
            shutdown_requested: false,
            unjoined: Unjoined::new(now, params.heartbeat_interval()),
            next_heartbeat: 1,
            sent: VecDeque::with_capacity(SENT_MEMORY),
            lease_until: None,
            admission: 0,
            reported: 0,
            fenced: false,
            hosting: Hosting::Suspended,
            hurried: false,
        }
    }

    fn timing(&self) -> Timing {
        Timing::new(self.params)
    }

    /// Lines reported since the slave last started handshaking.
    #[cfg(test)]
    pub(super) fn unjoined_reports(&self) -> u32 {
        self.unjoined.reports()
    }

    /// True for a packet from a candidate this slave listens to.
    fn is_candidate_packet(&self, src: SocketAddr, from: &SiloId) -> bool {
        let known = |a: &SocketAddr| self.configured.contains(a) || self.hints.contains(a);
        known(&src) || known(&from.udp) || self.master == Some(*from)
    }

    /// A candidate refused a packet of ours for its cluster key.
    pub(super) fn on_rejected(&mut self, now: Instant, src: SocketAddr, reason: AuthRejection) {
        if self.joined || !(self.configured.contains(&src) || self.hints.contains(&src)) {
            return;
        }
        self.unjoined.rejected(now, reason);
    }

    /// How often to tick: the heartbeat interval, or a quarter of it while the master is
    /// quiet (a failover may be under way) and the slave was joined.
    pub(super) fn tick_interval(&self) -> Duration {
        let timing = self.timing();
        if self.hurried {
            timing.candidate_beat
        } else {
            timing.heartbeat
        }
    }

    /// True once the master said SHUTDOWN.
    pub(super) fn shutdown_requested(&self) -> bool {
        self.shutdown_requested
    }

    /// When the hosting lease runs out; `None` when it is not held (or the slave is
    /// fenced).
    pub(super) fn hosting_until(&self) -> Option<Instant> {
        if self.fenced {
            None
        } else {
            self.lease_until
        }
    }

    /// The cluster layer's report of this silo's grains (none, after fencing) for
    /// admission `admission` was accepted: the master's answers may renew the lease now.
    pub(super) fn set_reported(&mut self, admission: u64) {
        if admission > self.reported {
            self.reported = admission;
        }
        if self.fenced && self.reported >= self.admission {
            tracing::info!("rejoined with an empty silo after fencing");
            self.fenced = false;
            self.table.dirty.membership = true;
        }
    }

    /// A report is owed: no renewal until it is accepted.
    fn admit(&mut self) {
        self.admission += 1;
        self.table.dirty.membership = true;
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
        if !self.is_candidate_packet(src, &from) {
            tracing::debug!(%from, %src, kind = body.name(), "slave ignores packets from non-candidates");
            return;
        }
        self.last_contact = now;
        if self.master == Some(from) {
            if seq <= self.master_seq {
                tracing::debug!(%from, seq, kind = body.name(), "dropping replayed or reordered packet");
                return;
            }
            self.master_seq = seq;
            self.last_heard = now;
        } else if !matches!(
            body,
            PacketBody::Welcome { .. } | PacketBody::NotLeader { .. }
        ) {
            // Not our master: only a WELCOME or a hint means anything.
            tracing::debug!(%from, kind = body.name(), "ignoring packet from a master we have not joined");
            return;
        }
        match body {
            PacketBody::Welcome {
                epoch,
                view,
                params,
                members,
            } => self.on_welcome(now, src, from, seq, epoch, view, params, members),
            PacketBody::NotLeader { epoch, leader } => {
                if let Some(leader) = leader.filter(|_| epoch >= self.epoch) {
                    let addr = leader.udp;
                    if !self.configured.contains(&addr)
                        && !self.hints.contains(&addr)
                        && self.hints.len() < MAX_HINTS
                    {
                        tracing::info!("the candidate at {src} names {leader} as the acting master (epoch {epoch})");
                        self.hints.push(addr);
                    }
                }
            }
            PacketBody::Rejoin => {
                tracing::warn!("the acting master {from} does not count this silo as a member (it declared it dead, or restarted): dropping this silo's grains and joining again");
                self.fence(now);
                self.unjoin(now);
                if let Some(addr) = self.master_addr {
                    out.push((addr, PacketBody::Handshake));
                }
            }
            PacketBody::Heartbeat {
                epoch,
                load,
                ack,
                view,
            } if epoch == self.epoch => {
                self.table.set_load(&from, load);
                if view > self.applied_view {
                    // The master's membership moved past what this silo applied. One of
                    // those changes may be this silo's own re-admission after the master
                    // declared it dead and placed its grains elsewhere, whose WELCOME
                    // (an admission: report first) has not arrived yet: renewing the
                    // lease from this answer would keep those grains under a valid lease
                    // (two writers; found by the simulation, seed 1926). Our next
                    // heartbeat reports the old view, the master resends the WELCOME,
                    // and the answers renew again once it is applied.
                    tracing::debug!(
                        view,
                        applied = self.applied_view,
                        "heartbeat answer of a newer membership view: not renewing the lease until caught up"
                    );
                } else {
                    self.renew(ack);
                }
            }
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
            } if self.next_view(view) && member != self.me => {
                let status = match reason {
                    DepartureReason::Left => MemberStatus::ShuttingDown,
                    DepartureReason::Dead => MemberStatus::Dead,
                };
                self.table.depart(&member, status);
            }
            // Stay joined: the master answers our heartbeats (renewing the lease) while
            // this silo saves its grains and leaves.
            PacketBody::Shutdown if !self.shutdown_requested => {
                tracing::info!("the master {from} is shutting the cluster down");
                self.table.depart(&from, MemberStatus::ShuttingDown);
                self.shutdown_requested = true;
            }
            _ => {}
        }
        self.refresh_hosting(now);
    }

    /// Extends the lease from when heartbeat `ack` was sent, if the master may renew it.
    fn renew(&mut self, ack: u64) {
        if self.reported < self.admission || self.fenced {
            return;
        }
        let Some(&(_, sent)) = self.sent.iter().find(|(n, _)| *n == ack) else {
            return;
        };
        let until = sent + self.timing().hosting_lease;
        if self.lease_until.is_none_or(|current| until > current) {
            self.lease_until = Some(until);
        }
    }

    /// Drops the lease and asks the cluster layer to drop every grain; a report of the
    /// emptied silo clears it.
    fn fence(&mut self, now: Instant) {
        if !self.fenced {
            self.fenced = true;
            self.lease_until = None;
            self.admit();
        }
        self.refresh_hosting(now);
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

    /// WELCOME: adopt the master (of this or a newer epoch), its parameters and members.
    #[allow(clippy::too_many_arguments)]
    fn on_welcome(
        &mut self,
        now: Instant,
        src: SocketAddr,
        from: SiloId,
        seq: u64,
        epoch: u64,
        view: u64,
        params: ProtocolParams,
        members: Vec<WireMember>,
    ) {
        if epoch < self.epoch {
            tracing::debug!(%from, epoch, known = self.epoch, "ignoring a WELCOME from an older epoch");
            return;
        }
        // A WELCOME from the master we follow, in its epoch, while joined, is usually a
        // resend (our heartbeat carried an old view): no admission. But if it lists us as
        // suspended (or not at all), the master answered a HANDSHAKE of ours that arrived
        // late, after it had declared us dead and placed our grains elsewhere, and admitted
        // us again: that is an admission (found by the simulation; two writers otherwise).
        let readmitted = members
            .iter()
            .find(|m| m.id == self.me)
            .is_none_or(|m| m.load.suspended);
        let newcomer =
            self.master != Some(from) || epoch != self.epoch || !self.joined || readmitted;
        if self.master != Some(from) {
            match self.master {
                Some(old) => {
                    tracing::info!("following the acting master {from} (epoch {epoch}; was {old})");
                    self.table.depart(&old, MemberStatus::Dead);
                }
                None => tracing::debug!("following the acting master {from} (epoch {epoch})"),
            }
            self.master = Some(from);
            self.table.dirty.membership = true;
        }
        if epoch != self.epoch {
            self.epoch = epoch;
            self.table.dirty.membership = true;
        }
        if newcomer {
            // Report what we host before serving this master. Grains are kept only under
            // an unbroken lease: once it ran out, a master may have placed them elsewhere
            // (in this epoch or an earlier one), so they are dropped and an empty silo is
            // reported.
            if self.lease_until.is_some_and(|until| now >= until) {
                tracing::warn!(
                    "joining the acting master {from} (epoch {epoch}) after this silo's hosting lease ran out: \
                     its grains may live elsewhere now, dropping them"
                );
                self.fence(now);
            } else {
                self.admit();
            }
        }
        self.master_addr = Some(src);
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
        self.table.activate(from, src, now, true);
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

    /// Leaves the joined state, keeping the known members.
    fn unjoin(&mut self, now: Instant) {
        if self.joined {
            self.joined = false;
            self.table.dirty.membership = true;
            self.unjoined = Unjoined::new(now, self.params.heartbeat_interval());
        }
    }

    /// Recomputes the hosting state; a change is a membership change for watchers.
    fn refresh_hosting(&mut self, now: Instant) {
        let hosting = if self.fenced {
            Hosting::Fenced
        } else if self.lease_until.is_some_and(|until| now < until) {
            Hosting::Serving
        } else {
            Hosting::Suspended
        };
        if hosting != self.hosting {
            self.hosting = hosting;
            self.table.dirty.membership = true;
        }
    }

    /// Every heartbeat interval: check the leases, then HEARTBEAT the master (joined) and
    /// HANDSHAKE every other candidate while the hosting lease is not held.
    pub(super) fn on_tick(&mut self, now: Instant, load: LoadReport, out: &mut Outbox) {
        self.table.set_load(&self.me, load);
        let timing = self.timing();
        let serving = self.lease_until.is_some_and(|until| now < until);
        if self.hosting == Hosting::Serving && !serving {
            match self.master_addr {
                Some(addr) => tracing::warn!(
                    "hosting lease ran out: no answer from the acting master at {addr} for {}; \
                     this silo's grains wait (no turn, no write) until a master renews it",
                    humantime::format_duration(timing.hosting_lease)
                ),
                None => tracing::warn!("hosting lease ran out; this silo's grains wait"),
            }
        }
        let fence_after = timing.dead_after * 2;
        if !serving
            && !self.fenced
            && now.saturating_duration_since(self.last_contact) > fence_after
            && self.lease_until.is_some()
        {
            tracing::warn!(
                "every master candidate has been silent for {}: dropping this silo's grains \
                 (fenced) until a master accepts it again",
                humantime::format_duration(fence_after)
            );
            self.fence(now);
        }
        if self.joined && now.saturating_duration_since(self.last_heard) > timing.dead_after {
            if let Some(addr) = self.master_addr {
                tracing::warn!(
                    "lost the acting master at {addr}: silent for {}; looking for the acting master among the candidates",
                    humantime::format_duration(timing.dead_after)
                );
            }
            self.unjoin(now);
        }
        if !self.joined {
            let targets = self.targets();
            self.unjoined.tick(now, &targets);
        }
        if let (true, Some(addr)) = (self.joined, self.master_addr) {
            let number = self.next_heartbeat;
            self.next_heartbeat += 1;
            if self.sent.len() == SENT_MEMORY {
                self.sent.pop_front();
            }
            self.sent.push_back((number, now));
            out.push((
                addr,
                PacketBody::Heartbeat {
                    epoch: self.epoch,
                    // Suspended: it held a hosting lease and lost it (a silo that just
                    // joined has none yet and is placeable: its grains wait one round).
                    load: LoadReport {
                        suspended: !serving && self.lease_until.is_some(),
                        ..load
                    },
                    view: self.applied_view,
                    ack: number,
                },
            ));
        }
        // The master missed an answer: look for a newer one already (and more often), so a
        // failover completes before the lease runs out.
        let master_quiet =
            !self.joined || now.saturating_duration_since(self.last_heard) > timing.heartbeat;
        self.hurried = self.admission > 0 && (master_quiet || !serving);
        if !serving || master_quiet {
            for addr in self.targets() {
                if !(self.joined && Some(addr) == self.master_addr) {
                    out.push((addr, PacketBody::Handshake));
                }
            }
        }
        self.refresh_hosting(now);
    }

    /// Every candidate address this slave knows, configured ones first.
    fn targets(&self) -> Vec<SocketAddr> {
        let mut all = self.configured.clone();
        all.extend(self.hints.iter().copied());
        all
    }

    /// Graceful leave: tell the master.
    pub(super) fn on_leave(&mut self, out: &mut Outbox) {
        self.table.set_my_status(MemberStatus::ShuttingDown);
        self.joined = false;
        self.table.dirty.membership = true;
        if let Some(addr) = self.master_addr {
            out.push((addr, PacketBody::Shutdown));
        }
    }

    /// The slave's snapshot.
    pub(super) fn snapshot(&self, version: u64) -> MembershipSnapshot {
        let mut snapshot = self
            .table
            .snapshot(version, self.master, self.epoch, self.hosting);
        snapshot.admission = self.admission;
        snapshot
    }
}

/// How long `report` lines may be apart at most (see [`unjoined`]).
pub(super) const REPORT_MAX: Duration = Duration::from_secs(60);
