//! Granary client: call grains in a cluster from any process.
//!
//! A [`Client`] connects to one or more silo *gateways* (any silo of the cluster works)
//! and hands out the same typed references grains use. The client process links the
//! crate that defines the grains it calls (their types and messages are the API), and
//! nothing of the silo:
//!
//! ```no_run
//! use std::time::Duration;
//! use granary_client::{Client, ClientConfig};
//! # use granary_runtime::prelude::*;
//! # pub struct Counter;
//! # #[derive(serde::Serialize, serde::Deserialize)]
//! # pub struct Add(pub i64);
//! # #[async_trait]
//! # impl Grain for Counter {
//! #     const TYPE_NAME: &'static str = "doc.counter/v1";
//! #     type State = ();
//! #     async fn on_activate(_: &mut GrainContext<Self>) -> Result<Self, GrainError> { Ok(Counter) }
//! # }
//! # #[async_trait]
//! # impl Handler<Add> for Counter {
//! #     type Reply = i64;
//! #     async fn handle(&mut self, Add(n): Add, _: &mut GrainContext<Self>) -> Result<i64, GrainError> { Ok(n) }
//! # }
//! # granary_runtime::register_grain!(Counter, handles = [Add]);
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let gateway = "127.0.0.1:7100".parse()?;
//! let client = Client::connect(ClientConfig::new([gateway])).await?;
//! let total = client
//!     .grain::<Counter>("alice")
//!     .ask(Add(5))
//!     .timeout(Duration::from_secs(2))
//!     .await?;
//! println!("alice: {total}");
//! # Ok(()) }
//! ```
//!
//! Every call ends in a [`CallError`] when it fails; its variants say whether the
//! message may have been processed.
//!
//! [`Client::cluster_status`] reports the cluster (what `client status` shows), and
//! [`Client::membership_events`] streams its membership changes; their types are in
//! [`status`].
//!
//! # Layout
//! - `client`: [`Client`], [`ClientConfig`] and [`ConnectError`].
//!
//! The network layer underneath (connections, directory cache, routing) is
//! `granary-net`, shared with silos; a client never needs to name it.
#![warn(missing_debug_implementations, unreachable_pub, rust_2018_idioms)]
#![deny(missing_docs)]

mod client;

pub use client::{
    Client, ClientConfig, ConnectError, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MEMBERSHIP_POLL,
};
/// A silo's identity (TCP and UDP addresses, generation), as status reports and
/// membership events name it.
pub use granary_proto::packet::SiloId;
/// What silos report about themselves and the cluster: [`Client::cluster_status`]'s
/// [`ClusterStatus`](status::ClusterStatus) and [`Client::membership_events`]'s
/// [`MembershipEvent`](status::MembershipEvent).
pub use granary_proto::status;
pub use granary_runtime::{Ask, CallError, Grain, GrainRef, Handler, Tell, DEFAULT_CALL_TIMEOUT};
