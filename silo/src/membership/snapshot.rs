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
    /// True for the master.
    pub is_master: bool,
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
    /// The master this silo follows (itself on the master); `None` on a slave that has
    /// not been welcomed yet.
    pub master: Option<SiloId>,
    /// On a slave: whether it is currently joined to a live master. False before the
    /// first WELCOME, after the master's lease ran out, after the master asked it to
    /// rejoin, and after the master said SHUTDOWN. A slave for which this is false must
    /// fence itself (deactivate its grains). Always true on the master.
    pub master_reachable: bool,
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
        self.active_members().filter(|m| !m.is_master)
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

    /// True on the master, or on a slave that is joined to a reachable master.
    pub fn is_joined(&self) -> bool {
        self.master.is_some() && self.master_reachable
    }
}
