//! A Granary silo: the process that hosts grains.
//!
//! # Layout
//! - [`config`]: [`SiloConfig`], every knob with its default.
//! - [`silo`]: [`Silo`], a running silo (start, grain references, shutdown).
//! - `catalog`: grain type → [`dispatcher`]; routes envelopes to activations.
//! - [`dispatcher`]: one per grain type; owns its activations and their metrics.
//! - [`storage`]: state providers: in-memory, embedded (redb, the default) and MongoDB.
//!
//! Ownership at run time:
//! ```text
//! Silo
//! └── Catalog ── Dispatcher (one per grain type)
//!                 └── activation task (one per active grain, owns the grain + its state)
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

mod catalog;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod directory;
pub mod dispatcher;
mod gateway;
pub mod membership;
pub mod silo;
pub mod storage;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod transport;

pub use cluster::{ClusterConfig, ClusterSilo};
pub use config::SiloConfig;
pub use silo::{Silo, StartError};
