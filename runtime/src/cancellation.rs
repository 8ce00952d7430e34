//! Cancellation and deadlines that follow the call chain.
//!
//! Every turn that answers a caller (an `ask` or an `ask_stream`) has a
//! [`CancellationToken`]. The activation cancels it when the caller leaves: it dropped
//! the call, cancelled its stream, or its deadline passed (the reply channel closes; on
//! another silo the caller's `Frame::Cancel` or the call's own deadline closes it). The
//! running handler sees it through [`GrainContext::cancelled`] (a future) or
//! [`GrainContext::is_cancelled`], and every `ask`/`ask_stream` it makes fails with
//! [`CallError::Cancelled`](granary_proto::CallError::Cancelled) at once, which in turn
//! cancels those calls on their grains, wherever they run:
//!
//! ```text
//! client ──ask──► Job.handle ──ask──► Worker.handle ──ask──► …
//!   drop            token cancelled      token cancelled
//!   ──Cancel──►     ctx.cancelled() ✓    ctx.cancelled() ✓
//!                   nested ask: Err(Cancelled) ──Cancel──►
//! ```
//!
//! Calls made by a handler also carry its caller's deadline: a nested call's deadline is
//! the earlier of its own timeout and what is left of the turn's, so a chain of calls
//! never outlives the first caller's patience (a call from a handler whose caller allows
//! 2 s more gets at most 2 s, not a fresh 30 s).
//!
//! Cancellation is cooperative, as in Orleans: the handler keeps running until it
//! returns (a handler that never looks keeps the grain busy until it is done), but its
//! reply goes nowhere. A message whose caller left before its turn started is never
//! handled. A `tell` has no caller to leave and is never cancelled.

use std::time::Duration;

use granary_proto::frame::TraceContext;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::grain::{Grain, GrainContext};

/// What calls made by a running turn inherit from it.
#[derive(Clone, Debug)]
pub struct TurnScope {
    /// The trace context of the calls it makes.
    pub(crate) trace: TraceContext,
    /// Cancelled when the turn's caller leaves (`None` for a tell).
    pub(crate) cancel: Option<CancellationToken>,
    /// When the turn's caller stops waiting (`None`: no caller waits).
    pub(crate) deadline: Option<Instant>,
}

tokio::task_local! {
    static SCOPE: TurnScope;
}

/// `future` (a handler) with `scope` inherited by the calls it makes, and the trace
/// context as [`crate::trace::current`].
pub(crate) fn scoped<F: std::future::Future>(
    scope: TurnScope,
    future: F,
) -> impl std::future::Future<Output = F::Output> {
    let trace = scope.trace;
    SCOPE.scope(scope, crate::trace::scoped(trace, future))
}

/// The running turn's token, if the code runs inside a handler whose caller waits.
pub(crate) fn current_token() -> Option<CancellationToken> {
    SCOPE.try_with(|s| s.cancel.clone()).ok().flatten()
}

/// The deadline of a call made now with `timeout`: no later than the running turn's
/// caller waits (inside a handler). "No deadline" ([`Duration::MAX`]) is about a year.
pub(crate) fn deadline_after(timeout: Duration) -> Instant {
    const NO_DEADLINE: Duration = Duration::from_secs(365 * 24 * 3600);
    let own = Instant::now() + timeout.min(NO_DEADLINE);
    match SCOPE.try_with(|s| s.deadline).ok().flatten() {
        Some(inherited) => own.min(inherited),
        None => own,
    }
}

/// A future that resolves when the running turn is cancelled (never outside one).
pub(crate) fn watch() -> Option<WaitForCancellationFutureOwned> {
    current_token().map(CancellationToken::cancelled_owned)
}

impl<G: Grain> GrainContext<G> {
    /// Resolves when the caller of the running turn left: it dropped or cancelled the
    /// call, or its deadline passed (see [`crate::cancellation`]). Never resolves in a
    /// turn nobody waits for (a `tell`). Owned, so it can be raced against work that
    /// borrows the context:
    ///
    /// ```text
    /// tokio::select! {
    ///     () = ctx.cancelled() => return Err(CallError::Cancelled.into()),
    ///     rows = compute(&mut *ctx) => { … }
    /// }
    /// ```
    pub fn cancelled(&self) -> WaitForCancellationFutureOwned {
        self.cancel_token().cancelled_owned()
    }

    /// True once the running turn's caller left (see [`GrainContext::cancelled`]).
    pub fn is_cancelled(&self) -> bool {
        self.turn_cancel
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
    }

    /// The running turn's token, to hand to work the handler starts (a never-cancelled
    /// token in a turn nobody waits for).
    pub fn cancel_token(&self) -> CancellationToken {
        self.turn_cancel.clone().unwrap_or_default()
    }

    /// When the running turn's caller stops waiting, if a caller waits.
    pub fn deadline(&self) -> Option<Instant> {
        self.turn_deadline
    }
}

#[cfg(test)]
mod tests;
