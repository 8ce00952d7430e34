//! The process-wide grain type registry, filled at link time by [`register_grain!`](crate::register_grain).
//!
//! Each `register_grain!(G, handles = [M1, M2])` line submits one [`GrainTypeEntry`]
//! through `inventory`. The registry is the only global in Granary: it describes types,
//! never live state, so many silos can share one process.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;
use std::time::Duration;

use granary_proto::{codec, CallError, CodecError};

use crate::activation::ActivationArgs;
use crate::envelope::{LocalReply, LocalValue, MessageVTable};
use crate::grain::{Grain, Handler, Message, ReadHandler};
use crate::replication::Replication;
use crate::streaming::StreamHandler;

/// [`MessageVTable`]s are built here, where grain types are known; the envelope that
/// carries one only needs its function pointers.
impl MessageVTable {
    /// The vtable of `M` for `G`, named `message` on the wire.
    pub const fn new<G: Handler<M>, M: Message>(message: &'static str) -> Self {
        Self {
            grain_type: G::TYPE_NAME,
            message,
            grain_type_id: TypeId::of::<G>,
            message_type_id: TypeId::of::<M>,
            encode: encode_message::<M>,
            decode_reply: decode_reply::<G, M>,
            read: false,
        }
    }

    /// The vtable of `M` for `G` answered with a stream: `decode_reply` decodes one item.
    pub const fn stream<G: StreamHandler<M>, M: Message>(message: &'static str) -> Self {
        Self {
            grain_type: G::TYPE_NAME,
            message,
            grain_type_id: TypeId::of::<G>,
            message_type_id: TypeId::of::<M>,
            encode: encode_message::<M>,
            decode_reply: decode_item::<G, M>,
            read: false,
        }
    }

    /// The vtable of the read-only message `M` (listed in `reads = [...]`).
    pub const fn new_read<G: ReadHandler<M>, M: Message>(message: &'static str) -> Self {
        let mut vtable = Self::new::<G, M>(message);
        vtable.read = true;
        vtable
    }
}

fn encode_message<M: Message>(value: &(dyn Any + Send)) -> Result<Vec<u8>, CodecError> {
    let msg = value
        .downcast_ref::<M>()
        .ok_or_else(|| CodecError::Encode("message type mismatch".into()))?;
    codec::encode(msg)
}

fn decode_reply<G: Handler<M>, M: Message>(bytes: &[u8]) -> Result<LocalReply, CodecError> {
    Ok(LocalValue::new(codec::decode::<G::Reply>(bytes)?))
}

fn decode_item<G: StreamHandler<M>, M: Message>(bytes: &[u8]) -> Result<LocalReply, CodecError> {
    Ok(LocalValue::new(codec::decode::<G::Item>(bytes)?))
}

/// A registered grain type, as submitted by [`register_grain!`](crate::register_grain).
pub struct GrainTypeEntry {
    /// `G::TYPE_NAME`.
    pub type_name: &'static str,
    /// The Rust type, for logs.
    pub rust_name: &'static str,
    /// `G::IDLE_TIMEOUT`.
    pub idle_timeout: Option<Duration>,
    /// `G::REPLICATION`.
    pub replication: Replication,
    /// The messages `G` handles.
    pub messages: &'static [MessageVTable],
    /// Starts an activation task for one grain of this type.
    pub spawn: fn(ActivationArgs),
}

impl fmt::Debug for GrainTypeEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrainTypeEntry")
            .field("type_name", &self.type_name)
            .field("rust_name", &self.rust_name)
            .field("replication", &self.replication)
            .field(
                "messages",
                &self.messages.iter().map(|m| m.message).collect::<Vec<_>>(),
            )
            .finish()
    }
}

inventory::collect!(GrainTypeEntry);

/// The indexed view of every registered grain type.
#[derive(Debug)]
pub struct Registry {
    by_name: HashMap<&'static str, &'static GrainTypeEntry>,
    by_type: HashMap<(TypeId, TypeId), &'static MessageVTable>,
    problems: Vec<String>,
}

/// The registry of this process (built on first use).
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::build)
}

impl Registry {
    fn build() -> Self {
        let mut by_name = HashMap::new();
        let mut by_type = HashMap::new();
        let mut problems = Vec::new();
        for entry in inventory::iter::<GrainTypeEntry> {
            if let Some(prev) = by_name.insert(entry.type_name, entry) {
                problems.push(format!(
                    "grain type name `{}` is registered twice, by `{}` and by `{}`: give one of them \
                     another `const TYPE_NAME`",
                    entry.type_name, prev.rust_name, entry.rust_name
                ));
            }
            for (i, vt) in entry.messages.iter().enumerate() {
                if entry.messages[..i].iter().any(|o| o.message == vt.message) {
                    problems.push(format!(
                        "grain type `{}` has two messages named `{}` on the wire: pin one to \
                         another name with `as \"…\"` in its `register_grain!` line",
                        entry.type_name, vt.message
                    ));
                }
                by_type.insert(((vt.grain_type_id)(), (vt.message_type_id)()), vt);
            }
        }
        Self {
            by_name,
            by_type,
            problems,
        }
    }

    /// The entry registered under `type_name`.
    pub fn get(&self, type_name: &str) -> Option<&'static GrainTypeEntry> {
        self.by_name.get(type_name).copied()
    }

    /// Every registered grain type, sorted by name.
    pub fn grain_types(&self) -> Vec<&'static GrainTypeEntry> {
        let mut all: Vec<_> = self.by_name.values().copied().collect();
        all.sort_by_key(|e| e.type_name);
        all
    }

    /// Registration mistakes (duplicate names); a silo refuses to start if any.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// The vtable for sending `M` to `G`.
    pub fn vtable<G: Grain, M: 'static>(&self) -> Result<&'static MessageVTable, CallError> {
        if let Some(vt) = self.by_type.get(&(TypeId::of::<G>(), TypeId::of::<M>())) {
            return Ok(vt);
        }
        if self.get(G::TYPE_NAME).is_none() {
            return Err(CallError::UnknownGrainType(G::TYPE_NAME.to_owned()));
        }
        Err(CallError::UnknownMessage {
            grain_type: G::TYPE_NAME.to_owned(),
            message: std::any::type_name::<M>().to_owned(),
        })
    }
}

/// Proof that `register_grain!` registered the grain type `Self` with the message `M`:
/// the macro implements it for every message it lists (in `handles` or `streams`), and
/// `tell`/`ask`/`ask_stream` require it, so
/// sending a message that the registration forgot (or sending to a grain type that was
/// never registered) is a compile error that names the line to fix. Never implement it
/// by hand.
///
/// ```compile_fail
/// # use granary_runtime::prelude::*;
/// # #[derive(serde::Serialize, serde::Deserialize)] pub struct Ping;
/// pub struct Forgotten;
/// #[async_trait]
/// impl Grain for Forgotten {
///     const TYPE_NAME: &'static str = "doc.forgotten/v1";
///     type State = ();
///     async fn on_activate(_: &mut GrainContext<Self>) -> Result<Self, GrainError> { Ok(Forgotten) }
/// }
/// #[async_trait]
/// impl Handler<Ping> for Forgotten {
///     type Reply = ();
///     async fn handle(&mut self, _: Ping, _: &mut GrainContext<Self>) -> Result<(), GrainError> { Ok(()) }
/// }
/// // No `register_grain!(Forgotten, handles = [Ping]);`, so this does not compile:
/// fn call(grain: GrainRef<Forgotten>) { let _ = grain.ask(Ping); }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not registered with message `{M}`",
    label = "`{M}` is missing from `{Self}`'s `register_grain!` line",
    note = "add `{M}` to `granary_runtime::register_grain!({Self}, handles = [...])` next to the grain (or to its `streams = [...]` if `{Self}` answers it with a stream; or add that line if the grain has none)"
)]
pub trait RegisteredMessage<M>: Grain {}

/// Registers a grain type and the messages it handles.
///
/// ```ignore
/// granary_runtime::register_grain!(Counter, handles = [Add, Get]);
/// // pin a message's wire name independently of the Rust name:
/// granary_runtime::register_grain!(Cart, handles = [AddItem as "add-item", Checkout]);
/// // messages handled by a `ReadHandler` (they only read; replicas may serve them):
/// granary_runtime::register_grain!(Profile, handles = [Rename], reads = [Name, Avatar]);
/// // messages answered with a stream (`StreamHandler`, called with `ask_stream`):
/// granary_runtime::register_grain!(Report, handles = [Reset], streams = [Rows]);
/// ```
///
/// A message's wire name is the name written here (`"Add"`), scoped to the grain type;
/// renaming the Rust type changes it, unless pinned with `as "name"`.
///
/// `reads = [...]` lists messages whose handler is a [`ReadHandler`](crate::ReadHandler)
/// (`&self`, a shared context): on a [`Replication::ReadReplicas`] grain a replica may
/// serve them. Listing a message there whose handler may write does not compile, nor
/// does a [`Replication::StatelessWorker`] grain with state.
///
/// The macro also implements [`RegisteredMessage`] for each listed message, so a call
/// with an unlisted message does not compile, nor does a message listed twice. A
/// mistake the compiler cannot see (two grain types with one `TYPE_NAME`, two messages
/// pinned to one wire name) stops the silo at start-up with an error naming both.
#[macro_export]
macro_rules! register_grain {
    (
        $grain:ty,
        handles = [$($msg:ty $(as $name:literal)?),* $(,)?]
        $(, reads = [$($read:ty $(as $read_name:literal)?),* $(,)?])?
        $(, streams = [$($smsg:ty $(as $sname:literal)?),* $(,)?])?
        $(,)?
    ) => {
        const _: () = {
            const _: () = $crate::__private::check_policy(
                <$grain as $crate::Grain>::REPLICATION,
                ::core::mem::size_of::<<$grain as $crate::Grain>::State>(),
            );
            const HANDLERS: &[$crate::__private::HandlerEntry<$grain>] = &[
                $($crate::__private::HandlerEntry::new::<$msg>(
                    $crate::register_grain!(@name $msg $(, $name)?)
                ),)*
                $($($crate::__private::HandlerEntry::new_read::<$read>(
                    $crate::register_grain!(@name $read $(, $read_name)?)
                ),)*)?
                $($($crate::__private::HandlerEntry::stream::<$smsg>(
                    $crate::register_grain!(@name $smsg $(, $sname)?)
                ),)*)?
            ];
            fn spawn(args: $crate::__private::ActivationArgs) {
                $crate::__private::spawn_activation::<$grain>(args, HANDLERS)
            }
            $crate::__private::inventory::submit! {
                $crate::__private::GrainTypeEntry {
                    type_name: <$grain as $crate::Grain>::TYPE_NAME,
                    rust_name: stringify!($grain),
                    idle_timeout: <$grain as $crate::Grain>::IDLE_TIMEOUT,
                    replication: <$grain as $crate::Grain>::REPLICATION,
                    messages: &[
                        $($crate::__private::MessageVTable::new::<$grain, $msg>(
                            $crate::register_grain!(@name $msg $(, $name)?)
                        ),)*
                        $($($crate::__private::MessageVTable::new_read::<$grain, $read>(
                            $crate::register_grain!(@name $read $(, $read_name)?)
                        ),)*)?
                        $($($crate::__private::MessageVTable::stream::<$grain, $smsg>(
                            $crate::register_grain!(@name $smsg $(, $sname)?)
                        ),)*)?
                    ],
                    spawn,
                }
            }
            $(impl $crate::registry::RegisteredMessage<$msg> for $grain {})*
            $($(impl $crate::registry::RegisteredMessage<$read> for $grain {})*)?
            $($(impl $crate::registry::RegisteredMessage<$smsg> for $grain {})*)?
        };
    };
    (@name $msg:ty) => { stringify!($msg) };
    (@name $msg:ty, $name:literal) => { $name };
}

#[cfg(test)]
mod tests;
