//! [`MembershipTracker`]: turns successive views of the members into
//! [`MembershipEvent`]s. Both event streams use it: a silo's (views from its membership
//! snapshots) and a client's (views from polled [`ClusterStatus`] reports). It is pure:
//! no clock, no I/O, so every case is a unit test.

use std::collections::BTreeMap;

use super::{ClusterStatus, MembershipEvent, SiloState};
use crate::packet::SiloId;

/// Where a member stands, as far as membership events go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberPhase {
    /// Part of the cluster.
    Active,
    /// Left gracefully (or is leaving).
    Left,
    /// Declared dead.
    Dead,
}

impl From<SiloState> for MemberPhase {
    /// `Leaving` is [`MemberPhase::Left`], `Dead` is [`MemberPhase::Dead`]; every other
    /// state (`Active`, `Joining`, `Fenced`, `Suspended`, `Standby`) is still a member.
    fn from(state: SiloState) -> Self {
        match state {
            SiloState::Leaving => MemberPhase::Left,
            SiloState::Dead => MemberPhase::Dead,
            SiloState::Active
            | SiloState::Joining
            | SiloState::Fenced
            | SiloState::Suspended
            | SiloState::Standby => MemberPhase::Active,
        }
    }
}

/// The last view of the members, to compare the next one with.
///
/// Each change is reported once, however often the same view is seen again:
/// - a member new to the view, active: [`MembershipEvent::SiloJoined`];
/// - an active member now left or dead: [`MembershipEvent::SiloLeft`] /
///   [`MembershipEvent::SiloDied`] (a left member later marked dead is not reported
///   again);
/// - a member new to the view that is already left or dead (it joined and went between
///   two views): `SiloJoined` then its departure, so a consumer keeping the set of live
///   members stays right;
/// - an active member missing from the view (its tombstone was already forgotten):
///   `SiloDied`, since how it went is unknown and its grains must be considered lost;
/// - a departed member seen active again (a master's view after it was cut off from
///   the master): `SiloJoined` again;
/// - another master: [`MembershipEvent::MasterChanged`].
///
/// Within one update, departures come first, then joins, then the master change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MembershipTracker {
    /// The last phase of every member of the last view.
    known: BTreeMap<SiloId, MemberPhase>,
    /// The master of the last view.
    master: Option<SiloId>,
}

impl MembershipTracker {
    /// A tracker whose baseline is this view: nothing in it is reported.
    pub fn new(
        master: Option<SiloId>,
        members: impl IntoIterator<Item = (SiloId, MemberPhase)>,
    ) -> Self {
        Self {
            known: members.into_iter().collect(),
            master,
        }
    }

    /// A tracker whose baseline is a cluster status report.
    pub fn from_status(status: &ClusterStatus) -> Self {
        Self::new(Some(status.master), status_members(status))
    }

    /// The master of the last view.
    pub fn master(&self) -> Option<SiloId> {
        self.master
    }

    /// The members of the last view that are active.
    pub fn active(&self) -> impl Iterator<Item = SiloId> + '_ {
        self.known
            .iter()
            .filter(|(_, phase)| **phase == MemberPhase::Active)
            .map(|(id, _)| *id)
    }

    /// Takes `members` (and `master`) as the new view; returns what changed since the
    /// last one. A `master` of `None` (a slave not welcomed yet) is not a change.
    pub fn update(
        &mut self,
        master: Option<SiloId>,
        members: impl IntoIterator<Item = (SiloId, MemberPhase)>,
    ) -> Vec<MembershipEvent> {
        let view: BTreeMap<SiloId, MemberPhase> = members.into_iter().collect();
        let mut departures = Vec::new();
        let mut joins = Vec::new();
        for (id, phase) in &view {
            let before = self.known.get(id).copied();
            let was_member = before == Some(MemberPhase::Active);
            if *phase == MemberPhase::Active {
                if !was_member {
                    joins.push(MembershipEvent::SiloJoined(*id));
                }
                continue;
            }
            if before.is_none() {
                joins.push(MembershipEvent::SiloJoined(*id));
            }
            if was_member || before.is_none() {
                departures.push(match phase {
                    MemberPhase::Left => MembershipEvent::SiloLeft(*id),
                    _ => MembershipEvent::SiloDied(*id),
                });
            }
        }
        // Members that vanished without a tombstone.
        for (id, phase) in &self.known {
            if *phase == MemberPhase::Active && !view.contains_key(id) {
                departures.push(MembershipEvent::SiloDied(*id));
            }
        }
        // Joined-and-gone members: their join first, then (below) their departure.
        let (fleeting, departures): (Vec<_>, Vec<_>) = departures
            .into_iter()
            .partition(|event| is_departure_of(event, &joins));
        let mut events = departures;
        events.extend(joins);
        events.extend(fleeting);
        if let Some(new) = master {
            if self.master != Some(new) {
                events.push(MembershipEvent::MasterChanged {
                    old: self.master,
                    new,
                });
                self.master = Some(new);
            }
        }
        self.known = view;
        events
    }

    /// Takes a cluster status report as the new view; returns what changed.
    pub fn update_status(&mut self, status: &ClusterStatus) -> Vec<MembershipEvent> {
        self.update(Some(status.master), status_members(status))
    }
}

/// True if `event` is the departure of a silo that `joins` reports joining.
fn is_departure_of(event: &MembershipEvent, joins: &[MembershipEvent]) -> bool {
    let gone = match event {
        MembershipEvent::SiloLeft(id) | MembershipEvent::SiloDied(id) => id,
        _ => return false,
    };
    joins
        .iter()
        .any(|join| matches!(join, MembershipEvent::SiloJoined(id) if id == gone))
}

/// The members of a report, with their phases.
fn status_members(status: &ClusterStatus) -> impl Iterator<Item = (SiloId, MemberPhase)> + '_ {
    status.members.iter().map(|m| (m.id, m.state.into()))
}

#[cfg(test)]
mod tests;
