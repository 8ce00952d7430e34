//! The calling side: [`Peers`], a pool of one multiplexed connection per address.
//!
//! A call registers a waiter under a fresh request id, queues its encoded frame to the
//! connection's writer and waits for the reader to route the matching response back.
//! When a connection breaks, its reader fails every waiter at once ([`TransportError::Lost`]),
//! and the next call to that address connects again.
//!
//! Reconnect policy: only one connect per address runs at a time (an async lock per
//! address; concurrent callers wait for it and share the result). After a failed
//! connect the address is in backoff (exponential with jitter, see
//! [`TransportConfig::backoff_initial`]); calls made during the backoff **fail fast**
//! with [`TransportError::Unreachable`] instead of waiting, so callers such as
//! forwarding or the directory can react (pick another silo, report the error) at once.
//! The first call after the backoff tries again; a success resets it.
//!
//! A grain call given up before its response (the caller dropped it, or its deadline
//! passed) sends `Frame::Cancel`, so the server stops working on it. Streamed replies
//! ([`Peers::call_stream`]) are read through a [`RemoteStream`](super::RemoteStream).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::stream::{RemoteStream, StreamEvent};
use futures::StreamExt;
use granary_proto::frame::{Frame, FrameCodec, FrameError, Request, Response};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{timeout_at, Instant};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use super::{handshake, writer, TransportConfig, TransportError};

/// Locks a std mutex, ignoring poisoning (every critical section here leaves the data
/// consistent, and none awaits).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connect failure in a few plain words: `connection refused`, `wrong cluster key`…
fn describe(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match error.kind() {
        ErrorKind::ConnectionRefused => "connection refused".into(),
        ErrorKind::ConnectionReset => "connection reset".into(),
        ErrorKind::HostUnreachable => "host unreachable".into(),
        ErrorKind::NetworkUnreachable => "network unreachable".into(),
        ErrorKind::AddrNotAvailable => "address not available".into(),
        ErrorKind::TimedOut => "connect timed out".into(),
        // The handshake's own error, already plain (e.g. the wrong cluster key).
        ErrorKind::PermissionDenied => error
            .get_ref()
            .map_or_else(|| error.to_string(), ToString::to_string),
        _ => {
            let text = error.to_string();
            match text.find(" (os error") {
                Some(i) => text[..i].to_lowercase(),
                None => text,
            }
        }
    }
}

/// Client side of the transport: one multiplexed connection per remote address, reused
/// by every call to it. Cheap to clone (an `Arc` inside); clones share connections.
///
/// Dropping the last clone stops the connection tasks; [`Peers::close`] does the same
/// and also waits for them.
#[derive(Clone)]
pub struct Peers {
    inner: Arc<Inner>,
}

struct Inner {
    config: TransportConfig,
    codec: FrameCodec,
    /// One slot per address ever called; a slot outlives its connections so its backoff
    /// state survives a break.
    slots: Mutex<HashMap<SocketAddr, Arc<Slot>>>,
    /// Owns every connection's reader and writer task.
    tasks: TaskTracker,
    /// Cancelled by [`Peers::close`] (or when the last `Peers` is dropped); every
    /// connection's stop token is a child of it.
    closed: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

/// Per-address state.
struct Slot {
    /// The current connection, if any; replaced after it breaks.
    current: Mutex<Option<Arc<Conn>>>,
    /// Held while connecting, so one connect runs per address; guards the backoff.
    connect: tokio::sync::Mutex<Backoff>,
}

impl Slot {
    /// The current connection if it is still usable.
    fn live(&self) -> Option<Arc<Conn>> {
        lock(&self.current)
            .as_ref()
            .filter(|conn| !conn.stop.is_cancelled())
            .cloned()
    }

    /// Clears the current connection if it is `conn`.
    fn forget(&self, conn: &Arc<Conn>) {
        let mut current = lock(&self.current);
        if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *current = None;
        }
    }
}

/// Connect failures to one address.
#[derive(Debug, Default)]
struct Backoff {
    /// Consecutive failed connects.
    failures: u32,
    /// No new attempt before this instant.
    retry_at: Option<Instant>,
    /// The last connect error, repeated to callers during the backoff.
    last_error: String,
}

/// One established connection.
pub(super) struct Conn {
    addr: SocketAddr,
    codec: FrameCodec,
    /// Encoded frames for the writer task.
    queue: mpsc::Sender<Vec<u8>>,
    /// Next request id on this connection.
    next_id: AtomicU64,
    pending: Mutex<Pending>,
    /// Cancelled when the connection is broken or dropped; stops both tasks.
    stop: CancellationToken,
    /// The pool's tasks: a control frame that finds the queue full is sent from one.
    tasks: TaskTracker,
}

/// Calls waiting for a response on one connection.
#[derive(Default)]
struct Pending {
    waiting: HashMap<u64, Waiter>,
    /// Set once the connection is broken; no call registers after that.
    broken: Option<String>,
}

/// A call waiting on a connection.
enum Waiter {
    /// For its one response.
    Call(oneshot::Sender<Response>),
    /// For its stream's items and closing response. The channel holds one window of
    /// items plus the end, which the server's credit never lets it exceed.
    Stream(mpsc::Sender<StreamEvent>),
}

impl Conn {
    /// Registers a waiter for `id`, unless the connection is already broken.
    fn register(&self, id: u64) -> Result<oneshot::Receiver<Response>, String> {
        let (tx, rx) = oneshot::channel();
        self.register_waiter(id, Waiter::Call(tx))?;
        Ok(rx)
    }

    fn register_waiter(&self, id: u64, waiter: Waiter) -> Result<(), String> {
        let mut pending = lock(&self.pending);
        if let Some(why) = &pending.broken {
            return Err(why.clone());
        }
        pending.waiting.insert(id, waiter);
        Ok(())
    }

    /// Hands a response to its waiter (which may have given up already).
    fn complete(&self, id: u64, response: Response) {
        let waiter = lock(&self.pending).waiting.remove(&id);
        match waiter {
            Some(Waiter::Call(waiter)) => {
                let _ = waiter.send(response);
            }
            Some(Waiter::Stream(events)) => {
                if events.try_send(StreamEvent::End(response)).is_err() {
                    debug!(addr = %self.addr, id, "the end of a stream nobody reads");
                }
            }
            None => debug!(addr = %self.addr, id, "response for a call that gave up"),
        }
    }

    /// Hands a stream item to its stream. An item beyond the credit the caller gave is
    /// a protocol violation: the stream fails (its reader sees it end without an end)
    /// and the server is told to stop.
    fn item(&self, id: u64, item: Vec<u8>) {
        let mut pending = lock(&self.pending);
        let Some(Waiter::Stream(events)) = pending.waiting.get(&id) else {
            // Cancelled meanwhile, or not a stream.
            return;
        };
        match events.try_send(StreamEvent::Item(item)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                pending.waiting.remove(&id);
                drop(pending);
                warn!(addr = %self.addr, id, "the server sent stream items beyond its credit; cancelling the stream");
                self.control(Frame::Cancel { id });
            }
        }
    }

    pub(super) fn forget(&self, id: u64) {
        lock(&self.pending).waiting.remove(&id);
    }

    /// Why the connection broke (for a stream that lost its waiter).
    pub(super) fn broken(&self) -> Option<String> {
        lock(&self.pending).broken.clone()
    }

    /// The connection's address.
    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues a small control frame (`Cancel`, `StreamCredit`) without waiting: from a
    /// task of the pool if the queue is full. Nothing is sent on a closed connection
    /// (the server then drops the call's work anyway).
    pub(super) fn control(&self, frame: Frame) {
        let Ok(bytes) = self.codec.encode_to_vec(&frame) else {
            return;
        };
        match self.queue.try_send(bytes) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(bytes)) => {
                let queue = self.queue.clone();
                let stop = self.stop.clone();
                self.tasks.spawn(async move {
                    tokio::select! {
                        biased;
                        () = stop.cancelled() => {}
                        _ = queue.send(bytes) => {}
                    }
                });
            }
        }
    }

    /// Queues a control frame, waiting for room (a stream's credit: the consumer that
    /// grants it may wait).
    pub(super) async fn control_wait(&self, frame: Frame) {
        if let Ok(bytes) = self.codec.encode_to_vec(&frame) {
            let _ = self.queue.send(bytes).await;
        }
    }

    /// Marks the connection broken (the first reason wins), fails every waiter at once
    /// and stops the connection's tasks.
    fn break_with(&self, why: String) {
        let waiting = {
            let mut pending = lock(&self.pending);
            if pending.broken.is_none() {
                pending.broken = Some(why);
            }
            std::mem::take(&mut pending.waiting)
        };
        self.stop.cancel();
        // Dropping the senders wakes every waiter with `Lost`.
        drop(waiting);
    }

    fn broken_reason(&self) -> String {
        lock(&self.pending)
            .broken
            .clone()
            .unwrap_or_else(|| "connection closed".to_owned())
    }
}

/// Removes a call's waiter if the call ends without its response (deadline, or the
/// caller dropped the future), and tells the server to stop working on a grain call.
struct WaiterGuard<'a> {
    conn: &'a Conn,
    id: u64,
    answered: bool,
    /// A grain call: cancelled on the server when given up. (Directory, storage and
    /// replication requests always run to completion there.)
    cancellable: bool,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.conn.forget(self.id);
            if self.cancellable {
                self.conn.control(Frame::Cancel { id: self.id });
            }
        }
    }
}

impl Peers {
    /// An empty pool; connections are made on first use.
    pub fn new(config: TransportConfig) -> Self {
        let codec = FrameCodec::new(config.max_frame);
        Self {
            inner: Arc::new(Inner {
                config,
                codec,
                slots: Mutex::new(HashMap::new()),
                tasks: TaskTracker::new(),
                closed: CancellationToken::new(),
            }),
        }
    }

    /// The pool's configuration.
    pub fn config(&self) -> &TransportConfig {
        &self.inner.config
    }

    /// Sends a request and waits for its response until `deadline`. Request ids come
    /// from a per-connection counter.
    ///
    /// Errors:
    /// - [`TransportError::Unreachable`]: no connection (connect failed or timed out,
    ///   the address is in backoff, or the deadline passed while connecting); not sent.
    /// - [`TransportError::Lost`]: the connection broke with the request in flight;
    ///   reported as soon as the break is seen.
    /// - [`TransportError::Timeout`]: no response by `deadline` (or the connection's
    ///   queue stayed full until then).
    /// - [`TransportError::TooLarge`] / [`TransportError::Encode`]: not sent.
    /// - [`TransportError::Closed`]: [`Peers::close`] was called.
    pub async fn call(
        &self,
        addr: SocketAddr,
        request: Request,
        deadline: Instant,
    ) -> Result<Response, TransportError> {
        let (conn, permit) = self.reserve(addr, deadline).await?;
        let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
        let cancellable = matches!(request, Request::Grain(_));
        let bytes = self
            .inner
            .codec
            .encode_to_vec(&Frame::Request { id, body: request })
            .map_err(TransportError::from_frame)?;
        let response = conn.register(id).map_err(|why| {
            TransportError::Unreachable(format!(
                "connection to {addr} closed before sending: {why}"
            ))
        })?;
        let mut guard = WaiterGuard {
            conn: &conn,
            id,
            answered: false,
            cancellable,
        };
        permit.send(bytes);
        match timeout_at(deadline, response).await {
            Ok(Ok(response)) => {
                guard.answered = true;
                Ok(response)
            }
            Ok(Err(_)) => {
                guard.answered = true;
                Err(TransportError::Lost(conn.broken_reason()))
            }
            Err(_) => Err(TransportError::Timeout),
        }
    }

    /// Sends a grain call whose reply is a stream (its `GrainCall::stream` says the
    /// initial credit, `window` items) and returns the stream to read it from, once the
    /// request is queued. Errors as for [`Peers::call`]; the stream reports what happens
    /// after (items, its end, a lost connection, the deadline). Dropping it before its
    /// end cancels the call on the server.
    pub async fn call_stream(
        &self,
        addr: SocketAddr,
        request: Request,
        window: u32,
        deadline: Instant,
    ) -> Result<RemoteStream, TransportError> {
        let (conn, permit) = self.reserve(addr, deadline).await?;
        let id = conn.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = self
            .inner
            .codec
            .encode_to_vec(&Frame::Request { id, body: request })
            .map_err(TransportError::from_frame)?;
        let window = window.max(1);
        let (events_tx, events) = mpsc::channel(window as usize + 1);
        conn.register_waiter(id, Waiter::Stream(events_tx))
            .map_err(|why| {
                TransportError::Unreachable(format!(
                    "connection to {addr} closed before sending: {why}"
                ))
            })?;
        let stream = RemoteStream::new(conn, id, events, window, deadline);
        permit.send(bytes);
        Ok(stream)
    }

    /// Fire-and-forget (`Frame::OneWay`); `Ok` once queued on the connection. Connecting
    /// and waiting for queue space are bounded by [`TransportConfig::connect_timeout`].
    /// Errors as for [`Peers::call`]; once queued, a loss goes unreported.
    pub async fn send_oneway(
        &self,
        addr: SocketAddr,
        request: Request,
    ) -> Result<(), TransportError> {
        let deadline = Instant::now() + self.inner.config.connect_timeout;
        let (_conn, permit) = self.reserve(addr, deadline).await?;
        let bytes = self
            .inner
            .codec
            .encode_to_vec(&Frame::OneWay(request))
            .map_err(TransportError::from_frame)?;
        permit.send(bytes);
        Ok(())
    }

    /// Drops the connection to `addr` (e.g. the silo was declared dead), failing its
    /// in-flight calls with [`TransportError::Lost`] at once. The next call to `addr`
    /// connects again.
    pub fn disconnect(&self, addr: SocketAddr) {
        let slot = lock(&self.inner.slots).get(&addr).cloned();
        let conn = slot.and_then(|slot| lock(&slot.current).take());
        if let Some(conn) = conn {
            conn.break_with(format!("disconnected from {addr}"));
        }
    }

    /// Closes all connections (failing in-flight calls with [`TransportError::Lost`])
    /// and waits for their tasks. Later calls fail with [`TransportError::Closed`].
    pub async fn close(&self) {
        self.inner.closed.cancel();
        let slots: Vec<Arc<Slot>> = lock(&self.inner.slots).values().cloned().collect();
        for slot in slots {
            let conn = lock(&slot.current).take();
            if let Some(conn) = conn {
                conn.break_with("transport closed".to_owned());
            }
        }
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    /// When a call to `addr` will try to connect again, if it is in backoff after failed
    /// connects (`None`: a call would try now, or a connect is under way). Lets a caller
    /// that polls wait for the next real attempt instead of collecting backoff errors.
    pub fn next_attempt(&self, addr: SocketAddr) -> Option<Instant> {
        let slot = lock(&self.inner.slots).get(&addr).cloned()?;
        let backoff = slot.connect.try_lock().ok()?;
        backoff.retry_at.filter(|at| *at > Instant::now())
    }

    /// A usable connection to `addr` and a reserved place in its queue.
    async fn reserve(
        &self,
        addr: SocketAddr,
        deadline: Instant,
    ) -> Result<(Arc<Conn>, mpsc::OwnedPermit<Vec<u8>>), TransportError> {
        // A connection found alive may break before we get queue space; then one
        // fresh connection is tried.
        for _ in 0..2 {
            let conn = self.connection(addr, deadline).await?;
            match timeout_at(deadline, conn.queue.clone().reserve_owned()).await {
                Ok(Ok(permit)) => return Ok((conn, permit)),
                Ok(Err(_)) => continue,
                Err(_) => return Err(TransportError::Timeout),
            }
        }
        Err(TransportError::Unreachable(format!(
            "connection to {addr} kept closing before the request could be sent"
        )))
    }

    /// The live connection to `addr`, connecting if there is none (see the module docs
    /// for the backoff policy).
    async fn connection(
        &self,
        addr: SocketAddr,
        deadline: Instant,
    ) -> Result<Arc<Conn>, TransportError> {
        if self.inner.closed.is_cancelled() {
            return Err(TransportError::Closed);
        }
        let slot = lock(&self.inner.slots)
            .entry(addr)
            .or_insert_with(|| {
                Arc::new(Slot {
                    current: Mutex::new(None),
                    connect: tokio::sync::Mutex::new(Backoff::default()),
                })
            })
            .clone();
        if let Some(conn) = slot.live() {
            return Ok(conn);
        }
        let Ok(mut backoff) = timeout_at(deadline, slot.connect.lock()).await else {
            return Err(TransportError::Unreachable(format!(
                "cannot reach silo at {addr} (still connecting at the call's deadline)"
            )));
        };
        // Someone else may have connected while we waited for the lock.
        if let Some(conn) = slot.live() {
            return Ok(conn);
        }
        if self.inner.closed.is_cancelled() {
            return Err(TransportError::Closed);
        }
        let now = Instant::now();
        if let Some(retry_at) = backoff.retry_at.filter(|at| *at > now) {
            // Fail fast with the reason of the last attempt; the first call after the
            // backoff tries again (see `Peers::next_attempt`).
            return Err(TransportError::Unreachable(format!(
                "{}; in backoff for another {} ms after {} failed connect(s)",
                backoff.last_error,
                (retry_at - now).as_millis(),
                backoff.failures
            )));
        }
        let connect_deadline = deadline.min(now + self.inner.config.connect_timeout);
        let key = self.inner.config.cluster_key.clone();
        let connect = async move {
            crate::fault::tcp_connect(addr)?;
            let mut stream = TcpStream::connect(addr).await?;
            if let Some(key) = key {
                handshake::respond(&mut stream, &key)
                    .await
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::PermissionDenied, e))?;
            }
            Ok::<_, std::io::Error>(stream)
        };
        let error = match timeout_at(connect_deadline, connect).await {
            Ok(Ok(stream)) => {
                *backoff = Backoff::default();
                let conn = self.start(addr, &slot, stream);
                *lock(&slot.current) = Some(conn.clone());
                return Ok(conn);
            }
            Ok(Err(error)) => format!("cannot reach silo at {addr} ({})", describe(&error)),
            Err(_) if connect_deadline < deadline => format!(
                "cannot reach silo at {addr} (no answer to connect within {:?})",
                self.inner.config.connect_timeout
            ),
            // The caller's deadline, not the address, cut the attempt short: no backoff.
            Err(_) => {
                return Err(TransportError::Unreachable(format!(
                    "cannot reach silo at {addr} (still connecting at the call's deadline)"
                )))
            }
        };
        backoff.failures = backoff.failures.saturating_add(1);
        let wait = self.inner.config.backoff(backoff.failures);
        backoff.retry_at = Some(Instant::now() + wait);
        backoff.last_error.clone_from(&error);
        debug!(%addr, failures = backoff.failures, ?wait, %error, "connect failed; backing off");
        Err(TransportError::Unreachable(error))
    }

    /// Starts the reader and writer tasks of a fresh connection.
    fn start(&self, addr: SocketAddr, slot: &Arc<Slot>, stream: TcpStream) -> Arc<Conn> {
        if let Err(error) = stream.set_nodelay(true) {
            debug!(%addr, %error, "could not set TCP_NODELAY");
        }
        let (read, write) = stream.into_split();
        let (queue, outbound) = mpsc::channel(self.inner.config.write_queue.max(1));
        let conn = Arc::new(Conn {
            addr,
            codec: self.inner.codec,
            queue,
            next_id: AtomicU64::new(1),
            pending: Mutex::new(Pending::default()),
            stop: self.inner.closed.child_token(),
            tasks: self.inner.tasks.clone(),
        });

        let writing = conn.clone();
        self.inner.tasks.spawn(async move {
            let result = writer::write_frames(write, outbound, writing.stop.clone()).await;
            let why = match result {
                Ok(()) => "connection closed".to_owned(),
                Err(error) => format!("write to {addr} failed: {error}"),
            };
            writing.break_with(why);
        });
        self.inner.tasks.spawn(read_responses(
            read,
            self.inner.codec,
            conn.clone(),
            slot.clone(),
        ));
        conn
    }
}

/// Routes responses to their waiters until the connection ends, then fails the rest.
async fn read_responses(read: OwnedReadHalf, codec: FrameCodec, conn: Arc<Conn>, slot: Arc<Slot>) {
    let addr = conn.addr;
    let mut frames = FramedRead::new(read, codec);
    let why = loop {
        let next = tokio::select! {
            biased;
            () = conn.stop.cancelled() => break "connection closed locally".to_owned(),
            next = frames.next() => next,
        };
        match next {
            Some(Ok(Frame::Response { id, body })) => conn.complete(id, body),
            Some(Ok(Frame::StreamItem { id, item })) => conn.item(id, item),
            Some(Ok(_)) => {
                warn!(%addr, "closing connection: server sent a request frame");
                break format!("protocol error: {addr} sent a request frame");
            }
            Some(Err(FrameError::TooLarge { len, .. })) if handshake::is_challenge_prefix(len) => {
                break format!(
                    "cannot use silo at {addr} (it requires a cluster key and we have none: \
                     pass --cluster-key / GRANARY_CLUSTER_KEY)"
                );
            }
            Some(Err(error)) => {
                warn!(%addr, %error, "closing connection: bad frame");
                break format!("bad frame from {addr}: {error}");
            }
            None => break format!("{addr} closed the connection"),
        }
    };
    conn.break_with(why);
    slot.forget(&conn);
}

impl fmt::Debug for Peers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slots = lock(&self.inner.slots);
        let connected = slots.values().filter(|slot| slot.live().is_some()).count();
        f.debug_struct("Peers")
            .field("config", &self.inner.config)
            .field("addresses", &slots.len())
            .field("connected", &connected)
            .field("closed", &self.inner.closed.is_cancelled())
            .finish()
    }
}
