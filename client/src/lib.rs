//! Granary client: reaches grains in a cluster from any process.
//!
//! A [`Client`] connects to one or more silo *gateways* (any silo of the cluster) and
//! hands out the same typed references grains use:
//! `client.grain::<Counter>("alice").ask(Add(1)).await`.
//!
//! # Layout
//! - [`client`]: [`Client`] and its configuration.
//! - [`routing`]: [`ClusterRouter`](routing::ClusterRouter), directory cache and routing,
//!   shared with silos.
//! - [`transport`]: [`Peers`](transport::Peers), multiplexed TCP connections with
//!   reconnect and backoff, shared with silos.
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

pub mod client;
pub mod routing;
pub mod transport;

pub use client::{Client, ClientConfig, ConnectError};
