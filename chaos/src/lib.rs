//! Granary's fault-injection harness, as a library the `chaos` binary drives.
//!
//! A run starts a real multi-process cluster (master candidates and slaves, each in a
//! network namespace of its own where the harness may create them), drives workloads
//! from many concurrent clients while recording every operation, injects faults on a
//! schedule drawn from a seed, heals, reads the final state and checks the whole
//! history. Any violation makes the run fail.
//!
//! # Layout
//! - [`history`]: the recorded operations (invocation, completion, ok / fail / info).
//! - [`check`]: the checkers: counter, linearizable register, follow graph.
//! - [`grains`]: the chaos register grain the silo binary adds to the example grains.
//! - [`net`]: the topology: network namespaces on a bridge, or loopback; partitions.
//! - [`cluster`]: the silo processes: start, kill -9, SIGSTOP/SIGCONT, restart.
//! - [`faults`]: the fault kinds, the seeded schedule, applying and healing them.
//! - [`workload`]: the client tasks that call grains and record the history.
//! - [`report`]: the per-run summary (operations, violations, availability, recovery).
//! - [`run`]: one whole run; [`soak`]: the long steady-load run with RSS sampling.
//!
//! ```text
//! chaos run
//! ├── Net (namespaces, bridge, veth; removed on exit, Ctrl-C and panic)
//! ├── Cluster: silo processes (chaos-silo), one rules file each for the fault filter
//! ├── workload tasks ──► Recorder (history)
//! └── fault schedule (seeded) ──► report + checkers ──► exit status
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

pub mod check;
pub mod cluster;
pub mod faults;
pub mod grains;
pub mod history;
pub mod net;
pub mod report;
pub mod run;
pub mod soak;
pub mod workload;
