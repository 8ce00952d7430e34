//! What a silo says about itself and the cluster: the wire form of `client status`, the
//! dashboard and the membership events programs subscribe to.
//!
//! Every figure is an integer (counts, bytes, milliseconds, microseconds), so the types
//! stay `Eq` and cross the wire exactly. Counters are cumulative since the silo
//! started: a viewer takes two snapshots and divides the difference by the time between
//! them to get a rate, or subtracts two [`LatencyBuckets`] to get the latency
//! distribution of that interval.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::packet::SiloId;

mod membership;
pub use membership::{MemberPhase, MembershipTracker};

/// Upper bounds (inclusive, microseconds) of the handler-latency buckets: 16 µs to
/// about 16.8 s, doubling. A last, unbounded bucket follows them.
pub const LATENCY_BOUNDS_US: [u64; 21] = [
    16, 32, 64, 128, 256, 512, 1_024, 2_048, 4_096, 8_192, 16_384, 32_768, 65_536, 131_072,
    262_144, 524_288, 1_048_576, 2_097_152, 4_194_304, 8_388_608, 16_777_216,
];

/// A cumulative latency histogram over [`LATENCY_BOUNDS_US`]: `counts[i]` is the number
/// of observations in bucket `i` (not cumulative over buckets); the last entry counts
/// those above the largest bound.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyBuckets {
    /// One count per bound, plus the overflow bucket.
    pub counts: Vec<u64>,
    /// Sum of all observations, in microseconds.
    pub sum_us: u64,
}

impl LatencyBuckets {
    /// The index of the bucket an observation of `elapsed` falls in.
    pub fn bucket_of(elapsed: Duration) -> usize {
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        LATENCY_BOUNDS_US
            .iter()
            .position(|bound| us <= *bound)
            .unwrap_or(LATENCY_BOUNDS_US.len())
    }

    /// Observations counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// What was observed since `earlier` (a snapshot of the same histogram).
    pub fn since(&self, earlier: &LatencyBuckets) -> LatencyBuckets {
        LatencyBuckets {
            counts: self
                .counts
                .iter()
                .enumerate()
                .map(|(i, c)| c.saturating_sub(earlier.counts.get(i).copied().unwrap_or(0)))
                .collect(),
            sum_us: self.sum_us.saturating_sub(earlier.sum_us),
        }
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1), `None` when empty.
    /// The overflow bucket reports twice the largest bound.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let bound = LATENCY_BOUNDS_US
                    .get(i)
                    .copied()
                    .unwrap_or(LATENCY_BOUNDS_US[LATENCY_BOUNDS_US.len() - 1] * 2);
                return Some(Duration::from_micros(bound));
            }
        }
        None
    }
}

/// One grain type on one silo.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrainTypeStatus {
    /// The type's wire name (`TYPE_NAME`).
    pub grain_type: String,
    /// Live activations.
    pub activations: u64,
    /// Messages waiting in their mailboxes.
    pub queue_depth: u64,
    /// Messages handled since the silo started.
    pub messages: u64,
    /// Handler latency since the silo started.
    pub latency: LatencyBuckets,
}

/// One of the busiest activations of a silo.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HotGrain {
    /// The grain type's wire name.
    pub grain_type: String,
    /// The grain's key.
    pub key: String,
    /// Messages per second over the last second, times 1,000.
    pub rate_milli: u64,
    /// Messages waiting in its mailbox.
    pub queue_depth: u64,
    /// Messages it handled since it was activated.
    pub messages: u64,
    /// Copies serving it as the reporting silo knows them: its own activations of the
    /// grain plus one per other silo of the grain's copy set (1 for a grain that is not
    /// replicated).
    pub replicas: u32,
}

/// Where a silo stands, as it sees itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SiloState {
    /// Serving: the acting master, or a slave joined to it under a valid lease.
    Active,
    /// A slave that has not joined its master yet (or a candidate that knows no acting
    /// master yet: an election runs).
    Joining,
    /// A slave the master does not count any more, or cut off from every candidate: its
    /// grains are dropped and it hosts nothing until a master accepts it again.
    Fenced,
    /// A slave whose hosting lease ran out (its master died or is unreachable, or a new
    /// master has not accepted its report yet): its grains wait, running nothing.
    Suspended,
    /// A master candidate that follows the acting master, ready to take over.
    Standby,
    /// Shutting down.
    Leaving,
    /// Declared dead by the master (only ever reported about another silo).
    Dead,
}

impl SiloState {
    /// The state in one lower-case word, for tables and the dashboard.
    pub fn as_str(self) -> &'static str {
        match self {
            SiloState::Active => "active",
            SiloState::Joining => "joining",
            SiloState::Fenced => "fenced",
            SiloState::Suspended => "suspended",
            SiloState::Standby => "standby",
            SiloState::Leaving => "leaving",
            SiloState::Dead => "dead",
        }
    }
}

/// A silo's role, on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoleKind {
    /// The acting master: keeps the directory (and by default the store).
    Master,
    /// Hosts grains.
    Slave,
    /// A master candidate that follows the acting master, ready to take over.
    Standby,
}

impl RoleKind {
    /// `master`, `slave` or `standby`.
    pub fn as_str(self) -> &'static str {
        match self {
            RoleKind::Master => "master",
            RoleKind::Slave => "slave",
            RoleKind::Standby => "standby",
        }
    }
}

/// What one silo reports about itself (`Request::SiloStatus`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiloStatus {
    /// The silo.
    pub id: SiloId,
    /// Master or slave.
    pub role: RoleKind,
    /// Serving, fenced, leaving…
    pub state: SiloState,
    /// Time since the silo started, in milliseconds.
    pub uptime_ms: u64,
    /// Live activations, all types.
    pub activations: u64,
    /// Messages waiting, all types.
    pub queue_depth: u64,
    /// CPU time the process used since it started (user + system), in milliseconds.
    /// Several silos in one process (tests) report the same process.
    pub cpu_ms: u64,
    /// Resident memory of the process, in bytes.
    pub rss_bytes: u64,
    /// Per grain type, sorted by name.
    pub grain_types: Vec<GrainTypeStatus>,
    /// The busiest activations, busiest first (at most [`HOT_GRAINS`]).
    pub hot_grains: Vec<HotGrain>,
    /// Recent events this silo saw that only it knows (a slave's fencing), oldest first.
    pub events: Vec<ClusterEvent>,
}

/// How many hot grains a silo reports.
pub const HOT_GRAINS: usize = 10;

/// A member as the master's membership sees it: also the silos that left or died.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// The silo.
    pub id: SiloId,
    /// Master or slave.
    pub role: RoleKind,
    /// `Active`, `Leaving` or `Dead`.
    pub state: SiloState,
    /// Activations it last reported in a heartbeat.
    pub activations: u64,
    /// Queue depth it last reported in a heartbeat.
    pub queue_depth: u64,
}

/// Something that happened to the cluster, for the dashboard's feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterEvent {
    /// Increases by one per event on the silo that recorded it (the master).
    pub seq: u64,
    /// When, in unix milliseconds.
    pub at_unix_ms: u64,
    /// What happened.
    pub kind: ClusterEventKind,
    /// To which silo.
    pub silo: SiloId,
    /// A short sentence for people.
    pub detail: String,
}

/// The kinds of [`ClusterEvent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClusterEventKind {
    /// A slave joined (or a restarted one joined again).
    Joined,
    /// A slave left gracefully.
    Left,
    /// A slave missed its heartbeats and was declared dead.
    Died,
    /// A slave fenced itself (cut off from the master).
    Fenced,
    /// The master changed (a restart; an election, once there are standbys).
    MasterChanged,
    /// Many grains were placed in a short time (a burst of first calls, or the grains
    /// of a dead slave coming back elsewhere).
    PlacementStorm,
}

impl ClusterEventKind {
    /// The kind in one lower-case word.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterEventKind::Joined => "joined",
            ClusterEventKind::Left => "left",
            ClusterEventKind::Died => "died",
            ClusterEventKind::Fenced => "fenced",
            ClusterEventKind::MasterChanged => "master-changed",
            ClusterEventKind::PlacementStorm => "placement-storm",
        }
    }
}

/// The whole cluster as the master sees it (`Request::ClusterStatus`, answered by any
/// silo: a slave asks the master).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// The acting master.
    pub master: SiloId,
    /// Every member the master knows, including those that left or died recently.
    pub members: Vec<MemberView>,
    /// The report of every live silo that answered in time (master first).
    pub silos: Vec<SiloStatus>,
    /// Silos that did not answer their status request, with why.
    pub unanswered: Vec<(SiloId, String)>,
    /// The most recent cluster events, oldest first.
    pub events: Vec<ClusterEvent>,
}

/// A change of membership, for programs that react to node failure: the stream
/// `ClusterSilo::membership_events` and `Client::membership_events` yield (both built
/// on [`MembershipTracker`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipEvent {
    /// A silo joined the cluster.
    SiloJoined(SiloId),
    /// A silo left gracefully.
    SiloLeft(SiloId),
    /// A silo was declared dead (it stopped answering heartbeats).
    SiloDied(SiloId),
    /// Another silo is now the master.
    MasterChanged {
        /// The master before, if one was known.
        old: Option<SiloId>,
        /// The master now.
        new: SiloId,
    },
}

#[cfg(test)]
mod tests;
