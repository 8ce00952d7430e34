//! The wire vocabulary of hot-grain replication: copy sets, the version a reply was
//! served at, and the requests silos exchange to keep copies in step.
//!
//! A grain type declares a replication policy (see `granary_runtime::Replication`).
//! When one of its grains runs hot, the master grows its **copy set**: the *home*
//! activation (the one the directory points at; for read replicas, the primary) plus
//! *members* on other slaves. The set travels:
//!
//! - master → every silo in it (and every silo dropped from it):
//!   [`ReplicaRequest::Copies`], so each one knows its role;
//! - silo → callers: piggybacked on a grain reply ([`GrainReplyAt::copies`]) when the
//!   caller's [`ReplicaCall::copies_seen`] is older, so callers learn a changed set
//!   without an extra round trip;
//! - replica → primary: [`ReplicaRequest::Sync`], a long poll that returns the newest
//!   state and renews the replica's read lease;
//! - slave → master: [`ReplicaRequest::Report`], the measured load of its replicated
//!   grains, once per heartbeat interval.

use serde::{Deserialize, Serialize};

use crate::frame::SiloAddr;
use crate::{CallError, GrainId};

/// Orders copy sets of one grain: newer sets replace older ones everywhere. `epoch` is
/// the deciding master's epoch (its generation), so a restarted master's sets win over
/// its predecessor's even though its counter starts again.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
pub struct SetVersion {
    /// The master that decided the set.
    pub epoch: u64,
    /// Increases with every set that master decides.
    pub seq: u64,
}

/// Which policy a copy set serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CopyKind {
    /// Every copy handles every message; no state.
    StatelessWorker,
    /// The home is the primary (every message that may write); members are read
    /// replicas (only read-only messages).
    ReadReplicas,
}

/// The activations of one grain across the cluster, as decided by the master.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopySet {
    /// Newer replaces older.
    pub version: SetVersion,
    /// The policy.
    pub kind: CopyKind,
    /// The silo the directory names for the grain: the primary of read replicas.
    pub home: SiloAddr,
    /// The other silos hosting copies (never the home). Empty: the grain runs on its
    /// home alone (a set that shrank, or was dropped because the home left).
    pub members: Vec<SiloAddr>,
}

impl CopySet {
    /// The home followed by the members.
    pub fn silos(&self) -> impl Iterator<Item = SiloAddr> + '_ {
        std::iter::once(self.home).chain(self.members.iter().copied())
    }

    /// True when `silo` is the home or a member.
    pub fn contains(&self, silo: SiloAddr) -> bool {
        self.home == silo || self.members.contains(&silo)
    }
}

/// What a caller adds to a grain call of a replicated grain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaCall {
    /// The newest state version of the grain this caller has seen (its own writes and
    /// its reads). A read replica serves the call only at this version or newer.
    pub min_version: u64,
    /// The copy set the caller routes by (`None`: it knows no set). The callee attaches
    /// its own set to the reply when it is newer.
    pub copies_seen: Option<SetVersion>,
    /// Must be served by the primary (a write, or a read the caller could not place on
    /// a replica).
    pub primary: bool,
}

/// The answer to a grain call of a replicated grain ([`crate::frame::Response::GrainAt`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrainReplyAt {
    /// The reply, as in [`crate::frame::Response::Grain`].
    pub reply: Result<Vec<u8>, CallError>,
    /// The state version the call was served at (after a write: the version it wrote).
    /// 0 for stateless workers and for replies that carry no state.
    pub version: u64,
    /// The callee's copy set, when it is newer than the caller's `copies_seen`.
    pub copies: Option<CopySet>,
}

/// The role of one activation on the silo that hosts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CopyRole {
    /// The one activation of a grain that is not replicated.
    Single,
    /// The writing activation of a read-replicated grain.
    Primary,
    /// A read replica.
    Replica,
    /// One of the interchangeable activations of a stateless worker.
    Worker,
}

impl CopyRole {
    /// The role in one lower-case word (metrics labels, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            CopyRole::Single => "single",
            CopyRole::Primary => "primary",
            CopyRole::Replica => "replica",
            CopyRole::Worker => "worker",
        }
    }
}

/// One activation a silo hosts, with its role: what the silo reports when a master
/// rebuilds its directory and copy sets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostedActivation {
    /// The grain.
    pub grain: GrainId,
    /// Its role here.
    pub role: CopyRole,
}

/// The measured load of one replicated grain on one silo over the last report
/// interval (all its activations there).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrainLoad {
    /// The grain.
    pub grain: GrainId,
    /// Activations of it on the reporting silo.
    pub copies: u32,
    /// Messages handled per second, times 1,000.
    pub rate_milli: u64,
    /// Messages waiting in its mailboxes (sum), sampled at the end of the interval,
    /// times 1,000.
    pub queue_milli: u64,
    /// Time spent in handlers per second of wall time, in thousandths (1,000 = one
    /// activation busy all the time; several copies can exceed it).
    pub busy_milli: u64,
}

/// Replication traffic between silos ([`crate::frame::Request::Replica`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaRequest {
    /// Master → silo: the grain's copy set is now `set`. The receiver hosts a copy if
    /// it is a member, serves as primary/home if it is the home, and drops its copy if
    /// it is neither. Sets older than one already applied are ignored. Answered with
    /// [`ReplicaResponse::Applied`].
    Copies {
        /// The grain.
        grain: GrainId,
        /// Its new set.
        set: CopySet,
    },
    /// Replica → primary: "I follow activation `activation` (`None` the first time) of
    /// `grain` and have state `have`". Answered, as soon as a newer version exists or
    /// after `wait_ms`, with [`ReplicaResponse::Synced`] (which renews the replica's
    /// read lease), or [`ReplicaResponse::NotPrimary`].
    Sync {
        /// The grain.
        grain: GrainId,
        /// The replica's silo (the primary checks it is still in the set).
        from: SiloAddr,
        /// The primary activation the replica follows.
        activation: Option<u64>,
        /// The version the replica holds (0: none yet).
        have: u64,
        /// How long the primary may hold the answer back waiting for a newer version.
        wait_ms: u32,
    },
    /// Slave → master: load of the replicated grains it hosts. Answered with
    /// [`ReplicaResponse::Applied`].
    Report {
        /// The reporting silo.
        from: SiloAddr,
        /// Its replicated grains with load (the busiest first, bounded).
        grains: Vec<GrainLoad>,
    },
}

/// Answers to [`ReplicaRequest`]s ([`crate::frame::Response::Replica`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaResponse {
    /// The request was applied (or ignored as outdated).
    Applied,
    /// The request failed; nothing changed.
    Failed(CallError),
    /// Answer to [`ReplicaRequest::Sync`] from the primary.
    Synced {
        /// The primary activation (follow it from now on).
        activation: u64,
        /// The primary's state version.
        version: u64,
        /// The encoded state at `version`, if newer than the replica's `have`.
        state: Option<Vec<u8>>,
        /// How long the replica may serve reads, counted from when it *sent* the
        /// request, on its own monotonic clock.
        lease_ms: u32,
    },
    /// Answer to [`ReplicaRequest::Sync`]: this silo has no such primary (it
    /// deactivated, or is another activation now), or the replica is no longer in the
    /// set. The replica stops serving and deactivates.
    NotPrimary,
}
