//! The benchmark's grains: [`Hot`] for asks and tells, [`Cold`] (stateless) and
//! [`Stored`] (state read at activation) for the activation scenarios.

use async_trait::async_trait;
use granary_runtime::prelude::*;
use serde::{Deserialize, Serialize};

/// The hot grain every ask and tell scenario uses: the peers benchmark's actor (it
/// echoes a `Ping`, counts a `Bump`, reports its `Count`).
pub(crate) use granary_bench::grains::{Bench as Hot, Bump, Count, Ping};

/// Ask: the first call activates the grain.
#[derive(Serialize, Deserialize)]
pub(crate) struct Touch;

/// Stateless grain for the activation benchmark.
pub(crate) struct Cold;

#[async_trait]
impl Grain for Cold {
    const TYPE_NAME: &'static str = "bench.cold/v1";
    type State = ();
    async fn on_activate(_ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Cold)
    }
}

#[async_trait]
impl Handler<Touch> for Cold {
    type Reply = ();
    async fn handle(&mut self, _: Touch, _: &mut GrainContext<Self>) -> Result<(), GrainError> {
        Ok(())
    }
}

granary_runtime::register_grain!(Cold, handles = [Touch]);

/// Stateful grain for the activation benchmark: its state is read at activation.
pub(crate) struct Stored;

#[derive(Default, Serialize, Deserialize)]
pub(crate) struct StoredState {
    pub(crate) visits: u64,
    pub(crate) label: String,
}

#[async_trait]
impl Grain for Stored {
    const TYPE_NAME: &'static str = "bench.stored/v1";
    type State = StoredState;
    async fn on_activate(_ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Stored)
    }
}

#[async_trait]
impl Handler<Touch> for Stored {
    type Reply = u64;
    async fn handle(&mut self, _: Touch, ctx: &mut GrainContext<Self>) -> Result<u64, GrainError> {
        Ok(ctx.state().visits)
    }
}

granary_runtime::register_grain!(Stored, handles = [Touch]);
