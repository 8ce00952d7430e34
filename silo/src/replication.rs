//! Hot-grain replication: copies of a grain that runs hot, on this silo and on others.
//!
//! A grain type opts in with [`Grain::REPLICATION`](granary_runtime::Grain::REPLICATION)
//! (stateless workers or read replicas; see [`granary_runtime::replication`]). Single
//! activation stays the default, and a single-activation type never reaches this
//! module: its dispatcher has no copy table, and no call to it carries anything more.
//!
//! ```text
//! slave                                              master
//! Dispatcher (replicated type) ── CopyTable          Controller
//! │  groups: key → home/primary, replica, workers    │  CopySets (directory/copies.rs)
//! │  local workers: started when all are busy        │  load per grain and silo, sliding
//! │  replica ── sync task ── long poll to primary    │  windows, decisions (scale out /
//! └─ reporter ── Report every heartbeat interval ──► │  in), placement, Copies to silos
//!                ◄── Copies { set } ─────────────────┘
//! ```
//!
//! - `config`: [`ReplicationConfig`], the silo's switch and per-type overrides.
//! - `copies`: `CopyTable`, a replicated dispatcher's copies.
//! - `replica`: a read replica's lease and the task that keeps it in step.
//! - `window`: sliding windows of load samples.
//! - `decide`: how many copies a measured load needs (pure).
//! - `controller`: the master's decisions, placement and notifications.
//! - `reporter`: a slave's periodic load report.

mod config;
pub(crate) mod controller;
pub(crate) mod copies;
pub(crate) mod decide;
mod replica;
pub(crate) mod reporter;
pub(crate) mod window;

pub use config::{ReplicationConfig, DEFAULT_LEASE};
pub use granary_proto::replication::{CopyKind, CopyRole, CopySet, HostedActivation};

#[cfg(test)]
mod tests;
