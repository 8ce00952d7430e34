//! Granary's network layer: what silos and clients share to talk to a cluster.
//!
//! Neither side depends on the other: `granary-silo` (the server) and `granary-client`
//! (the calling library) both build on this crate.
//!
//! # Layout
//! - [`fault`]: fault-injection hooks (drop, delay, duplicate) for chaos tests; they
//!   compile to nothing without the `fault-injection` feature.
//! - [`transport`]: [`Peers`](transport::Peers), one multiplexed TCP connection per
//!   remote silo with reconnect and backoff; [`TransportConfig`](transport::TransportConfig);
//!   the cluster-key [`handshake`](transport::handshake) and the batching
//!   [`writer`](transport::writer) the silo's server also uses.
//! - [`routing`]: [`ClusterRouter`](routing::ClusterRouter), which finds a grain's silo
//!   through a directory cache and a [`Resolve`](routing::Resolve), and sends calls
//!   there (or delivers them locally inside a silo).
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![deny(missing_docs)]

pub mod fault;
pub mod routing;
pub mod transport;
