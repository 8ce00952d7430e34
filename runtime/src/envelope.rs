//! How a message travels from a caller to an activation's mailbox.
//!
//! In-process calls never serialize: the message travels type-erased as a
//! [`LocalValue`] and the reply comes back the same way (small ones in place, without a
//! heap allocation; see [`value`]). A call that arrived over the network carries bytes
//! and wants bytes back. The activation's handler table accepts both.
//!
//! A streamed reply ([`ReplyTo::Stream`]) is a bounded channel of items plus a one-shot
//! end: the handler's items wait in the channel for the consumer (a full channel makes
//! the handler wait), and the end says whether the stream finished or why it failed.

use std::any::{Any, TypeId};
use std::fmt;

use granary_proto::frame::TraceContext;
use granary_proto::{CallError, CodecError, GrainId};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub mod value;

pub use value::LocalValue;

/// A reply for a caller in this process: the handler's `Reply`, type-erased.
pub type LocalReply = LocalValue;

/// The message itself.
pub enum Body {
    /// A typed message from this process; `vtable` can encode it if it must travel.
    Local {
        /// The message, an `M`.
        value: LocalValue,
        /// Name, encoder and reply decoder of `M` for this grain type.
        vtable: &'static MessageVTable,
    },
    /// A message decoded from a frame: its wire name and encoded bytes.
    Encoded {
        /// The message's wire name.
        name: String,
        /// The encoded message.
        bytes: Vec<u8>,
    },
}

impl Body {
    /// The message's wire name.
    pub fn name(&self) -> &str {
        match self {
            Body::Local { vtable, .. } => vtable.message,
            Body::Encoded { name, .. } => name,
        }
    }

    /// Encodes the body for the wire (a no-op for an already encoded one).
    pub fn into_bytes(self) -> Result<(String, Vec<u8>), CallError> {
        match self {
            Body::Local { value, vtable } => {
                let bytes =
                    (vtable.encode)(value.as_any()).map_err(|e| CallError::Codec(e.to_string()))?;
                Ok((vtable.message.to_owned(), bytes))
            }
            Body::Encoded { name, bytes } => Ok((name, bytes)),
        }
    }
}

/// Where the reply goes.
pub enum ReplyTo {
    /// A tell: nobody waits.
    None,
    /// An in-process ask: the reply stays boxed.
    Local(oneshot::Sender<Result<LocalReply, CallError>>),
    /// An ask from the network: the reply is encoded.
    Encoded(oneshot::Sender<Result<Vec<u8>, CallError>>),
    /// An ask from the network to a replicated grain: the reply is encoded and goes
    /// back with the state version it was served at (0 when unknown).
    EncodedAt(oneshot::Sender<(Result<Vec<u8>, CallError>, u64)>),
    /// An `ask_stream`: items, then the end.
    Stream(StreamReply),
}

/// Where a streamed reply goes: its items and its end.
pub struct StreamReply {
    /// The items, until the turn takes them ([`ReplyTo::shape`]); dropping the sender
    /// after the last item closes the channel.
    items: Option<StreamSink>,
    /// How the stream ended: `Ok` after the last item, or why it failed. The consumer
    /// reads it once the item channel is closed and empty.
    end: oneshot::Sender<Result<(), CallError>>,
}

impl StreamReply {
    /// A stream whose items go to `items` in `form`, and whose end goes to `end`.
    pub fn new(
        items: mpsc::Sender<StreamItem>,
        form: ItemForm,
        end: oneshot::Sender<Result<(), CallError>>,
    ) -> Self {
        Self {
            items: Some(StreamSink { items, form }),
            end,
        }
    }

    /// The item channel and form, if the turn has not taken them.
    pub fn sink(&self) -> Option<&StreamSink> {
        self.items.as_ref()
    }

    /// The item sink (if not taken) and the end, for a router that carries the items
    /// from another silo.
    pub fn into_parts(self) -> (Option<StreamSink>, oneshot::Sender<Result<(), CallError>>) {
        (self.items, self.end)
    }
}

/// The producing end of a streamed reply, as a stream handler's turn holds it.
#[derive(Debug)]
pub struct StreamSink {
    /// Bounded: a consumer that does not read makes the producer wait.
    pub items: mpsc::Sender<StreamItem>,
    /// The form the consumer takes items in.
    pub form: ItemForm,
}

/// The form of a streamed reply's items.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemForm {
    /// Typed, for a consumer in this process.
    Local,
    /// Encoded, for a consumer across the network.
    Encoded,
}

/// One item of a streamed reply.
pub enum StreamItem {
    /// A typed item (the handler's `Item`), type-erased.
    Local(LocalValue),
    /// An encoded item.
    Encoded(Vec<u8>),
}

impl fmt::Debug for StreamItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamItem::Local(_) => f.write_str("Local(..)"),
            StreamItem::Encoded(b) => write!(f, "Encoded({} bytes)", b.len()),
        }
    }
}

impl fmt::Debug for StreamReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamReply")
            .field("items", &self.items)
            .finish_non_exhaustive()
    }
}

/// What a handler should produce for its call, handed to the handler table by the turn:
/// the form of its one reply, or the sink its stream of items goes to.
#[derive(Debug)]
pub enum ReplyShape {
    /// One reply, in this form.
    One(ReplyKind),
    /// A stream of items.
    Stream(StreamSink),
}

impl ReplyTo {
    /// Which form the handler should produce.
    pub fn kind(&self) -> ReplyKind {
        match self {
            ReplyTo::None => ReplyKind::None,
            ReplyTo::Local(_) => ReplyKind::Local,
            ReplyTo::Encoded(_) | ReplyTo::EncodedAt(_) => ReplyKind::Encoded,
            ReplyTo::Stream(_) => ReplyKind::Stream,
        }
    }

    /// True for a streamed reply.
    pub fn is_stream(&self) -> bool {
        matches!(self, ReplyTo::Stream(_))
    }

    /// What the handler should produce. For a stream this takes its item sink out (the
    /// turn hands it to the handler; the end stays here for [`ReplyTo::complete`]); a
    /// second call on a stream yields an empty shape that fails the handler.
    pub fn shape(&mut self) -> ReplyShape {
        match self {
            ReplyTo::Stream(stream) => match stream.items.take() {
                Some(sink) => ReplyShape::Stream(sink),
                None => ReplyShape::One(ReplyKind::Stream),
            },
            other => ReplyShape::One(other.kind()),
        }
    }

    /// True when nobody waits any more (a tell, or an ask whose caller gave up).
    pub fn is_closed(&self) -> bool {
        match self {
            ReplyTo::None => true,
            ReplyTo::Local(tx) => tx.is_closed(),
            ReplyTo::Encoded(tx) => tx.is_closed(),
            ReplyTo::EncodedAt(tx) => tx.is_closed(),
            ReplyTo::Stream(stream) => stream.end.is_closed(),
        }
    }

    /// Ready once the caller left (dropped or cancelled the call); never for a tell.
    pub fn poll_closed(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        match self {
            ReplyTo::None => std::task::Poll::Pending,
            ReplyTo::Local(tx) => tx.poll_closed(cx),
            ReplyTo::Encoded(tx) => tx.poll_closed(cx),
            ReplyTo::EncodedAt(tx) => tx.poll_closed(cx),
            ReplyTo::Stream(stream) => stream.end.poll_closed(cx),
        }
    }

    /// Completes the call with `result`. A caller that gave up is ignored.
    pub fn complete(self, result: Result<ReplyValue, CallError>) {
        self.complete_at(result, 0);
    }

    /// Completes the call with `result`, served at state version `version` (only an
    /// [`ReplyTo::EncodedAt`] caller receives the version).
    pub fn complete_at(self, result: Result<ReplyValue, CallError>, version: u64) {
        match self {
            ReplyTo::None => {}
            ReplyTo::Local(tx) => {
                let _ = tx.send(result.and_then(|v| match v {
                    ReplyValue::Local(b) => Ok(b),
                    _ => Err(CallError::Codec("reply produced in the wrong form".into())),
                }));
            }
            ReplyTo::Encoded(tx) => {
                let _ = tx.send(result.and_then(encoded));
            }
            ReplyTo::EncodedAt(tx) => {
                let _ = tx.send((result.and_then(encoded), version));
            }
            ReplyTo::Stream(stream) => {
                // The items end first: a consumer reads the end once the channel is empty.
                drop(stream.items);
                let _ = stream.end.send(result.map(drop));
            }
        }
    }

    /// Fails the call with `err`.
    pub fn fail(self, err: CallError) {
        self.complete(Err(err));
    }
}

fn encoded(value: ReplyValue) -> Result<Vec<u8>, CallError> {
    match value {
        ReplyValue::Encoded(b) => Ok(b),
        _ => Err(CallError::Codec("reply produced in the wrong form".into())),
    }
}

/// The form a handler's reply should take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    /// Drop it (tell).
    None,
    /// Keep it type-erased ([`LocalValue`]).
    Local,
    /// Encode it.
    Encoded,
    /// Stream items (see [`ReplyShape::Stream`]).
    Stream,
}

/// A reply in the form its [`ReplyKind`] asked for.
pub enum ReplyValue {
    /// Nobody wanted it.
    None,
    /// Type-erased reply.
    Local(LocalReply),
    /// Encoded reply.
    Encoded(Vec<u8>),
}

impl fmt::Debug for ReplyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyValue::None => f.write_str("None"),
            ReplyValue::Local(_) => f.write_str("Local(..)"),
            ReplyValue::Encoded(b) => write!(f, "Encoded({} bytes)", b.len()),
        }
    }
}

/// A message on its way to a grain.
pub struct Envelope {
    /// The grain it is for.
    pub target: GrainId,
    /// The message.
    pub body: Body,
    /// Where the reply goes.
    pub reply: ReplyTo,
    /// How many silos have forwarded it already (stops forwarding loops).
    pub hops: u8,
    /// The trace of the turn that sent it, if a grain's handler did (see
    /// [`crate::trace`]); routers carry it across silos.
    pub trace: Option<TraceContext>,
    /// For a replicated grain: which copies may serve it (set by routers).
    pub copy: CopyHint,
    /// When the caller stops waiting for the reply (`None`: nobody waits, a tell). The
    /// handler's own calls inherit it (see [`crate::cancellation`]).
    pub deadline: Option<Instant>,
}

/// What a router tells the copies of a replicated grain about one message (see
/// [`crate::replication`]). The default suits every other grain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CopyHint {
    /// A read replica may serve the message only at this state version or newer (the
    /// newest version its caller has seen).
    pub min_version: u64,
    /// Only the primary may serve it (a replica could not).
    pub primary: bool,
}

impl Envelope {
    /// Fails the envelope's call with `err` (dropping the message).
    pub fn fail(self, err: CallError) {
        self.reply.fail(err);
    }
}

impl fmt::Debug for Envelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Envelope")
            .field("target", &self.target)
            .field("message", &self.body.name())
            .field("reply", &self.reply.kind())
            .field("hops", &self.hops)
            .field("trace", &self.trace)
            .field("copy", &self.copy)
            .field("deadline", &self.deadline)
            .finish()
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Body({})", self.name())
    }
}

impl fmt::Debug for ReplyTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReplyTo::{:?}", self.kind())
    }
}

/// How to move one message type `M` of one grain type `G` across the wire.
pub struct MessageVTable {
    /// `G::TYPE_NAME`.
    pub grain_type: &'static str,
    /// The message's wire name within the grain type.
    pub message: &'static str,
    /// `TypeId` of `G`.
    pub grain_type_id: fn() -> TypeId,
    /// `TypeId` of `M`.
    pub message_type_id: fn() -> TypeId,
    /// Encodes an `M` given as `&dyn Any`.
    pub encode: fn(&(dyn Any + Send)) -> Result<Vec<u8>, CodecError>,
    /// Decodes an encoded reply into a type-erased `<G as Handler<M>>::Reply`.
    pub decode_reply: fn(&[u8]) -> Result<LocalReply, CodecError>,
    /// The message only reads (listed in `reads = [...]`): a read replica may serve it.
    pub read: bool,
}

impl fmt::Debug for MessageVTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageVTable({}::{})", self.grain_type, self.message)
    }
}
