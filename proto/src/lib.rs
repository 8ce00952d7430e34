//! Granary's wire vocabulary: what crosses a process boundary.
//!
//! This crate depends on nothing else of Granary's, so clients, silos and tools can
//! share it without pulling in a runtime.
//!
//! # Layout
//! - [`id`]: [`GrainId`], the address of a grain (type name + key).
//! - [`error`]: [`CallError`], the serializable error every call can end with.
//! - [`codec`]: the only place that calls bincode; everything else encodes through it.
//! - [`packet`]: UDP membership packets (HANDSHAKE, WELCOME, HEARTBEAT, …), HMAC-signed.
//! - [`frame`]: TCP frames between clients and silos and between silos.
//! - [`replica`]: store positions and changes the acting master replicates, and election.
//! - [`status`]: what silos report about themselves and the cluster (status, events).
//! - [`replication`]: copy sets of hot grains and the requests that maintain them.
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

pub mod codec;
pub mod error;
pub mod frame;
pub mod id;
pub mod packet;
pub mod replica;
pub mod replication;
pub mod status;

pub use codec::CodecError;
pub use error::CallError;
pub use id::GrainId;
