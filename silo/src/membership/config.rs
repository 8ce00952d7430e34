//! [`MembershipConfig`]: the role of this silo and the protocol's knobs.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use granary_proto::packet::{ProtocolParams, DEFAULT_MAX_PACKET};

use super::MembershipError;

/// Default time between heartbeats: 1 s.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Default number of heartbeat intervals a peer may stay silent before it is given up
/// (so the default lease is 3 s).
pub const DEFAULT_MISSED_HEARTBEATS: u32 = 3;
/// Default cap on one membership datagram: 8 KiB.
pub const DEFAULT_MAX_PACKET_BYTES: usize = DEFAULT_MAX_PACKET;

/// Which side of the membership protocol this silo plays.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum SiloRole {
    /// The one silo that admits slaves, watches their heartbeats and tells everyone
    /// about joins and departures.
    #[default]
    Master,
    /// A silo that joins a master (configured with [`MembershipConfig::master`]).
    Slave,
}

impl std::fmt::Display for SiloRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SiloRole::Master => "master",
            SiloRole::Slave => "slave",
        })
    }
}

/// Settings of the UDP membership protocol.
///
/// A slave starts with its own `heartbeat_interval` and `missed_heartbeats`, then adopts
/// the master's from the WELCOME, so the master's values rule the cluster.
#[derive(Clone, PartialEq, Eq)]
pub struct MembershipConfig {
    /// Master or slave.
    pub role: SiloRole,
    /// The master's UDP address. Required for a slave, ignored by a master.
    pub master: Option<SocketAddr>,
    /// Time between heartbeats.
    pub heartbeat_interval: Duration,
    /// Heartbeat intervals a peer may miss before it is declared dead (by the master) or
    /// unreachable (by a slave). `missed_heartbeats × heartbeat_interval` is the lease.
    pub missed_heartbeats: u32,
    /// Shared secret for HMAC-SHA256 packet signing. `None`: packets are unsigned, and
    /// signed packets are rejected. Every silo of a cluster must use the same setting.
    pub cluster_key: Option<Vec<u8>>,
    /// Largest datagram sent or accepted, in bytes; larger ones are dropped.
    pub max_packet: usize,
}

impl fmt::Debug for MembershipConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs.
        f.debug_struct("MembershipConfig")
            .field("role", &self.role)
            .field("master", &self.master)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("missed_heartbeats", &self.missed_heartbeats)
            .field(
                "cluster_key",
                &self.cluster_key.as_ref().map(|_| "<redacted>"),
            )
            .field("max_packet", &self.max_packet)
            .finish()
    }
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            role: SiloRole::Master,
            master: None,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            missed_heartbeats: DEFAULT_MISSED_HEARTBEATS,
            cluster_key: None,
            max_packet: DEFAULT_MAX_PACKET_BYTES,
        }
    }
}

impl MembershipConfig {
    /// A master with default settings.
    pub fn master() -> Self {
        Self::default()
    }

    /// A slave of the master at UDP address `master`, with default settings.
    pub fn slave(master: SocketAddr) -> Self {
        Self {
            role: SiloRole::Slave,
            master: Some(master),
            ..Self::default()
        }
    }

    /// Sets the role.
    pub fn with_role(mut self, role: SiloRole) -> Self {
        self.role = role;
        self
    }

    /// Sets the master's UDP address.
    pub fn with_master(mut self, master: SocketAddr) -> Self {
        self.master = Some(master);
        self
    }

    /// Sets the heartbeat interval.
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = interval;
        self
    }

    /// Sets how many heartbeats may be missed.
    pub fn with_missed_heartbeats(mut self, missed: u32) -> Self {
        self.missed_heartbeats = missed;
        self
    }

    /// Sets the cluster key (packets are signed with HMAC-SHA256).
    pub fn with_cluster_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.cluster_key = Some(key.into());
        self
    }

    /// Sets the datagram size cap.
    pub fn with_max_packet(mut self, bytes: usize) -> Self {
        self.max_packet = bytes;
        self
    }

    /// `missed_heartbeats × heartbeat_interval`: how long a peer may stay silent.
    pub fn lease(&self) -> Duration {
        self.heartbeat_interval
            .saturating_mul(self.missed_heartbeats)
    }

    /// Checks the settings that [`PacketCodec`](granary_proto::packet::PacketCodec) does
    /// not check itself.
    pub(super) fn validate(&self) -> Result<(), MembershipError> {
        if self.role == SiloRole::Slave && self.master.is_none() {
            return Err(MembershipError::MissingMaster);
        }
        if self.heartbeat_interval < Duration::from_millis(1) {
            return Err(MembershipError::InvalidConfig(
                "heartbeat_interval must be at least 1 ms",
            ));
        }
        if self.missed_heartbeats == 0 {
            return Err(MembershipError::InvalidConfig(
                "missed_heartbeats must be at least 1",
            ));
        }
        Ok(())
    }

    /// The parameters a master hands out in its WELCOME.
    pub(super) fn params(&self) -> ProtocolParams {
        ProtocolParams {
            heartbeat_interval_ms: u64::try_from(self.heartbeat_interval.as_millis())
                .unwrap_or(u64::MAX),
            missed_heartbeats: self.missed_heartbeats,
        }
    }
}
