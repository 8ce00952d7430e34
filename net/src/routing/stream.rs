//! Streamed replies through the router: carrying a stream's items from the silo that
//! runs the handler to the caller.
//!
//! - Calling side ([`call`]): the grain call goes out with `GrainCall::stream` set to
//!   the caller's buffer size; the first event decides what the call was. An end before
//!   any item is an ordinary answer (an error, `Moved`, or an empty stream) and is
//!   handled by the router like any reply; once an item arrived, [`pump`] moves the
//!   items into the caller's sink until the end, inside the caller's `deliver` future,
//!   so no task is spawned and dropping the caller's stream drops the remote stream
//!   (which cancels the call on the serving silo).
//! - Serving side ([`ClusterRouter::inbound_stream`]): the call is delivered like any
//!   other, with a bounded item channel as its reply; each item leaves through the
//!   connection's [`StreamSender`], which waits for the caller's credit.
//!
//! Every hop holds at most one window of items, so memory stays bounded whatever the
//! consumer does.

use granary_proto::frame::{GrainCall, Request, Response};
use granary_proto::CallError;
use granary_runtime::envelope::{
    Body, CopyHint, Envelope, ItemForm, ReplyTo, StreamItem, StreamReply,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{ClusterRouter, DecodeReply};
use crate::transport::{Peers, RemoteStream, StreamEvent, StreamSender, TransportError};

/// How a streamed call to another silo went.
pub(super) enum Outcome {
    /// An answer before any item: handled as the answer to a plain call (the reply is
    /// handed back untouched).
    Answer(Result<Response, TransportError>, ReplyTo),
    /// Items arrived: the stream was carried to its end (or until the consumer left).
    Carried,
}

/// The window of a streamed reply: how many items its consumer buffers.
pub(super) fn window(reply: &ReplyTo) -> Option<u32> {
    match reply {
        ReplyTo::Stream(stream) => Some(
            stream
                .sink()
                .map_or(1, |sink| sink.items.max_capacity())
                .try_into()
                .unwrap_or(u32::MAX),
        ),
        _ => None,
    }
}

/// Sends a streamed grain call to `addr` and carries its items into `reply`.
pub(super) async fn call(
    peers: &Peers,
    addr: std::net::SocketAddr,
    call: GrainCall,
    reply: ReplyTo,
    decode: Option<DecodeReply>,
    deadline: Instant,
) -> Outcome {
    let window = call.stream.unwrap_or(1);
    let mut remote = match peers
        .call_stream(addr, Request::Grain(call), window, deadline)
        .await
    {
        Ok(remote) => remote,
        Err(e) => return Outcome::Answer(Err(e), reply),
    };
    match remote.next().await {
        Ok(StreamEvent::End(response)) => Outcome::Answer(Ok(response), reply),
        Err(e) => Outcome::Answer(Err(e), reply),
        Ok(StreamEvent::Item(first)) => {
            pump(remote, first, reply, decode).await;
            Outcome::Carried
        }
    }
}

/// Moves the items of `remote` (starting with `first`) into the caller's sink, then
/// sends the end. Returns early when the consumer is gone; dropping `remote` then
/// cancels the call on the serving silo.
async fn pump(
    mut remote: RemoteStream,
    first: Vec<u8>,
    reply: ReplyTo,
    decode: Option<DecodeReply>,
) {
    let ReplyTo::Stream(stream) = reply else {
        unreachable!("only a streamed reply is pumped")
    };
    let (sink, end) = stream.into_parts();
    let Some(sink) = sink else {
        let _ = end.send(Err(CallError::Codec(
            "a stream's items were taken twice".into(),
        )));
        return;
    };
    let mut next: Result<StreamEvent, TransportError> = Ok(StreamEvent::Item(first));
    loop {
        let bytes = match next {
            Ok(StreamEvent::Item(bytes)) => bytes,
            Ok(StreamEvent::End(response)) => {
                drop(sink);
                let result = match response {
                    Response::Grain(result) => result.map(drop),
                    other => Err(CallError::Codec(format!(
                        "unexpected end of a stream: {other:?}"
                    ))),
                };
                let _ = end.send(result);
                return;
            }
            Err(e) => {
                drop(sink);
                let _ = end.send(Err(e.into()));
                return;
            }
        };
        let item = match (sink.form, decode) {
            (ItemForm::Encoded, _) => StreamItem::Encoded(bytes),
            (ItemForm::Local, Some(decode)) => match decode(&bytes) {
                Ok(value) => StreamItem::Local(value),
                Err(e) => {
                    drop(sink);
                    let _ = end.send(Err(CallError::Codec(e.to_string())));
                    return;
                }
            },
            (ItemForm::Local, None) => {
                drop(sink);
                let _ = end.send(Err(CallError::Codec(
                    "no decoder for a local stream".into(),
                )));
                return;
            }
        };
        if sink.items.send(item).await.is_err() {
            // The consumer is gone: dropping `remote` cancels the call there.
            return;
        }
        next = remote.next().await;
    }
}

impl ClusterRouter {
    /// Handles a streamed grain call that arrived over TCP at this silo: delivers it
    /// here if this silo hosts or owns the grain (else answers `Moved`), then sends each
    /// item the handler produces through `out` (held to the caller's credit) and returns
    /// the closing response: `Grain(Ok(empty))` when the handler finished, or its error.
    pub async fn inbound_stream(&self, call: GrainCall, mut out: StreamSender) -> Response {
        let deadline = super::inbound_deadline(&call);
        let window = call.stream.unwrap_or(1).clamp(1, MAX_SERVING_BUFFER);
        let (items_tx, mut items) = mpsc::channel(window as usize);
        let (end_tx, end) = oneshot::channel();
        let target = call.target.clone();
        let envelope = Envelope {
            target: call.target,
            body: Body::Encoded {
                name: call.message,
                bytes: call.payload,
            },
            reply: ReplyTo::Stream(StreamReply::new(items_tx, ItemForm::Encoded, end_tx)),
            hops: call.hops,
            trace: call.trace,
            copy: CopyHint::default(),
            deadline: Some(deadline),
        };
        if let Err(refused) = self.accept(envelope, &target, false, deadline).await {
            return match refused {
                super::Refused::Moved(owner) => Response::Moved(owner),
                super::Refused::Failed(e) => Response::Grain(Err(e)),
            };
        }
        loop {
            let item = tokio::select! {
                item = items.recv() => item,
                () = tokio::time::sleep_until(deadline) => {
                    return Response::Grain(Err(CallError::Timeout));
                }
            };
            let bytes = match item {
                Some(StreamItem::Encoded(bytes)) => bytes,
                Some(StreamItem::Local(_)) => {
                    return Response::Grain(Err(CallError::Codec(
                        "a stream for the network produced a typed item".into(),
                    )))
                }
                None => break,
            };
            if let Err(e) = out.send(bytes).await {
                // Too large for a frame, or the connection is closing. Dropping `items`
                // makes the handler's next send fail.
                return Response::Grain(Err(e.into()));
            }
        }
        match tokio::time::timeout_at(deadline, end).await {
            Err(_) => Response::Grain(Err(CallError::Timeout)),
            Ok(Err(_)) => Response::Grain(Err(CallError::Lost(
                "the activation went away before the stream ended".into(),
            ))),
            Ok(Ok(result)) => Response::Grain(result.map(|()| Vec::new())),
        }
    }
}

/// The most items a serving silo buffers per stream before the connection's credit
/// applies (a caller asks for at most `MAX_STREAM_BUFFER` anyway).
const MAX_SERVING_BUFFER: u32 = 4096;
