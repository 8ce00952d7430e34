//! TCP frames between clients and silos and between silos.
//!
//! Everything that travels over a Granary TCP connection is a [`Frame`]: a request that
//! expects a response (matched by its `id`, so many can be in flight on one connection
//! and answered out of order), the response itself, or a one-way request (`tell`).
//!
//! A grain call may ask for a **streamed reply** ([`GrainCall::stream`]): the server
//! then sends any number of [`Frame::StreamItem`]s with the request's id before the one
//! [`Frame::Response`] that ends the stream. Flow control is by credit: the server sends
//! an item only while it holds credit, which starts at the call's window and grows with
//! every [`Frame::StreamCredit`] the caller sends as its consumer takes items, so a slow
//! consumer slows the producer and neither end buffers more than one window. A caller
//! that gives up on any request (an ask or a stream) sends [`Frame::Cancel`]: the server
//! stops working on it and sends nothing more for it.
//!
//! ```text
//! caller                                   server
//!   Request{id 7, Grain(stream: Some(4))} ──►
//!                                        ◄── StreamItem{7} ×4     (credit spent)
//!   StreamCredit{7, 2}                   ──►
//!                                        ◄── StreamItem{7} ×2
//!                                        ◄── Response{7, Grain(Ok([]))}   (the end)
//! ```
//!
//! # Wire format
//! ```text
//! +----------------+---------+------------------------------+
//! | length: u32 BE | version | body: bincode(Frame)         |
//! |  (4 bytes)     | (1 byte)| (length - 1 bytes)           |
//! +----------------+---------+------------------------------+
//! ```
//! `length` counts the bytes after the prefix (the version byte plus the body). The
//! receiver checks it against its configured maximum *before* reserving any buffer for
//! the frame, so a hostile prefix cannot make it allocate. The body is encoded by
//! [`crate::codec`], the only caller of bincode. [`FRAME_VERSION`] changes whenever the
//! body's layout does; a peer speaking another version is disconnected.

use std::fmt;
use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

use crate::codec::{self, CodecError};
use crate::replica::{ReplicaError, StoreChange, StorePosition};
use crate::replication::{GrainReplyAt, ReplicaCall, ReplicaRequest, ReplicaResponse};
use crate::status::{ClusterStatus, SiloStatus};
use crate::{CallError, GrainId};

/// Default cap on one frame (version byte + body): 8 MiB.
pub const DEFAULT_MAX_FRAME: usize = 8 * 1024 * 1024;

/// Version byte written in front of every frame body. 2: a grain call carries an
/// optional [`TraceContext`]. 3: directory answers carry the master's epoch; directory
/// reports and store replication between candidates. 4: streamed replies
/// ([`GrainCall::stream`], [`Frame::StreamItem`], [`Frame::StreamCredit`]), cancellation
/// ([`Frame::Cancel`]) and [`CallError::Cancelled`]. 5: hot-grain replication (a grain
/// call's [`ReplicaCall`], [`Response::GrainAt`], [`Request::Replica`]).
pub const FRAME_VERSION: u8 = 5;

/// Size of the length prefix.
pub const LENGTH_PREFIX: usize = 4;

/// A silo's identity for grain traffic: where it listens for TCP, plus the generation
/// (start time or counter) that tells a restarted silo on the same address apart from
/// its dead predecessor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SiloAddr {
    /// The silo's TCP transport address.
    pub addr: SocketAddr,
    /// Incarnation of the silo at `addr`; a restart gets a larger one.
    pub generation: u64,
}

impl SiloAddr {
    /// Builds a silo address.
    pub fn new(addr: SocketAddr, generation: u64) -> Self {
        Self { addr, generation }
    }
}

impl fmt::Display for SiloAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.addr, self.generation)
    }
}

/// One unit on a TCP connection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// A request that expects exactly one [`Frame::Response`] with the same `id`.
    Request {
        /// Chosen by the sender, unique among its in-flight requests on this connection.
        id: u64,
        /// What is asked.
        body: Request,
    },
    /// The answer to the [`Frame::Request`] with the same `id`. Responses may arrive in
    /// any order.
    Response {
        /// The id of the request answered.
        id: u64,
        /// The answer.
        body: Response,
    },
    /// A request whose result is discarded (a grain `tell`); nothing is sent back.
    OneWay(Request),
    /// Server → caller: one item of the streamed reply to request `id` (a grain call
    /// with [`GrainCall::stream`]). Sent only while the server holds credit for the
    /// stream; the stream ends with the [`Frame::Response`] of the same `id`.
    StreamItem {
        /// The request whose reply this item belongs to.
        id: u64,
        /// The item, encoded by [`crate::codec`].
        #[serde(with = "serde_bytes")]
        item: Vec<u8>,
    },
    /// Caller → server: the caller's consumer took `credit` more items of stream `id`,
    /// so the server may send that many more. Credit for a stream that has ended is
    /// ignored.
    StreamCredit {
        /// The streaming request.
        id: u64,
        /// How many more items may be sent.
        credit: u32,
    },
    /// Caller → server: the caller gave up on request `id` (dropped the call, timed out,
    /// or was cancelled itself). The server stops working on it: a grain call not yet
    /// handled is never handled, a handler that runs is told (`ctx.cancelled()`), and
    /// nothing more is sent for `id`, not even a response. Unknown ids are ignored.
    Cancel {
        /// The request given up on.
        id: u64,
    },
}

/// A grain message addressed to one grain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrainCall {
    /// The grain that should handle the message.
    pub target: GrainId,
    /// The message's stable wire name.
    pub message: String,
    /// The message, encoded by [`crate::codec`].
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// What is left of the caller's timeout when the call was sent, in milliseconds, so
    /// the receiver does not work on calls whose caller has given up.
    pub timeout_ms: u32,
    /// How many times the call was redirected (`Response::Moved`) on its way; the
    /// caller gives up beyond a small limit, which stops loops while the directory
    /// settles.
    pub hops: u8,
    /// A `tell`: the receiver answers `Grain(Ok(empty))` as soon as the message is in
    /// the grain's mailbox, instead of waiting for the handler.
    pub one_way: bool,
    /// A call whose reply is a stream (`ask_stream`): the items come as
    /// [`Frame::StreamItem`]s, and this is the caller's initial credit (how many items
    /// it can take before it grants more). The closing `Response::Grain(Ok(_))` carries
    /// no bytes. `None`: one reply.
    pub stream: Option<u32>,
    /// The trace the call belongs to, when a grain's handler made it: the receiver's
    /// turn becomes a child of the sender's. `None` for calls from outside a grain (a
    /// client), whose turn starts a new trace.
    pub trace: Option<TraceContext>,
    /// For a replicated grain the caller routes over a copy set: the version it has
    /// seen and the set it knows (see [`crate::replication`]). `None` for every other
    /// call; the callee still answers a replicated grain with [`Response::GrainAt`].
    pub replica: Option<ReplicaCall>,
}

/// Where a call sits in a distributed trace: the trace it belongs to and the span (the
/// handler's turn) that made it. Granary's own ids, not OpenTelemetry's: the silos
/// record them as span fields (`trace_id`, `span_id`, `parent_span_id`), so the JSON
/// logs of every silo can be joined into one call tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TraceContext {
    /// The trace: random, chosen by the turn at its root.
    pub trace_id: u128,
    /// The span of the turn that sent the call; the receiving turn's parent.
    pub parent_span_id: u64,
}

/// What a peer asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Deliver a grain message. Answered with [`Response::Grain`].
    Grain(GrainCall),
    /// Where is `grain` activated? Served by the master (a slave forwards it there):
    /// the live entry, or a new placement on the least-loaded slave, recorded
    /// atomically, so concurrent first calls all get the same owner. Answered with
    /// [`Response::Directory`] holding the owner.
    DirectoryResolve {
        /// The grain looked up.
        grain: GrainId,
        /// The silo asking, if it is one (clients send `None`). When the owner itself
        /// asks, which it does before activating, the entry is confirmed; placements
        /// nobody confirms are swept after a while.
        from: Option<SiloAddr>,
    },
    /// A slave tells a newly elected master which grains it hosts, so the master rebuilds
    /// its directory without re-activating them. Served by the acting master; answered
    /// with [`Response::DirectoryReport`].
    DirectoryReport {
        /// The epoch of the master the report is for.
        epoch: u64,
        /// The reporting slave.
        silo: SiloAddr,
        /// Every grain active on it.
        grains: Vec<GrainId>,
    },
    /// Remove the entry for `grain` if it still points at `silo`. Served by the master.
    /// Answered with [`Response::Directory`] (`Ok(None)` on success).
    DirectoryUnregister {
        /// The grain deactivated.
        grain: GrainId,
        /// The silo that hosted it.
        silo: SiloAddr,
    },
    /// Read a grain's stored state from the master's store. Answered with
    /// [`Response::StorageRead`].
    StorageRead {
        /// The grain whose state is read.
        grain: GrainId,
    },
    /// Write a grain's state if its etag is still `expected`. Answered with
    /// [`Response::StorageWrite`] holding the new etag.
    StorageWrite {
        /// The grain whose state is written.
        grain: GrainId,
        /// The encoded state.
        data: Vec<u8>,
        /// The etag the writer last saw (`None`: it believes there is no record).
        expected: Option<String>,
    },
    /// Delete a grain's state if its etag is still `expected`. Answered with
    /// [`Response::StorageClear`].
    StorageClear {
        /// The grain whose state is cleared.
        grain: GrainId,
        /// The etag the writer last saw.
        expected: Option<String>,
    },
    /// Acting master → standby candidate: apply this batch of store changes, which
    /// follows `prev` and brings the standby to `next`. Answered with
    /// [`Response::StoreReplica`].
    StoreAppend {
        /// The sender's leadership epoch.
        epoch: u64,
        /// Where the standby must stand for the batch to apply.
        prev: StorePosition,
        /// Where the batch brings it.
        next: StorePosition,
        /// The record changes, in commit order.
        changes: Vec<StoreChange>,
    },
    /// Acting master → standby candidate: one chunk of a full copy of the store, for a
    /// standby too far behind for [`Request::StoreAppend`]. Chunks are staged; the last
    /// one (`done`) replaces the standby's records in one transaction. Answered with
    /// [`Response::StoreReplica`].
    StoreSnapshot {
        /// The sender's leadership epoch.
        epoch: u64,
        /// First chunk: discard anything staged before.
        start: bool,
        /// Records as stored: id and bytes.
        records: Vec<(String, Vec<u8>)>,
        /// Last chunk: the position the copy corresponds to.
        done: Option<StorePosition>,
    },
    /// Liveness and latency probe. Answered with [`Response::Pong`].
    Ping,
    /// What this silo reports about itself. Answered with [`Response::SiloStatus`].
    SiloStatus,
    /// The whole cluster as the master sees it; a slave asks the master. Answered with
    /// [`Response::ClusterStatus`].
    ClusterStatus,
    /// Replication between silos (copy sets, replica sync, load reports). Answered with
    /// [`Response::Replica`].
    Replica(ReplicaRequest),
}

/// What a peer answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Result of [`Request::Grain`]: the encoded reply, or why the call failed.
    Grain(#[serde(with = "grain_reply")] Result<Vec<u8>, CallError>),
    /// Result of a directory request: the (winning) address, if any, and the epoch of
    /// the master that answered (callers ignore answers older than what they know).
    Directory {
        /// The answering master's epoch (0 when a silo that is not the master answers).
        epoch: u64,
        /// The owner, `Ok(None)` for an unregister, or why there is none.
        result: Result<Option<SiloAddr>, CallError>,
    },
    /// Result of [`Request::DirectoryReport`].
    DirectoryReport(ReportOutcome),
    /// Result of [`Request::StoreAppend`] and [`Request::StoreSnapshot`]: where the
    /// standby's store now stands, durably.
    StoreReplica(Result<StorePosition, ReplicaError>),
    /// Result of [`Request::StorageRead`]: the encoded state and its etag, if stored.
    StorageRead(Result<Option<(Vec<u8>, String)>, WireStorageError>),
    /// Result of [`Request::StorageWrite`]: the new etag.
    StorageWrite(Result<String, WireStorageError>),
    /// Result of [`Request::StorageClear`].
    StorageClear(Result<(), WireStorageError>),
    /// Answer to [`Request::Ping`].
    Pong,
    /// Answer to [`Request::Grain`] from a silo that does not host the grain: the
    /// directory says `owner` does. Nothing was delivered; the caller fixes its cache
    /// and sends the call there.
    Moved(SiloAddr),
    /// Answer to [`Request::SiloStatus`].
    SiloStatus(Box<SiloStatus>),
    /// Answer to [`Request::ClusterStatus`].
    ClusterStatus(Result<Box<ClusterStatus>, CallError>),
    /// Result of [`Request::Grain`] to a replicated grain: the reply plus the version
    /// it was served at and, when the caller's is older, the grain's copy set.
    GrainAt(Box<GrainReplyAt>),
    /// Answer to [`Request::Replica`].
    Replica(ReplicaResponse),
}

/// The encoded reply of a grain call as one byte string: the same bytes on the wire as
/// `Result<Vec<u8>, CallError>`'s derived form, without a serializer call per byte.
mod grain_reply {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_bytes::{ByteBuf, Bytes};

    use crate::CallError;

    pub(super) fn serialize<S: Serializer>(
        reply: &Result<Vec<u8>, CallError>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        reply
            .as_ref()
            .map(|bytes| Bytes::new(bytes))
            .serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Result<Vec<u8>, CallError>, D::Error> {
        Ok(Result::<ByteBuf, CallError>::deserialize(deserializer)?.map(ByteBuf::into_vec))
    }
}

/// A storage failure as it crosses the wire; mirrors the runtime's `StorageError`
/// (which is not serializable). The grain is known from the request, so `Conflict`
/// does not repeat it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WireStorageError {
    /// The record's etag is not `expected`; nothing was written.
    #[error("etag conflict: expected {expected:?}, found {found:?}")]
    Conflict {
        /// The etag the writer held.
        expected: Option<String>,
        /// The etag the store holds, when it can tell.
        found: Option<String>,
    },
    /// The store could not be reached or did not answer in time; nothing is known to be
    /// written.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The state is larger than the provider accepts; nothing was written.
    #[error("state of {size} bytes exceeds the provider's limit of {max} bytes")]
    TooLarge {
        /// Encoded state size.
        size: u64,
        /// Provider's limit.
        max: u64,
    },
    /// The store failed the operation for another reason; nothing is known to be written.
    #[error("storage failed: {0}")]
    Failed(String),
    /// Stored bytes could not be decoded.
    #[error("stored state is unreadable: {0}")]
    Corrupt(String),
    /// The silo asked is not the acting master (a standby, or a master whose lease ran
    /// out): nothing was done; ask the acting master.
    #[error("not the acting master: {0}")]
    NotLeader(String),
}

/// What the acting master made of a [`Request::DirectoryReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReportOutcome {
    /// The claims are recorded, except `rejected`: grains the directory already places
    /// elsewhere. The slave must drop those activations without running them again.
    Accepted {
        /// Claims refused.
        rejected: Vec<GrainId>,
    },
    /// The slave is not a member of this master's cluster (declared dead, or never
    /// welcomed): it must fence itself (drop every grain) and join again.
    NotMember,
    /// The silo asked is not the acting master of `epoch` (or any later one).
    NotLeader {
        /// The newest epoch the silo knows.
        epoch: u64,
    },
}

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix (or, when encoding, the frame) exceeds the configured maximum.
    /// Nothing was allocated for it.
    #[error("frame of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Declared (or encoded) length of version byte + body.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The length prefix is zero: there is not even a version byte.
    #[error("empty frame (length prefix 0)")]
    Empty,
    /// The peer speaks another frame version.
    #[error("unsupported frame version {found} (expected {FRAME_VERSION})")]
    BadVersion {
        /// The version byte received.
        found: u8,
    },
    /// The body is not a valid [`Frame`].
    #[error("bad frame body: {0}")]
    Decode(CodecError),
    /// The frame could not be encoded.
    #[error("frame could not be encoded: {0}")]
    Encode(CodecError),
    /// The underlying connection failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

/// Length-prefixed, versioned [`Frame`] codec for `tokio_util::codec` with a cap on the
/// frame size, checked before anything is allocated.
#[derive(Clone, Copy, Debug)]
pub struct FrameCodec {
    /// Largest accepted (and produced) length: version byte + body.
    max_frame: usize,
}

impl FrameCodec {
    /// A codec that accepts frames of at most `max_frame` bytes (version + body).
    /// The cap is clamped to what the 4-byte prefix can express.
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame: max_frame.min(u32::MAX as usize),
        }
    }

    /// The configured cap.
    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// Encodes `frame` with its prefix and version byte into a fresh buffer, ready to be
    /// written to a socket. Fails with [`FrameError::TooLarge`] if the receiver (assumed
    /// to use the same cap) would refuse it.
    pub fn encode_to_vec(&self, frame: &Frame) -> Result<Vec<u8>, FrameError> {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&[0; LENGTH_PREFIX]);
        buf.push(FRAME_VERSION);
        codec::encode_into(frame, &mut buf).map_err(FrameError::Encode)?;
        let len = buf.len() - LENGTH_PREFIX;
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        // Cannot truncate: `max_frame` is clamped to `u32::MAX`.
        buf[..LENGTH_PREFIX].copy_from_slice(&(len as u32).to_be_bytes());
        Ok(buf)
    }
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(prefix) = src.get(..LENGTH_PREFIX) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        // Checked before any reservation: an oversize prefix costs nothing.
        if len > self.max_frame {
            return Err(FrameError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        if len == 0 {
            return Err(FrameError::Empty);
        }
        let total = LENGTH_PREFIX + len;
        if src.len() < total {
            // Bounded by `max_frame`; lets the next read fetch the rest in one go.
            src.reserve(total - src.len());
            return Ok(None);
        }
        src.advance(LENGTH_PREFIX);
        // Consume the whole frame before judging it, so the buffer stays aligned.
        let body = src.split_to(len);
        if body[0] != FRAME_VERSION {
            return Err(FrameError::BadVersion { found: body[0] });
        }
        codec::decode(&body[1..])
            .map(Some)
            .map_err(FrameError::Decode)
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let buf = self.encode_to_vec(&frame)?;
        dst.extend_from_slice(&buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
