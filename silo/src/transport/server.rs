//! The accepting side: [`serve`] and one task per connection.
//!
//! Each connection reads frames in its own task and spawns one request task per
//! request, so a slow grain does not hold up the requests behind it; responses go back
//! through the connection's writer in completion order, matched by id.
//!
//! A grain call asking for a streamed reply sends its items through a
//! [`StreamSender`] held to the caller's credit (`Frame::StreamCredit` adds to it). A
//! `Frame::Cancel` aborts the request's task: the call is dropped, and nothing more is
//! sent for it. While [`TransportConfig::max_in_flight`] requests run, the connection
//! reads no further frame (credit and cancels included), as for any request.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use granary_proto::frame::{Frame, FrameCodec, GrainCall, Request};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::{self, AbortHandle, JoinSet};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use granary_net::transport::{handshake, writer, StreamSender};

use super::{Failure, RequestHandler, RequestKind, TransportConfig};

/// Pause after a failed `accept` (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Serves connections on an already-bound listener until `shutdown` resolves.
///
/// - At most [`TransportConfig::max_connections`] connections are served at once. The
///   listener is not polled while all slots are taken, so further peers wait in the
///   kernel's listen backlog (their connect succeeds, their frames are read once a slot
///   frees) rather than being refused.
/// - Each connection pipelines: every request is handled in its own task (at most
///   [`TransportConfig::max_in_flight`] at once per connection) and answered as soon as
///   it is done, in any order.
/// - A frame that is oversize, of another version or undecodable is logged with
///   `tracing::warn` and closes *that* connection (its in-flight requests are
///   abandoned); other connections are not affected.
/// - On shutdown: stop accepting, stop reading new requests, give in-flight requests
///   [`TransportConfig::shutdown_grace`] to finish and be written back, abort the rest,
///   close every connection. Returns once every connection task has ended.
pub async fn serve(
    listener: TcpListener,
    handler: Arc<dyn RequestHandler>,
    config: TransportConfig,
    shutdown: impl Future<Output = ()>,
) {
    let config = Arc::new(config);
    let stop = CancellationToken::new();
    let connections = TaskTracker::new();
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let connection = Connection {
                    peer,
                    handler: handler.clone(),
                    config: config.clone(),
                    stop: stop.child_token(),
                };
                connections.spawn(connection.run(stream, permit));
            }
            Err(error) => {
                warn!(%error, "accept failed; pausing");
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                }
            }
        }
    }

    drop(listener);
    stop.cancel();
    connections.close();
    connections.wait().await;
}

/// One accepted connection and what it needs to serve it.
struct Connection {
    /// The remote end, passed to the handler.
    peer: SocketAddr,
    handler: Arc<dyn RequestHandler>,
    config: Arc<TransportConfig>,
    /// Cancelled when the server shuts down.
    stop: CancellationToken,
}

/// Why a connection's read loop ended.
enum End {
    /// Peer closed, or the server is shutting down: let in-flight requests finish.
    Drain,
    /// Protocol violation: drop everything now.
    Abort,
}

impl Connection {
    /// Serves the connection until the peer leaves, misbehaves, or the server stops.
    /// `_slot` returns the connection slot to the listener when this ends.
    async fn run(self, mut stream: TcpStream, _slot: OwnedSemaphorePermit) {
        let peer = self.peer;
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%peer, %error, "could not set TCP_NODELAY");
        }
        if let Some(key) = &self.config.cluster_key {
            let checked = tokio::select! {
                biased;
                () = self.stop.cancelled() => return,
                checked = tokio::time::timeout(
                    self.config.connect_timeout,
                    handshake::challenge(&mut stream, key),
                ) => checked,
            };
            match checked {
                Ok(Ok(())) => {}
                Ok(Err(error)) => {
                    warn!(%peer, %error, "refused an unauthenticated connection");
                    return;
                }
                Err(_) => {
                    warn!(%peer, "refused a connection that did not authenticate in time");
                    return;
                }
            }
        }
        let codec = FrameCodec::new(self.config.max_frame);
        let (read, write) = stream.into_split();
        let mut frames = FramedRead::new(read, codec);
        let (queue, outbound) = mpsc::channel(self.config.write_queue.max(1));
        let writer_stop = CancellationToken::new();
        let mut writer = tokio::spawn(writer::write_frames(write, outbound, writer_stop.clone()));
        let in_flight = Arc::new(Semaphore::new(self.config.max_in_flight.max(1)));
        let mut requests = JoinSet::new();
        let mut calls = Calls::default();

        let end = loop {
            while let Some(done) = requests.try_join_next_with_id() {
                calls.finished(match done {
                    Ok((task, ())) => task,
                    Err(error) => error.id(),
                });
            }
            let permit = tokio::select! {
                biased;
                () = self.stop.cancelled() => break End::Drain,
                permit = in_flight.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break End::Drain,
                },
            };
            let next = tokio::select! {
                biased;
                () = self.stop.cancelled() => break End::Drain,
                next = frames.next() => next,
            };
            let (id, request) = match next {
                Some(Ok(Frame::Request { id, body })) => (Some(id), body),
                Some(Ok(Frame::OneWay(body))) => (None, body),
                Some(Ok(Frame::Cancel { id })) => {
                    calls.cancel(id);
                    continue;
                }
                Some(Ok(Frame::StreamCredit { id, credit })) => {
                    calls.grant(id, credit);
                    continue;
                }
                Some(Ok(Frame::Response { id, .. } | Frame::StreamItem { id, .. })) => {
                    warn!(%peer, id, "closing connection: peer sent a response frame to a server");
                    break End::Abort;
                }
                Some(Err(error)) => {
                    warn!(%peer, %error, "closing connection: bad frame");
                    break End::Abort;
                }
                None => {
                    debug!(%peer, "peer closed the connection");
                    break End::Drain;
                }
            };
            let Some(id) = id else {
                requests.spawn(respond(
                    self.handler.clone(),
                    Incoming::Plain(request),
                    peer,
                    None,
                    queue.clone(),
                    codec,
                    permit,
                ));
                continue;
            };
            let (incoming, credit) = match request {
                Request::Grain(call) if call.stream.is_some() => {
                    let window = call.stream.unwrap_or(1);
                    let (sender, credit) = StreamSender::new(id, queue.clone(), codec, window);
                    (Incoming::Stream(call, sender), Some(credit))
                }
                request => (Incoming::Plain(request), None),
            };
            let task = requests.spawn(respond(
                self.handler.clone(),
                incoming,
                peer,
                Some(id),
                queue.clone(),
                codec,
                permit,
            ));
            calls.started(id, task, credit);
        };

        match end {
            End::Drain => {
                let grace = self.config.shutdown_grace;
                let drained = tokio::time::timeout(grace, async {
                    while requests.join_next().await.is_some() {}
                })
                .await;
                if drained.is_err() {
                    warn!(
                        "aborting {} request(s) from {peer} still running {} after shutdown began",
                        requests.len(),
                        humantime::format_duration(grace)
                    );
                }
            }
            End::Abort => {}
        }
        requests.shutdown().await;
        drop(queue);
        // The writer flushes what is queued and closes once every sender is gone; a
        // peer that does not read gets the grace period, then the writer is stopped.
        let written = match tokio::time::timeout(self.config.shutdown_grace, &mut writer).await {
            Ok(written) => written,
            Err(_) => {
                writer_stop.cancel();
                writer.await
            }
        };
        match written {
            Ok(Ok(())) => {}
            Ok(Err(error)) => debug!(%peer, %error, "write failed"),
            Err(error) => warn!(%peer, %error, "connection writer failed"),
        }
    }
}

/// Handles one request and queues its response (for a request with an id). Holds its
/// in-flight permit until the response is queued.
async fn respond(
    handler: Arc<dyn RequestHandler>,
    request: Incoming,
    peer: SocketAddr,
    id: Option<u64>,
    queue: mpsc::Sender<Vec<u8>>,
    codec: FrameCodec,
    _permit: OwnedSemaphorePermit,
) {
    let (kind, handled) = match request {
        Incoming::Plain(request) => (RequestKind::of(&request), handler.handle(request, peer)),
        Incoming::Stream(call, items) => {
            (RequestKind::Grain, handler.handle_stream(call, items, peer))
        }
    };
    let response = match AssertUnwindSafe(handled).catch_unwind().await {
        Ok(response) => response,
        Err(panic) => {
            let why = panic_message(panic.as_ref());
            warn!("a {} request from {peer} panicked: {why}", kind.name());
            kind.failure(&Failure::Panicked(why))
        }
    };
    let Some(id) = id else { return };
    let bytes = match codec.encode_to_vec(&Frame::Response { id, body: response }) {
        Ok(bytes) => bytes,
        Err(error) => {
            warn!("the answer to a {} request from {peer} could not be encoded ({error}); answering with an error", kind.name());
            let failure = kind.failure(&Failure::Unencodable(error.to_string()));
            match codec.encode_to_vec(&Frame::Response { id, body: failure }) {
                Ok(bytes) => bytes,
                Err(error) => {
                    warn!(%peer, %error, "error response could not be encoded either");
                    return;
                }
            }
        }
    };
    // Fails only when the connection is closing; the caller then sees it break.
    let _ = queue.send(bytes).await;
}

/// A request as the connection hands it to its task.
enum Incoming {
    /// Answered with one response.
    Plain(Request),
    /// A grain call answered with a stream: its items go through the sender.
    Stream(GrainCall, StreamSender),
}

/// The requests of one connection that are still running, by request id, so that a
/// `Cancel` frame can stop one and a `StreamCredit` frame reach its stream. Only the
/// connection's read loop touches it.
#[derive(Default)]
struct Calls {
    by_id: HashMap<u64, Running>,
    /// Request ids by task, to forget a request once its task ends.
    by_task: HashMap<task::Id, u64>,
}

/// A running request.
struct Running {
    /// Aborting the task drops the call: its reply channel closes, so a grain call that
    /// has not started is skipped and a running one is told it was cancelled.
    task: AbortHandle,
    /// The credit of a streamed reply.
    credit: Option<Arc<Semaphore>>,
}

impl Calls {
    fn started(&mut self, id: u64, task: AbortHandle, credit: Option<Arc<Semaphore>>) {
        self.by_task.insert(task.id(), id);
        self.by_id.insert(id, Running { task, credit });
    }

    fn finished(&mut self, task: task::Id) {
        if let Some(id) = self.by_task.remove(&task) {
            self.by_id.remove(&id);
        }
    }

    /// Stops request `id`; nothing more is sent for it (unless its response was queued
    /// already). Unknown ids (finished, or never seen) are ignored.
    fn cancel(&mut self, id: u64) {
        if let Some(running) = self.by_id.remove(&id) {
            self.by_task.remove(&running.task.id());
            running.task.abort();
        }
    }

    fn grant(&self, id: u64, credit: u32) {
        if let Some(stream) = self.by_id.get(&id).and_then(|r| r.credit.as_ref()) {
            StreamSender::grant(stream, credit);
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&'static str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}
