//! How a message travels from a caller to an activation's mailbox.
//!
//! In-process calls never serialize: the message travels type-erased as a
//! [`LocalValue`] and the reply comes back the same way (small ones in place, without a
//! heap allocation; see [`value`]). A call that arrived over the network carries bytes
//! and wants bytes back. The activation's handler table accepts both.

use std::any::{Any, TypeId};
use std::fmt;

use granary_proto::frame::TraceContext;
use granary_proto::{CallError, CodecError, GrainId};
use tokio::sync::oneshot;

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
}

impl ReplyTo {
    /// Which form the handler should produce.
    pub fn kind(&self) -> ReplyKind {
        match self {
            ReplyTo::None => ReplyKind::None,
            ReplyTo::Local(_) => ReplyKind::Local,
            ReplyTo::Encoded(_) => ReplyKind::Encoded,
        }
    }

    /// True when nobody waits any more (a tell, or an ask whose caller gave up).
    pub fn is_closed(&self) -> bool {
        match self {
            ReplyTo::None => true,
            ReplyTo::Local(tx) => tx.is_closed(),
            ReplyTo::Encoded(tx) => tx.is_closed(),
        }
    }

    /// Completes the call with `result`. A caller that gave up is ignored.
    pub fn complete(self, result: Result<ReplyValue, CallError>) {
        match self {
            ReplyTo::None => {}
            ReplyTo::Local(tx) => {
                let _ = tx.send(result.and_then(|v| match v {
                    ReplyValue::Local(b) => Ok(b),
                    _ => Err(CallError::Codec("reply produced in the wrong form".into())),
                }));
            }
            ReplyTo::Encoded(tx) => {
                let _ = tx.send(result.and_then(|v| match v {
                    ReplyValue::Encoded(b) => Ok(b),
                    _ => Err(CallError::Codec("reply produced in the wrong form".into())),
                }));
            }
        }
    }

    /// Fails the call with `err`.
    pub fn fail(self, err: CallError) {
        self.complete(Err(err));
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
}

impl fmt::Debug for MessageVTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageVTable({}::{})", self.grain_type, self.message)
    }
}
