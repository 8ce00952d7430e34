//! What every system under test provides ([`Peer`]), and the scenarios, written once
//! for all of them: each runs on the system's own executor (see [`Peer::run`]).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use granary_bench::alloc::{count_start, count_stop};
use granary_bench::stats::percentile;
use tokio::task::JoinHandle;

/// Actors every system keeps for the whole run: the first [`TELL_ACTORS`] take the
/// tells, all of them the concurrent asks, actor 0 the sequential asks.
pub(crate) const ACTORS: usize = 256;
/// Actors the tells go round-robin to.
pub(crate) const TELL_ACTORS: usize = 100;
/// Quiet time before the live heap of spawned actors is read.
pub(crate) const IDLE_WAIT: Duration = Duration::from_millis(250);

/// A system under test: the same echo/count actor, and how to call it.
///
/// The actor answers `ask(i, x)` with `x`, counts `tell(i)`s, and answers `count(i)`
/// with what it handled.
pub(crate) trait Peer: Send + Sync + Sized + 'static {
    /// The name in the results (`granary`, `raw`, `actix`, …).
    const NAME: &'static str;
    /// What keeps one spawned actor alive until [`Peer::spawn_end`].
    type Actor: Send + 'static;

    /// Asks actor `i` (of [`ACTORS`]) to echo `x`.
    fn ask(&self, i: usize, x: u64) -> impl Future<Output = u64> + Send;
    /// Tells actor `i` to count one message.
    fn tell(&self, i: usize) -> impl Future<Output = ()> + Send;
    /// What actor `i` has handled so far (queued behind earlier tells).
    fn count(&self, i: usize) -> impl Future<Output = u64> + Send;

    /// Prepares a spawn run (Granary: a fresh silo).
    fn spawn_begin(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
    /// Spawns a fresh actor number `n` and completes one ask with it.
    fn spawn_one(&self, n: usize) -> impl Future<Output = Self::Actor> + Send;
    /// Stops the actors of a spawn run.
    fn spawn_end(&self, actors: Vec<Self::Actor>) -> impl Future<Output = ()> + Send;

    /// Spawns a task on the system's executor.
    fn spawn<F>(future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tokio::spawn(future)
    }

    /// Runs `job` on the system's executor (the caller's tokio runtime unless the
    /// system has its own, as actix does).
    fn run<T, F, Fut>(self: &Arc<Self>, job: F) -> impl Future<Output = T> + Send
    where
        T: Send + 'static,
        F: FnOnce(Arc<Self>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        job(self.clone())
    }
}

/// One sender tells the first [`TELL_ACTORS`] actors round-robin for `window`; timed
/// until every actor has handled everything: nanoseconds per message.
pub(crate) async fn tell_round_robin<P: Peer>(p: Arc<P>, window: Duration) -> f64 {
    let mut before = 0;
    for i in 0..TELL_ACTORS {
        before += p.count(i).await;
    }
    let start = Instant::now();
    let deadline = start + window;
    let mut sent = 0u64;
    'send: loop {
        // Checking the clock every 64 messages keeps it off the measured path.
        for _ in 0..64 {
            p.tell(sent as usize % TELL_ACTORS).await;
            sent += 1;
        }
        if Instant::now() >= deadline {
            break 'send;
        }
    }
    let mut after = 0;
    for i in 0..TELL_ACTORS {
        after += p.count(i).await;
    }
    let elapsed = start.elapsed();
    assert_eq!(after - before, sent, "{}: every tell is handled", P::NAME);
    elapsed.as_nanos() as f64 / sent as f64
}

/// One caller asks actor 0, one ask at a time, for `window`: sorted latencies (ns).
pub(crate) async fn ask_sequential<P: Peer>(p: Arc<P>, window: Duration) -> Vec<u64> {
    let mut lat = Vec::with_capacity(1 << 20);
    let deadline = Instant::now() + window;
    let mut i = 0u64;
    loop {
        let t = Instant::now();
        if t >= deadline {
            break;
        }
        let r = p.ask(0, i).await;
        lat.push(t.elapsed().as_nanos() as u64);
        assert_eq!(r, i, "{}: echo", P::NAME);
        i += 1;
    }
    lat.sort_unstable();
    lat
}

/// `(p50, p99)` of sorted nanosecond latencies, in microseconds.
pub(crate) fn p50_p99(sorted: &[u64]) -> (f64, f64) {
    (
        percentile(sorted, 0.5) as f64 / 1e3,
        percentile(sorted, 0.99) as f64 / 1e3,
    )
}

/// [`ACTORS`] callers, caller `c` asking actor `c` in a loop for `window`: asks/s.
pub(crate) async fn ask_concurrent<P: Peer>(p: Arc<P>, window: Duration) -> f64 {
    let start = Instant::now();
    let deadline = start + window;
    let callers: Vec<_> = (0..ACTORS)
        .map(|c| {
            let p = p.clone();
            P::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    p.ask(c, n).await;
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for c in callers {
        total += c.await.expect("caller");
    }
    total as f64 / start.elapsed().as_secs_f64()
}

/// Heap allocations per sequential ask and per tell (counting allocator, `n` each).
pub(crate) async fn allocations<P: Peer>(p: Arc<P>, n: u64) -> (f64, f64) {
    for i in 0..100 {
        p.ask(0, i).await;
    }
    count_start();
    for i in 0..n {
        p.ask(0, i).await;
    }
    let (asks, _) = count_stop();
    count_start();
    for i in 0..n {
        p.tell(i as usize % TELL_ACTORS).await;
    }
    let (tells, _) = count_stop();
    // Let the tells drain outside the count.
    for i in 0..TELL_ACTORS {
        p.count(i).await;
    }
    (asks as f64 / n as f64, tells as f64 / n as f64)
}

/// `concurrency` tasks spawn `n` fresh actors between them, each completing one ask:
/// (actors/s, live heap bytes per actor while all are alive and idle, read after
/// [`IDLE_WAIT`]).
pub(crate) async fn spawn_many<P: Peer>(p: Arc<P>, n: usize, concurrency: usize) -> (f64, f64) {
    p.spawn_begin().await;
    let next = Arc::new(AtomicUsize::new(0));
    // Room for every handle up front, so vector growth is not counted as actor memory.
    let mut holders: Vec<Vec<P::Actor>> = (0..concurrency)
        .map(|_| Vec::with_capacity(n / concurrency + 2))
        .collect();
    count_start();
    let start = Instant::now();
    let tasks: Vec<_> = holders
        .drain(..)
        .map(|mut held| {
            let p = p.clone();
            let next = next.clone();
            P::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break held;
                    }
                    held.push(p.spawn_one(i).await);
                }
            })
        })
        .collect();
    let mut held = Vec::with_capacity(concurrency);
    for t in tasks {
        held.push(t.await.expect("spawner"));
    }
    let elapsed = start.elapsed();
    // Idle memory: what the actors hold once they have been quiet for a moment (Granary
    // gives back a quiet activation's turn box after 100 ms).
    tokio::time::sleep(IDLE_WAIT).await;
    let (_, heap) = count_stop();
    let all: Vec<P::Actor> = held.into_iter().flatten().collect();
    p.spawn_end(all).await;
    (n as f64 / elapsed.as_secs_f64(), heap as f64 / n as f64)
}
