//! [`CopySets`]: the master's record of every replicated grain's copies.
//!
//! The directory keeps each grain's *home* (its one entry); a grain that runs hot gets
//! a [`CopySet`] here as well: the home plus *members* on other slaves. Every change
//! issues a new [`SetVersion`] (this master's epoch, then a counter), and the changed
//! set is what the master sends to the silos concerned, so a silo or caller always
//! keeps the newest set it has seen.
//!
//! A set whose members are all gone is removed after its last version (home alone) has
//! been issued; a set whose home is gone is dropped the same way (members empty), which
//! tells the members to drop their copies. A primary that dies therefore takes its
//! replicas with it: nothing is promoted, the grain is activated again from storage.
//!
//! Pure data; the controller locks it, decides and notifies.

use std::collections::HashMap;

use granary_proto::frame::SiloAddr;
use granary_proto::replication::{CopyKind, CopyRole, CopySet, HostedActivation, SetVersion};
use granary_proto::GrainId;

/// A change to one grain's set: the new set and every silo that must hear of it (the
/// silos in it, then those dropped from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetChange {
    /// The grain.
    pub grain: GrainId,
    /// Its new set (members empty: the grain runs on its home alone, or not at all).
    pub set: CopySet,
    /// Silos that were in the previous set and are not in this one.
    pub dropped: Vec<SiloAddr>,
}

impl SetChange {
    /// Every silo to notify: the home first (a primary learns its new replicas before
    /// they ask it for state), then the members, then the dropped ones.
    pub fn recipients(&self) -> Vec<SiloAddr> {
        let mut all: Vec<SiloAddr> = self.set.silos().collect();
        all.extend(self.dropped.iter().copied());
        all
    }
}

/// The copy sets of one master.
#[derive(Debug)]
pub struct CopySets {
    /// This master's epoch: the first half of every version it issues.
    epoch: u64,
    /// The second half.
    seq: u64,
    /// Grains with at least one member.
    sets: HashMap<GrainId, CopySet>,
}

impl CopySets {
    /// No sets; versions start at `(epoch, 1)`.
    pub fn new(epoch: u64) -> Self {
        Self {
            epoch,
            seq: 0,
            sets: HashMap::new(),
        }
    }

    fn next_version(&mut self) -> SetVersion {
        self.seq += 1;
        SetVersion {
            epoch: self.epoch,
            seq: self.seq,
        }
    }

    /// The epoch the versions this issues start with.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The set of `grain`, if it has members.
    pub fn get(&self, grain: &GrainId) -> Option<&CopySet> {
        self.sets.get(grain)
    }

    /// Silos hosting `grain`: its set's, or just `home`.
    pub fn silos_of(&self, grain: &GrainId, home: SiloAddr) -> Vec<SiloAddr> {
        match self.sets.get(grain) {
            Some(set) if set.home == home => set.silos().collect(),
            _ => vec![home],
        }
    }

    /// Grains with copies beyond their home.
    pub fn len(&self) -> usize {
        self.sets.len()
    }

    /// True when no grain has copies.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Every set, for status and metrics.
    pub fn iter(&self) -> impl Iterator<Item = (&GrainId, &CopySet)> {
        self.sets.iter()
    }

    /// Adds `add` as members of `grain`'s set (creating it around `home`). A set with
    /// another home is replaced: the directory moved the grain.
    pub fn grow(
        &mut self,
        grain: &GrainId,
        kind: CopyKind,
        home: SiloAddr,
        add: &[SiloAddr],
    ) -> SetChange {
        let version = self.next_version();
        let (mut members, dropped) = match self.sets.remove(grain) {
            Some(old) if old.home == home => (old.members, Vec::new()),
            Some(old) => (Vec::new(), old.silos().filter(|s| *s != home).collect()),
            None => (Vec::new(), Vec::new()),
        };
        for silo in add {
            if *silo != home && !members.contains(silo) {
                members.push(*silo);
            }
        }
        let dropped = dropped
            .into_iter()
            .filter(|s| !members.contains(s))
            .collect();
        self.publish(grain, kind, home, members, version, dropped)
    }

    /// Removes `remove` from `grain`'s members; `None` if that changes nothing.
    pub fn shrink(&mut self, grain: &GrainId, remove: &[SiloAddr]) -> Option<SetChange> {
        let old = self.sets.get(grain)?;
        if !old.members.iter().any(|m| remove.contains(m)) {
            return None;
        }
        let old = self.sets.remove(grain).expect("present");
        let version = self.next_version();
        let (members, dropped) = old.members.into_iter().partition(|m| !remove.contains(m));
        Some(self.publish(grain, old.kind, old.home, members, version, dropped))
    }

    /// `silo` no longer hosts `grain` (it deactivated there): a member leaves the set;
    /// the home takes the whole set with it.
    pub fn released(&mut self, grain: &GrainId, silo: SiloAddr) -> Option<SetChange> {
        let set = self.sets.get(grain)?;
        if set.home == silo {
            let old = self.sets.remove(grain).expect("present");
            let version = self.next_version();
            Some(self.publish(grain, old.kind, old.home, Vec::new(), version, old.members))
        } else {
            self.shrink(grain, &[silo])
        }
    }

    /// `silo` left or died: every set loses it (sets it was home of are dropped).
    pub fn silo_gone(&mut self, silo: SiloAddr) -> Vec<SetChange> {
        let grains: Vec<GrainId> = self
            .sets
            .iter()
            .filter(|(_, s)| s.contains(silo))
            .map(|(g, _)| g.clone())
            .collect();
        grains
            .iter()
            .filter_map(|g| self.released(g, silo))
            .collect()
    }

    /// Rebuilds the sets from what the slaves report they host (after a master change):
    /// for each grain with a home in the directory (`home_of`), the other silos that
    /// host a replica (read replicas) or a worker (stateless workers) become members.
    /// Copies whose grain has no home, or whose home is not the primary/worker the
    /// set needs, are returned as orphans to deactivate.
    pub fn rebuild<'a>(
        &mut self,
        reports: impl IntoIterator<Item = (SiloAddr, &'a [HostedActivation])>,
        home_of: impl Fn(&GrainId) -> Option<SiloAddr>,
    ) -> (Vec<SetChange>, Vec<(SiloAddr, GrainId)>) {
        let mut members: HashMap<GrainId, (CopyKind, Vec<SiloAddr>)> = HashMap::new();
        let mut orphans = Vec::new();
        for (silo, hosted) in reports {
            for activation in hosted {
                let kind = match activation.role {
                    CopyRole::Replica => CopyKind::ReadReplicas,
                    CopyRole::Worker => CopyKind::StatelessWorker,
                    CopyRole::Single | CopyRole::Primary => continue,
                };
                match home_of(&activation.grain) {
                    Some(home) if home == silo => {}
                    Some(_) => {
                        let entry = members
                            .entry(activation.grain.clone())
                            .or_insert((kind, Vec::new()));
                        if !entry.1.contains(&silo) {
                            entry.1.push(silo);
                        }
                    }
                    // A replica without a primary must not serve: drop it.
                    None if kind == CopyKind::ReadReplicas => {
                        orphans.push((silo, activation.grain.clone()))
                    }
                    None => {}
                }
            }
        }
        let mut changes = Vec::new();
        for (grain, (kind, silos)) in members {
            let home = home_of(&grain).expect("only grains with a home have members");
            changes.push(self.grow(&grain, kind, home, &silos));
        }
        (changes, orphans)
    }

    fn publish(
        &mut self,
        grain: &GrainId,
        kind: CopyKind,
        home: SiloAddr,
        members: Vec<SiloAddr>,
        version: SetVersion,
        dropped: Vec<SiloAddr>,
    ) -> SetChange {
        let set = CopySet {
            version,
            kind,
            home,
            members,
        };
        if !set.members.is_empty() {
            self.sets.insert(grain.clone(), set.clone());
        }
        SetChange {
            grain: grain.clone(),
            set,
            dropped,
        }
    }
}

#[cfg(test)]
mod tests;
