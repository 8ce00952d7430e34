//! [`ReplicationConfig`]: whether a silo replicates hot grains, and per-type overrides
//! of the [`Scaling`] a grain type declares.

use std::collections::HashMap;
use std::time::Duration;

use granary_runtime::registry::GrainTypeEntry;
use granary_runtime::{Replication, Scaling};

/// Default read lease of a replica: how long after its last confirmed contact with its
/// primary it may serve reads. A clustered silo shortens it to half the time its master
/// needs to declare a silo dead, so a replica stops serving before a new primary can be
/// activated elsewhere.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(1);

/// Replication settings of one silo. Give every silo of a cluster the same ones: the
/// master decides copy counts with its own, each silo runs its local workers and
/// replicas with its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// `false` runs every grain type as a single activation, whatever it declares.
    pub enabled: bool,
    /// Per grain type (by `TYPE_NAME`): scaling that replaces the type's own.
    pub scaling: HashMap<String, Scaling>,
    /// The longest read lease a primary grants its replicas.
    pub lease: Duration,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            scaling: HashMap::new(),
            lease: DEFAULT_LEASE,
        }
    }
}

impl ReplicationConfig {
    /// The policy a grain type runs with on this silo: what it declares, with this
    /// config's scaling for it, or single activation when replication is off.
    pub fn policy_for(&self, entry: &GrainTypeEntry) -> Replication {
        if !self.enabled {
            return Replication::Single;
        }
        match self.scaling.get(entry.type_name) {
            Some(scaling) => entry.replication.with_scaling(*scaling),
            None => entry.replication,
        }
    }
}

/// The number of local workers `scaling` allows on this machine (`max_local` 0: one
/// per core).
pub(crate) fn max_local(scaling: &Scaling) -> usize {
    match scaling.max_local {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => usize::from(n),
    }
}
