//! Example grains for Granary, used by the demo, the cluster binaries and the tests.
//!
//! # Layout
//! - [`greeter`]: [`Greeter`], a stateless grain that answers `Hello`.
//! - [`counter`]: [`Counter`], a persistent counter (write-through on every change).
//! - [`account`]: [`Account`], the social example: `Follow` on one account calls
//!   `AddFollower` on another.
//! - [`beacon`]: [`Beacon`], woken by a durable reminder; records each tick.
//! - [`lock`]: [`Lock`], a distributed lock (leases, fencing tokens, a fair queue), and
//!   [`Fenced`], a resource that refuses stale tokens.
//! - [`variable`]: [`Variable`], a versioned value whose changes are pushed to
//!   subscribed [`Watcher`] grains.
//! - [`digest`]: [`Digest`], a stateless worker doing CPU-bound hashing (copied when hot).
//! - [`gauge`]: [`Gauge`], a read-replicated value (`Bump` writes, `Level` reads).
//! - [`mandelbrot`]: the distributed job example, [`MandelbrotJob`] farming row bands out
//!   to [`MandelbrotWorker`]s, with a streamed progress and rescheduling.
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

pub mod account;
pub mod beacon;
pub mod counter;
pub mod digest;
pub mod gauge;
pub mod greeter;
pub mod lock;
pub mod mandelbrot;
pub mod variable;

pub use account::{Account, AddFollower, Follow, Followers, Following};
pub use beacon::{Arm, Beacon, Beats, Disarm, Rest};
pub use counter::{Add, Counter, Get};
pub use digest::{Digest, Hash};
pub use gauge::{Bump, Gauge, Level};
pub use greeter::{Greeter, Hello};
pub use lock::{
    Acquire, Fenced, FencedRead, FencedWrite, Grant, Inspect, Leave, Lock, Release, Renew,
};
pub use mandelbrot::{MandelbrotJob, MandelbrotWorker};
pub use variable::{
    Change, Polled, VarGet, VarSet, VarUnwatch, VarWatch, VarWatchers, Variable, WatchOpen,
    WatchPoll, Watcher,
};

/// The wire names of the grain types this crate registers. A silo binary that links
/// the crate calls this at start-up, which also keeps the linker from dropping the
/// crate's `register_grain!` items.
pub fn grain_types() -> [&'static str; 12] {
    use granary_runtime::Grain;
    [
        Greeter::TYPE_NAME,
        Counter::TYPE_NAME,
        Account::TYPE_NAME,
        Beacon::TYPE_NAME,
        Lock::TYPE_NAME,
        Fenced::TYPE_NAME,
        Variable::TYPE_NAME,
        Watcher::TYPE_NAME,
        Digest::TYPE_NAME,
        Gauge::TYPE_NAME,
        MandelbrotJob::TYPE_NAME,
        MandelbrotWorker::TYPE_NAME,
    ]
}

#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;

#[cfg(test)]
mod tests;
