//! Granary client: reaches grains in a cluster through silo gateways.
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
