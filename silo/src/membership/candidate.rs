//! A master candidate's side of the protocol, as a pure state machine (no I/O, no
//! clock): the election among candidates, and — while this candidate acts — the
//! slave-facing [`Master`].
//!
//! # Election (quorum mode)
//! - **Epochs.** Every leadership has an epoch, larger than any before. A candidate
//!   campaigns for `epoch + 1` and becomes the acting master when a majority of the
//!   candidates (itself included) voted for it. What a candidate persists — its newest
//!   epoch, whom it voted for in it, and the newest epoch it promised to another — is
//!   written durably *before* it sends a vote or a request ([`ElectionState`]).
//! - **Bully order.** A follower that sees no acting master campaigns only if no live
//!   peer is stronger (a more advanced store, then a higher UDP address), so the
//!   strongest live candidate normally wins at the first try. After a patience of two
//!   vote guards it campaigns anyway (the stronger one may be unable to win).
//! - **Votes** go to a candidate at least as up to date as the voter (store position),
//!   once per epoch, and never while the voter heard from an acting master within the
//!   vote guard.
//! - **Lease.** The acting master beats the others every `leader_beat`; a round that a
//!   majority acknowledged extends its lease to `sent + leader_lease`. A candidate that
//!   acknowledged (or voted) votes for nobody else for `vote_guard > leader_lease`, so
//!   by the time a new master is elected, the old one's lease has run out: two masters
//!   never act at once, even across a partition. A master whose lease runs out stops
//!   acting at once (directory, store, slave leases) and becomes a follower.
//! - **Stickiness.** A restarted or returning candidate does not disturb an acting
//!   master: it follows it (there is no pre-emption by a higher id).
//! - **No lonely campaigns.** A candidate campaigns only while it hears a majority of
//!   the candidates (itself included): one cut off from the others could never win, and
//!   its raised epoch would force an extra election when the cut heals (found by the
//!   chaos harness isolating the acting master: epochs went 2 → 10).
//!
//! In shared-store mode (MongoDB) the lease comes from a document in the shared store
//! instead ([`ExternalLease`]); candidates still beat each other so everyone knows who
//! acts.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use granary_proto::packet::{LoadReport, Packet, PacketBody, ProtocolParams, SiloId};
use granary_proto::replica::StorePosition;
use serde::{Deserialize, Serialize};

use super::config::{ElectionMode, MembershipConfig, Timing};
use super::master::Master;
use super::protocol::Outbox;
use super::snapshot::{Hosting, MemberInfo, MemberStatus, MembershipSnapshot};

/// What a candidate must remember across restarts to vote safely.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionState {
    /// The newest epoch this candidate campaigned, voted or followed in.
    pub epoch: u64,
    /// Whom it voted for in `epoch` (itself when it campaigned).
    pub voted_for: Option<SiloId>,
    /// The newest epoch in which it voted for or followed another candidate: beats of an
    /// older epoch are refused (their master must step down).
    pub promised: u64,
}

/// The shared store's verdict on this candidate's leadership (shared-store mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExternalLease {
    /// This candidate holds the lease document for `epoch` until `until`.
    Held {
        /// The epoch recorded in the document.
        epoch: u64,
        /// When the lease runs out unless renewed.
        until: Instant,
    },
    /// This candidate does not hold it (any more).
    Lost,
}

/// Rounds of LEADER_BEAT remembered for counting acknowledgements.
const ROUNDS_KEPT: usize = 32;

/// Another candidate, as this one knows it.
#[derive(Debug, Default)]
struct Peer {
    /// Its id, once it said something.
    id: Option<SiloId>,
    /// When it last said something (`None`: never, or it left).
    last_heard: Option<Instant>,
    /// Highest sequence number accepted from `id`.
    last_seq: u64,
    /// Where its store stood, as it last said.
    position: StorePosition,
    /// Whether the last snapshot showed it alive.
    shown_alive: bool,
}

/// One LEADER_BEAT round of the acting master.
#[derive(Debug)]
struct Round {
    number: u64,
    sent: Instant,
    acks: BTreeSet<SocketAddr>,
}

/// The acting master's election state.
#[derive(Debug)]
struct Leading {
    /// The slave-facing master for this epoch.
    master: Master,
    /// Rounds in flight.
    rounds: VecDeque<Round>,
    /// Last round number.
    round: u64,
    /// When the lease runs out.
    lease_until: Instant,
}

#[derive(Debug)]
enum Role {
    Follower,
    Campaigning {
        epoch: u64,
        sent: Instant,
        votes: BTreeSet<SocketAddr>,
    },
    Leading(Box<Leading>),
}

/// A master candidate.
#[derive(Debug)]
pub(super) struct Candidate {
    me: SiloId,
    params: ProtocolParams,
    mode: ElectionMode,
    /// The other candidates by configured UDP address.
    peers: BTreeMap<SocketAddr, Peer>,
    /// Votes (or acknowledgements) needed, this candidate included: a majority.
    quorum: usize,
    /// The persisted part.
    state: ElectionState,
    /// `state` changed and must be persisted before the outbox is sent.
    persist: bool,
    /// Where this candidate's store stands.
    position: StorePosition,
    /// When this run started (the startup vote guard runs from here).
    started: Instant,
    role: Role,
    /// When it last acknowledged an acting master or granted a vote.
    guard_from: Option<Instant>,
    /// The acting master it follows (itself while acting), and its epoch.
    leader: Option<SiloId>,
    leader_epoch: u64,
    /// Since when it has wanted to campaign (Bully patience).
    eligible_since: Option<Instant>,
    /// No campaign before this (after a failed one).
    backoff_until: Instant,
    /// Leaving gracefully: no votes, no campaigns.
    leaving: bool,
    /// Membership or leadership changed since the last snapshot.
    dirty: bool,
}

impl Candidate {
    /// A candidate starting as a follower with its persisted election state.
    pub(super) fn new(
        config: &MembershipConfig,
        me: SiloId,
        state: ElectionState,
        now: Instant,
    ) -> Self {
        let peers: BTreeMap<SocketAddr, Peer> = config
            .peers
            .iter()
            .filter(|a| **a != me.udp)
            .map(|a| (*a, Peer::default()))
            .collect();
        let quorum = peers.len().div_ceil(2) + 1;
        Self {
            me,
            params: config.params(),
            mode: config.election,
            peers,
            quorum,
            state,
            persist: false,
            position: StorePosition::default(),
            started: now,
            role: Role::Follower,
            guard_from: None,
            leader: None,
            leader_epoch: state.promised,
            eligible_since: None,
            backoff_until: now,
            leaving: false,
            dirty: true,
        }
    }

    fn timing(&self) -> Timing {
        Timing::new(self.params)
    }

    /// The heartbeat parameters (handed to slaves in WELCOME).
    pub(super) fn params(&self) -> ProtocolParams {
        self.params
    }

    /// Where this candidate's store stands (read before every event).
    pub(super) fn set_position(&mut self, position: StorePosition) {
        self.position = position;
    }

    /// The election state to persist before sending what the last event produced.
    pub(super) fn take_persist(&mut self) -> Option<ElectionState> {
        std::mem::take(&mut self.persist).then_some(self.state)
    }

    /// `(epoch, lease end)` while this candidate acts as master.
    pub(super) fn leadership(&self) -> Option<(u64, Instant)> {
        match &self.role {
            Role::Leading(l) => Some((l.master.epoch(), l.lease_until)),
            _ => None,
        }
    }

    /// Returns and clears whether snapshots changed.
    pub(super) fn take_dirty(&mut self) -> super::table::Dirty {
        let mut dirty = super::table::Dirty {
            membership: std::mem::take(&mut self.dirty),
            load: false,
        };
        if let Role::Leading(l) = &mut self.role {
            let master = std::mem::take(&mut l.master.table.dirty);
            dirty.membership |= master.membership;
            dirty.load |= master.load;
        }
        dirty
    }

    /// The configured address of the peer that sent a packet, if it is one.
    fn peer_addr(&self, src: SocketAddr, from: &SiloId) -> Option<SocketAddr> {
        [src, from.udp]
            .into_iter()
            .find(|a| self.peers.contains_key(a))
    }

    /// Handles one authenticated packet from `src`.
    pub(super) fn on_packet(
        &mut self,
        now: Instant,
        src: SocketAddr,
        packet: Packet,
        out: &mut Outbox,
    ) {
        if packet.from == self.me {
            return;
        }
        match self.peer_addr(src, &packet.from) {
            Some(addr) => self.on_peer_packet(now, addr, packet, out),
            None if packet.body.is_between_candidates() => {
                tracing::debug!(from = %packet.from, %src, "ignored a candidate packet from a silo not listed in --peer");
            }
            None => match &mut self.role {
                Role::Leading(l) => l.master.on_packet(now, src, packet, out),
                _ => {
                    if matches!(
                        packet.body,
                        PacketBody::Handshake | PacketBody::Heartbeat { .. }
                    ) {
                        out.push((
                            src,
                            PacketBody::NotLeader {
                                epoch: self.leader_epoch,
                                leader: self.leader,
                            },
                        ));
                    }
                }
            },
        }
    }

    fn on_peer_packet(&mut self, now: Instant, addr: SocketAddr, packet: Packet, out: &mut Outbox) {
        let Packet { from, seq, body } = packet;
        let peer = self.peers.entry(addr).or_default();
        match peer.id {
            Some(known) if known == from => {
                if seq <= peer.last_seq {
                    tracing::debug!(%from, seq, "dropping replayed or reordered candidate packet");
                    return;
                }
            }
            Some(known) if from.generation < known.generation => {
                tracing::debug!(%from, %known, "dropping a packet of an older run of a candidate");
                return;
            }
            _ => {
                if peer.id.is_some() {
                    self.dirty = true;
                }
                peer.id = Some(from);
            }
        }
        peer.last_seq = seq;
        if peer.last_heard.is_none() {
            self.dirty = true;
        }
        peer.last_heard = Some(now);
        match body {
            PacketBody::LeaderBeat { epoch, round } => {
                self.on_leader_beat(now, addr, from, epoch, round, out)
            }
            PacketBody::LeaderBeatAck {
                epoch,
                round,
                position,
            } => {
                peer.position = position;
                self.on_beat_ack(now, addr, epoch, round);
            }
            PacketBody::StandbyBeat { position, .. } => peer.position = position,
            PacketBody::VoteRequest { epoch, position } => {
                peer.position = position;
                self.on_vote_request(now, addr, from, epoch, position, out);
            }
            PacketBody::Vote {
                epoch,
                granted,
                position,
            } => {
                peer.position = position;
                self.on_vote(now, addr, epoch, granted, out);
            }
            PacketBody::Shutdown => {
                peer.last_heard = None;
                self.dirty = true;
                if self.leader == Some(from) {
                    // It stopped acting before saying so: no need to wait out its lease.
                    tracing::info!("the acting master {from} left; electing another");
                    self.leader = None;
                    self.guard_from = None;
                }
            }
            other => {
                tracing::debug!(%from, kind = other.name(), "candidate ignores this packet from a candidate");
            }
        }
    }

    fn persist_state(&mut self) {
        self.persist = true;
    }

    fn on_leader_beat(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        from: SiloId,
        epoch: u64,
        round: u64,
        out: &mut Outbox,
    ) {
        if epoch < self.state.promised {
            // We follow a newer epoch: tell it, so it steps down.
            out.push((
                addr,
                PacketBody::LeaderBeatAck {
                    epoch: self.state.promised,
                    round,
                    position: self.position,
                },
            ));
            return;
        }
        if let Role::Leading(l) = &self.role {
            let mine = l.master.epoch();
            if epoch == mine {
                tracing::error!(
                    "{from} claims epoch {epoch}, which this candidate acts for; ignoring it"
                );
                return;
            }
            if epoch < mine {
                return;
            }
            self.step_down("a master of a newer epoch acts");
        }
        if matches!(self.role, Role::Campaigning { .. }) {
            tracing::info!("{from} acts as master for epoch {epoch}; abandoning the campaign");
            self.role = Role::Follower;
        }
        if epoch > self.state.epoch {
            self.state.epoch = epoch;
            self.state.voted_for = None;
            self.persist_state();
        }
        if epoch > self.state.promised {
            self.state.promised = epoch;
            self.persist_state();
        }
        if self.leader != Some(from) || self.leader_epoch != epoch {
            tracing::info!("following the acting master {from} (epoch {epoch}) as a standby");
            self.leader = Some(from);
            self.leader_epoch = epoch;
            self.dirty = true;
        }
        self.guard_from = Some(now);
        out.push((
            addr,
            PacketBody::LeaderBeatAck {
                epoch,
                round,
                position: self.position,
            },
        ));
    }

    fn on_beat_ack(&mut self, now: Instant, addr: SocketAddr, epoch: u64, round: u64) {
        let lease = self.timing().leader_lease;
        let quorum = self.quorum;
        let mode = self.mode;
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        let mine = l.master.epoch();
        if epoch > mine {
            if epoch > self.state.epoch {
                self.state.epoch = epoch;
                self.state.voted_for = None;
                self.persist_state();
            }
            self.step_down("a candidate follows a newer epoch");
            return;
        }
        if epoch < mine || mode != ElectionMode::Quorum {
            return;
        }
        if let Some(r) = l.rounds.iter_mut().find(|r| r.number == round) {
            r.acks.insert(addr);
            if r.acks.len() + 1 >= quorum && r.sent + lease > l.lease_until {
                l.lease_until = r.sent + lease;
            }
        }
        let _ = now;
    }

    fn guard_active(&self, now: Instant) -> bool {
        self.guard_from
            .is_some_and(|g| now.saturating_duration_since(g) < self.timing().vote_guard)
    }

    fn on_vote_request(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        from: SiloId,
        epoch: u64,
        position: StorePosition,
        out: &mut Outbox,
    ) {
        let refusal = match &self.role {
            _ if self.mode != ElectionMode::Quorum => Some("elections run in the shared store"),
            _ if self.leaving => Some("this candidate is leaving"),
            Role::Leading(l) if now < l.lease_until => Some("this candidate acts as master"),
            _ if self.guard_active(now) => Some("an acting master was heard from recently"),
            _ if epoch < self.state.epoch => Some("its epoch is older than ours"),
            _ if epoch == self.state.epoch && self.state.voted_for.is_some_and(|v| v != from) => {
                Some("we already voted in that epoch")
            }
            _ if position < self.position => Some("its store is behind ours"),
            _ => None,
        };
        if let Some(why) = refusal {
            tracing::debug!(%from, epoch, "vote refused: {why}");
            out.push((
                addr,
                PacketBody::Vote {
                    epoch: self.state.epoch,
                    granted: false,
                    position: self.position,
                },
            ));
            return;
        }
        if matches!(self.role, Role::Leading(_)) {
            self.step_down("its lease ran out");
        }
        self.role = Role::Follower;
        self.state.epoch = epoch;
        self.state.voted_for = Some(from);
        self.state.promised = self.state.promised.max(epoch);
        self.persist_state();
        self.guard_from = Some(now);
        tracing::info!("voted for {from} in epoch {epoch}");
        out.push((
            addr,
            PacketBody::Vote {
                epoch,
                granted: true,
                position: self.position,
            },
        ));
    }

    fn on_vote(
        &mut self,
        now: Instant,
        addr: SocketAddr,
        epoch: u64,
        granted: bool,
        out: &mut Outbox,
    ) {
        let Role::Campaigning {
            epoch: campaign,
            sent,
            votes,
        } = &mut self.role
        else {
            return;
        };
        if !granted && epoch > *campaign {
            self.state.epoch = epoch;
            self.state.voted_for = None;
            self.persist_state();
            self.role = Role::Follower;
            self.backoff_until = now + self.jitter();
            return;
        }
        if epoch != *campaign || !granted {
            return;
        }
        votes.insert(addr);
        if votes.len() + 1 >= self.quorum {
            let (epoch, sent) = (*campaign, *sent);
            let voters = votes.len() + 1;
            self.become_leader(now, epoch, sent + self.timing().leader_lease, out);
            tracing::info!(
                "acting as master for epoch {epoch}: elected by {voters} of {} candidates (store at {})",
                self.peers.len() + 1,
                self.position
            );
        }
    }

    fn become_leader(&mut self, now: Instant, epoch: u64, lease_until: Instant, out: &mut Outbox) {
        if epoch > self.state.promised {
            self.state.promised = epoch;
            self.persist_state();
        }
        let master = Master::new(self.me, epoch, self.params, self.peers.is_empty(), now);
        self.role = Role::Leading(Box::new(Leading {
            master,
            rounds: VecDeque::new(),
            round: 0,
            lease_until,
        }));
        self.leader = Some(self.me);
        self.leader_epoch = epoch;
        self.guard_from = None;
        self.eligible_since = None;
        self.dirty = true;
        self.beat(now, out);
    }

    fn step_down(&mut self, why: &str) {
        if let Role::Leading(l) = &self.role {
            tracing::warn!(
                "stopped acting as master for epoch {}: {why}",
                l.master.epoch()
            );
        }
        self.role = Role::Follower;
        self.leader = None;
        self.guard_from = None;
        self.dirty = true;
    }

    /// A pseudo-random pause of up to one candidate beat, fixed per candidate and epoch
    /// (deterministic, so simulations replay).
    fn jitter(&self) -> Duration {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.me, self.state.epoch).hash(&mut h);
        let beat = self.timing().candidate_beat.as_nanos().max(1) as u64;
        Duration::from_nanos(h.finish() % beat)
    }

    /// One LEADER_BEAT round to every peer.
    fn beat(&mut self, now: Instant, out: &mut Outbox) {
        let Role::Leading(l) = &mut self.role else {
            return;
        };
        l.round += 1;
        if l.rounds.len() == ROUNDS_KEPT {
            l.rounds.pop_front();
        }
        l.rounds.push_back(Round {
            number: l.round,
            sent: now,
            acks: BTreeSet::new(),
        });
        let beat = PacketBody::LeaderBeat {
            epoch: l.master.epoch(),
            round: l.round,
        };
        for addr in self.peers.keys() {
            out.push((*addr, beat.clone()));
        }
    }

    /// A live peer stronger than this candidate (further store, then higher address).
    fn stronger_peer_alive(&self, now: Instant) -> bool {
        let alive_for = self.timing().leader_lease;
        let mine = (self.position, self.me.udp);
        self.peers.iter().any(|(addr, p)| {
            p.last_heard
                .is_some_and(|t| now.saturating_duration_since(t) < alive_for)
                && (p.position, *addr) > mine
        })
    }

    fn should_campaign(&mut self, now: Instant) -> bool {
        let timing = self.timing();
        let lone = self.peers.is_empty();
        if self.leaving
            || self.mode != ElectionMode::Quorum
            || (!lone && now.saturating_duration_since(self.started) < timing.vote_guard)
            || self.guard_active(now)
            || now < self.backoff_until
        {
            self.eligible_since = None;
            return false;
        }
        let heard = self
            .peers
            .values()
            .filter(|p| {
                p.last_heard
                    .is_some_and(|t| now.saturating_duration_since(t) < timing.vote_guard)
            })
            .count();
        if heard + 1 < self.quorum {
            // Cut off from the majority: a campaign could not win, and its epoch would
            // only disturb the acting master once the cut heals.
            self.eligible_since = None;
            return false;
        }
        let since = *self.eligible_since.get_or_insert(now);
        !(self.stronger_peer_alive(now)
            && now.saturating_duration_since(since) < timing.vote_guard * 2)
    }

    fn campaign(&mut self, now: Instant, out: &mut Outbox) {
        self.state.epoch += 1;
        self.state.voted_for = Some(self.me);
        self.persist_state();
        let epoch = self.state.epoch;
        if self.leader.take().is_some() {
            self.dirty = true;
        }
        if self.peers.is_empty() {
            let lease = now + self.timing().leader_lease;
            self.become_leader(now, epoch, lease, out);
            tracing::info!("acting as master for epoch {epoch} (no other candidates)");
            return;
        }
        tracing::info!(
            "no acting master: campaigning for epoch {epoch} (store at {})",
            self.position
        );
        self.role = Role::Campaigning {
            epoch,
            sent: now,
            votes: BTreeSet::new(),
        };
        for addr in self.peers.keys() {
            out.push((
                *addr,
                PacketBody::VoteRequest {
                    epoch,
                    position: self.position,
                },
            ));
        }
    }

    /// Every candidate beat: renew or lose the lease, run the master's duties, beat the
    /// peers, and campaign when no master acts.
    pub(super) fn on_tick(&mut self, now: Instant, load: LoadReport, out: &mut Outbox) {
        let timing = self.timing();
        for peer in self.peers.values_mut() {
            let alive = peer
                .last_heard
                .is_some_and(|t| now.saturating_duration_since(t) < timing.vote_guard);
            if alive != peer.shown_alive {
                peer.shown_alive = alive;
                self.dirty = true;
            }
        }
        let lone = self.peers.is_empty() && self.mode == ElectionMode::Quorum;
        if let Role::Leading(l) = &mut self.role {
            if lone {
                l.lease_until = now + timing.leader_lease;
            }
            if now >= l.lease_until {
                self.step_down(match self.mode {
                    ElectionMode::Quorum => {
                        "its lease ran out: no majority of the candidates acknowledged it"
                    }
                    ElectionMode::SharedStore => "its lease in the shared store ran out",
                });
            } else {
                l.master.on_tick(now, load, out);
                self.beat(now, out);
                return;
            }
        }
        if let Role::Campaigning { sent, epoch, .. } = &self.role {
            if now.saturating_duration_since(*sent) > timing.candidate_beat * 2 {
                tracing::info!(
                    "the campaign for epoch {epoch} got no majority; trying again later"
                );
                self.role = Role::Follower;
                self.backoff_until = now + self.jitter();
            } else {
                return;
            }
        }
        if self.leader.is_some() && !self.guard_active(now) && self.leader != Some(self.me) {
            tracing::warn!(
                "the acting master {} has been silent for {}",
                self.leader.map(|l| l.to_string()).unwrap_or_default(),
                humantime::format_duration(timing.vote_guard)
            );
            self.leader = None;
            self.dirty = true;
        }
        let beat = PacketBody::StandbyBeat {
            epoch: self.leader_epoch,
            leader: self.leader,
            position: self.position,
        };
        for addr in self.peers.keys() {
            out.push((*addr, beat.clone()));
        }
        if self.should_campaign(now) {
            self.campaign(now, out);
        }
    }

    /// Shared-store mode: the lease task's verdict.
    pub(super) fn on_external(&mut self, now: Instant, lease: ExternalLease, out: &mut Outbox) {
        match (lease, &mut self.role) {
            (ExternalLease::Held { epoch, until }, Role::Leading(l))
                if l.master.epoch() == epoch =>
            {
                l.lease_until = until;
            }
            (ExternalLease::Held { epoch, until }, _) => {
                if matches!(self.role, Role::Leading(_)) {
                    self.step_down("the shared store names a newer epoch");
                }
                self.state.epoch = self.state.epoch.max(epoch);
                self.become_leader(now, epoch, until, out);
                tracing::info!(
                    "acting as master for epoch {epoch} (lease held in the shared store)"
                );
            }
            (ExternalLease::Lost, Role::Leading(_)) => {
                self.step_down("the shared store's lease was lost")
            }
            (ExternalLease::Lost, _) => {}
        }
    }

    /// Graceful leave. A lone master tells its slaves to shut down and keeps acting (its
    /// directory and store serve their last writes) until the silo stops; called again
    /// every tick while it waits, it keeps its lease. A candidate with peers stops acting
    /// at once and tells them, so they elect another without waiting out the lease.
    pub(super) fn on_leave(&mut self, now: Instant, out: &mut Outbox) {
        self.leaving = true;
        let lone = self.peers.is_empty() && self.mode == ElectionMode::Quorum;
        if let Role::Leading(l) = &mut self.role {
            l.master.on_leave(out);
            if lone {
                l.lease_until = now + Timing::new(self.params).leader_lease;
                self.dirty = true;
                return;
            }
            tracing::info!(
                "stopped acting as master for epoch {}: leaving",
                l.master.epoch()
            );
        }
        self.role = Role::Follower;
        self.leader = None;
        self.dirty = true;
        for addr in self.peers.keys() {
            out.push((*addr, PacketBody::Shutdown));
        }
    }

    /// The candidate's snapshot: the master's member table while acting, plus every
    /// candidate it knows.
    pub(super) fn snapshot(&self, version: u64, now: Instant) -> MembershipSnapshot {
        let mut snapshot = match &self.role {
            Role::Leading(l) => {
                l.master
                    .table
                    .snapshot(version, Some(self.me), l.master.epoch(), Hosting::Serving)
            }
            _ => MembershipSnapshot {
                version,
                me: self.me,
                master: self.leader,
                epoch: self.leader_epoch,
                master_reachable: self.leader.is_some(),
                hosting: Hosting::Serving,
                admission: 0,
                members: BTreeMap::from([(
                    self.me,
                    MemberInfo {
                        id: self.me,
                        status: if self.leaving {
                            MemberStatus::ShuttingDown
                        } else {
                            MemberStatus::Active
                        },
                        load: LoadReport::default(),
                        is_master: false,
                        is_candidate: true,
                    },
                )]),
            },
        };
        let alive_for = self.timing().vote_guard;
        for peer in self.peers.values() {
            let Some(id) = peer.id else { continue };
            let alive = peer
                .last_heard
                .is_some_and(|t| now.saturating_duration_since(t) < alive_for);
            snapshot.members.insert(
                id,
                MemberInfo {
                    id,
                    status: if alive {
                        MemberStatus::Active
                    } else {
                        MemberStatus::Dead
                    },
                    load: LoadReport::default(),
                    is_master: self.leader == Some(id),
                    is_candidate: true,
                },
            );
        }
        snapshot
    }
}
