//! What a [`CopyTable`] tells about itself: counts, roles, load per key, and the
//! cumulative counters load reports are made of.

use std::sync::Arc;
use std::time::Duration;

use granary_proto::frame::SiloAddr;
use granary_proto::replication::{CopyRole, HostedActivation};
use granary_proto::GrainId;
use tokio::time::Instant;

use super::CopyTable;
use crate::dispatcher::GrainStats;

impl CopyTable {
    /// Number of activations here.
    pub(crate) fn activation_count(&self) -> usize {
        self.lock().values().map(|g| g.copies.len()).sum()
    }

    /// True if `key` has an activation here.
    pub(crate) fn is_active(&self, key: &str) -> bool {
        self.lock().get(key).is_some_and(|g| !g.copies.is_empty())
    }

    /// `(activations, queued messages)`.
    pub(crate) fn load(&self) -> (usize, usize) {
        let groups = self.lock();
        groups
            .values()
            .flat_map(|g| g.copies.iter())
            .fold((0, 0), |(n, q), c| (n + 1, q + c.slot.queued()))
    }

    /// Drops every copy of `key` here without `on_deactivate` and without writing state
    /// (the directory gave the grain to another silo).
    pub(crate) fn discard(&self, key: &str) -> bool {
        match self.lock().get(key) {
            Some(group) if !group.copies.is_empty() => {
                for copy in &group.copies {
                    copy.slot.stats.discard();
                    copy.slot.stop.cancel();
                }
                true
            }
            _ => false,
        }
    }

    /// Drops every copy here as [`CopyTable::discard`] does.
    pub(crate) fn discard_all(&self) {
        for copy in self.lock().values().flat_map(|g| g.copies.iter()) {
            copy.slot.stats.discard();
            copy.slot.stop.cancel();
        }
    }

    /// Keys whose directory owner this silo is: a primary here, or workers of a grain
    /// whose home it is (or whose set it does not know). Replicas, and workers on a
    /// member silo, are copies of a grain another silo owns.
    pub(crate) fn owned_keys(&self, me: Option<SiloAddr>) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, g)| {
                g.copies.iter().any(|c| match c.role {
                    CopyRole::Primary => true,
                    CopyRole::Worker => g.set.as_ref().is_none_or(|s| Some(s.home) == me),
                    _ => false,
                })
            })
            .map(|(key, _)| key.to_string())
            .collect()
    }

    /// Asks every copy of `key` here to deactivate.
    pub(crate) fn deactivate(&self, key: &str) -> bool {
        match self.lock().get(key) {
            Some(group) if !group.copies.is_empty() => {
                group.copies.iter().for_each(|c| c.slot.stop.cancel());
                true
            }
            _ => false,
        }
    }

    /// Asks every copy here to deactivate.
    pub(crate) fn deactivate_all(&self) {
        for group in self.lock().values() {
            group.copies.iter().for_each(|c| c.slot.stop.cancel());
        }
    }

    /// The activations here with their roles.
    pub(crate) fn hosted(&self, type_name: &'static str) -> Vec<HostedActivation> {
        self.lock()
            .iter()
            .flat_map(|(key, g)| {
                g.copies.iter().map(move |c| HostedActivation {
                    grain: GrainId::new(type_name, key.clone()),
                    role: c.role,
                })
            })
            .collect()
    }

    /// Activations here per role.
    pub(crate) fn role_counts(&self) -> [(CopyRole, usize); 3] {
        let mut counts = [
            (CopyRole::Primary, 0),
            (CopyRole::Replica, 0),
            (CopyRole::Worker, 0),
        ];
        for copy in self.lock().values().flat_map(|g| g.copies.iter()) {
            if let Some(entry) = counts.iter_mut().find(|(r, _)| *r == copy.role) {
                entry.1 += 1;
            }
        }
        counts
    }

    /// Load per key (the copies of a key summed).
    pub(crate) fn stats(&self, now: Instant) -> Vec<GrainStats> {
        self.lock()
            .iter()
            .filter(|(_, g)| !g.copies.is_empty())
            .map(|(key, g)| {
                let elsewhere = g.set.as_ref().map_or(0, |s| s.silos().count() - 1);
                GrainStats {
                    key: key.to_string(),
                    messages: g.copies.iter().map(|c| c.slot.stats.messages()).sum(),
                    message_rate: g.copies.iter().map(|c| c.slot.stats.message_rate()).sum(),
                    queue_depth: g.copies.iter().map(|c| c.slot.queued()).sum(),
                    idle_for: g
                        .copies
                        .iter()
                        .map(|c| now.saturating_duration_since(c.slot.stats.last_active()))
                        .min()
                        .unwrap_or_default(),
                    copies: u32::try_from(g.copies.len() + elsewhere).unwrap_or(u32::MAX),
                }
            })
            .collect()
    }

    /// Cumulative counters of every activation here, for load reports:
    /// `(key, activation id, messages, busy, queued)`.
    pub(crate) fn sample(&self) -> Vec<(Arc<str>, u64, u64, Duration, usize)> {
        self.lock()
            .iter()
            .flat_map(|(key, g)| {
                g.copies.iter().map(move |c| {
                    (
                        key.clone(),
                        c.slot.activation_id,
                        c.slot.stats.messages(),
                        c.slot.stats.busy(),
                        c.slot.queued(),
                    )
                })
            })
            .collect()
    }
}
