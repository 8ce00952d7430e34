//! Seeing a running silo: per-type counters fed by every turn, the process's CPU and
//! memory, a log of cluster events, and the status reports built from them.
//!
//! - [`type_stats`]: [`TypeStats`], one per grain type, counted by activations' turns.
//! - `process`: CPU time and resident memory from `/proc`.
//! - [`events`]: [`EventLog`], recent joins, departures, deaths, fencing, storms.
//! - `dashboard`: the live page at `/` and its event stream `/api/events`.
//! - `http`: the HTTP port: `/health`, `/ready`, `/metrics`, the dashboard.
//! - `metrics`: `SiloMetrics`, this silo's Prometheus registry, read by `/metrics`.
//! - `status`: the [`SiloStatus`](granary_proto::status::SiloStatus) of this silo and,
//!   on the master, the [`ClusterStatus`](granary_proto::status::ClusterStatus).

pub(crate) mod dashboard;
pub mod events;
pub(crate) mod http;
pub(crate) mod metrics;
pub(crate) mod process;
pub(crate) mod status;
pub mod type_stats;

pub use events::EventLog;
pub use type_stats::{TypeStats, TypeStatsSnapshot};
