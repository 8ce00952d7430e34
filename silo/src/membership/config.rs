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
    /// A master candidate. The acting master (one candidate at a time, elected for an
    /// epoch) admits slaves, watches their heartbeats, keeps the grain directory and
    /// serves the store; the other candidates are standbys. A lone master is the only
    /// candidate of its cluster.
    #[default]
    Master,
    /// A silo that hosts grains for the acting master (found among
    /// [`MembershipConfig::masters`]).
    Slave,
}

/// How master candidates decide which of them acts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum ElectionMode {
    /// A majority of the candidates elects the acting master and renews its lease
    /// (Bully-ordered campaigns, epochs, votes persisted in each candidate's store). The
    /// default: the store is local to the candidates and replicated among them.
    #[default]
    Quorum,
    /// The acting master holds a lease document in the store every silo shares
    /// (MongoDB), so the last candidate standing can act alone.
    SharedStore,
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
    /// Master candidate or slave.
    pub role: SiloRole,
    /// A slave: the UDP addresses of the master candidates (any subset that includes a
    /// reachable one: the acting master is found from there). Ignored by candidates.
    pub masters: Vec<SocketAddr>,
    /// A master candidate: the other candidates' UDP addresses (empty: a lone master).
    pub peers: Vec<SocketAddr>,
    /// How candidates elect the acting master.
    pub election: ElectionMode,
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
            .field("masters", &self.masters)
            .field("peers", &self.peers)
            .field("election", &self.election)
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
            masters: Vec::new(),
            peers: Vec::new(),
            election: ElectionMode::Quorum,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            missed_heartbeats: DEFAULT_MISSED_HEARTBEATS,
            cluster_key: None,
            max_packet: DEFAULT_MAX_PACKET_BYTES,
        }
    }
}

impl MembershipConfig {
    /// A lone master with default settings.
    pub fn master() -> Self {
        Self::default()
    }

    /// A master candidate among `peers` (the other candidates' UDP addresses).
    pub fn candidate(peers: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            peers: peers.into_iter().collect(),
            ..Self::default()
        }
    }

    /// A slave of the master at UDP address `master` (add more candidates with
    /// [`Self::with_master`]), with default settings.
    pub fn slave(master: SocketAddr) -> Self {
        Self {
            role: SiloRole::Slave,
            masters: vec![master],
            ..Self::default()
        }
    }

    /// Sets the role.
    pub fn with_role(mut self, role: SiloRole) -> Self {
        self.role = role;
        self
    }

    /// Adds a master candidate's UDP address (a slave tries every one it is given).
    pub fn with_master(mut self, master: SocketAddr) -> Self {
        if !self.masters.contains(&master) {
            self.masters.push(master);
        }
        self
    }

    /// Sets the other master candidates' UDP addresses (for a candidate).
    pub fn with_peers(mut self, peers: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.peers = peers.into_iter().collect();
        self
    }

    /// Sets how candidates elect the acting master.
    pub fn with_election(mut self, election: ElectionMode) -> Self {
        self.election = election;
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
        self.params().lease()
    }

    /// The timings every rule of the protocol derives from these settings.
    pub fn timing(&self) -> Timing {
        Timing::new(self.params())
    }

    /// Checks the settings that [`PacketCodec`](granary_proto::packet::PacketCodec) does
    /// not check itself.
    pub(super) fn validate(&self) -> Result<(), MembershipError> {
        if self.role == SiloRole::Slave && self.masters.is_empty() {
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

/// Every timeout of the protocol, derived from the heartbeat interval `h` and the
/// heartbeats a peer may miss `m` (defaults 1 s and 3). The inequalities between them are
/// what keeps one activation per grain; `README.md` ("How failover works") explains them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Timing {
    /// `h`: slaves heartbeat the acting master this often.
    pub heartbeat: Duration,
    /// `m × h`: the acting master declares a slave dead after this much silence.
    pub dead_after: Duration,
    /// `m × h − h/2`: a slave's hosting lease, counted from when it sent the heartbeat
    /// the master answered. Shorter than `dead_after`, so a slave has stopped running
    /// grains before the master gives them to another.
    pub hosting_lease: Duration,
    /// `h/4`: how long after its lease ran out a slave still counts a store
    /// acknowledgement (less than `dead_after − hosting_lease`).
    pub write_grace: Duration,
    /// `h/4`: the unit of the election's patience (a campaign waits two for votes, a
    /// candidate's pause before campaigning is at most one); a slave whose master went
    /// quiet looks for the next one this often; the shared-store lease ticks this often.
    pub candidate_beat: Duration,
    /// `h/8`: candidates beat each other (and run their timers) this often: two beats
    /// per `candidate_beat`, so on a slow or lossy link the acting master's lease has
    /// several chances to be renewed before it runs out.
    pub leader_beat: Duration,
    /// `m × h/4`: the acting master's lease, from when it sent a beat that a majority
    /// acknowledged.
    pub leader_lease: Duration,
    /// `leader_lease + h/4`: a candidate that acknowledged a master (or voted) votes for
    /// no other before this has passed, so a new master never overlaps an old one. A
    /// failover takes about this long, well within a slave's hosting lease, so slaves
    /// keep serving through it.
    pub vote_guard: Duration,
    /// `m × h`: after an election, grains no slave has claimed wait this long before the
    /// new master places them (every slave not yet reporting has stopped by then).
    pub rebuild_window: Duration,
}

impl Timing {
    /// The timings for `params`.
    pub fn new(params: ProtocolParams) -> Self {
        let h = params.heartbeat_interval();
        let m = params.missed_heartbeats.max(1);
        let dead_after = h.saturating_mul(m);
        let candidate_beat = h / 4;
        let leader_lease = candidate_beat.saturating_mul(m);
        Self {
            heartbeat: h,
            dead_after,
            hosting_lease: dead_after.saturating_sub(h / 2),
            write_grace: h / 4,
            candidate_beat,
            leader_beat: h / 8,
            leader_lease,
            vote_guard: leader_lease + candidate_beat,
            rebuild_window: dead_after,
        }
    }
}
