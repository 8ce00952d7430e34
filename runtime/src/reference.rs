//! [`GrainRef`]: a typed address plus a way to deliver, and the `tell`/`ask` builders
//! with their futures ([`TellFuture`], [`AskFuture`]), written by hand so that a call to
//! a grain in this process allocates nothing beyond its envelope and reply channel.
//! `ask_stream` and its [`AskStream`] are in the child module `stream`.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use granary_proto::{CallError, GrainId};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::envelope::{Body, Envelope, LocalReply, LocalValue, ReplyTo};
use crate::grain::{Grain, GrainContext, Handler, Message};
use crate::registry::{registry, RegisteredMessage};
use crate::router::Router;

mod stream;

pub use stream::{AskStream, DEFAULT_STREAM_BUFFER, MAX_STREAM_BUFFER};

/// Default deadline of a call: 30 s, as Orleans' response timeout.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A typed reference to the grain `G` with a given key.
///
/// Cheap to clone; holds no connection or activation. The grain need not be active:
/// the first message activates it.
pub struct GrainRef<G> {
    id: GrainId,
    router: Arc<dyn Router>,
    _grain: PhantomData<fn() -> G>,
}

impl<G: Grain> GrainRef<G> {
    /// A reference to `G` with `key`, delivered through `router`. Hosts and clients
    /// call this; grains use [`GrainContext::grain`](crate::GrainContext::grain).
    pub fn new(router: Arc<dyn Router>, key: impl fmt::Display) -> Self {
        Self {
            id: GrainId::new(G::TYPE_NAME, key.to_string()),
            router,
            _grain: PhantomData,
        }
    }

    /// The grain's address.
    pub fn id(&self) -> &GrainId {
        &self.id
    }

    /// The grain's key.
    pub fn key(&self) -> &str {
        &self.id.key
    }

    /// Fire-and-forget: resolves once the message is in the grain's mailbox (or a
    /// connection's queue, for a remote grain). Awaiting applies backpressure.
    ///
    /// `M` must be listed in `G`'s `register_grain!` line; that is checked at compile
    /// time (see [`RegisteredMessage`]).
    pub fn tell<M: Message>(&self, msg: M) -> Tell<'_, G, M>
    where
        G: Handler<M> + RegisteredMessage<M>,
    {
        Tell {
            target: self,
            msg,
            timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// Request/response: resolves to the handler's typed reply. Chain
    /// `.timeout(d)` to change the 30 s default.
    ///
    /// `M` must be listed in `G`'s `register_grain!` line; that is checked at compile
    /// time (see [`RegisteredMessage`]).
    pub fn ask<M: Message>(&self, msg: M) -> Ask<'_, G, M>
    where
        G: Handler<M> + RegisteredMessage<M>,
    {
        Ask {
            target: self,
            msg,
            timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    fn envelope<M: Message>(
        &self,
        msg: M,
        reply: ReplyTo,
        deadline: Option<Instant>,
    ) -> Result<Envelope, CallError> {
        let vtable = registry().vtable::<G, M>()?;
        Ok(Envelope {
            target: self.id.clone(),
            body: Body::Local {
                value: LocalValue::new(msg),
                vtable,
            },
            reply,
            hops: 0,
            trace: crate::trace::current(),
            copy: Default::default(),
            deadline,
        })
    }
}

impl<G: Grain> GrainContext<G> {
    /// A reference to another grain (or this one), for `tell`/`ask`.
    pub fn grain<T: Grain>(&self, key: impl fmt::Display) -> GrainRef<T> {
        GrainRef::new(self.router.clone(), key)
    }
}

impl<G> Clone for GrainRef<G> {
    fn clone(&self) -> Self {
        Self {
            id: self.id.clone(),
            router: self.router.clone(),
            _grain: PhantomData,
        }
    }
}

impl<G> fmt::Debug for GrainRef<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GrainRef({})", self.id)
    }
}

/// A pending `tell`; `.await` it.
#[must_use = "a tell does nothing until awaited"]
pub struct Tell<'a, G, M> {
    target: &'a GrainRef<G>,
    msg: M,
    timeout: Duration,
}

impl<G, M> Tell<'_, G, M> {
    /// How long to wait for mailbox space before failing with
    /// [`CallError::MailboxFull`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl<'a, G: Handler<M>, M: Message> IntoFuture for Tell<'a, G, M> {
    type Output = Result<(), CallError>;
    type IntoFuture = TellFuture<'a, G, M>;

    fn into_future(self) -> Self::IntoFuture {
        TellFuture {
            target: self.target,
            msg: Some(self.msg),
            deadline: Instant::now() + self.timeout,
            delivering: None,
        }
    }
}

/// The future of a [`Tell`]. A grain in this process with room in its mailbox takes the
/// message on the first poll, with no allocation beyond the message's envelope.
#[must_use = "futures do nothing unless polled"]
pub struct TellFuture<'a, G, M> {
    target: &'a GrainRef<G>,
    /// The message, until the first poll.
    msg: Option<M>,
    deadline: Instant,
    /// The router's delivery, when it had to wait.
    delivering: Option<Delivery<'a>>,
}

/// A router's `deliver` in progress.
type Delivery<'a> = Pin<Box<dyn Future<Output = Result<(), CallError>> + Send + 'a>>;

/// Starts delivering `envelope` through `router`: at once if possible (`None`), else
/// the delivery to wait for.
fn start_delivery<'a>(
    router: &'a Arc<dyn Router>,
    envelope: Envelope,
    deadline: Instant,
) -> Result<Option<Delivery<'a>>, CallError> {
    match router.try_deliver(envelope)? {
        None => Ok(None),
        Some(envelope) => Ok(Some(router.deliver(envelope, deadline))),
    }
}

// The fields are never pinned: `M` is moved out by value, the delivery is boxed.
impl<G, M> Unpin for TellFuture<'_, G, M> {}

impl<G: Handler<M>, M: Message> Future for TellFuture<'_, G, M> {
    type Output = Result<(), CallError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if let Some(msg) = this.msg.take() {
            let target = this.target;
            let envelope = target.envelope(msg, ReplyTo::None, None)?;
            match start_delivery(&target.router, envelope, this.deadline)? {
                None => return Poll::Ready(Ok(())),
                Some(delivery) => this.delivering = Some(delivery),
            }
        }
        match &mut this.delivering {
            Some(delivery) => delivery.as_mut().poll(cx),
            None => panic!("TellFuture polled after completion"),
        }
    }
}

impl<G, M> fmt::Debug for TellFuture<'_, G, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TellFuture")
            .field("started", &self.msg.is_none())
            .finish_non_exhaustive()
    }
}

impl<G, M> fmt::Debug for Tell<'_, G, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tell")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// A pending `ask`; `.await` it.
#[must_use = "an ask does nothing until awaited"]
pub struct Ask<'a, G, M> {
    target: &'a GrainRef<G>,
    msg: M,
    timeout: Duration,
}

impl<G, M> Ask<'_, G, M> {
    /// Deadline for the whole call (delivery and reply). Default 30 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

impl<'a, G: Handler<M>, M: Message> IntoFuture for Ask<'a, G, M> {
    type Output = Result<<G as Handler<M>>::Reply, CallError>;
    type IntoFuture = AskFuture<'a, G, M>;

    fn into_future(self) -> Self::IntoFuture {
        // Inside a handler: no later than its caller waits, and cancelled with it.
        let deadline = crate::cancellation::deadline_after(self.timeout);
        AskFuture {
            target: self.target,
            msg: Some(self.msg),
            deadline,
            delivering: None,
            reply: None,
            timer: None,
            cancelled: crate::cancellation::watch(),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of an [`Ask`]: delivers on the first poll, then waits for the reply
    /// until the deadline. A grain in this process with room in its mailbox takes the
    /// message at once, and the call allocates only its envelope and reply channel.
    #[must_use = "futures do nothing unless polled"]
    pub struct AskFuture<'a, G, M> {
        target: &'a GrainRef<G>,
        // The message, until the first poll.
        msg: Option<M>,
        deadline: Instant,
        // The router's delivery, when it had to wait.
        delivering: Option<Delivery<'a>>,
        // Where the reply arrives, once the call is started.
        reply: Option<oneshot::Receiver<Result<LocalReply, CallError>>>,
        // Fires at the deadline; set on the first poll (inside the runtime).
        #[pin]
        timer: Option<tokio::time::Sleep>,
        // Fires when the turn that made the call is cancelled (inside a handler).
        #[pin]
        cancelled: Option<WaitForCancellationFutureOwned>,
    }
}

impl<G: Handler<M>, M: Message> Future for AskFuture<'_, G, M> {
    type Output = Result<<G as Handler<M>>::Reply, CallError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some(cancelled) = this.cancelled.as_mut().as_pin_mut() {
            if cancelled.poll(cx).is_ready() {
                // Dropping the delivery and the reply channel cancels the call (on
                // another silo too).
                *this.delivering = None;
                *this.reply = None;
                *this.msg = None;
                this.cancelled.set(None);
                return Poll::Ready(Err(CallError::Cancelled));
            }
        }
        if let Some(msg) = this.msg.take() {
            this.timer
                .set(Some(tokio::time::sleep_until(*this.deadline)));
            let (tx, rx) = oneshot::channel();
            let target = *this.target;
            let envelope = target.envelope(msg, ReplyTo::Local(tx), Some(*this.deadline))?;
            *this.delivering = start_delivery(&target.router, envelope, *this.deadline)?;
            *this.reply = Some(rx);
        }
        if let Some(delivery) = this.delivering {
            match delivery.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    *this.delivering = None;
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Ok(())) => *this.delivering = None,
            }
        }
        let Some(rx) = this.reply else {
            panic!("AskFuture polled after completion");
        };
        let reply = match Pin::new(rx).poll(cx) {
            Poll::Ready(Ok(reply)) => reply,
            Poll::Ready(Err(_)) => {
                return Poll::Ready(Err(CallError::Lost(
                    "the activation went away before replying".into(),
                )))
            }
            Poll::Pending => {
                let timer = this.timer.as_pin_mut().expect("set on the first poll");
                return match timer.poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(CallError::Timeout)),
                    Poll::Pending => Poll::Pending,
                };
            }
        };
        Poll::Ready(reply.and_then(|value| {
            value
                .downcast::<<G as Handler<M>>::Reply>()
                .map_err(|_| CallError::Codec("reply type mismatch".into()))
        }))
    }
}

impl<G, M> fmt::Debug for AskFuture<'_, G, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AskFuture")
            .field("deadline", &self.deadline)
            .field("started", &self.msg.is_none())
            .finish_non_exhaustive()
    }
}

impl<G, M> fmt::Debug for Ask<'_, G, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ask")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
