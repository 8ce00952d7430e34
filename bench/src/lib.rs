//! Helpers shared by the Granary benchmarks (the binaries in `src/bin/`).
//!
//! # Layout
//! - [`stats`]: percentiles, medians and ranges of measurements.
//! - [`sys`]: what the benchmarks read from Linux's `/proc` (resident memory, CPU time,
//!   load average); elsewhere these read as zero or unknown.

#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

pub mod stats;
pub mod sys;
