//! UDP membership packets: what silos say to each other to form a cluster.
//!
//! One or more master *candidates* and any number of slave silos exchange small
//! datagrams. One candidate at a time is the acting master, elected for an *epoch*; the
//! others are standbys.
//!
//! | packet              | direction              | meaning                                        |
//! |---------------------|------------------------|------------------------------------------------|
//! | `HANDSHAKE`         | slave → candidates     | "let me in" (also: "send me the list again")   |
//! | `WELCOME`           | master → slave         | accepted; the member list and the parameters   |
//! | `HEARTBEAT`         | slave → master, answered | "I am alive", with the sender's load; the answer renews the slave's lease |
//! | `SHUTDOWN`          | both ways              | graceful leave; from a lone master: "shut down" |
//! | `SLAVE_CONNECT`     | master → slaves        | a slave joined                                 |
//! | `SLAVE_DISCONNECT`  | master → slaves        | a slave left or was declared dead              |
//! | `REJOIN`            | master → slave         | "I do not know you (any more): handshake"      |
//! | `NOT_LEADER`        | standby → slave        | "I am not the acting master; it is …"          |
//! | `LEADER_BEAT`       | master → candidates    | "I act for this epoch": renews its lease       |
//! | `LEADER_BEAT_ACK`   | candidate → master     | the lease renewal, with the standby's store position |
//! | `STANDBY_BEAT`      | standby → candidates   | "I am alive", with what it knows               |
//! | `VOTE_REQUEST`      | candidate → candidates | "elect me for this epoch" (Bully-ordered)     |
//! | `VOTE`              | candidate → candidate  | granted or refused                             |
//!
//! The protocol logic lives in the silo (`granary_silo::membership`); this module only
//! defines the vocabulary and its wire format.
//!
//! # Wire format
//!
//! ```text
//! +------+------+------+---------+-------+---------------------------+----------------+
//! | 'G'  | 'R'  | 'N'  | VERSION | flags | body: codec::encode(Packet) | MAC (32 bytes) |
//! +------+------+------+---------+-------+---------------------------+----------------+
//!  0      1      2      3         4       5 ..                        only if flags & SIGNED
//! ```
//!
//! - The 4-byte magic+version prefix ([`MAGIC`]) lets a receiver reject stray traffic
//!   and packets from an incompatible protocol version before decoding anything.
//! - `flags` bit 0 ([`FLAG_SIGNED`]) says a MAC follows; other bits must be zero.
//! - The body is [`Packet`] encoded with [`crate::codec`] (bincode inside).
//! - The MAC is HMAC-SHA256 over everything before it (header and body), keyed with the
//!   cluster key. A silo with a key accepts only signed packets with a valid MAC; a silo
//!   without a key accepts only unsigned packets. The flag is covered by the MAC, so
//!   it cannot be cleared to strip a signature.
//! - The whole datagram is limited to a configurable size ([`DEFAULT_MAX_PACKET`],
//!   8 KiB); larger datagrams are rejected before any decoding.
//!
//! # Replay
//!
//! Every packet carries the sender's [`SiloId`] and a per-sender sequence number
//! ([`Packet::seq`]) that increases by one with every packet the sender sends. A receiver
//! remembers the highest sequence number it accepted from each peer and drops anything
//! not newer. With a cluster key this stops replays of captured packets within one
//! generation of a peer; across generations, a replayed packet of an *older* generation
//! is ignored because a newer generation from the same address supersedes it. This is
//! deliberately light: it does not stop an attacker who holds the key, and a replay
//! aimed at a freshly restarted master can briefly re-add a member that then times out.

use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::codec::{self, CodecError};
use crate::replica::StorePosition;

/// The first four bytes of every packet: `b"GRN"` followed by [`VERSION`].
pub const MAGIC: [u8; 4] = [b'G', b'R', b'N', VERSION];
/// Version of the packet format; bumped on any incompatible change.
pub const VERSION: u8 = 2;
/// Bytes before the body: [`MAGIC`] plus the flags byte.
pub const HEADER_LEN: usize = MAGIC.len() + 1;
/// Length of the HMAC-SHA256 tag that ends a signed packet.
pub const MAC_LEN: usize = 32;
/// `flags` bit: the packet ends with a [`MAC_LEN`]-byte HMAC-SHA256 tag.
pub const FLAG_SIGNED: u8 = 0b0000_0001;
/// `flags` value of an *auth rejection*: a 6-byte unsigned datagram (`MAGIC`, this flag,
/// one [`AuthRejection`] byte) a silo sends back to a peer whose packet failed the
/// cluster-key check, so the peer can say "wrong cluster key" instead of "no answer".
/// It is unauthenticated by nature: receivers only log it, never act on it.
pub const FLAG_AUTH_REJECTED: u8 = 0b0000_0010;
/// Default cap on a whole datagram, in bytes (8 KiB).
pub const DEFAULT_MAX_PACKET: usize = 8 * 1024;
/// Smallest cap [`PacketCodec::new`] accepts: enough for a WELCOME listing a few members.
pub const MIN_MAX_PACKET: usize = 512;
/// Largest cap [`PacketCodec::new`] accepts: the largest UDP payload over IPv4.
pub const MAX_MAX_PACKET: usize = 65_507;

type HmacSha256 = Hmac<Sha256>;

/// The identity of one *run* of a silo.
///
/// A silo that restarts on the same addresses gets a new, larger `generation`, and is a
/// new member: whatever the cluster knew about the old generation (its grains, its
/// directory entries) is gone with it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Debug)]
pub struct SiloId {
    /// The silo's TCP listen address, where grain traffic goes.
    pub tcp: SocketAddr,
    /// The silo's UDP address, where membership packets go.
    pub udp: SocketAddr,
    /// When this run of the silo started (unix milliseconds by convention, see
    /// [`SiloId::generation_now`]); larger means newer.
    pub generation: u64,
}

impl SiloId {
    /// Builds an id from its parts.
    pub fn new(tcp: SocketAddr, udp: SocketAddr, generation: u64) -> Self {
        Self {
            tcp,
            udp,
            generation,
        }
    }

    /// A generation for a silo starting now: the current unix time in milliseconds.
    pub fn generation_now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// True when `other` is (a run of) the same silo: it shares the TCP or the UDP
    /// address, whatever its generation.
    pub fn same_address(&self, other: &SiloId) -> bool {
        self.tcp == other.tcp || self.udp == other.udp
    }
}

impl fmt::Display for SiloId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/udp:{}#{}", self.tcp, self.udp, self.generation)
    }
}

/// How busy a silo is; sent in every heartbeat and used by placement.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, Debug)]
pub struct LoadReport {
    /// Number of grain activations the silo currently hosts.
    pub activations: u64,
    /// Sum of the mailbox lengths of those activations.
    pub queue_depth: u64,
    /// From a slave: its hosting lease has lapsed (it has not heard the acting master in
    /// time), so its grains wait; placement avoids it while others can take grains.
    pub suspended: bool,
}

/// The timing parameters a master hands to every slave in its WELCOME, so the whole
/// cluster agrees on how fast to heartbeat and when to give up on a peer.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct ProtocolParams {
    /// Time between two heartbeats, in milliseconds.
    pub heartbeat_interval_ms: u64,
    /// How many heartbeat intervals may pass in silence before a peer is given up.
    pub missed_heartbeats: u32,
}

impl ProtocolParams {
    /// The heartbeat interval as a [`Duration`].
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// How long a peer may stay silent: `missed_heartbeats × heartbeat_interval`.
    pub fn lease(&self) -> Duration {
        self.heartbeat_interval()
            .saturating_mul(self.missed_heartbeats)
    }
}

/// One member as listed in a WELCOME.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct WireMember {
    /// The member.
    pub id: SiloId,
    /// Its load as last reported to the master.
    pub load: LoadReport,
}

/// Why a member left the cluster, as told in a SLAVE_DISCONNECT.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub enum DepartureReason {
    /// It said SHUTDOWN (graceful leave).
    Left,
    /// It missed too many heartbeats, or a newer generation of it joined.
    Dead,
}

/// What a packet says. See the table in the [module docs](self).
///
/// `view` fields carry the master's membership version: every change the master makes
/// to its member list increments it by one and is announced by exactly one
/// SLAVE_CONNECT or SLAVE_DISCONNECT. A slave that sees a gap (or reports an older view
/// in its heartbeat) is sent a fresh WELCOME, so lost or reordered datagrams heal.
///
/// `epoch` fields carry the acting master's leadership epoch: it grows with every
/// election, and everyone ignores what a master of an older epoch says.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub enum PacketBody {
    /// Slave → candidates: join, or (from a known member) ask for the WELCOME again.
    Handshake,
    /// Master → slave: accepted. `members` includes the master and the receiver.
    Welcome {
        /// The acting master's epoch.
        epoch: u64,
        /// The master's membership version this list corresponds to.
        view: u64,
        /// Heartbeat timing the slave must adopt.
        params: ProtocolParams,
        /// Every active member, master included.
        members: Vec<WireMember>,
    },
    /// Slave → master, and the master's answer to each one: liveness plus the sender's
    /// load. The answer's `ack` renews the slave's hosting lease.
    Heartbeat {
        /// From the master: its epoch. From a slave: the epoch of the master it follows.
        epoch: u64,
        /// The sender's load when the heartbeat was sent.
        load: LoadReport,
        /// From the master: its membership version. From a slave: the last master
        /// version it applied (the master re-sends WELCOME when this is behind).
        view: u64,
        /// From the master: the sequence number of the slave's heartbeat it answers (the
        /// slave's lease runs from when it sent that heartbeat). From a slave: that
        /// number, counting its heartbeats.
        ack: u64,
    },
    /// Graceful leave. From a master without standbys it also means "shut down".
    Shutdown,
    /// Master → slaves: `member` joined.
    SlaveConnect {
        /// The newcomer.
        member: SiloId,
        /// The master's membership version after the join.
        view: u64,
    },
    /// Master → slaves: `member` is gone.
    SlaveDisconnect {
        /// The member that left or died.
        member: SiloId,
        /// Whether it left gracefully or was declared dead.
        reason: DepartureReason,
        /// The master's membership version after the departure.
        view: u64,
    },
    /// Master → slave: the master does not consider the sender a member (it was
    /// declared dead, or the master restarted); the slave must fence itself and send
    /// HANDSHAKE again.
    Rejoin,
    /// Standby → slave (answering HANDSHAKE or HEARTBEAT): this candidate is not the
    /// acting master; `leader` is the one it follows, if it knows one.
    NotLeader {
        /// The newest epoch the standby knows.
        epoch: u64,
        /// The acting master it follows.
        leader: Option<SiloId>,
    },
    /// Acting master → candidates, every candidate heartbeat: the master's claim to its
    /// epoch. Majority-acknowledged rounds extend its lease.
    LeaderBeat {
        /// The master's epoch.
        epoch: u64,
        /// Round number, echoed in the acknowledgement.
        round: u64,
    },
    /// Candidate → acting master: acknowledges a LEADER_BEAT round; the candidate will
    /// not vote for anyone else for a while.
    LeaderBeatAck {
        /// The epoch acknowledged (or, when newer than the master's, the standby's own:
        /// the master must step down).
        epoch: u64,
        /// The round acknowledged.
        round: u64,
        /// Where the standby's replica of the store stands.
        position: StorePosition,
    },
    /// Standby → candidates, every candidate heartbeat: liveness, plus what the standby
    /// knows (Bully: a candidate defers to a live, more up-to-date or higher one).
    StandbyBeat {
        /// The newest epoch the standby knows.
        epoch: u64,
        /// The acting master it follows, if any.
        leader: Option<SiloId>,
        /// Where its replica of the store stands.
        position: StorePosition,
    },
    /// Candidate → candidates: elect the sender for `epoch`.
    VoteRequest {
        /// The epoch the sender campaigns for.
        epoch: u64,
        /// Where the sender's store stands; voters refuse candidates behind them.
        position: StorePosition,
    },
    /// Candidate → campaigning candidate: the vote.
    Vote {
        /// The epoch voted in (or the voter's newer one, when it refuses).
        epoch: u64,
        /// True if the vote is granted.
        granted: bool,
        /// Where the voter's store stands.
        position: StorePosition,
    },
}

impl PacketBody {
    /// The packet's protocol name, for logs (`"HANDSHAKE"`, `"WELCOME"`, …).
    pub fn name(&self) -> &'static str {
        match self {
            PacketBody::Handshake => "HANDSHAKE",
            PacketBody::Welcome { .. } => "WELCOME",
            PacketBody::Heartbeat { .. } => "HEARTBEAT",
            PacketBody::Shutdown => "SHUTDOWN",
            PacketBody::SlaveConnect { .. } => "SLAVE_CONNECT",
            PacketBody::SlaveDisconnect { .. } => "SLAVE_DISCONNECT",
            PacketBody::Rejoin => "REJOIN",
            PacketBody::NotLeader { .. } => "NOT_LEADER",
            PacketBody::LeaderBeat { .. } => "LEADER_BEAT",
            PacketBody::LeaderBeatAck { .. } => "LEADER_BEAT_ACK",
            PacketBody::StandbyBeat { .. } => "STANDBY_BEAT",
            PacketBody::VoteRequest { .. } => "VOTE_REQUEST",
            PacketBody::Vote { .. } => "VOTE",
        }
    }

    /// True for what only master candidates say to each other.
    pub fn is_between_candidates(&self) -> bool {
        matches!(
            self,
            PacketBody::LeaderBeat { .. }
                | PacketBody::LeaderBeatAck { .. }
                | PacketBody::StandbyBeat { .. }
                | PacketBody::VoteRequest { .. }
                | PacketBody::Vote { .. }
        )
    }
}

/// One membership datagram.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Debug)]
pub struct Packet {
    /// Who sent it.
    pub from: SiloId,
    /// The sender's packet counter (see "Replay" in the [module docs](self)).
    pub seq: u64,
    /// What it says.
    pub body: PacketBody,
}

/// Why a datagram was not accepted as a [`Packet`] (or a packet could not be encoded).
///
/// Every variant is a reason to drop the datagram and log it; none is fatal.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// The datagram (or the encoded packet) is larger than the configured cap.
    #[error("packet of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The datagram is too short to hold a header (and a MAC, if it claims one).
    #[error("packet of {0} bytes is truncated")]
    Truncated(usize),
    /// The datagram does not start with `b"GRN"`: not a Granary packet.
    #[error("bad magic: not a Granary membership packet")]
    BadMagic,
    /// A Granary packet of another protocol version.
    #[error("unsupported packet version {0} (this silo speaks {VERSION})")]
    UnsupportedVersion(u8),
    /// The flags byte has bits this version does not define.
    #[error("unknown packet flags {0:#04x}")]
    UnknownFlags(u8),
    /// This silo has a cluster key but the packet is not signed.
    #[error("unsigned packet, but a cluster key is configured")]
    MissingMac,
    /// The packet is signed but this silo has no cluster key.
    #[error("signed packet, but no cluster key is configured")]
    UnexpectedMac,
    /// The MAC does not match: wrong key, or the packet was altered.
    #[error("packet MAC does not verify (wrong cluster key or tampered packet)")]
    BadMac,
    /// The header and MAC are fine but the body is not a valid [`Packet`].
    #[error("malformed packet body: {0}")]
    Body(CodecError),
    /// The packet could not be encoded.
    #[error("packet encode failed: {0}")]
    Encode(CodecError),
    /// The cluster key is empty.
    #[error("the cluster key must not be empty")]
    EmptyKey,
    /// The datagram is the peer's auth rejection of a packet of ours.
    #[error("the peer rejected our packet: {0}")]
    Rejected(AuthRejection),
    /// The configured size cap is outside [`MIN_MAX_PACKET`]..=[`MAX_MAX_PACKET`].
    #[error("max packet size {0} is outside {MIN_MAX_PACKET}..={MAX_MAX_PACKET}")]
    BadMaxPacket(usize),
}

impl PacketError {
    /// The rejection to send back for a packet that failed the cluster-key check, if it
    /// failed for that reason.
    pub fn auth_rejection(&self) -> Option<AuthRejection> {
        match self {
            PacketError::BadMac => Some(AuthRejection::WrongKey),
            PacketError::MissingMac => Some(AuthRejection::KeyRequired),
            PacketError::UnexpectedMac => Some(AuthRejection::NoKeyExpected),
            _ => None,
        }
    }
}

/// Why a silo rejected a peer's packet, as told back in an auth rejection
/// ([`FLAG_AUTH_REJECTED`]). Worded from the peer's side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthRejection {
    /// Our packet was signed with another key than the receiver's.
    WrongKey,
    /// The receiver has a cluster key; our packet was unsigned.
    KeyRequired,
    /// The receiver has no cluster key; our packet was signed.
    NoKeyExpected,
}

impl AuthRejection {
    fn to_byte(self) -> u8 {
        match self {
            AuthRejection::WrongKey => 1,
            AuthRejection::KeyRequired => 2,
            AuthRejection::NoKeyExpected => 3,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(AuthRejection::WrongKey),
            2 => Some(AuthRejection::KeyRequired),
            3 => Some(AuthRejection::NoKeyExpected),
            _ => None,
        }
    }
}

impl fmt::Display for AuthRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthRejection::WrongKey => "wrong cluster key (ours differs from the receiver's)",
            AuthRejection::KeyRequired => "the receiver requires a cluster key and we have none",
            AuthRejection::NoKeyExpected => "the receiver has no cluster key but we sign with one",
        })
    }
}

/// Encodes and decodes [`Packet`]s for one silo: its cluster key (if any) and its size
/// cap. Cheap to clone; the key schedule is computed once.
#[derive(Clone)]
pub struct PacketCodec {
    /// HMAC state keyed with the cluster key, cloned for every packet; `None` means
    /// packets are sent unsigned and only unsigned packets are accepted.
    mac: Option<HmacSha256>,
    /// Largest datagram accepted or produced, in bytes.
    max_packet: usize,
}

impl fmt::Debug for PacketCodec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("PacketCodec")
            .field("signed", &self.mac.is_some())
            .field("max_packet", &self.max_packet)
            .finish()
    }
}

impl PacketCodec {
    /// A codec signing with `key` (none: unsigned) and capping datagrams at `max_packet`.
    pub fn new(key: Option<&[u8]>, max_packet: usize) -> Result<Self, PacketError> {
        if !(MIN_MAX_PACKET..=MAX_MAX_PACKET).contains(&max_packet) {
            return Err(PacketError::BadMaxPacket(max_packet));
        }
        let mac = match key {
            None => None,
            Some([]) => return Err(PacketError::EmptyKey),
            // HMAC accepts keys of any length, so this cannot fail; map it anyway.
            Some(key) => {
                Some(<HmacSha256 as Mac>::new_from_slice(key).map_err(|_| PacketError::EmptyKey)?)
            }
        };
        Ok(Self { mac, max_packet })
    }

    /// True when packets are signed and signatures are required.
    pub fn is_signed(&self) -> bool {
        self.mac.is_some()
    }

    /// The size cap, in bytes.
    pub fn max_packet(&self) -> usize {
        self.max_packet
    }

    /// Encodes `packet` into one datagram.
    pub fn encode(&self, packet: &Packet) -> Result<Vec<u8>, PacketError> {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&MAGIC);
        buf.push(if self.mac.is_some() { FLAG_SIGNED } else { 0 });
        codec::encode_into(packet, &mut buf).map_err(PacketError::Encode)?;
        if let Some(mac) = &self.mac {
            let mut mac = mac.clone();
            mac.update(&buf);
            buf.extend_from_slice(&mac.finalize().into_bytes());
        }
        if buf.len() > self.max_packet {
            return Err(PacketError::TooLarge {
                len: buf.len(),
                max: self.max_packet,
            });
        }
        Ok(buf)
    }

    /// The auth rejection datagram telling a peer why its packet was refused.
    pub fn encode_rejection(reason: AuthRejection) -> [u8; HEADER_LEN + 1] {
        let mut out = [0u8; HEADER_LEN + 1];
        out[..MAGIC.len()].copy_from_slice(&MAGIC);
        out[MAGIC.len()] = FLAG_AUTH_REJECTED;
        out[HEADER_LEN] = reason.to_byte();
        out
    }

    /// Checks and decodes one datagram. Checks run cheapest first, and nothing is
    /// decoded before the size, header and MAC have been verified.
    pub fn decode(&self, datagram: &[u8]) -> Result<Packet, PacketError> {
        let len = datagram.len();
        if len > self.max_packet {
            return Err(PacketError::TooLarge {
                len,
                max: self.max_packet,
            });
        }
        if len < HEADER_LEN {
            // Say "not ours" rather than "truncated" when even the magic is wrong.
            if !MAGIC[..3].starts_with(&datagram[..len.min(3)]) {
                return Err(PacketError::BadMagic);
            }
            return Err(PacketError::Truncated(len));
        }
        if datagram[..3] != MAGIC[..3] {
            return Err(PacketError::BadMagic);
        }
        if datagram[3] != VERSION {
            return Err(PacketError::UnsupportedVersion(datagram[3]));
        }
        let flags = datagram[4];
        if flags == FLAG_AUTH_REJECTED {
            return match (len == HEADER_LEN + 1)
                .then(|| AuthRejection::from_byte(datagram[HEADER_LEN]))
            {
                Some(Some(reason)) => Err(PacketError::Rejected(reason)),
                _ => Err(PacketError::UnknownFlags(flags)),
            };
        }
        if flags & !FLAG_SIGNED != 0 {
            return Err(PacketError::UnknownFlags(flags));
        }
        let signed = flags & FLAG_SIGNED != 0;
        let body = match (&self.mac, signed) {
            (Some(_), false) => return Err(PacketError::MissingMac),
            (None, true) => return Err(PacketError::UnexpectedMac),
            (None, false) => &datagram[HEADER_LEN..],
            (Some(mac), true) => {
                if len < HEADER_LEN + MAC_LEN {
                    return Err(PacketError::Truncated(len));
                }
                let (signed_part, tag) = datagram.split_at(len - MAC_LEN);
                let mut mac = mac.clone();
                mac.update(signed_part);
                mac.verify_slice(tag).map_err(|_| PacketError::BadMac)?;
                &signed_part[HEADER_LEN..]
            }
        };
        codec::decode(body).map_err(PacketError::Body)
    }
}

#[cfg(test)]
mod tests;
