//! The runtime's side of each scenario: asks (sequential and concurrent), tells timed
//! until handled, and first-call activations on a fresh silo.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use granary_bench::stats::percentile;
use granary_proto::{codec, GrainId};
use granary_runtime::prelude::*;
use granary_runtime::{GrainStorage, RegisteredMessage, Router};
use granary_silo::storage::MemoryStorage;
use granary_silo::{Silo, SiloConfig};

use crate::args::Args;
use crate::grains::{Bump, Count, Hot, Ping, Stored, StoredState, Touch};

/// One caller, one ask at a time: (asks/s, p50 µs, p99 µs).
pub(crate) async fn ask_sequential(grain: &GrainRef<Hot>, window: Duration) -> (f64, f64, f64) {
    let mut lat = Vec::with_capacity(1 << 20);
    let start = Instant::now();
    let deadline = start + window;
    let mut i = 0u64;
    loop {
        let t = Instant::now();
        if t >= deadline {
            break;
        }
        let r = grain.ask(Ping(i)).await.expect("ask");
        debug_assert_eq!(r, i);
        lat.push(t.elapsed().as_nanos() as u64);
        i += 1;
    }
    let rate = i as f64 / start.elapsed().as_secs_f64();
    lat.sort_unstable();
    (
        rate,
        percentile(&lat, 0.5) as f64 / 1e3,
        percentile(&lat, 0.99) as f64 / 1e3,
    )
}

/// `callers` tasks asking random grains of `grains` (one grain: all on it): asks/s.
pub(crate) async fn ask_concurrent(
    grains: &Arc<Vec<GrainRef<Hot>>>,
    callers: usize,
    window: Duration,
) -> f64 {
    let start = Instant::now();
    let deadline = start + window;
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let grains = grains.clone();
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(c as u64 + 1);
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let g = &grains[rng.usize(..grains.len())];
                    g.ask(Ping(n)).await.expect("ask");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("caller");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

pub(crate) async fn counts(grains: &[GrainRef<Hot>]) -> u64 {
    let mut sum = 0;
    for g in grains {
        sum += g.ask(Count).await.expect("count");
    }
    sum
}

/// `senders` tasks telling random grains of `grains` for the window; timed until every
/// grain has handled everything (its `Count` reply, queued behind the tells): tells/s.
pub(crate) async fn tell_throughput(
    grains: &Arc<Vec<GrainRef<Hot>>>,
    senders: usize,
    window: Duration,
) -> f64 {
    let before = counts(grains).await;
    let start = Instant::now();
    let deadline = start + window;
    let tasks: Vec<_> = (0..senders)
        .map(|c| {
            let grains = grains.clone();
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(c as u64 + 1);
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let g = &grains[rng.usize(..grains.len())];
                    g.tell(Bump).await.expect("tell");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut sent = 0;
    for t in tasks {
        sent += t.await.expect("sender");
    }
    let after = counts(grains).await;
    let elapsed = start.elapsed();
    assert_eq!(after - before, sent, "every tell must be handled");
    sent as f64 / elapsed.as_secs_f64()
}

/// First-call asks to `n` fresh keys of `G` with `concurrency` callers: activations/s.
pub(crate) async fn activate_all<G>(router: Arc<dyn Router>, n: usize, concurrency: usize) -> f64
where
    G: Handler<Touch> + RegisteredMessage<Touch>,
{
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let next = next.clone();
            let router = router.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let g = GrainRef::<G>::new(router.clone(), format_args!("k{i}"));
                    g.ask(Touch).await.expect("activation");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("activator");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// A store holding a state record for keys `k0..k{n}` of [`Stored`].
pub(crate) async fn filled_storage(n: usize) -> Arc<MemoryStorage> {
    let storage = Arc::new(MemoryStorage::new());
    for i in 0..n {
        let state = StoredState {
            visits: i as u64,
            label: format!("grain number {i}"),
        };
        let data = codec::encode(&state).expect("encode");
        storage
            .write(
                &GrainId::new(Stored::TYPE_NAME, format!("k{i}")),
                &data,
                None,
            )
            .await
            .expect("prefill");
    }
    storage
}

/// A fresh silo on `storage`, `n` activations of `G`, then shutdown:
/// (activations/s, seconds to shut down).
pub(crate) async fn activation_run<G>(
    storage: Arc<dyn GrainStorage>,
    args: &Args,
) -> anyhow::Result<(f64, f64)>
where
    G: Handler<Touch> + RegisteredMessage<Touch>,
{
    let silo = Silo::start(SiloConfig::default(), storage).await?;
    GrainRef::<G>::new(silo.router(), "warm").ask(Touch).await?;
    let rate =
        activate_all::<G>(silo.router(), args.activations, args.activation_concurrency).await;
    let live = silo.load().0;
    assert!(live > args.activations, "activations stay live ({live})");
    let t = Instant::now();
    silo.shutdown().await;
    Ok((rate, t.elapsed().as_secs_f64()))
}
