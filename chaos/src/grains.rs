//! [`Register`]: a read/write register per key, the linearizability workload's grain.
//! Writes are stored before they are acknowledged.

use granary_runtime::prelude::*;
use serde::{Deserialize, Serialize};

/// A register per key.
#[derive(Debug)]
pub struct Register;

/// The register's stored state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RegisterState {
    /// The last value written (`None`: never written).
    pub value: Option<u64>,
}

/// Ask: store `0`; replies once it is stored.
#[derive(Debug, Serialize, Deserialize)]
pub struct Write(pub u64);

/// Ask: the current value.
#[derive(Debug, Serialize, Deserialize)]
pub struct Read;

#[async_trait]
impl Grain for Register {
    const TYPE_NAME: &'static str = "chaos.register/v1";
    type State = RegisterState;

    async fn on_activate(_ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Register)
    }
}

#[async_trait]
impl Handler<Write> for Register {
    type Reply = ();

    async fn handle(
        &mut self,
        Write(v): Write,
        ctx: &mut GrainContext<Self>,
    ) -> Result<(), GrainError> {
        ctx.state_mut().value = Some(v);
        ctx.write_state().await?;
        Ok(())
    }
}

#[async_trait]
impl Handler<Read> for Register {
    type Reply = Option<u64>;

    async fn handle(
        &mut self,
        _: Read,
        ctx: &mut GrainContext<Self>,
    ) -> Result<Option<u64>, GrainError> {
        Ok(ctx.state().value)
    }
}

granary_runtime::register_grain!(Register, handles = [Write, Read]);

/// The wire names of the grain types the chaos silo hosts; calling it from `main` also
/// keeps the linker from dropping the `register_grain!` items.
pub fn grain_types() -> Vec<&'static str> {
    let mut types = granary_example::grain_types().to_vec();
    types.push(Register::TYPE_NAME);
    types
}
