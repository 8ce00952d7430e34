//! The baselines: what the same shapes cost with a bare server task per "grain" (a
//! bounded tokio `mpsc` mailbox, replies through a `oneshot`), the floor any actor
//! runtime pays.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use granary_bench::stats::percentile;
use tokio::sync::{mpsc, oneshot};

/// What a baseline "grain" task receives.
pub(crate) enum BMsg {
    Ping(u64, oneshot::Sender<u64>),
    Bump,
    Count(oneshot::Sender<u64>),
}

/// A server task with a bounded mailbox, the floor of one activation.
pub(crate) fn spawn_server(capacity: usize) -> mpsc::Sender<BMsg> {
    let (tx, mut rx) = mpsc::channel(capacity);
    tokio::spawn(async move {
        let mut handled = 0u64;
        while let Some(m) = rx.recv().await {
            match m {
                BMsg::Ping(x, reply) => {
                    handled += 1;
                    let _ = reply.send(x);
                }
                BMsg::Bump => handled += 1,
                BMsg::Count(reply) => {
                    let _ = reply.send(handled);
                }
            }
        }
    });
    tx
}

pub(crate) async fn b_ask(server: &mpsc::Sender<BMsg>, x: u64) -> u64 {
    let (tx, rx) = oneshot::channel();
    server.send(BMsg::Ping(x, tx)).await.expect("send");
    rx.await.expect("reply")
}

pub(crate) async fn b_sequential(server: &mpsc::Sender<BMsg>, window: Duration) -> (f64, f64, f64) {
    let mut lat = Vec::with_capacity(1 << 20);
    let start = Instant::now();
    let deadline = start + window;
    let mut i = 0u64;
    loop {
        let t = Instant::now();
        if t >= deadline {
            break;
        }
        let r = b_ask(server, i).await;
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

pub(crate) async fn b_concurrent(
    servers: &Arc<Vec<mpsc::Sender<BMsg>>>,
    callers: usize,
    window: Duration,
) -> f64 {
    let start = Instant::now();
    let deadline = start + window;
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let servers = servers.clone();
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(c as u64 + 1);
                let mut n = 0u64;
                while Instant::now() < deadline {
                    b_ask(&servers[rng.usize(..servers.len())], n).await;
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

pub(crate) async fn b_counts(servers: &[mpsc::Sender<BMsg>]) -> u64 {
    let mut sum = 0;
    for s in servers {
        let (tx, rx) = oneshot::channel();
        s.send(BMsg::Count(tx)).await.expect("send");
        sum += rx.await.expect("count");
    }
    sum
}

pub(crate) async fn b_tell(
    servers: &Arc<Vec<mpsc::Sender<BMsg>>>,
    senders: usize,
    window: Duration,
) -> f64 {
    let before = b_counts(servers).await;
    let start = Instant::now();
    let deadline = start + window;
    let tasks: Vec<_> = (0..senders)
        .map(|c| {
            let servers = servers.clone();
            tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(c as u64 + 1);
                let mut n = 0u64;
                while Instant::now() < deadline {
                    servers[rng.usize(..servers.len())]
                        .send(BMsg::Bump)
                        .await
                        .expect("send");
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
    let after = b_counts(servers).await;
    let elapsed = start.elapsed();
    assert_eq!(after - before, sent);
    sent as f64 / elapsed.as_secs_f64()
}

/// Baseline "activation": under one mutex, look the key up in a `HashMap`, create a
/// bounded channel, spawn its server task and insert it; then one round trip. The
/// servers stay alive until the returned table is dropped.
pub(crate) type BTable = Arc<Mutex<HashMap<String, mpsc::Sender<BMsg>>>>;

pub(crate) async fn b_activate_all(n: usize, concurrency: usize) -> (f64, BTable) {
    let table: BTable = Arc::new(Mutex::new(HashMap::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let next = next.clone();
            let table = table.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    let key = format!("k{i}");
                    let (tx, rx) = oneshot::channel();
                    {
                        let mut t = table.lock().unwrap();
                        let server = t.entry(key).or_insert_with(|| {
                            spawn_server(granary_silo::config::DEFAULT_MAILBOX_CAPACITY)
                        });
                        let sent = server.try_send(BMsg::Ping(i as u64, tx));
                        assert!(sent.is_ok(), "a fresh mailbox has room");
                    }
                    rx.await.expect("reply");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("activator");
    }
    (n as f64 / start.elapsed().as_secs_f64(), table)
}
