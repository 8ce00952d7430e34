//! Fault injection for chaos testing: drop, delay and duplicate traffic on purpose.
//!
//! Three hooks, each consulted at one place:
//! - [`udp_send`]: every membership datagram a silo sends (`granary-silo`'s membership
//!   driver), before it goes out;
//! - [`udp_recv_dropped`]: every membership datagram a silo receives;
//! - [`tcp_connect`] and [`tcp_write`]: every outgoing TCP connect ([`Peers`]) and every
//!   batch of frames written on any connection (both ends use the same writer).
//!
//! Without the cargo feature `fault-injection` (the default) every hook is an inline
//! function that does nothing, so normal builds pay nothing. With it, a process reads
//! rules from the file named by the environment variable [`RULES_ENV`]
//! (`GRANARY_FAULTS`) and re-reads it whenever it changes (checked at most every
//! [`RELOAD_EVERY`]), so a test harness changes faults at run time by rewriting the file
//! (write a temporary file and rename it over, so no half-written file is read).
//!
//! # Rules
//!
//! One rule per line, `#` starts a comment:
//!
//! ```text
//! PROTO DIR PEER ACTION [ARG]
//! udp out 10.77.0.2 drop            # never send a datagram to 10.77.0.2 (any port)
//! udp in  127.0.0.1:7101 drop       # ignore datagrams from that address
//! udp out * loss 0.2                # lose 20 % of the datagrams to anyone
//! udp out * dup 0.1                 # send 10 % of them twice
//! udp out * delay 50ms..300ms       # deliver each late, by a uniform random delay
//! tcp out 10.77.0.3 drop            # connects to it fail; connections to it break on the next write
//! tcp out * delay 20ms              # every batch of frames waits 20 ms before it is written
//! ```
//!
//! `PEER` is `*`, an IP (any port) or `IP:PORT`. For TCP, `PEER` is the address at the
//! other end of the connection: the listen address for connections this process made,
//! the caller's (ephemeral) address for ones it accepted, so match by IP where every
//! silo has an address of its own (network namespaces). `tcp in` rules are not
//! supported: a TCP connection is cut as a whole, so cut it at the side that writes.
//! The first matching rule of each kind applies; a `drop`, `loss` and `delay` may all
//! match one datagram (loss is drawn first).
//!
//! [`Peers`]: crate::transport::Peers

#[cfg(not(feature = "fault-injection"))]
use std::net::SocketAddr;
use std::time::Duration;

#[cfg(feature = "fault-injection")]
mod rules;

/// The environment variable naming the rules file.
pub const RULES_ENV: &str = "GRANARY_FAULTS";
/// How often the rules file is checked for changes, at most.
pub const RELOAD_EVERY: Duration = Duration::from_millis(100);

/// Whether fault injection is compiled in (the `fault-injection` feature).
pub const ENABLED: bool = cfg!(feature = "fault-injection");

/// Consulted before a membership datagram goes out on `socket` to `dest`. Returns
/// `true` when the fault filter took the datagram over (dropped it, or will send it
/// late), so the caller must not send it; it may also send extra copies itself.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn udp_send(_socket: &tokio::net::UdpSocket, _bytes: &[u8], _dest: SocketAddr) -> bool {
    false
}

/// Consulted on every membership datagram received from `src`: `true` to drop it.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn udp_recv_dropped(_src: SocketAddr) -> bool {
    false
}

/// Consulted before a TCP connect to `peer`: an error fails the connect.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn tcp_connect(_peer: SocketAddr) -> std::io::Result<()> {
    Ok(())
}

/// Consulted before a batch of frames is written to `peer`: waits out an injected
/// delay, and an error breaks the connection.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub async fn tcp_write(_peer: Option<SocketAddr>) -> std::io::Result<()> {
    Ok(())
}

#[cfg(feature = "fault-injection")]
pub use rules::{tcp_connect, tcp_write, udp_recv_dropped, udp_send};
