//! [`Gauge`]: a read-replicated value. `Bump` (a write) runs on the primary, which
//! writes the new state through to storage before replying and ships it to the
//! replicas; `Level` (a read, handled by a `ReadHandler`) may be served by any replica
//! once the grain is hot. A caller never reads a level older than its own last
//! acknowledged `Bump`, nor older than a level it has already read.

use granary_runtime::prelude::*;
use serde::{Deserialize, Serialize};

/// A number per key, read far more often than it changes.
#[derive(Debug)]
pub struct Gauge;

/// The gauge's stored state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct GaugeState {
    /// Current level.
    pub level: i64,
}

/// Ask: add `0` (may be negative); replies with the new level once it is stored.
#[derive(Debug, Serialize, Deserialize)]
pub struct Bump(pub i64);

/// Ask: the current level (read-only: replicas may answer).
#[derive(Debug, Serialize, Deserialize)]
pub struct Level;

#[async_trait]
impl Grain for Gauge {
    const TYPE_NAME: &'static str = "example.gauge/v1";
    type State = GaugeState;
    const REPLICATION: Replication = Replication::READ_REPLICAS;

    async fn on_activate(_ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Gauge)
    }
}

#[async_trait]
impl Handler<Bump> for Gauge {
    type Reply = i64;

    async fn handle(
        &mut self,
        Bump(n): Bump,
        ctx: &mut GrainContext<Self>,
    ) -> Result<i64, GrainError> {
        let level = ctx.state().level.checked_add(n).ok_or("gauge overflow")?;
        ctx.state_mut().level = level;
        // No `write_state` needed: a read-replicated grain's changed state is written
        // through (and shipped to its replicas) before this reply leaves.
        Ok(level)
    }
}

#[async_trait]
impl ReadHandler<Level> for Gauge {
    type Reply = i64;

    async fn handle(&self, _: Level, ctx: &GrainContext<Self>) -> Result<i64, GrainError> {
        Ok(ctx.state().level)
    }
}

granary_runtime::register_grain!(Gauge, handles = [Bump], reads = [Level]);
