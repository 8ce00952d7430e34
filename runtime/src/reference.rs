//! [`GrainRef`]: a typed address plus a way to deliver, and the `tell`/`ask` builders.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use granary_proto::{CallError, GrainId};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::envelope::{Body, Envelope, ReplyTo};
use crate::grain::{Grain, GrainContext, Handler, Message};
use crate::registry::{registry, RegisteredMessage};
use crate::router::Router;

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

    fn envelope<M: Message>(&self, msg: M, reply: ReplyTo) -> Result<Envelope, CallError>
    where
        G: Handler<M>,
    {
        let vtable = registry().vtable::<G, M>()?;
        Ok(Envelope {
            target: self.id.clone(),
            body: Body::Local {
                value: Box::new(msg),
                vtable,
            },
            reply,
            hops: 0,
            trace: crate::trace::current(),
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
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let deadline = Instant::now() + self.timeout;
            let envelope = self.target.envelope(self.msg, ReplyTo::None)?;
            self.target.router.deliver(envelope, deadline).await
        })
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
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let deadline = Instant::now() + self.timeout;
            let (tx, rx) = oneshot::channel();
            let envelope = self.target.envelope(self.msg, ReplyTo::Local(tx))?;
            self.target.router.deliver(envelope, deadline).await?;
            let reply = match tokio::time::timeout_at(deadline, rx).await {
                Err(_) => return Err(CallError::Timeout),
                Ok(Err(_)) => {
                    return Err(CallError::Lost(
                        "the activation went away before replying".into(),
                    ))
                }
                Ok(Ok(reply)) => reply?,
            };
            reply
                .downcast::<<G as Handler<M>>::Reply>()
                .map(|b| *b)
                .map_err(|_| CallError::Codec("reply type mismatch".into()))
        })
    }
}

impl<G, M> fmt::Debug for Ask<'_, G, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ask")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
