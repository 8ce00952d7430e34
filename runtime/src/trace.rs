//! Tracing of grain calls: one `grain_call` span per turn, linked across grains and
//! silos by ids of our own.
//!
//! Every turn (one message handled) runs inside a span named `grain_call` with the
//! fields `grain_type`, `key`, `message`, `trace_id`, `span_id` and `parent_span_id`
//! (lower-case hex). A turn started by a caller outside any grain (a client, a test, a
//! timer) is the root of a new trace: a random 128-bit `trace_id` and no parent. A call
//! made from inside a handler carries a [`TraceContext`] (the trace and the calling
//! turn's `span_id`) in its envelope and, between silos, in its TCP frame, so the
//! receiving turn joins the same trace as a child of the caller:
//!
//! ```text
//! client ask ──► Account/ada  Follow        trace_id=T span_id=A            (root)
//!                  └─ ask ──► Account/grace increment_followers
//!                                           trace_id=T span_id=B parent_span_id=A
//! ```
//!
//! The spans are `DEBUG` under the target `granary_runtime::trace`, so they cost
//! nothing at the default `info` level; `RUST_LOG=info,granary_runtime::trace=debug`
//! turns them on, and then the JSON logs of every silo (`--log-format json`, which lists
//! each event's spans) can be joined on `trace_id`, and every log line a handler writes
//! carries its call's ids. The span is
//! not given the caller's span as its `tracing` parent (the callee runs on another task,
//! maybe in another process): the ids are the link. Nothing is exported to
//! OpenTelemetry.
//!
//! Cost: drawing the ids is two calls to a thread-local generator; the fields are only
//! formatted by a subscriber that records the span.

use std::fmt;

use granary_proto::frame::TraceContext;

tokio::task_local! {
    /// The context calls made by the running turn carry.
    static CURRENT: TraceContext;
}

/// The trace context a call made now should carry: the running turn's, when called
/// from inside a grain's handler on its task; `None` elsewhere.
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|context| *context).ok()
}

/// The ids of one turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TurnIds {
    /// The trace it belongs to.
    pub(crate) trace_id: u128,
    /// Its own span.
    pub(crate) span_id: u64,
    /// The turn that sent its message, if a turn did.
    pub(crate) parent_span_id: Option<u64>,
}

impl TurnIds {
    /// Ids for a turn handling a message that carried `incoming`: a child of its
    /// sender, or the root of a new trace.
    pub(crate) fn new(incoming: Option<TraceContext>) -> Self {
        let span_id = fastrand::u64(1..);
        match incoming {
            Some(context) => Self {
                trace_id: context.trace_id,
                span_id,
                parent_span_id: Some(context.parent_span_id),
            },
            None => Self {
                trace_id: fastrand::u128(1..),
                span_id,
                parent_span_id: None,
            },
        }
    }

    /// The context of the calls this turn makes.
    pub(crate) fn for_children(&self) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id,
            parent_span_id: self.span_id,
        }
    }

    /// Runs `future` (the handler) with this turn's context as [`current`].
    #[cfg(test)]
    pub(crate) async fn scope<F: std::future::Future>(self, future: F) -> F::Output {
        scoped(self.for_children(), future).await
    }
}

/// `future` (a handler) with `context` as [`current`] while it runs.
pub(crate) fn scoped<F: std::future::Future>(
    context: TraceContext,
    future: F,
) -> impl std::future::Future<Output = F::Output> {
    CURRENT.scope(context, future)
}

/// A trace id as span fields show it: 32 lower-case hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceId(pub u128);

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A span id as span fields show it: 16 lower-case hex digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanId(pub u64);

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests;
