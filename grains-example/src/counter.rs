//! [`Counter`]: a persistent counter. Every `Add` is written before it is acknowledged,
//! so an acknowledged increment survives a crash of the silo.

use granary_runtime::prelude::*;
use serde::{Deserialize, Serialize};

/// A counter per key.
#[derive(Debug)]
pub struct Counter;

/// The counter's stored state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CounterState {
    /// Current value.
    pub value: i64,
}

/// Ask: add `0` (may be negative); replies with the new value once it is stored.
#[derive(Debug, Serialize, Deserialize)]
pub struct Add(pub i64);

/// Ask: the current value.
#[derive(Debug, Serialize, Deserialize)]
pub struct Get;

#[async_trait]
impl Grain for Counter {
    const TYPE_NAME: &'static str = "example.counter/v1";
    type State = CounterState;

    async fn on_activate(_ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Counter)
    }
}

#[async_trait]
impl Handler<Add> for Counter {
    type Reply = i64;

    async fn handle(
        &mut self,
        Add(n): Add,
        ctx: &mut GrainContext<Self>,
    ) -> Result<i64, GrainError> {
        let value = ctx.state().value.checked_add(n).ok_or("counter overflow")?;
        ctx.state_mut().value = value;
        ctx.write_state().await?;
        Ok(value)
    }
}

#[async_trait]
impl Handler<Get> for Counter {
    type Reply = i64;

    async fn handle(&mut self, _: Get, ctx: &mut GrainContext<Self>) -> Result<i64, GrainError> {
        Ok(ctx.state().value)
    }
}

granary_runtime::register_grain!(Counter, handles = [Add, Get]);
