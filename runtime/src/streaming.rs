//! Streamed replies: a handler that answers one message with any number of items.
//!
//! A grain implements [`StreamHandler<M>`] (instead of [`Handler<M>`](crate::Handler))
//! for a message whose answer is a sequence: progress then a result, the rows of a
//! report, the changes of a watched value. Its `handle_stream` gets a [`Replies`] sink
//! and sends items into it; returning `Ok(())` ends the stream, returning `Err` ends it
//! with the error. The caller reads the items with
//! [`GrainRef::ask_stream`](crate::GrainRef::ask_stream), a typed `Stream`, in order,
//! locally or across silos:
//!
//! ```text
//! caller                          grain (one turn)
//! ask_stream(Count(3)) ─────────► handle_stream
//!   next() ◄──────────────────────  replies.send(0).await
//!   next() ◄──────────────────────  replies.send(1).await
//!   next() ◄──────────────────────  replies.send(2).await
//!   next() = None ◄───────────────  Ok(())                 (the end)
//! ```
//!
//! **Backpressure.** Items wait in a bounded buffer (the caller's
//! [`buffer`](crate::reference::AskStream::buffer), 32 by default; across the network a
//! credit window of the same size at each hop). When it is full, `replies.send` waits: a
//! slow consumer slows the handler, and memory stays bounded. The whole stream is one
//! turn, so the grain handles no other message until it ends; a stream that should
//! outlive a turn (a watcher) is the caller's to keep short, or the grain's to hand off.
//!
//! **End and cancellation.** A consumer that drops the stream cancels the call:
//! `replies.send` then fails with [`SendError::Cancelled`], which a handler passes on
//! with `?`. Across silos the drop sends a cancel frame, so the remote handler stops
//! too.

use std::fmt;
use std::marker::PhantomData;

use async_trait::async_trait;
use granary_proto::{codec, CallError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use crate::activation::{decode_message, handler_error, Live, TurnFuture};
use crate::cancellation::TurnScope;
use crate::envelope::{Body, ItemForm, LocalValue, ReplyShape, ReplyValue, StreamItem, StreamSink};
use crate::grain::{Grain, GrainContext, GrainError, Message};

/// Handles one message type `M` with a stream of typed replies.
///
/// ```
/// use granary_runtime::prelude::*;
/// # use serde::{Deserialize, Serialize};
/// # pub struct Numbers;
/// # #[async_trait]
/// # impl Grain for Numbers {
/// #     const TYPE_NAME: &'static str = "doc.numbers/v1";
/// #     type State = ();
/// #     async fn on_activate(_: &mut GrainContext<Self>) -> Result<Self, GrainError> { Ok(Numbers) }
/// # }
/// /// Stream: the numbers `0..n`.
/// #[derive(Serialize, Deserialize)]
/// pub struct Count(pub u64);
///
/// #[async_trait]
/// impl StreamHandler<Count> for Numbers {
///     type Item = u64;
///     async fn handle_stream(
///         &mut self,
///         Count(n): Count,
///         replies: &mut Replies<u64>,
///         _ctx: &mut GrainContext<Self>,
///     ) -> Result<(), GrainError> {
///         for i in 0..n {
///             replies.send(i).await?; // waits while the caller's buffer is full
///         }
///         Ok(()) // the end of the stream
///     }
/// }
///
/// granary_runtime::register_grain!(Numbers, handles = [], streams = [Count]);
///
/// // A caller: `let mut numbers = grain.ask_stream(Count(3));`, then
/// // `while let Some(n) = numbers.next().await { let n = n?; … }` (futures::StreamExt).
/// ```
#[async_trait]
pub trait StreamHandler<M: Message>: Grain {
    /// One item of the stream.
    type Item: Serialize + DeserializeOwned + Send + 'static;

    /// Processes `msg`, sending items into `replies`. `Ok(())` ends the stream after the
    /// items sent; `Err` ends it with [`CallError::Handler`] (or
    /// [`CallError::Storage`], or [`CallError::Cancelled`] for a [`SendError::Cancelled`]
    /// passed on), after the items already sent.
    async fn handle_stream(
        &mut self,
        msg: M,
        replies: &mut Replies<Self::Item>,
        ctx: &mut GrainContext<Self>,
    ) -> Result<(), GrainError>;
}

/// Where a [`StreamHandler`] sends its items.
pub struct Replies<T> {
    sink: StreamSink,
    /// Items sent so far.
    sent: u64,
    _item: PhantomData<fn(T)>,
}

/// Why [`Replies::send`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The caller is gone: it dropped or cancelled the stream, or its deadline passed.
    /// Nothing more will be read; the handler should stop (return it with `?`).
    #[error("the caller cancelled the stream")]
    Cancelled,
    /// The item could not be encoded for a caller across the network.
    #[error("a stream item could not be encoded: {0}")]
    Codec(String),
}

impl SendError {
    /// The error the stream's caller sees when a handler returns this one.
    pub(crate) fn to_call_error(&self) -> CallError {
        match self {
            SendError::Cancelled => CallError::Cancelled,
            SendError::Codec(why) => CallError::Codec(why.clone()),
        }
    }
}

impl<T: Serialize + Send + 'static> Replies<T> {
    pub(crate) fn new(sink: StreamSink) -> Self {
        Self {
            sink,
            sent: 0,
            _item: PhantomData,
        }
    }

    /// Sends one item, waiting while the caller's buffer is full (backpressure).
    /// Fails with [`SendError::Cancelled`] once the caller is gone.
    pub async fn send(&mut self, item: T) -> Result<(), SendError> {
        let item = match self.sink.form {
            ItemForm::Local => StreamItem::Local(LocalValue::new(item)),
            ItemForm::Encoded => StreamItem::Encoded(
                codec::encode(&item).map_err(|e| SendError::Codec(e.to_string()))?,
            ),
        };
        self.sink
            .items
            .send(item)
            .await
            .map_err(|_| SendError::Cancelled)?;
        self.sent += 1;
        Ok(())
    }

    /// True once the caller is gone (a further [`send`](Self::send) would fail).
    pub fn is_closed(&self) -> bool {
        self.sink.items.is_closed()
    }

    /// How many items were sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }
}

impl<T> fmt::Debug for Replies<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replies")
            .field("form", &self.sink.form)
            .field("sent", &self.sent)
            .finish_non_exhaustive()
    }
}

/// The handler-table entry of a stream message (see
/// [`HandlerEntry::stream`](crate::activation::HandlerEntry::stream)).
pub(crate) fn handle_stream_message<G: StreamHandler<M>, M: Message>(
    slot: &mut TurnFuture<G>,
    mut live: Box<Live<G>>,
    body: Body,
    shape: ReplyShape,
    scope: TurnScope,
    span: tracing::Span,
) {
    slot.set(
        crate::cancellation::scoped(scope, async move {
            let result = call_stream_handler::<G, M>(&mut live, body, shape).await;
            (live, result)
        })
        .instrument(span),
    );
}

async fn call_stream_handler<G: StreamHandler<M>, M: Message>(
    live: &mut Live<G>,
    body: Body,
    shape: ReplyShape,
) -> Result<ReplyValue, CallError> {
    let ReplyShape::Stream(sink) = shape else {
        return Err(CallError::Codec(format!(
            "`{}` answers with a stream: call it with `ask_stream`",
            std::any::type_name::<M>()
        )));
    };
    let msg: M = decode_message(body)?;
    let mut replies = Replies::<G::Item>::new(sink);
    let Live { grain, ctx } = live;
    grain
        .handle_stream(msg, &mut replies, ctx)
        .await
        .map_err(handler_error)?;
    Ok(ReplyValue::None)
}

#[cfg(test)]
mod tests;
