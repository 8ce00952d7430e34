//! The floor of a remote call: a raw tokio TCP echo with Granary's framing (a `u32`
//! big-endian length, the version byte, then the body: an 8-byte request id and the
//! payload), multiplexed like Granary's transport (one connection, a writer task that
//! batches queued frames, a reader task that hands each answer to its waiting caller by
//! id). No serialization, routing or actors: what any remote call over this design pays.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::{Buf, BytesMut};
use granary_proto::frame::{FRAME_VERSION, LENGTH_PREFIX};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// Bytes before the payload in a body: the request id.
const ID: usize = 8;

/// Splits every complete frame off the front of `buf`: `(id, payload)`.
fn next_frame(buf: &mut BytesMut) -> io::Result<Option<(u64, BytesMut)>> {
    if buf.len() < LENGTH_PREFIX {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len < 1 + ID {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "short frame"));
    }
    if buf.len() < LENGTH_PREFIX + len {
        buf.reserve(LENGTH_PREFIX + len - buf.len());
        return Ok(None);
    }
    buf.advance(LENGTH_PREFIX);
    let mut body = buf.split_to(len);
    if body[0] != FRAME_VERSION {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad version"));
    }
    body.advance(1);
    let id = body.get_u64_le();
    Ok(Some((id, body)))
}

/// Appends one frame carrying `id` and `payload` to `out`.
fn put_frame(out: &mut Vec<u8>, id: u64, payload: &[u8]) {
    let len = (1 + ID + payload.len()) as u32;
    out.extend_from_slice(&len.to_be_bytes());
    out.push(FRAME_VERSION);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(payload);
}

/// Serves echo connections on `listener` until the process ends: each frame is written
/// back as it is, answers to everything already read go out in one write.
pub async fn serve(listener: TcpListener) -> anyhow::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let _ = echo_connection(stream).await;
        });
    }
}

async fn echo_connection(mut stream: TcpStream) -> io::Result<()> {
    let mut input = BytesMut::with_capacity(64 * 1024);
    let mut output = Vec::with_capacity(64 * 1024);
    loop {
        if stream.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
        while let Some((id, payload)) = next_frame(&mut input)? {
            put_frame(&mut output, id, &payload);
        }
        if !output.is_empty() {
            stream.write_all(&output).await?;
            output.clear();
        }
    }
}

/// A multiplexed echo connection; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct EchoClient {
    /// Encoded frames for the writer task.
    queue: mpsc::Sender<Vec<u8>>,
    /// Callers waiting for their echo, by request id.
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<BytesMut>>>>,
    next_id: AtomicU64,
}

impl EchoClient {
    /// Connects to an echo server at `addr` and starts the writer and reader tasks
    /// (they end when the client is dropped or the connection breaks).
    pub async fn connect(addr: SocketAddr) -> anyhow::Result<EchoClient> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to the echo server at {addr}"))?;
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let (queue, outbound) = mpsc::channel(1024);
        let pending = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(write_frames(write, outbound));
        tokio::spawn(read_frames(read, pending.clone()));
        Ok(EchoClient {
            queue,
            pending,
            next_id: AtomicU64::new(1),
        })
    }

    /// Sends `payload` and waits for it to come back; returns the echoed length.
    pub async fn call(&self, payload: &[u8]) -> anyhow::Result<usize> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut frame = Vec::with_capacity(LENGTH_PREFIX + 1 + ID + payload.len());
        put_frame(&mut frame, id, payload);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending").insert(id, tx);
        self.queue
            .send(frame)
            .await
            .map_err(|_| anyhow::anyhow!("echo connection closed"))?;
        let echoed = rx.await.context("echo connection lost")?;
        Ok(echoed.len())
    }
}

async fn write_frames(stream: OwnedWriteHalf, mut queue: mpsc::Receiver<Vec<u8>>) {
    let mut out = BufWriter::with_capacity(64 * 1024, stream);
    while let Some(frame) = queue.recv().await {
        if out.write_all(&frame).await.is_err() {
            return;
        }
        while let Ok(frame) = queue.try_recv() {
            if out.write_all(&frame).await.is_err() {
                return;
            }
        }
        if out.flush().await.is_err() {
            return;
        }
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<BytesMut>>>>;

async fn read_frames(mut stream: OwnedReadHalf, pending: Pending) {
    let mut input = BytesMut::with_capacity(64 * 1024);
    loop {
        match stream.read_buf(&mut input).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        loop {
            match next_frame(&mut input) {
                Ok(Some((id, payload))) => {
                    if let Some(tx) = pending.lock().expect("pending").remove(&id) {
                        let _ = tx.send(payload);
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    pending.lock().expect("pending").clear();
                    return;
                }
            }
        }
    }
    // Dropping the senders fails every waiting call.
    pending.lock().expect("pending").clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn echoes_every_size_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener));
        let client = Arc::new(EchoClient::connect(addr).await.unwrap());
        for size in [0, 1, 100, 70_000] {
            assert_eq!(client.call(&vec![7u8; size]).await.unwrap(), size);
        }
        let calls: Vec<_> = (0..50)
            .map(|i| {
                let c = client.clone();
                tokio::spawn(async move { c.call(&vec![1u8; i]).await.unwrap() })
            })
            .collect();
        for (i, c) in calls.into_iter().enumerate() {
            assert_eq!(c.await.unwrap(), i);
        }
        server.abort();
    }
}
