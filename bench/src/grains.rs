//! Grains the peer benchmarks call, registered in this library so that the bench's
//! `silo` binary (which hosts them) and the benchmarks (which call them) agree.
//!
//! - [`Echo`]: answers a byte payload with the same bytes, the remote equivalent of the
//!   peers' echo actors and of the raw TCP echo floor.
//! - [`Bench`]: the in-process grain: an echo ask, a counted tell, a count ask.

use async_trait::async_trait;
use granary_runtime::prelude::*;
use serde::{Deserialize, Serialize};

/// Stateless; replies to [`Payload`] with its bytes.
#[derive(Debug)]
pub struct Echo;

/// Ask: the bytes to echo. `serde_bytes` makes serde see a byte string (one copy)
/// rather than a sequence of `u8`s (one serializer call per byte), as any serde user
/// moving bytes would write it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Payload(#[serde(with = "serde_bytes")] pub Vec<u8>);

#[async_trait]
impl Grain for Echo {
    const TYPE_NAME: &'static str = "bench.echo/v1";
    type State = ();
    async fn on_activate(_ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Echo)
    }
}

#[async_trait]
impl Handler<Payload> for Echo {
    type Reply = Payload;
    async fn handle(
        &mut self,
        payload: Payload,
        _: &mut GrainContext<Self>,
    ) -> Result<Payload, GrainError> {
        Ok(payload)
    }
}

granary_runtime::register_grain!(Echo, handles = [Payload]);

/// Stateless; counts what it handled, the in-process peers' actor.
#[derive(Debug)]
pub struct Bench {
    handled: u64,
}

/// Ask: echoes its argument.
#[derive(Debug, Serialize, Deserialize)]
pub struct Ping(pub u64);
/// Tell: counts.
#[derive(Debug, Serialize, Deserialize)]
pub struct Bump;
/// Ask: messages handled so far.
#[derive(Debug, Serialize, Deserialize)]
pub struct Count;

#[async_trait]
impl Grain for Bench {
    const TYPE_NAME: &'static str = "bench.actor/v1";
    type State = ();
    async fn on_activate(_ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Bench { handled: 0 })
    }
}

#[async_trait]
impl Handler<Ping> for Bench {
    type Reply = u64;
    async fn handle(
        &mut self,
        Ping(x): Ping,
        _: &mut GrainContext<Self>,
    ) -> Result<u64, GrainError> {
        self.handled += 1;
        Ok(x)
    }
}

#[async_trait]
impl Handler<Bump> for Bench {
    type Reply = ();
    async fn handle(&mut self, _: Bump, _: &mut GrainContext<Self>) -> Result<(), GrainError> {
        self.handled += 1;
        Ok(())
    }
}

#[async_trait]
impl Handler<Count> for Bench {
    type Reply = u64;
    async fn handle(&mut self, _: Count, _: &mut GrainContext<Self>) -> Result<u64, GrainError> {
        Ok(self.handled)
    }
}

granary_runtime::register_grain!(Bench, handles = [Ping, Bump, Count]);

/// The grain types of this module. Call it from a binary's `main` so the linker keeps
/// their registrations (dtolnay/inventory#7).
pub fn grain_types() -> [&'static str; 2] {
    [Echo::TYPE_NAME, Bench::TYPE_NAME]
}
