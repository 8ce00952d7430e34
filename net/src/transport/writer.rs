//! The batching writer shared by both ends of a connection.
//!
//! Frames arrive already encoded (callers encode on their own task, in parallel) through
//! a bounded queue. The writer copies every frame that is queued into one buffer and
//! flushes only when the queue is momentarily empty, so a burst of pipelined requests
//! or responses costs a few `write` syscalls rather than one per frame.

use std::io;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Size of the write buffer; frames larger than this bypass it.
const WRITE_BUFFER: usize = 64 * 1024;

/// Writes queued frames to `stream` until the queue's senders are all gone (then
/// flushes and shuts the write half down) or `stop` is cancelled (then returns at once,
/// even if the peer is not reading).
pub async fn write_frames(
    stream: OwnedWriteHalf,
    queue: mpsc::Receiver<Vec<u8>>,
    stop: CancellationToken,
) -> io::Result<()> {
    tokio::select! {
        biased;
        () = stop.cancelled() => Ok(()),
        result = drain(stream, queue) => result,
    }
}

async fn drain(stream: OwnedWriteHalf, mut queue: mpsc::Receiver<Vec<u8>>) -> io::Result<()> {
    // Only the fault filter (chaos builds) looks at the peer.
    let peer = crate::fault::ENABLED
        .then(|| stream.peer_addr().ok())
        .flatten();
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, stream);
    while let Some(frame) = queue.recv().await {
        crate::fault::tcp_write(peer).await?;
        out.write_all(&frame).await?;
        while let Ok(frame) = queue.try_recv() {
            out.write_all(&frame).await?;
        }
        out.flush().await?;
    }
    out.shutdown().await
}
