//! The remote scenarios, written once for every system: sequential calls into an
//! HdrHistogram, and closed-loop throughput with many callers.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Something that makes remote echo calls: Granary's client, a ractor_cluster node,
/// the raw echo client.
pub(crate) trait Caller: Send + Sync + 'static {
    /// Sends `payload` to echo target `target` (a grain or actor of [`TARGETS`]; the
    /// raw echo has one server) and waits for the echo: its length.
    fn call(
        &self,
        target: usize,
        payload: &[u8],
    ) -> impl Future<Output = anyhow::Result<usize>> + Send;
}

/// Distinct grains / actors the concurrent callers use, one each.
pub(crate) const TARGETS: usize = 256;

/// Percentiles of one sequential run, in microseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Latency {
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) p999: f64,
}

/// `n` calls one after the other to target 0 with `payload`.
pub(crate) async fn sequential<C: Caller>(
    c: &C,
    payload: &[u8],
    n: usize,
) -> anyhow::Result<Latency> {
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    for _ in 0..n {
        let t = Instant::now();
        let len = c.call(0, payload).await?;
        h.record(t.elapsed().as_nanos().max(1) as u64)?;
        anyhow::ensure!(
            len == payload.len(),
            "echo of {} bytes came back as {len}",
            payload.len()
        );
    }
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    Ok(Latency {
        p50: us(0.5),
        p99: us(0.99),
        p999: us(0.999),
    })
}

/// [`TARGETS`] callers, caller `i` calling target `i` in a loop with an empty payload
/// for `window`: calls/s.
pub(crate) async fn concurrent<C: Caller>(c: &Arc<C>, window: Duration) -> anyhow::Result<f64> {
    let start = Instant::now();
    let deadline = start + window;
    let callers: Vec<_> = (0..TARGETS)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    c.call(i, &[]).await?;
                    n += 1;
                }
                anyhow::Ok(n)
            })
        })
        .collect();
    let mut total = 0;
    for caller in callers {
        total += caller.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}
