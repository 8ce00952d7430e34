//! The traits a grain author implements: [`Grain`] once, [`Handler<M>`] per message.

use std::error::Error;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::context::GrainContext;

/// A handler's or lifecycle hook's error. Any `std::error::Error` converts with `?`.
pub type GrainError = Box<dyn Error + Send + Sync + 'static>;

/// Anything that can be sent to a grain: it may cross the network, so it is serde.
pub trait Message: Serialize + DeserializeOwned + Send + 'static {}
impl<T: Serialize + DeserializeOwned + Send + 'static> Message for T {}

/// A grain type: the unit of state and single-threaded computation.
///
/// The runtime activates an instance on the first message for a key, after loading
/// [`Grain::State`] from storage into the [`GrainContext`]. It deactivates the instance
/// after [`Grain::IDLE_TIMEOUT`] (or the silo's default) without messages, writing the
/// state back if it changed since the last write.
#[async_trait]
pub trait Grain: Sized + Send + 'static {
    /// Stable wire name, unique in the cluster. Part of every stored key and every
    /// message on the wire: never rename it, version it (`"shop.cart/v2"`).
    const TYPE_NAME: &'static str;

    /// Persistent state, loaded before [`Grain::on_activate`] and written on
    /// deactivation when dirty. Use `()` for a grain that keeps nothing: it then costs
    /// no storage I/O at all.
    type State: Serialize + DeserializeOwned + Default + Send + Sync + 'static;

    /// How long an activation may sit without messages before it is deactivated.
    /// `None` uses the silo's setting (15 minutes by default, as in Orleans).
    const IDLE_TIMEOUT: Option<Duration> = None;

    /// Builds the in-memory grain. `ctx.state()` already holds the stored state (or
    /// its default). An error fails the message that triggered the activation.
    async fn on_activate(ctx: &mut GrainContext<Self>) -> Result<Self, GrainError>;

    /// Runs before the activation leaves memory (idle timeout, explicit request or
    /// silo shutdown; not after a panic). Dirty state is written after it returns.
    async fn on_deactivate(&mut self, _ctx: &mut GrainContext<Self>) -> Result<(), GrainError> {
        Ok(())
    }
}

/// Handles one message type `M` with a typed reply.
///
/// Turns never interleave: while `handle` awaits, the grain's next message waits.
/// A grain that asks *itself* (directly or through a cycle) therefore waits for its own
/// turn and times out, as in Orleans without reentrancy.
#[async_trait]
pub trait Handler<M: Message>: Grain {
    /// What `ask` returns. Use `()` for messages that are only told.
    type Reply: Serialize + DeserializeOwned + Send + 'static;

    /// Processes `msg`. An `Err` fails the call with [`crate::CallError::Handler`]
    /// (or [`crate::CallError::Storage`] when it came from storage); the grain stays active.
    async fn handle(
        &mut self,
        msg: M,
        ctx: &mut GrainContext<Self>,
    ) -> Result<Self::Reply, GrainError>;
}
