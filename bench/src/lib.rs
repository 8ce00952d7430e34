//! Helpers shared by the Granary benchmarks (the binaries in `src/bin/`).
//!
//! # Layout
//! - [`stats`]: percentiles, medians and ranges of measurements.
//! - [`sys`]: what the benchmarks read from Linux's `/proc` (resident memory, CPU time,
//!   load average); elsewhere these read as zero or unknown.
//! - [`alloc`]: the counting global allocator (allocations and live heap per operation).
//! - [`report`]: side-by-side metrics (Granary and its peers), JSON, one line per metric.
//! - [`grains`]: the grains the peer benchmarks call (hosted by the bench's `silo`).
//! - [`exe`]: the bench's other binaries, built on demand with the same profile.
//! - [`procs`]: a master and a slave silo as child processes.
//! - [`echo`]: the raw TCP echo floor, framed like Granary's transport.
//! - [`smoke`]: the `--smoke` flag every benchmark binary accepts (CI runs each once).

#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

pub mod alloc;
pub mod echo;
pub mod exe;
pub mod grains;
pub mod procs;
pub mod report;
pub mod smoke;
pub mod stats;
pub mod sys;
