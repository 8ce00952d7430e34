//! [`SiloConfig`]: every knob of a silo, with its default.

use std::collections::HashMap;
use std::time::Duration;

use granary_runtime::Scaling;

use crate::replication::ReplicationConfig;

/// Default idle time before a grain is deactivated: 15 minutes, as in Orleans.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Default mailbox capacity of one activation.
pub const DEFAULT_MAILBOX_CAPACITY: usize = 1024;

/// Configuration of one silo.
#[derive(Debug, Clone)]
pub struct SiloConfig {
    /// Idle time before deactivation, for grain types without a more specific setting.
    pub idle_timeout: Duration,
    /// Per grain type (by `TYPE_NAME`) idle timeouts; they win over `Grain::IDLE_TIMEOUT`.
    pub idle_timeouts: HashMap<String, Duration>,
    /// Capacity of each activation's mailbox; a full mailbox applies backpressure.
    pub mailbox_capacity: usize,
    /// Hot-grain replication: on or off, per-type scaling, the replicas' read lease.
    pub replication: ReplicationConfig,
}

impl Default for SiloConfig {
    fn default() -> Self {
        Self {
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            idle_timeouts: HashMap::new(),
            mailbox_capacity: DEFAULT_MAILBOX_CAPACITY,
            replication: ReplicationConfig::default(),
        }
    }
}

impl SiloConfig {
    /// Sets the silo-wide idle timeout.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets the idle timeout of one grain type.
    pub fn with_type_idle_timeout(
        mut self,
        type_name: impl Into<String>,
        timeout: Duration,
    ) -> Self {
        self.idle_timeouts.insert(type_name.into(), timeout);
        self
    }

    /// Turns hot-grain replication on (the default) or off. Off, every grain type runs
    /// as a single activation, whatever its `REPLICATION` says.
    pub fn with_replication(mut self, enabled: bool) -> Self {
        self.replication.enabled = enabled;
        self
    }

    /// Replaces the [`Scaling`] a replicated grain type declares (thresholds, maximum
    /// copies, window, cool-down) on this silo. It does not make a single-activation
    /// type replicated.
    pub fn with_type_scaling(mut self, type_name: impl Into<String>, scaling: Scaling) -> Self {
        self.replication.scaling.insert(type_name.into(), scaling);
        self
    }

    /// Sets the longest read lease primaries here grant their replicas (see
    /// [`ReplicationConfig::lease`]).
    pub fn with_replica_lease(mut self, lease: Duration) -> Self {
        self.replication.lease = lease;
        self
    }

    /// Sets the mailbox capacity (at least 1).
    pub fn with_mailbox_capacity(mut self, capacity: usize) -> Self {
        self.mailbox_capacity = capacity.max(1);
        self
    }

    /// The idle timeout for a grain type: this config's per-type value, else the
    /// grain's own `IDLE_TIMEOUT`, else the silo-wide value.
    pub fn idle_timeout_for(&self, type_name: &str, grain_default: Option<Duration>) -> Duration {
        self.idle_timeouts
            .get(type_name)
            .copied()
            .or(grain_default)
            .unwrap_or(self.idle_timeout)
    }
}
