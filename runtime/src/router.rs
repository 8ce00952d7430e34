//! The seam between references and hosts: whoever can deliver an envelope.
//!
//! A silo's catalog implements [`Router`] for grains it hosts and forwards the rest; a
//! remote client implements it over TCP. [`GrainRef`](crate::GrainRef) only sees this trait.

use std::fmt::Debug;

use async_trait::async_trait;
use granary_proto::{CallError, GrainId};
use tokio::time::Instant;

use crate::envelope::Envelope;

/// Delivers envelopes to grain mailboxes, wherever they are.
#[async_trait]
pub trait Router: Send + Sync + Debug + 'static {
    /// Puts `envelope` in its target's mailbox, activating the grain if needed and
    /// waiting for mailbox space until `deadline`.
    ///
    /// `Ok` means the message was accepted; the reply (if any) arrives through the
    /// envelope's `ReplyTo`. On `Err` the envelope was not delivered, except where the
    /// error says the delivery is unknown (`Lost`, `Timeout`), and its reply has been
    /// failed with the same error or dropped (a waiting caller then sees `Lost`).
    async fn deliver(&self, envelope: Envelope, deadline: Instant) -> Result<(), CallError>;

    /// Delivers `envelope` now if that needs no waiting (the grain is in this process
    /// and its mailbox has room), without the allocation of an `async` call: callers
    /// try this first and fall back to [`Router::deliver`].
    ///
    /// `Ok(None)`: accepted, as `deliver`'s `Ok`. `Ok(Some(envelope))`: nothing was
    /// done; call `deliver` with it. `Err`: as `deliver`'s errors (the reply has been
    /// failed with the same error). The default does nothing.
    fn try_deliver(&self, envelope: Envelope) -> Result<Option<Envelope>, CallError> {
        Ok(Some(envelope))
    }

    /// A copy of the read-replicated grain `grain` on this router's silo served a call
    /// at state version `version`, which its caller (reaching it through this router)
    /// has now seen. A router that routes over copy sets remembers the newest version
    /// per grain so later reads are never served older state. The default ignores it.
    fn observed(&self, _grain: &GrainId, _version: u64) {}
}
