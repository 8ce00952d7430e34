//! Example grains for Granary, used by the demo, the cluster binaries and the tests.
//!
//! # Layout
//! - [`greeter`]: [`Greeter`], a stateless grain that answers `Hello`.
//! - [`counter`]: [`Counter`], a persistent counter (write-through on every change).
//! - [`account`]: [`Account`], the social example: `Follow` on one account calls
//!   `AddFollower` on another.
//! - [`mandelbrot`]: the distributed job example, [`MandelbrotJob`] farming row bands out
//!   to [`MandelbrotWorker`]s, with a streamed progress and rescheduling.
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

pub mod account;
pub mod counter;
pub mod greeter;
pub mod mandelbrot;

pub use account::{Account, AddFollower, Follow, Followers, Following};
pub use counter::{Add, Counter, Get};
pub use greeter::{Greeter, Hello};
pub use mandelbrot::{MandelbrotJob, MandelbrotWorker};

/// The wire names of the grain types this crate registers. A silo binary that links
/// the crate calls this at start-up, which also keeps the linker from dropping the
/// crate's `register_grain!` items.
pub fn grain_types() -> [&'static str; 5] {
    use granary_runtime::Grain;
    [
        Greeter::TYPE_NAME,
        Counter::TYPE_NAME,
        Account::TYPE_NAME,
        MandelbrotJob::TYPE_NAME,
        MandelbrotWorker::TYPE_NAME,
    ]
}

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

#[cfg(test)]
mod tests;
