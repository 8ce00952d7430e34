//! The member table both roles keep: entries, tombstones and change tracking.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use granary_proto::packet::{LoadReport, SiloId, WireMember};

use super::snapshot::{Hosting, MemberInfo, MemberStatus, MembershipSnapshot};

/// How many tombstones (departed members) a table keeps; older ones are forgotten.
pub(super) const MAX_TOMBSTONES: usize = 64;

/// What has changed since the table was last published.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(super) struct Dirty {
    /// Membership or status changed: publish a new version and wake watchers.
    pub(super) membership: bool,
    /// Only load figures changed: refresh silently on the next tick.
    pub(super) load: bool,
}

/// One row of the table.
#[derive(Clone, Debug)]
pub(super) struct Entry {
    /// What snapshots show.
    pub(super) info: MemberInfo,
    /// Where to send to it: on the master the source address of its last accepted
    /// packet, elsewhere its advertised UDP address.
    pub(super) addr: SocketAddr,
    /// When it was last heard from (the master uses this for the slaves' leases).
    pub(super) last_heard: Instant,
    /// Highest packet sequence number accepted from it (replay guard); kept in
    /// tombstones too, so an old packet cannot resurrect a departed member.
    pub(super) last_seq: u64,
}

/// Members by id, with tombstones and a dirty flag.
#[derive(Debug)]
pub(super) struct Table {
    /// This silo.
    me: SiloId,
    /// Every member and recent tombstone, this silo included.
    entries: BTreeMap<SiloId, Entry>,
    /// Tombstones in order of departure, oldest first, for pruning.
    departed: VecDeque<SiloId>,
    /// Unpublished changes.
    pub(super) dirty: Dirty,
}

impl Table {
    /// A table holding only this silo, active.
    pub(super) fn new(me: SiloId, is_master: bool, now: Instant) -> Self {
        let mut entries = BTreeMap::new();
        entries.insert(
            me,
            Entry {
                info: MemberInfo {
                    id: me,
                    status: MemberStatus::Active,
                    load: LoadReport::default(),
                    is_master,
                    is_candidate: is_master,
                },
                addr: me.udp,
                last_heard: now,
                last_seq: 0,
            },
        );
        Self {
            me,
            entries,
            departed: VecDeque::new(),
            dirty: Dirty::default(),
        }
    }

    /// The entry for `id`, tombstone or not.
    pub(super) fn get(&self, id: &SiloId) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// The active entry for `id`, if it is active.
    pub(super) fn active_mut(&mut self, id: &SiloId) -> Option<&mut Entry> {
        self.entries
            .get_mut(id)
            .filter(|e| e.info.status == MemberStatus::Active)
    }

    /// True when `id` is an active member.
    pub(super) fn is_active(&self, id: &SiloId) -> bool {
        self.entries
            .get(id)
            .is_some_and(|e| e.info.status == MemberStatus::Active)
    }

    /// Active members other than this silo.
    pub(super) fn active_peers(&self) -> impl Iterator<Item = &Entry> {
        let me = self.me;
        self.entries
            .values()
            .filter(move |e| e.info.id != me && e.info.status == MemberStatus::Active)
    }

    /// Ids of active members other than this silo.
    pub(super) fn active_peer_ids(&self) -> Vec<SiloId> {
        self.active_peers().map(|e| e.info.id).collect()
    }

    /// Active members (this silo included) as listed in a WELCOME.
    pub(super) fn wire_members(&self) -> Vec<WireMember> {
        self.entries
            .values()
            .filter(|e| e.info.status == MemberStatus::Active)
            .map(|e| WireMember {
                id: e.info.id,
                load: e.info.load,
            })
            .collect()
    }

    /// Makes `id` an active member (new, or back from a tombstone). Returns false if
    /// it already was active (then only `addr`, `last_heard` and the flags are updated).
    pub(super) fn activate(
        &mut self,
        id: SiloId,
        addr: SocketAddr,
        now: Instant,
        is_master: bool,
    ) -> bool {
        if let Some(e) = self.entries.get_mut(&id) {
            e.addr = addr;
            e.last_heard = now;
            if e.info.is_master != is_master {
                e.info.is_master = is_master;
                e.info.is_candidate |= is_master;
                self.dirty.membership = true;
            }
            if e.info.status == MemberStatus::Active {
                return false;
            }
            e.info.status = MemberStatus::Active;
            self.departed.retain(|d| *d != id);
        } else {
            self.entries.insert(
                id,
                Entry {
                    info: MemberInfo {
                        id,
                        status: MemberStatus::Active,
                        load: LoadReport::default(),
                        is_master,
                        is_candidate: is_master,
                    },
                    addr,
                    last_heard: now,
                    last_seq: 0,
                },
            );
        }
        self.dirty.membership = true;
        true
    }

    /// Turns an active member into a tombstone with `status`. Returns false if it was
    /// not active.
    pub(super) fn depart(&mut self, id: &SiloId, status: MemberStatus) -> bool {
        debug_assert_ne!(status, MemberStatus::Active);
        let Some(e) = self.active_mut(id) else {
            return false;
        };
        e.info.status = status;
        self.dirty.membership = true;
        if *id != self.me {
            self.departed.push_back(*id);
            while self.departed.len() > MAX_TOMBSTONES {
                if let Some(old) = self.departed.pop_front() {
                    self.entries.remove(&old);
                }
            }
        }
        true
    }

    /// Sets this silo's own status (e.g. `ShuttingDown` while leaving).
    pub(super) fn set_my_status(&mut self, status: MemberStatus) {
        let me = self.me;
        if let Some(e) = self.entries.get_mut(&me) {
            if e.info.status != status {
                e.info.status = status;
                self.dirty.membership = true;
            }
        }
    }

    /// Records `id`'s load (no-op for unknown ids).
    pub(super) fn set_load(&mut self, id: &SiloId, load: LoadReport) {
        if let Some(e) = self.entries.get_mut(id) {
            if e.info.load != load {
                e.info.load = load;
                self.dirty.load = true;
            }
        }
    }

    /// Replay guard: accepts `seq` from `id` only if it is newer than anything accepted
    /// before (unknown ids always pass), and records it.
    pub(super) fn accept_seq(&mut self, id: &SiloId, seq: u64) -> bool {
        match self.entries.get_mut(id) {
            Some(e) if seq <= e.last_seq => false,
            Some(e) => {
                e.last_seq = seq;
                true
            }
            None => true,
        }
    }

    /// Records `seq` for `id` after it was inserted (first packet of a newcomer).
    pub(super) fn record_seq(&mut self, id: &SiloId, seq: u64) {
        if let Some(e) = self.entries.get_mut(id) {
            e.last_seq = e.last_seq.max(seq);
        }
    }

    /// Builds a snapshot of the table: who leads (`master`, `epoch`) and how this silo
    /// stands (`hosting`) come from the caller.
    pub(super) fn snapshot(
        &self,
        version: u64,
        master: Option<SiloId>,
        epoch: u64,
        hosting: Hosting,
    ) -> MembershipSnapshot {
        MembershipSnapshot {
            version,
            me: self.me,
            master,
            epoch,
            master_reachable: master.is_some() && hosting == Hosting::Serving,
            hosting,
            admission: 0,
            members: self.entries.iter().map(|(id, e)| (*id, e.info)).collect(),
        }
    }
}
