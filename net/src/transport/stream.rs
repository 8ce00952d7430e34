//! Both ends of a streamed reply on a connection, held to the caller's credit.
//!
//! - [`RemoteStream`] (calling side, from [`Peers::call_stream`](super::Peers::call_stream)):
//!   the items as they arrive, then the closing response. It grants the server more
//!   credit (`Frame::StreamCredit`) each time its reader has taken half a window, and
//!   cancels the call (`Frame::Cancel`) when dropped before the end.
//! - [`StreamSender`] (serving side): sends one `Frame::StreamItem` per credit,
//!   waiting while it has none.
//!
//! So at most one window of items is in flight or buffered per stream and connection,
//! whatever the consumer does; a consumer that stops reading stops the producer.

use std::fmt;
use std::sync::Arc;

use granary_proto::frame::{Frame, FrameCodec, Response};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{timeout_at, Instant};

use super::peers::Conn;
use super::TransportError;

/// The largest credit a server holds for one stream; credit beyond it is ignored.
const MAX_CREDIT: usize = 1 << 20;

/// What a [`RemoteStream`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// One item, encoded.
    Item(Vec<u8>),
    /// The closing response (`Response::Grain(Ok(empty))`: finished; an error; or
    /// `Moved`, before any item, when the silo does not host the grain).
    End(Response),
}

/// The calling side of a streamed reply.
pub struct RemoteStream {
    conn: Arc<Conn>,
    /// The request's id on the connection.
    id: u64,
    events: mpsc::Receiver<StreamEvent>,
    /// The credit the call started with; half of it is granted back at a time.
    window: u32,
    /// Items taken since credit was last granted.
    taken: u32,
    deadline: Instant,
    /// The end was read (or the stream failed): nothing to cancel on drop.
    ended: bool,
}

impl RemoteStream {
    pub(super) fn new(
        conn: Arc<Conn>,
        id: u64,
        events: mpsc::Receiver<StreamEvent>,
        window: u32,
        deadline: Instant,
    ) -> Self {
        Self {
            conn,
            id,
            events,
            window,
            taken: 0,
            deadline,
            ended: false,
        }
    }

    /// The next item or the end. Fails with [`TransportError::Lost`] when the connection
    /// breaks, [`TransportError::Timeout`] at the deadline (the call is then cancelled on
    /// the server), and [`TransportError::Closed`] after the end was read.
    pub async fn next(&mut self) -> Result<StreamEvent, TransportError> {
        if self.ended {
            return Err(TransportError::Closed);
        }
        let event = match timeout_at(self.deadline, self.events.recv()).await {
            Ok(Some(event)) => event,
            Ok(None) => {
                self.ended = true;
                let why = self.conn.broken().unwrap_or_else(|| {
                    format!(
                        "{} sent more stream items than it had credit for",
                        self.conn.addr()
                    )
                });
                return Err(TransportError::Lost(why));
            }
            Err(_) => {
                self.cancel();
                return Err(TransportError::Timeout);
            }
        };
        match event {
            StreamEvent::Item(_) => {
                self.taken += 1;
                if self.taken >= (self.window / 2).max(1) {
                    let credit = std::mem::take(&mut self.taken);
                    self.conn
                        .control_wait(Frame::StreamCredit {
                            id: self.id,
                            credit,
                        })
                        .await;
                }
            }
            StreamEvent::End(_) => self.ended = true,
        }
        Ok(event)
    }

    /// Cancels the call on the server (what dropping the stream does).
    pub fn cancel(&mut self) {
        if !std::mem::replace(&mut self.ended, true) {
            self.conn.forget(self.id);
            self.conn.control(Frame::Cancel { id: self.id });
        }
    }
}

impl Drop for RemoteStream {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl fmt::Debug for RemoteStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteStream")
            .field("addr", &self.conn.addr())
            .field("id", &self.id)
            .field("window", &self.window)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

/// The serving side of a streamed reply: sends items while it holds credit.
pub struct StreamSender {
    /// The request's id on the connection.
    id: u64,
    /// The connection's outbound queue.
    queue: mpsc::Sender<Vec<u8>>,
    codec: FrameCodec,
    /// One permit per item the caller can take; the connection adds permits for every
    /// `Frame::StreamCredit` (see [`StreamSender::grant`]).
    credit: Arc<Semaphore>,
}

impl StreamSender {
    /// A sender for request `id` on the connection whose writer reads `queue`, starting
    /// with `window` credit. The returned semaphore is the stream's credit, for the
    /// connection to [`grant`](Self::grant) more.
    pub fn new(
        id: u64,
        queue: mpsc::Sender<Vec<u8>>,
        codec: FrameCodec,
        window: u32,
    ) -> (Self, Arc<Semaphore>) {
        let credit = Arc::new(Semaphore::new((window.max(1) as usize).min(MAX_CREDIT)));
        (
            Self {
                id,
                queue,
                codec,
                credit: credit.clone(),
            },
            credit,
        )
    }

    /// Adds `credit` to a stream's credit (from a `Frame::StreamCredit`), up to a cap.
    pub fn grant(credit: &Semaphore, more: u32) {
        let room = MAX_CREDIT.saturating_sub(credit.available_permits());
        credit.add_permits((more as usize).min(room));
    }

    /// Sends one encoded item, waiting for credit. Fails with
    /// [`TransportError::TooLarge`] for an item that does not fit a frame, and
    /// [`TransportError::Closed`] when the connection is closing.
    pub async fn send(&mut self, item: Vec<u8>) -> Result<(), TransportError> {
        let permit = self
            .credit
            .acquire()
            .await
            .map_err(|_| TransportError::Closed)?;
        permit.forget();
        let bytes = self
            .codec
            .encode_to_vec(&Frame::StreamItem { id: self.id, item })
            .map_err(TransportError::from_frame)?;
        self.queue
            .send(bytes)
            .await
            .map_err(|_| TransportError::Closed)
    }
}

impl fmt::Debug for StreamSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamSender")
            .field("id", &self.id)
            .field("credit", &self.credit.available_permits())
            .finish_non_exhaustive()
    }
}
