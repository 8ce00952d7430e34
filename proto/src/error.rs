//! The serializable error a grain call can end with, locally or across the wire.

use serde::{Deserialize, Serialize};

/// Why a `tell` or `ask` failed.
///
/// Each variant documents its *delivery semantics*: whether the target grain may have
/// processed the message. Retrying is always safe for "not delivered" variants; for the
/// others the caller must make the operation idempotent or check the grain's state.
///
/// # Cancellation
/// A caller that gives up on a call (drops the `ask` future or the `ask_stream`
/// stream, calls the stream's `cancel`, or reaches its deadline: [`CallError::Timeout`])
/// cancels it on the grain, on whichever silo it runs:
/// - a message whose turn has not started is never handled;
/// - a running handler is told (`ctx.cancelled()` resolves, `ctx.is_cancelled()` is
///   true; a streaming handler's next `replies.send` fails) and its reply is dropped; it
///   is not stopped by force: what it does until it returns still happens;
/// - every `ask`/`ask_stream` that handler made and that is still waiting ends at once
///   with [`CallError::Cancelled`] and is cancelled the same way, so the cancel follows
///   the call chain;
/// - calls a handler makes never wait longer than its own caller: their deadline is the
///   earlier of their own timeout and the caller's.
///
/// A cancel travels as a frame on the caller's connection; if that connection is lost,
/// the serving silo stops waiting at the call's deadline instead. A `tell` cannot be
/// cancelled.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum CallError {
    /// No reply arrived before the call's deadline. The call is then cancelled (see
    /// "Cancellation" above): if the message is still queued it will not run.
    ///
    /// Delivery: unknown. The message may still be running, or done.
    #[error("the call timed out; it is not known whether the grain processed it")]
    Timeout,
    /// No grain type with this name is registered on the silo that received the call.
    ///
    /// Delivery: not delivered.
    #[error(
        "grain type `{0}` is not registered on the silo: add `register_grain!(YourGrain, handles = [...])` \
         next to the grain, and make the silo binary link that crate (call one of its functions from `main`)"
    )]
    UnknownGrainType(String),
    /// The grain type does not handle a message with this name (it is missing from its
    /// `register_grain!` line, or the caller runs a different version).
    ///
    /// Delivery: not delivered.
    #[error(
        "grain type `{grain_type}` does not handle message `{message}`: add it to the grain's \
         `register_grain!(…, handles = [...])` line (or caller and silo run different versions)"
    )]
    UnknownMessage {
        /// The grain type's wire name.
        grain_type: String,
        /// The message's wire name.
        message: String,
    },
    /// The handler ran and returned an error (its `Display` text).
    ///
    /// Delivery: processed; the grain stays active.
    #[error("handler error: {0}")]
    Handler(String),
    /// The handler panicked. The grain was deactivated without saving its in-memory
    /// state; its next message activates it again from storage.
    ///
    /// Delivery: processed, possibly in part.
    #[error("the grain panicked: {0}")]
    Panicked(String),
    /// The grain's mailbox stayed full until the call's deadline.
    ///
    /// Delivery: not delivered; safe to retry later.
    #[error("the grain's mailbox is full")]
    MailboxFull,
    /// Reading or writing grain state failed (including an etag conflict, after which
    /// the grain is deactivated rather than overwriting newer state).
    ///
    /// Delivery: processed up to the failed storage operation.
    #[error("storage error: {0}")]
    Storage(String),
    /// The message or reply could not be encoded or decoded.
    ///
    /// Delivery: not processed if the message failed to decode; if only the reply
    /// failed, the handler ran.
    #[error("codec error: {0}")]
    Codec(String),
    /// The silo that should host the grain could not be reached.
    ///
    /// Delivery: not delivered.
    #[error("silo unreachable: {0}")]
    Unreachable(String),
    /// The call was accepted, but the activation or connection carrying it went away
    /// before it replied (a silo died, or a connection broke).
    ///
    /// Delivery: unknown, as with [`CallError::Timeout`], but reported without waiting.
    #[error("the call was lost in flight: {0}")]
    Lost(String),
    /// The silo is shutting down and accepts no new work.
    ///
    /// Delivery: not delivered; retry against another silo.
    #[error("the silo is shutting down")]
    ShuttingDown,
    /// The grain could not be activated (its `on_activate` failed or its stored state
    /// could not be read). Queued messages fail with this error too.
    ///
    /// Delivery: not delivered.
    #[error("activation failed: {0}")]
    ActivationFailed(String),
    /// The call was cancelled: its caller gave up on it (dropped the call, or cancelled
    /// it), or the call it was made from was cancelled in turn (cancellation follows the
    /// call chain). A caller sees this error only for a call cancelled on its behalf,
    /// such as a grain call made inside a handler whose own caller gave up.
    ///
    /// Delivery: unknown, as with [`CallError::Timeout`]. If the handler had not started,
    /// it never runs; if it was running, it was told (`ctx.cancelled()`) and every call it
    /// made was cancelled too, but what it did before stopping stays done.
    #[error("the call was cancelled")]
    Cancelled,
}

impl CallError {
    /// Every variant's [`CallError::kind`], in declaration order (for metrics labels).
    pub const KINDS: [&'static str; 13] = [
        "timeout",
        "unknown_grain_type",
        "unknown_message",
        "handler",
        "panicked",
        "mailbox_full",
        "storage",
        "codec",
        "unreachable",
        "lost",
        "shutting_down",
        "activation_failed",
        "cancelled",
    ];

    /// The variant's name in snake case, without its details: a bounded label.
    pub fn kind(&self) -> &'static str {
        let index = match self {
            CallError::Timeout => 0,
            CallError::UnknownGrainType(_) => 1,
            CallError::UnknownMessage { .. } => 2,
            CallError::Handler(_) => 3,
            CallError::Panicked(_) => 4,
            CallError::MailboxFull => 5,
            CallError::Storage(_) => 6,
            CallError::Codec(_) => 7,
            CallError::Unreachable(_) => 8,
            CallError::Lost(_) => 9,
            CallError::ShuttingDown => 10,
            CallError::ActivationFailed(_) => 11,
            CallError::Cancelled => 12,
        };
        Self::KINDS[index]
    }

    /// True when the message certainly did not reach a handler, so a retry cannot
    /// apply it twice.
    pub fn is_not_delivered(&self) -> bool {
        matches!(
            self,
            CallError::UnknownGrainType(_)
                | CallError::UnknownMessage { .. }
                | CallError::MailboxFull
                | CallError::Unreachable(_)
                | CallError::ShuttingDown
                | CallError::ActivationFailed(_)
        )
    }
}
