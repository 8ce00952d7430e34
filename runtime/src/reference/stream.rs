//! [`GrainRef::ask_stream`] and [`AskStream`]: a call answered with a stream of items
//! (the grain implements [`StreamHandler`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use granary_proto::{codec, CallError};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Sleep;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::{start_delivery, Delivery, GrainRef, DEFAULT_CALL_TIMEOUT};
use crate::envelope::{ItemForm, ReplyTo, StreamItem, StreamReply};
use crate::grain::{Grain, Message};
use crate::registry::RegisteredMessage;
use crate::streaming::StreamHandler;

/// Items a stream buffers for its consumer by default (see [`AskStream::buffer`]).
pub const DEFAULT_STREAM_BUFFER: usize = 32;

/// The largest [`AskStream::buffer`]: a window is carried as a `u32` and every hop of a
/// stream may buffer one.
pub const MAX_STREAM_BUFFER: usize = 4096;

impl<G: Grain> GrainRef<G> {
    /// A call answered with a stream of items: a [`Stream`] of
    /// `Result<G::Item, CallError>`, started on its first poll.
    ///
    /// The stream yields the handler's items in order. It ends with `None` when the
    /// handler returned `Ok`; when the call fails (the handler's error, the grain
    /// unreachable, the deadline passed) it yields one `Err` and then `None`. Chain
    /// `.timeout(d)` to bound the whole stream (30 s by default; [`Duration::MAX`] for
    /// none, e.g. a watcher) and `.buffer(n)` to change how many items may wait for the
    /// consumer (32): a consumer that reads slower than the handler sends makes the
    /// handler wait, so memory stays bounded.
    ///
    /// Dropping the stream before its end cancels the call: the handler's next
    /// `replies.send` fails with [`SendError::Cancelled`](crate::streaming::SendError),
    /// also on another silo.
    ///
    /// ```no_run
    /// # use granary_runtime::prelude::*;
    /// # use futures::StreamExt;
    /// # #[derive(serde::Serialize, serde::Deserialize)] pub struct Count(pub u64);
    /// # pub struct Numbers;
    /// # #[async_trait] impl Grain for Numbers { const TYPE_NAME: &'static str = "doc.n/v1"; type State = ();
    /// #   async fn on_activate(_: &mut GrainContext<Self>) -> Result<Self, GrainError> { Ok(Numbers) } }
    /// # #[async_trait] impl StreamHandler<Count> for Numbers { type Item = u64;
    /// #   async fn handle_stream(&mut self, _: Count, _: &mut Replies<u64>, _: &mut GrainContext<Self>) -> Result<(), GrainError> { Ok(()) } }
    /// # granary_runtime::register_grain!(Numbers, handles = [], streams = [Count]);
    /// # async fn run(numbers: GrainRef<Numbers>) -> Result<(), CallError> {
    /// let mut items = numbers.ask_stream(Count(10)).timeout(std::time::Duration::from_secs(5));
    /// while let Some(n) = items.next().await {
    ///     println!("{}", n?);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn ask_stream<M: Message>(&self, msg: M) -> AskStream<'_, G, M>
    where
        G: StreamHandler<M> + RegisteredMessage<M>,
    {
        AskStream {
            target: self,
            msg: Some(msg),
            timeout: DEFAULT_CALL_TIMEOUT,
            buffer: DEFAULT_STREAM_BUFFER,
            running: None,
            done: false,
        }
    }
}

/// A streamed call (see [`GrainRef::ask_stream`]): a [`Stream`] of the handler's items.
#[must_use = "streams do nothing unless polled"]
pub struct AskStream<'a, G, M> {
    target: &'a GrainRef<G>,
    /// The message, until the first poll.
    msg: Option<M>,
    timeout: Duration,
    buffer: usize,
    /// The call, once started.
    running: Option<Running<'a>>,
    /// The stream has ended (or failed): only `None` from now on.
    done: bool,
}

/// A started streamed call.
struct Running<'a> {
    /// The router's delivery, while it runs (for a grain on another silo it carries
    /// the items here for as long as the stream lasts).
    delivering: Option<Delivery<'a>>,
    /// Why the delivery failed, if it did: reported if the end never arrives.
    refused: Option<CallError>,
    items: mpsc::Receiver<StreamItem>,
    end: oneshot::Receiver<Result<(), CallError>>,
    /// Fires at the stream's deadline.
    timer: Pin<Box<Sleep>>,
    /// Fires when the turn that made the call is cancelled (inside a handler).
    cancelled: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

// Nothing is pinned in place: `M` is moved out by value, the delivery and timer are boxed.
impl<G, M> Unpin for AskStream<'_, G, M> {}

impl<G, M> AskStream<'_, G, M> {
    /// Deadline of the whole stream, from its first poll. Default 30 s;
    /// [`Duration::MAX`] for none (across silos a deadline travels in milliseconds, so
    /// "none" is about 49 days there).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How many items may wait for the consumer (default [`DEFAULT_STREAM_BUFFER`], at
    /// most [`MAX_STREAM_BUFFER`], at least 1). Across silos each hop buffers as many.
    pub fn buffer(mut self, items: usize) -> Self {
        self.buffer = items.clamp(1, MAX_STREAM_BUFFER);
        self
    }

    /// Cancels the call now, as dropping the stream does: a handler that has not started
    /// never runs, a running one sees its next `replies.send` fail (also on another
    /// silo). The stream yields nothing more.
    pub fn cancel(&mut self) {
        self.done = true;
        self.msg = None;
        self.running = None;
    }

    /// Ends the stream with `result`: drops the call (cancelling it if it still runs).
    fn finish<T>(
        &mut self,
        result: Option<Result<T, CallError>>,
    ) -> Poll<Option<Result<T, CallError>>> {
        self.cancel();
        Poll::Ready(result)
    }
}

impl<'a, G: StreamHandler<M>, M: Message> AskStream<'a, G, M> {
    /// Sends the message: the first poll.
    fn start(&mut self, msg: M) -> Result<(), CallError> {
        let (items_tx, items) = mpsc::channel(self.buffer);
        let (end_tx, end) = oneshot::channel();
        let reply = ReplyTo::Stream(StreamReply::new(items_tx, ItemForm::Local, end_tx));
        // Inside a handler: no later than its caller waits, and cancelled with it.
        let deadline = crate::cancellation::deadline_after(self.timeout);
        let target = self.target;
        let envelope = target.envelope(msg, reply, Some(deadline))?;
        let delivering = start_delivery(&target.router, envelope, deadline)?;
        self.running = Some(Running {
            delivering,
            refused: None,
            items,
            end,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
            cancelled: crate::cancellation::watch().map(Box::pin),
        });
        Ok(())
    }
}

impl<G: StreamHandler<M>, M: Message> Stream for AskStream<'_, G, M> {
    type Item = Result<G::Item, CallError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(msg) = this.msg.take() {
            if let Err(e) = this.start(msg) {
                return this.finish(Some(Err(e)));
            }
        }
        let Some(running) = this.running.as_mut() else {
            return this.finish(None);
        };
        if let Some(cancelled) = running.cancelled.as_mut() {
            if cancelled.as_mut().poll(cx).is_ready() {
                return this.finish(Some(Err(CallError::Cancelled)));
            }
        }
        // The delivery runs alongside the items: for a remote grain it is what brings
        // them, so it is polled on every poll until it ends.
        if let Some(delivery) = running.delivering.as_mut() {
            if let Poll::Ready(result) = delivery.as_mut().poll(cx) {
                running.delivering = None;
                running.refused = result.err();
            }
        }
        match running.items.poll_recv(cx) {
            Poll::Ready(Some(item)) => return Poll::Ready(Some(take_item::<G, M>(item))),
            Poll::Ready(None) => match Pin::new(&mut running.end).poll(cx) {
                Poll::Ready(Ok(Ok(()))) => return this.finish(None),
                Poll::Ready(Ok(Err(e))) => return this.finish(Some(Err(e))),
                Poll::Ready(Err(_)) => {
                    let e = running.refused.take().unwrap_or_else(|| {
                        CallError::Lost("the activation went away before the stream ended".into())
                    });
                    return this.finish(Some(Err(e)));
                }
                // The items end just before the end is sent: it is on its way.
                Poll::Pending => {}
            },
            Poll::Pending => {}
        }
        if running.timer.as_mut().poll(cx).is_ready() {
            return this.finish(Some(Err(CallError::Timeout)));
        }
        Poll::Pending
    }
}

/// One item, as the consumer's type.
fn take_item<G: StreamHandler<M>, M: Message>(item: StreamItem) -> Result<G::Item, CallError> {
    match item {
        StreamItem::Local(value) => value
            .downcast::<G::Item>()
            .map_err(|_| CallError::Codec("stream item type mismatch".into())),
        StreamItem::Encoded(bytes) => {
            codec::decode(&bytes).map_err(|e| CallError::Codec(e.to_string()))
        }
    }
}

impl<G, M> fmt::Debug for AskStream<'_, G, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AskStream")
            .field("timeout", &self.timeout)
            .field("buffer", &self.buffer)
            .field("started", &self.msg.is_none())
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}
