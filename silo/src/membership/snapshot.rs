//! [`MembershipSnapshot`]: one silo's view of the cluster at one moment.

use std::collections::BTreeMap;

use granary_proto::packet::{LoadReport, SiloId};

/// What a silo knows about a member's lifecycle.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum MemberStatus {
    /// Alive and part of the cluster.
    Active,
    /// Left gracefully (it said SHUTDOWN), or — for this silo's own entry — is leaving.
    /// It will not come back under this id; treat it as gone.
    ShuttingDown,
    /// Declared dead: it missed too many heartbeats, or a newer generation from the
    /// same address replaced it. Its grains must be considered lost.
    Dead,
}

/// One member as seen by this silo.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct MemberInfo {
    /// The member's identity (addresses and generation).
    pub id: SiloId,
    /// Its lifecycle status.
    pub status: MemberStatus,
    /// Its last reported load. On the master this is every slave's latest heartbeat; on
    /// a slave, other slaves' loads are only as fresh as the last WELCOME.
    pub load: LoadReport,
    /// True for the acting master.
    pub is_master: bool,
    /// True for master candidates (the acting master and the standbys): they host no
    /// grains. Candidates appear in the snapshots of candidates only.
    pub is_candidate: bool,
}

/// Whether a slave may run grains right now.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Hosting {
    /// Joined to the acting master, with a valid hosting lease: grains run.
    Serving,
    /// The lease ran out (the master died or is unreachable, or a new master has not
    /// accepted this slave's report yet): grains stay in memory but run no turn and
    /// write nothing until the lease is renewed. Calls to them wait.
    #[default]
    Suspended,
    /// The acting master does not count this slave as a member any more, or every
    /// candidate has been silent for a lease: its grains are dropped (without writing)
    /// and it joins again as a newcomer.
    Fenced,
}

/// A versioned, immutable view of the cluster, published through a
/// `watch::Receiver<Arc<MembershipSnapshot>>`.
///
/// `members` holds this silo itself, every active member it knows of, and tombstones
/// (status [`MemberStatus::ShuttingDown`] or [`MemberStatus::Dead`]) for the most recent
/// departures, so that a watcher that missed an intermediate snapshot can still tell
/// "gone" from "never heard of".
///
/// `version` is local to this silo: it increases by one with every change of membership
/// or status (join, leave, death, master reachability). Load figures are refreshed in
/// place once per heartbeat interval *without* bumping `version` or waking watchers;
/// read them with `Membership::snapshot` when needed.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct MembershipSnapshot {
    /// Increases with every membership or status change on this silo.
    pub version: u64,
    /// This silo.
    pub me: SiloId,
    /// The acting master this silo follows (itself on the acting master); `None` on a
    /// slave that has not been welcomed yet, or on a standby that knows none.
    pub master: Option<SiloId>,
    /// The acting master's leadership epoch (0: none known yet). It grows with every
    /// election; answers from an older epoch are ignored.
    pub epoch: u64,
    /// On a slave: whether it is serving, i.e. [`Hosting::Serving`] (joined to the acting
    /// master with a valid hosting lease). On a candidate: whether it knows the acting
    /// master (or is it).
    pub master_reachable: bool,
    /// On a slave: whether its grains may run, wait, or must go. Candidates host
    /// nothing and always say [`Hosting::Serving`].
    pub hosting: Hosting,
    /// On a slave: how many times it was admitted (by a new master, again after losing
    /// its master, or after fencing). Each admission owes the acting master a report of
    /// the grains hosted here before the lease is renewed. 0 on candidates.
    pub admission: u64,
    /// Members and recent tombstones, by id.
    pub members: BTreeMap<SiloId, MemberInfo>,
}

impl MembershipSnapshot {
    /// Active members, master included.
    pub fn active_members(&self) -> impl Iterator<Item = &MemberInfo> {
        self.members
            .values()
            .filter(|m| m.status == MemberStatus::Active)
    }

    /// Active slaves (this silo included, if it is an active slave).
    pub fn active_slaves(&self) -> impl Iterator<Item = &MemberInfo> {
        self.active_members()
            .filter(|m| !m.is_master && !m.is_candidate)
    }

    /// True when this silo is the acting master.
    pub fn is_acting_master(&self) -> bool {
        self.master == Some(self.me)
    }

    /// True when `id` is an active member.
    pub fn is_active(&self, id: &SiloId) -> bool {
        self.members
            .get(id)
            .is_some_and(|m| m.status == MemberStatus::Active)
    }

    /// What this snapshot says about `id`, tombstones included.
    pub fn get(&self, id: &SiloId) -> Option<&MemberInfo> {
        self.members.get(id)
    }

    /// True on a candidate that knows the acting master (or is it), or on a slave that is
    /// serving.
    pub fn is_joined(&self) -> bool {
        self.master.is_some() && self.master_reachable
    }
}
