//! The Granary programming model: what a grain crate depends on.
//!
//! A grain is a Rust type that implements [`Grain`] plus one [`Handler<M>`] per message
//! type, and is registered with [`register_grain!`]. Grains are *virtual actors*: a grain
//! is addressed by type and key, always exists logically, is activated on its first
//! message and runs one message at a time. Callers hold a typed [`GrainRef`] and
//! [`tell`](GrainRef::tell) or [`ask`](GrainRef::ask) it.
//!
//! This crate holds the API and the generic per-activation turn loop. Hosting (catalog,
//! dispatchers, directory, transport) lives in `granary-silo`; a grain crate never
//! depends on it.
//!
//! # Layout
//! Each module uses only those listed above it:
//! - [`storage`]: the [`GrainStorage`] trait every state provider implements.
//! - [`trace`]: the `grain_call` span of every turn and the trace context calls carry.
//! - [`lease`]: [`HostingLease`], whether this silo may run turns and write state now.
//! - [`envelope`]: how a message travels to a mailbox (boxed locally, encoded remotely).
//! - [`router`]: the [`Router`] trait a host implements to deliver envelopes.
//! - [`replication`]: the [`Replication`] policy a grain type declares (single
//!   activation, stateless workers, read replicas) and its [`Scaling`].
//! - [`grain`]: the [`Grain`], [`Handler`] and [`ReadHandler`] traits users implement,
//!   and the [`GrainContext`] they get (identity, state).
//! - [`streaming`]: [`StreamHandler`], a handler answering with a stream of items into
//!   [`Replies`].
//! - [`activation`]: the turn loop that owns one grain instance, and its handler table
//!   (host-facing).
//! - [`timer`]: grain timers ([`GrainContext::register_timer`]); the turn loop runs
//!   their ticks as turns.
//! - [`reminder`]: durable reminders ([`GrainContext::register_reminder`]), kept by the
//!   `ReminderShard` system grains.
//! - [`registry`]: the `inventory` registry filled by [`register_grain!`].
//! - [`reference`](mod@reference): [`GrainRef`] and the `tell`/`ask`/`ask_stream`
//!   builders (and [`GrainContext::grain`], a reference from inside a grain).
//!
//! # Example
//! ```
//! use granary_runtime::prelude::*;
//! use serde::{Deserialize, Serialize};
//!
//! /// Says hello; keeps no state.
//! pub struct Hello;
//!
//! #[derive(Serialize, Deserialize)]
//! pub struct Greet(pub String);
//!
//! #[async_trait]
//! impl Grain for Hello {
//!     const TYPE_NAME: &'static str = "doc.hello/v1";
//!     type State = ();
//!     async fn on_activate(_ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
//!         Ok(Hello)
//!     }
//! }
//!
//! #[async_trait]
//! impl Handler<Greet> for Hello {
//!     type Reply = String;
//!     async fn handle(&mut self, Greet(name): Greet, ctx: &mut GrainContext<Self>) -> Result<String, GrainError> {
//!         Ok(format!("hello {name}, from {}", ctx.key()))
//!     }
//! }
//!
//! granary_runtime::register_grain!(Hello, handles = [Greet]);
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![deny(missing_docs)]

pub mod activation;
pub mod cancellation;
pub mod envelope;
pub mod grain;
pub mod lease;
pub mod reference;
pub mod registry;
pub mod reminder;
pub mod replication;
pub mod router;
pub mod storage;
pub mod streaming;
pub mod timer;
pub mod trace;

pub use grain::{Grain, GrainContext, GrainError, Handler, Message, ReadHandler};
pub use granary_proto::{CallError, GrainId};
pub use lease::HostingLease;
pub use reference::{Ask, AskFuture, AskStream, GrainRef, Tell, TellFuture, DEFAULT_CALL_TIMEOUT};
pub use registry::RegisteredMessage;
pub use replication::{Replication, Scaling};
pub use router::Router;
pub use storage::{Etag, GrainStorage, StorageError, StoredState};
pub use streaming::{Replies, SendError, StreamHandler};

/// One import for grain authors: `use granary_runtime::prelude::*;`.
pub mod prelude {
    pub use crate::grain::{Grain, GrainContext, GrainError, Handler, ReadHandler};
    pub use crate::reference::GrainRef;
    pub use crate::replication::{Replication, Scaling};
    pub use crate::storage::StorageError;
    pub use crate::streaming::{Replies, StreamHandler};
    pub use async_trait::async_trait;
    pub use granary_proto::CallError;
}

/// Support for [`register_grain!`]; not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::activation::HandlerEntry;
    pub use crate::activation::{spawn_activation, ActivationArgs};
    pub use crate::envelope::MessageVTable;
    pub use crate::registry::GrainTypeEntry;
    pub use crate::replication::check_policy;
    pub use inventory;
}
