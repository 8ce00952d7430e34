//! A Granary silo: the process that hosts grains.
//!
//! A silo runs alone ([`Silo`], every grain in this process) or in a cluster
//! ([`ClusterSilo`], a master with the directory and store, slaves hosting grains).
//!
//! # Layout
//! - [`config`]: [`SiloConfig`], idle timeouts and mailbox sizes with their defaults.
//! - [`silo`]: [`Silo`], a stand-alone silo (start, grain references, stats, shutdown).
//! - `catalog`: grain type → [`dispatcher`]; delivers envelopes to local activations.
//! - [`dispatcher`]: one per grain type; owns its activations and their load metrics.
//! - [`storage`]: state providers: in-memory, embedded (redb, the default), MongoDB, and
//!   the master's store seen from a slave.
//! - [`cluster`]: [`ClusterSilo`], wiring membership, transport, directory and fencing.
//! - [`membership`]: the UDP protocol (HANDSHAKE, WELCOME, HEARTBEAT, SHUTDOWN, …).
//! - [`directory`]: the master's grain directory and placement (and the copy sets of
//!   replicated grains).
//! - [`replication`]: copies of hot grains: stateless workers and read replicas, the
//!   master's decisions, the slaves' load reports.
//! - [`observe`]: per-type counters, process usage, the cluster event log, status
//!   reports.
//! - [`reminders`]: the keeper that keeps the reminder shards running (on the acting
//!   master, or a stand-alone silo).
//! - `resolver`: where a grain lives, asked of the master's directory (local on the
//!   master, over TCP from a slave).
//! - `gateway`: what a silo answers on its TCP port.
//! - [`transport`]: the TCP server (the calling side, shared with clients, is
//!   `granary-net`).
//! - [`cli`]: the `silo` command line; a grain crate's silo binary calls [`cli::main`].
//! - `testing` (feature `test-util`): `TestCluster`, a whole cluster in one process.
//!
//! Ownership at run time:
//! ```text
//! ClusterSilo
//! ├── Membership task (UDP)
//! ├── TCP server ── connection tasks ── request tasks ── Gateway
//! ├── ClusterRouter (directory cache, Peers connections)
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
pub mod observe;
pub mod reminders;
pub mod replication;
mod resolver;
pub mod silo;
pub mod storage;
#[cfg(feature = "test-util")]
pub mod testing;
pub mod transport;

pub use cluster::{ClusterConfig, ClusterSilo, SiloStore};
pub use config::SiloConfig;
pub use silo::{Silo, StartError};
