//! TCP transport, calling side: framed, multiplexed connections to silos.
//!
//! [`Peers`] keeps one multiplexed connection per remote address, shared by every
//! concurrent call and re-established on demand with backoff. Each request carries an
//! id chosen per connection, so many requests are in flight on one connection at once
//! and responses come back in any order. The serving side (`serve`) lives in
//! `granary-silo` and shares [`TransportConfig`] and the batching [`writer`].
//!
//! Frames are [`granary_proto::frame::Frame`]s (length prefix, version byte, bincode
//! body). A streamed reply is read through a [`RemoteStream`] (calling side) and sent
//! through a [`StreamSender`] (serving side), both held to the caller's credit.
//!
//! ```text
//! Peers (Clone; Arc inside; owns a TaskTracker and a CancellationToken)
//! └── per address: Slot (async connect lock + backoff, current connection)
//!     └── Conn: reader task (routes responses to waiting calls by id)
//!               writer task (batches queued frames into few writes)
//! ```

use std::time::Duration;

use granary_proto::frame::{FrameError, DEFAULT_MAX_FRAME};
use granary_proto::CallError;

pub mod handshake;
mod peers;
mod stream;
pub mod writer;

pub use handshake::ClusterKey;
pub use peers::Peers;
pub use stream::{RemoteStream, StreamEvent, StreamSender};

/// Default cap on concurrently served connections per listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default cap on requests handled concurrently for one inbound connection.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;
/// Default capacity (in frames) of a connection's outbound queue.
pub const DEFAULT_WRITE_QUEUE: usize = 1024;
/// Default time allowed for one TCP connect.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Default wait after the first failed connect to an address.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Default cap on the wait between connect attempts to an address.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Default time in-flight requests get to finish when the server shuts down.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Transport knobs, shared by the silo's server and [`Peers`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// Largest frame (version byte + body) read or written. Inbound frames above it
    /// close the connection before anything is allocated; outbound ones fail the call
    /// with [`TransportError::TooLarge`].
    pub max_frame: usize,
    /// Connections served at once by one listener. Further peers wait in the listen
    /// backlog (their TCP connect succeeds but nothing is read) until a slot frees.
    pub max_connections: usize,
    /// Requests handled at once per inbound connection; beyond it the server stops
    /// reading that connection, which pushes back on the sender through TCP.
    pub max_in_flight: usize,
    /// Frames queued for a connection's writer before senders wait.
    pub write_queue: usize,
    /// Time allowed for one outgoing TCP connect (further bounded by the call's deadline).
    pub connect_timeout: Duration,
    /// Backoff after the first failed connect to an address; doubles per failure.
    pub backoff_initial: Duration,
    /// Upper bound of the connect backoff.
    pub backoff_max: Duration,
    /// How long in-flight requests may run after the server's shutdown begins before
    /// they are aborted and their connections closed.
    pub shutdown_grace: Duration,
    /// With a key, every connection starts with a [`handshake`]: the server challenges,
    /// the client proves it holds the key, and unauthenticated peers are cut off before
    /// their first frame. Both ends must agree (key or no key).
    pub cluster_key: Option<ClusterKey>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self {
            max_frame: DEFAULT_MAX_FRAME,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            write_queue: DEFAULT_WRITE_QUEUE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_max: DEFAULT_BACKOFF_MAX,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
            cluster_key: None,
        }
    }
}

impl TransportConfig {
    /// Sets [`TransportConfig::max_frame`].
    pub fn with_max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Sets [`TransportConfig::max_connections`] (at least 1).
    pub fn with_max_connections(mut self, n: usize) -> Self {
        self.max_connections = n.max(1);
        self
    }

    /// Sets [`TransportConfig::max_in_flight`] (at least 1).
    pub fn with_max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Sets [`TransportConfig::write_queue`] (at least 1).
    pub fn with_write_queue(mut self, frames: usize) -> Self {
        self.write_queue = frames.max(1);
        self
    }

    /// Sets [`TransportConfig::connect_timeout`].
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets [`TransportConfig::backoff_initial`] and [`TransportConfig::backoff_max`].
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max.max(initial);
        self
    }

    /// Sets [`TransportConfig::cluster_key`].
    pub fn with_cluster_key(mut self, key: Option<ClusterKey>) -> Self {
        self.cluster_key = key;
        self
    }

    /// Sets [`TransportConfig::shutdown_grace`].
    pub fn with_shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// The wait before connect attempt number `failures + 1`, after `failures` (≥ 1)
    /// consecutive failures: `backoff_initial · 2^(failures-1)`, capped at
    /// `backoff_max`, then scaled by a random factor in `[0.5, 1.0)` so that many
    /// callers do not retry in lock step.
    pub fn backoff(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        let base = self
            .backoff_initial
            .saturating_mul(1u32 << exp)
            .min(self.backoff_max);
        base.mul_f64(0.5 + fastrand::f64() * 0.5)
    }
}

/// Why a call through [`Peers`] failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No connection to the address could be made (refused, timed out, or still in
    /// backoff after a recent failure). Delivery: not sent.
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    /// The connection broke (or was dropped by [`Peers::disconnect`]) while the request
    /// was in flight. Reported as soon as the break is seen, not at the deadline.
    /// Delivery: unknown.
    #[error("connection lost with the request in flight: {0}")]
    Lost(String),
    /// No response before the call's deadline. Delivery: unknown.
    #[error("no response before the deadline")]
    Timeout,
    /// The request does not fit in a frame. Delivery: not sent.
    #[error("request of {size} bytes exceeds the frame limit of {max} bytes")]
    TooLarge {
        /// Encoded frame size.
        size: usize,
        /// The configured [`TransportConfig::max_frame`].
        max: usize,
    },
    /// The request could not be encoded. Delivery: not sent.
    #[error("request could not be encoded: {0}")]
    Encode(String),
    /// [`Peers::close`] was called; nothing more is sent. Delivery: not sent.
    #[error("the transport is closed")]
    Closed,
}

impl TransportError {
    /// The transport error an encode failure stands for.
    pub fn from_frame(error: FrameError) -> Self {
        match error {
            FrameError::TooLarge { len, max } => TransportError::TooLarge { size: len, max },
            other => TransportError::Encode(other.to_string()),
        }
    }
}

impl From<TransportError> for CallError {
    fn from(error: TransportError) -> Self {
        match error {
            TransportError::Unreachable(why) => CallError::Unreachable(why),
            TransportError::Lost(why) => CallError::Lost(why),
            TransportError::Timeout => CallError::Timeout,
            e @ (TransportError::TooLarge { .. } | TransportError::Encode(_)) => {
                CallError::Codec(e.to_string())
            }
            TransportError::Closed => CallError::ShuttingDown,
        }
    }
}

#[cfg(test)]
mod tests;
