//! In-process runtime benchmark: what a call through one silo costs, next to the floor any
//! actor runtime pays (a raw tokio `mpsc` + `oneshot` round trip between two tasks).
//!
//! Scenarios, each measured `--reps` times (repetitions are interleaved: every rep runs
//! every scenario once, so background noise spreads over all of them), reported as
//! median / min / max:
//!
//! 1. `ask` to ONE hot grain: one sequential caller (asks/s, p50/p99 latency of a single
//!    ask), then N concurrent callers on the same grain (asks/s).
//! 2. `ask` spread over `--grains` grains (1,000) by C concurrent callers (asks/s).
//! 3. `tell` to one grain (one sender) and to the 1,000 grains (`--tell-senders` senders),
//!    timed until every grain has processed everything (a final `ask` returns its count).
//! 4. Activations: first-call asks to `--activations` fresh keys (100,000) with
//!    `--activation-concurrency` callers (64), on a stateless grain and on a stateful
//!    grain whose state is read from a pre-filled `MemoryStorage` at activation; a fresh
//!    silo per rep. Memory per activation is measured in a child process (this binary,
//!    re-run with `--rss-child KIND`): VmRSS before/after holding all activations.
//! 5. Baselines with the same shapes: a server task per "grain" with a bounded `mpsc`
//!    (capacity 1024, the default mailbox) answering through a `oneshot`; for activations,
//!    a table insert + channel + `tokio::spawn` + first round trip.
//!
//! "cost ×base" is time per operation relative to the matching baseline (2.0 = half the
//! baseline's throughput, or twice its latency).
//!
//! ```text
//! cargo run --release --manifest-path bench/Cargo.toml --bin runtime -- \
//!     [--reps 5] [--window-ms 300] [--grains 1000] [--hot-callers 16,256] \
//!     [--many-callers 2,16,256] [--tell-senders 16] [--activations 100000] \
//!     [--activation-concurrency 64] [--no-rss]
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_trait::async_trait;
use granary_proto::{codec, GrainId};
use granary_runtime::prelude::*;
use granary_runtime::{GrainStorage, Router};
use granary_silo::storage::MemoryStorage;
use granary_silo::{Silo, SiloConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

// ------------------------------------------------------------------------- allocation counter

/// The system allocator, counting allocations while [`COUNTING`] is on (off during the
/// timed scenarios: then it costs one relaxed load of a read-only flag).
struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
/// Allocations (and reallocations) while counting.
static ALLOCS: AtomicU64 = AtomicU64::new(0);
/// Bytes allocated minus bytes freed while counting (live heap growth).
static NET_BYTES: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            NET_BYTES.fetch_add(layout.size() as i64, Ordering::Relaxed);
        }
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if COUNTING.load(Ordering::Relaxed) {
            NET_BYTES.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        }
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
            NET_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Starts counting allocations from zero.
fn count_start() {
    ALLOCS.store(0, Ordering::SeqCst);
    NET_BYTES.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
}

/// Stops counting: (allocations, net bytes).
fn count_stop() -> (u64, i64) {
    COUNTING.store(false, Ordering::SeqCst);
    (
        ALLOCS.load(Ordering::SeqCst),
        NET_BYTES.load(Ordering::SeqCst),
    )
}

// ------------------------------------------------------------------------- grains

/// A stateless grain that counts the messages it handled (in memory only).
struct Hot {
    handled: u64,
}

/// Ask: echoes its argument.
#[derive(Serialize, Deserialize)]
struct Ping(u64);
/// Tell: counts.
#[derive(Serialize, Deserialize)]
struct Bump;
/// Ask: messages handled so far by this activation.
#[derive(Serialize, Deserialize)]
struct Count;
/// Ask: the first call activates the grain.
#[derive(Serialize, Deserialize)]
struct Touch;

#[async_trait]
impl Grain for Hot {
    const TYPE_NAME: &'static str = "bench.hot/v1";
    type State = ();
    async fn on_activate(_ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Hot { handled: 0 })
    }
}

#[async_trait]
impl Handler<Ping> for Hot {
    type Reply = u64;
    async fn handle(
        &mut self,
        Ping(x): Ping,
        _: &mut GrainContext<Self>,
    ) -> Result<u64, GrainError> {
        self.handled += 1;
        Ok(x)
    }
}

#[async_trait]
impl Handler<Bump> for Hot {
    type Reply = ();
    async fn handle(&mut self, _: Bump, _: &mut GrainContext<Self>) -> Result<(), GrainError> {
        self.handled += 1;
        Ok(())
    }
}

#[async_trait]
impl Handler<Count> for Hot {
    type Reply = u64;
    async fn handle(&mut self, _: Count, _: &mut GrainContext<Self>) -> Result<u64, GrainError> {
        Ok(self.handled)
    }
}

granary_runtime::register_grain!(Hot, handles = [Ping, Bump, Count]);

/// Stateless grain for the activation benchmark.
struct Cold;

#[async_trait]
impl Grain for Cold {
    const TYPE_NAME: &'static str = "bench.cold/v1";
    type State = ();
    async fn on_activate(_ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Cold)
    }
}

#[async_trait]
impl Handler<Touch> for Cold {
    type Reply = ();
    async fn handle(&mut self, _: Touch, _: &mut GrainContext<Self>) -> Result<(), GrainError> {
        Ok(())
    }
}

granary_runtime::register_grain!(Cold, handles = [Touch]);

/// Stateful grain for the activation benchmark: its state is read at activation.
struct Stored;

#[derive(Default, Serialize, Deserialize)]
struct StoredState {
    visits: u64,
    label: String,
}

#[async_trait]
impl Grain for Stored {
    const TYPE_NAME: &'static str = "bench.stored/v1";
    type State = StoredState;
    async fn on_activate(_ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Stored)
    }
}

#[async_trait]
impl Handler<Touch> for Stored {
    type Reply = u64;
    async fn handle(&mut self, _: Touch, ctx: &mut GrainContext<Self>) -> Result<u64, GrainError> {
        Ok(ctx.state().visits)
    }
}

granary_runtime::register_grain!(Stored, handles = [Touch]);

// ------------------------------------------------------------------------- args

/// Command-line settings.
#[derive(Debug, Clone)]
struct Args {
    reps: usize,
    window: Duration,
    grains: usize,
    hot_callers: Vec<usize>,
    many_callers: Vec<usize>,
    tell_senders: usize,
    activations: usize,
    activation_concurrency: usize,
    rss: bool,
    /// Internal: run as the memory-probe child for this kind and exit.
    rss_child: Option<String>,
}

fn list(s: &str) -> anyhow::Result<Vec<usize>> {
    s.split(',')
        .map(|x| x.trim().parse::<usize>().context("bad list"))
        .collect()
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let mut args = Args {
            reps: 5,
            window: Duration::from_millis(300),
            grains: 1000,
            hot_callers: vec![16, 256],
            many_callers: vec![2, 16, 256],
            tell_senders: 16,
            activations: 100_000,
            activation_concurrency: 64,
            rss: true,
            rss_child: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--reps" => args.reps = value()?.parse::<usize>()?.max(1),
                "--window-ms" => args.window = Duration::from_millis(value()?.parse()?),
                "--grains" => args.grains = value()?.parse::<usize>()?.max(1),
                "--hot-callers" => args.hot_callers = list(&value()?)?,
                "--many-callers" => args.many_callers = list(&value()?)?,
                "--tell-senders" => args.tell_senders = value()?.parse::<usize>()?.max(1),
                "--activations" => args.activations = value()?.parse::<usize>()?.max(1),
                "--activation-concurrency" => {
                    args.activation_concurrency = value()?.parse::<usize>()?.max(1)
                }
                "--no-rss" => args.rss = false,
                "--rss-child" => args.rss_child = Some(value()?),
                "-h" | "--help" => {
                    println!(
                        "usage: runtime [--reps 5] [--window-ms 300] [--grains 1000] \
                         [--hot-callers 16,256] [--many-callers 2,16,256] [--tell-senders 16] \
                         [--activations 100000] [--activation-concurrency 64] [--no-rss]"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown flag {other} (try --help)"),
            }
        }
        Ok(args)
    }
}

// ------------------------------------------------------------------------- results

/// How a row's figures compare: higher-is-better rates or lower-is-better latencies.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Rate,
    Latency,
}

struct Row {
    name: String,
    unit: &'static str,
    kind: Kind,
    values: Vec<f64>,
    /// Name of the row this one is compared with.
    baseline: Option<String>,
}

#[derive(Default)]
struct Results {
    rows: Vec<Row>,
}

impl Results {
    fn record(
        &mut self,
        name: &str,
        unit: &'static str,
        kind: Kind,
        baseline: Option<&str>,
        v: f64,
    ) {
        match self.rows.iter_mut().find(|r| r.name == name) {
            Some(row) => row.values.push(v),
            None => self.rows.push(Row {
                name: name.to_owned(),
                unit,
                kind,
                values: vec![v],
                baseline: baseline.map(str::to_owned),
            }),
        }
    }

    fn median(&self, name: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.name == name)
            .map(|r| median(&r.values))
    }

    fn print(&self) {
        println!(
            "{:<52} {:>8} {:>12} {:>12} {:>12} {:>11}",
            "scenario", "unit", "median", "min", "max", "cost ×base"
        );
        println!("{}", "-".repeat(112));
        for row in &self.rows {
            if row.name.starts_with('#') {
                println!("{}", &row.name[1..]);
                continue;
            }
            let (lo, hi) = min_max(&row.values);
            let med = median(&row.values);
            let ratio = row
                .baseline
                .as_deref()
                .and_then(|b| self.median(b))
                .map(|b| match row.kind {
                    Kind::Rate => format!("{:.2}×", b / med),
                    Kind::Latency => format!("{:.2}×", med / b),
                })
                .unwrap_or_default();
            println!(
                "{:<52} {:>8} {:>12} {:>12} {:>12} {:>11}",
                row.name,
                row.unit,
                fmt(med, row.kind),
                fmt(lo, row.kind),
                fmt(hi, row.kind),
                ratio
            );
        }
    }

    fn section(&mut self, title: &str) {
        let name = format!("#{title}");
        if !self.rows.iter().any(|r| r.name == name) {
            self.rows.push(Row {
                name,
                unit: "",
                kind: Kind::Rate,
                values: vec![],
                baseline: None,
            });
        }
    }
}

fn fmt(v: f64, kind: Kind) -> String {
    match kind {
        Kind::Latency => format!("{v:.2}"),
        Kind::Rate if v >= 100.0 => {
            // Thousands separators for readability.
            let s = format!("{:.0}", v);
            let mut out = String::new();
            for (i, c) in s.chars().enumerate() {
                if i > 0 && (s.len() - i) % 3 == 0 {
                    out.push(',');
                }
                out.push(c);
            }
            out
        }
        Kind::Rate => format!("{v:.1}"),
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64
}

// ------------------------------------------------------------------------- runtime scenarios

/// One caller, one ask at a time: (asks/s, p50 µs, p99 µs).
async fn ask_sequential(grain: &GrainRef<Hot>, window: Duration) -> (f64, f64, f64) {
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
        percentile(&lat, 0.5) / 1e3,
        percentile(&lat, 0.99) / 1e3,
    )
}

/// `callers` tasks asking random grains of `grains` (one grain: all on it): asks/s.
async fn ask_concurrent(grains: &Arc<Vec<GrainRef<Hot>>>, callers: usize, window: Duration) -> f64 {
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

async fn counts(grains: &[GrainRef<Hot>]) -> u64 {
    let mut sum = 0;
    for g in grains {
        sum += g.ask(Count).await.expect("count");
    }
    sum
}

/// `senders` tasks telling random grains of `grains` for the window; timed until every
/// grain has handled everything (its `Count` reply, queued behind the tells): tells/s.
async fn tell_throughput(
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
async fn activate_all<G>(router: Arc<dyn Router>, n: usize, concurrency: usize) -> f64
where
    G: Handler<Touch>,
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
async fn filled_storage(n: usize) -> Arc<MemoryStorage> {
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
async fn activation_run<G>(
    storage: Arc<dyn GrainStorage>,
    args: &Args,
) -> anyhow::Result<(f64, f64)>
where
    G: Handler<Touch>,
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

// ------------------------------------------------------------------------- baselines

/// What a baseline "grain" task receives.
enum BMsg {
    Ping(u64, oneshot::Sender<u64>),
    Bump,
    Count(oneshot::Sender<u64>),
}

/// A server task with a bounded mailbox, the floor of one activation.
fn spawn_server(capacity: usize) -> mpsc::Sender<BMsg> {
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

async fn b_ask(server: &mpsc::Sender<BMsg>, x: u64) -> u64 {
    let (tx, rx) = oneshot::channel();
    server.send(BMsg::Ping(x, tx)).await.expect("send");
    rx.await.expect("reply")
}

async fn b_sequential(server: &mpsc::Sender<BMsg>, window: Duration) -> (f64, f64, f64) {
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
        percentile(&lat, 0.5) / 1e3,
        percentile(&lat, 0.99) / 1e3,
    )
}

async fn b_concurrent(
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

async fn b_counts(servers: &[mpsc::Sender<BMsg>]) -> u64 {
    let mut sum = 0;
    for s in servers {
        let (tx, rx) = oneshot::channel();
        s.send(BMsg::Count(tx)).await.expect("send");
        sum += rx.await.expect("count");
    }
    sum
}

async fn b_tell(servers: &Arc<Vec<mpsc::Sender<BMsg>>>, senders: usize, window: Duration) -> f64 {
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
type BTable = Arc<Mutex<HashMap<String, mpsc::Sender<BMsg>>>>;

async fn b_activate_all(n: usize, concurrency: usize) -> (f64, BTable) {
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

// ------------------------------------------------------------------------- memory probe

fn vm_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Child mode: hold `args.activations` activations of `kind` and print the RSS delta.
async fn rss_child(kind: &str, args: &Args) -> anyhow::Result<()> {
    let n = args.activations;
    let conc = args.activation_concurrency;
    let (before, after) = match kind {
        "stateless" | "stateful" => {
            let storage: Arc<dyn GrainStorage> = if kind == "stateful" {
                filled_storage(n).await
            } else {
                Arc::new(MemoryStorage::new())
            };
            let silo = Silo::start(SiloConfig::default(), storage).await?;
            let router = silo.router();
            // Warm the runtime (worker threads, registry, timer wheel) before measuring.
            GrainRef::<Cold>::new(router.clone(), "warm")
                .ask(Touch)
                .await?;
            GrainRef::<Stored>::new(router.clone(), "warm")
                .ask(Touch)
                .await?;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let before = vm_rss_bytes();
            count_start();
            if kind == "stateful" {
                activate_all::<Stored>(router, n, conc).await;
            } else {
                activate_all::<Cold>(router, n, conc).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let after = vm_rss_bytes();
            assert!(silo.load().0 > n);
            (before, after)
        }
        "baseline" => {
            let warm = spawn_server(8);
            b_ask(&warm, 1).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let before = vm_rss_bytes();
            count_start();
            let (_, table) = b_activate_all(n, conc).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            let after = vm_rss_bytes();
            assert_eq!(table.lock().unwrap().len(), n);
            (before, after)
        }
        other => bail!("unknown --rss-child kind {other}"),
    };
    let (_, heap) = count_stop();
    println!("RSS {before} {after} {n} {heap}");
    // Skip the teardown of everything held.
    std::process::exit(0);
}

/// Memory held per live activation, from a probe child.
struct MemProbe {
    /// VmRSS growth per activation.
    rss_per: f64,
    /// Live heap growth (bytes requested from the allocator) per activation.
    heap_per: f64,
    before: u64,
    after: u64,
}

/// Runs the probe child for `kind`.
fn probe_rss(kind: &str, args: &Args) -> anyhow::Result<MemProbe> {
    let exe = std::env::current_exe()?;
    let out = Command::new(exe)
        .args([
            "--rss-child",
            kind,
            "--activations",
            &args.activations.to_string(),
            "--activation-concurrency",
            &args.activation_concurrency.to_string(),
        ])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("RSS "))
        .with_context(|| {
            format!(
                "probe {kind} failed: {}\n{}",
                stdout,
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let f: Vec<i64> = line[4..]
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let (before, after, n, heap) = (f[0] as u64, f[1] as u64, f[2] as f64, f[3] as f64);
    Ok(MemProbe {
        rss_per: after.saturating_sub(before) as f64 / n,
        heap_per: heap / n,
        before,
        after,
    })
}

// ------------------------------------------------------------------------- main

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    if let Some(kind) = args.rss_child.clone() {
        return rss_child(&kind, &args).await;
    }
    let total = Instant::now();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "Granary in-process runtime benchmark: {cpus} CPUs, tokio multi-thread ({cpus} workers), \
         {} reps (interleaved) × {} ms windows, {} grains, {} activations × {} callers",
        args.reps,
        args.window.as_millis(),
        args.grains,
        args.activations,
        args.activation_concurrency
    );

    let silo = Silo::start(SiloConfig::default(), Arc::new(MemoryStorage::new())).await?;
    let hot = Arc::new(vec![silo.grain::<Hot>("hot")]);
    let many = Arc::new(
        (0..args.grains)
            .map(|i| silo.grain::<Hot>(format_args!("m{i}")))
            .collect::<Vec<_>>(),
    );
    let tell_one = Arc::new(vec![silo.grain::<Hot>("tell")]);
    let tell_many = Arc::new(
        (0..args.grains)
            .map(|i| silo.grain::<Hot>(format_args!("t{i}")))
            .collect::<Vec<_>>(),
    );
    let b_hot = Arc::new(vec![spawn_server(
        granary_silo::config::DEFAULT_MAILBOX_CAPACITY,
    )]);
    let b_many = Arc::new(
        (0..args.grains)
            .map(|_| spawn_server(granary_silo::config::DEFAULT_MAILBOX_CAPACITY))
            .collect::<Vec<_>>(),
    );
    let b_tell_one = Arc::new(vec![spawn_server(
        granary_silo::config::DEFAULT_MAILBOX_CAPACITY,
    )]);
    let b_tell_many = Arc::new(
        (0..args.grains)
            .map(|_| spawn_server(granary_silo::config::DEFAULT_MAILBOX_CAPACITY))
            .collect::<Vec<_>>(),
    );
    // Activate everything and warm up the paths.
    for set in [&hot, &many, &tell_one, &tell_many] {
        counts(set).await;
    }
    let warm = Duration::from_millis(100);
    ask_sequential(&hot[0], warm).await;
    ask_concurrent(&many, 16, warm).await;
    b_sequential(&b_hot[0], warm).await;
    b_concurrent(&b_many, 16, warm).await;
    let stored_storage: Arc<dyn GrainStorage> = filled_storage(args.activations).await;
    // One unmeasured activation run, so the first measured one does not pay for the
    // process's first page faults on that much memory.
    activation_run::<Cold>(Arc::new(MemoryStorage::new()), &args).await?;

    let mut res = Results::default();
    let w = args.window;
    for rep in 0..args.reps {
        eprint!("rep {}/{} …", rep + 1, args.reps);
        let t = Instant::now();

        res.section("1. ask, one hot grain");
        let (rate, p50, p99) = ask_sequential(&hot[0], w).await;
        res.record(
            "ask 1 grain, 1 caller (sequential)",
            "asks/s",
            Kind::Rate,
            Some("baseline 1 server, 1 caller"),
            rate,
        );
        res.record(
            "  latency of one ask, p50",
            "µs",
            Kind::Latency,
            Some("  baseline round trip, p50"),
            p50,
        );
        res.record(
            "  latency of one ask, p99",
            "µs",
            Kind::Latency,
            Some("  baseline round trip, p99"),
            p99,
        );
        for &n in &args.hot_callers {
            let rate = ask_concurrent(&hot, n, w).await;
            res.record(
                &format!("ask 1 grain, {n} callers"),
                "asks/s",
                Kind::Rate,
                Some(&format!("baseline 1 server, {n} callers")),
                rate,
            );
        }

        res.section(&format!("2. ask, spread over {} grains", args.grains));
        for &c in &args.many_callers {
            let rate = ask_concurrent(&many, c, w).await;
            res.record(
                &format!("ask {} grains, {c} callers", args.grains),
                "asks/s",
                Kind::Rate,
                Some(&format!("baseline {} servers, {c} callers", args.grains)),
                rate,
            );
        }

        res.section("3. tell (timed until all handled)");
        let rate = tell_throughput(&tell_one, 1, w).await;
        res.record(
            "tell 1 grain, 1 sender",
            "tells/s",
            Kind::Rate,
            Some("baseline send, 1 server, 1 sender"),
            rate,
        );
        let rate = tell_throughput(&tell_many, args.tell_senders, w).await;
        res.record(
            &format!("tell {} grains, {} senders", args.grains, args.tell_senders),
            "tells/s",
            Kind::Rate,
            Some(&format!(
                "baseline send, {} servers, {} senders",
                args.grains, args.tell_senders
            )),
            rate,
        );

        res.section(&format!(
            "4. activations: {} fresh keys, {} callers, fresh silo per rep",
            args.activations, args.activation_concurrency
        ));
        let (rate, down) = activation_run::<Cold>(Arc::new(MemoryStorage::new()), &args).await?;
        res.record(
            "activate stateless grain (State = ())",
            "act/s",
            Kind::Rate,
            Some("baseline spawn+channel+round trip"),
            rate,
        );
        res.record(
            "  silo shutdown with them live",
            "s",
            Kind::Latency,
            None,
            down,
        );
        let (rate, down) = activation_run::<Stored>(stored_storage.clone(), &args).await?;
        res.record(
            "activate stateful grain (MemoryStorage read)",
            "act/s",
            Kind::Rate,
            Some("baseline spawn+channel+round trip"),
            rate,
        );
        res.record(
            "  silo shutdown with them live ",
            "s",
            Kind::Latency,
            None,
            down,
        );

        res.section("5. baseline: tokio mpsc(1024) + oneshot, server task per grain");
        let (rate, p50, p99) = b_sequential(&b_hot[0], w).await;
        res.record(
            "baseline 1 server, 1 caller",
            "req/s",
            Kind::Rate,
            None,
            rate,
        );
        res.record("  baseline round trip, p50", "µs", Kind::Latency, None, p50);
        res.record("  baseline round trip, p99", "µs", Kind::Latency, None, p99);
        for &n in &args.hot_callers {
            let rate = b_concurrent(&b_hot, n, w).await;
            res.record(
                &format!("baseline 1 server, {n} callers"),
                "req/s",
                Kind::Rate,
                None,
                rate,
            );
        }
        for &c in &args.many_callers {
            let rate = b_concurrent(&b_many, c, w).await;
            res.record(
                &format!("baseline {} servers, {c} callers", args.grains),
                "req/s",
                Kind::Rate,
                None,
                rate,
            );
        }
        let rate = b_tell(&b_tell_one, 1, w).await;
        res.record(
            "baseline send, 1 server, 1 sender",
            "msgs/s",
            Kind::Rate,
            None,
            rate,
        );
        let rate = b_tell(&b_tell_many, args.tell_senders, w).await;
        res.record(
            &format!(
                "baseline send, {} servers, {} senders",
                args.grains, args.tell_senders
            ),
            "msgs/s",
            Kind::Rate,
            None,
            rate,
        );
        let (rate, table) = b_activate_all(args.activations, args.activation_concurrency).await;
        drop(table);
        res.record(
            "baseline spawn+channel+round trip",
            "act/s",
            Kind::Rate,
            None,
            rate,
        );
        eprintln!(" {:.1} s", t.elapsed().as_secs_f64());
    }
    // Heap allocations per operation: one pass, deterministic up to background noise.
    res.section("6. heap allocations per operation (counting allocator, one pass)");
    let n = 20_000u64;
    count_start();
    for i in 0..n {
        hot[0].ask(Ping(i)).await?;
    }
    let (a, _) = count_stop();
    res.record(
        "allocations per ask",
        "allocs",
        Kind::Latency,
        Some("  baseline per round trip"),
        a as f64 / n as f64,
    );
    count_start();
    for _ in 0..n {
        tell_one[0].tell(Bump).await?;
    }
    tell_one[0].ask(Count).await?;
    let (a, _) = count_stop();
    // No ratio: a raw send allocates only one mailbox block per 32 messages.
    res.record(
        "allocations per tell",
        "allocs",
        Kind::Latency,
        None,
        a as f64 / n as f64,
    );
    for stateful in [false, true] {
        let keys = 10_000;
        let storage: Arc<dyn GrainStorage> = if stateful {
            stored_storage.clone()
        } else {
            Arc::new(MemoryStorage::new())
        };
        let s2 = Silo::start(SiloConfig::default(), storage).await?;
        GrainRef::<Cold>::new(s2.router(), "warm")
            .ask(Touch)
            .await?;
        GrainRef::<Stored>::new(s2.router(), "warm")
            .ask(Touch)
            .await?;
        count_start();
        if stateful {
            activate_all::<Stored>(s2.router(), keys, args.activation_concurrency).await;
        } else {
            activate_all::<Cold>(s2.router(), keys, args.activation_concurrency).await;
        }
        let (a, _) = count_stop();
        let name = if stateful {
            "allocations per activation (stateful)"
        } else {
            "allocations per activation (stateless)"
        };
        res.record(
            name,
            "allocs",
            Kind::Latency,
            Some("  baseline per spawn+channel+round trip"),
            a as f64 / keys as f64,
        );
        s2.shutdown().await;
    }
    count_start();
    for i in 0..n {
        b_ask(&b_hot[0], i).await;
    }
    let (a, _) = count_stop();
    res.record(
        "  baseline per round trip",
        "allocs",
        Kind::Latency,
        None,
        a as f64 / n as f64,
    );
    count_start();
    for _ in 0..n {
        b_tell_one[0].send(BMsg::Bump).await.expect("send");
    }
    b_counts(&b_tell_one).await;
    let (a, _) = count_stop();
    res.record(
        "  baseline per send",
        "allocs",
        Kind::Latency,
        None,
        a as f64 / n as f64,
    );
    count_start();
    let (_, table) = b_activate_all(10_000, args.activation_concurrency).await;
    let (a, _) = count_stop();
    drop(table);
    res.record(
        "  baseline per spawn+channel+round trip",
        "allocs",
        Kind::Latency,
        None,
        a as f64 / 10_000.0,
    );

    silo.shutdown().await;

    let mut mem = Vec::new();
    if args.rss {
        for kind in ["stateless", "stateful", "baseline"] {
            mem.push((kind, probe_rss(kind, &args)?));
        }
    }

    println!();
    res.print();
    if !mem.is_empty() {
        println!();
        println!(
            "Memory per live activation (child process, VmRSS before/after {} activations, 1 run):",
            args.activations
        );
        println!(
            "  (a mailbox's first tokio mpsc block: 32 slots × size_of::<Envelope>() = 32 × {} bytes; baseline 32 × {} bytes)",
            std::mem::size_of::<granary_runtime::envelope::Envelope>(),
            std::mem::size_of::<BMsg>()
        );
        let base = mem
            .iter()
            .find(|(k, _)| *k == "baseline")
            .map(|(_, m)| m.rss_per);
        for (kind, m) in &mem {
            let ratio = match base {
                Some(b) if *kind != "baseline" && b > 0.0 => {
                    format!("  {:.1}× baseline", m.rss_per / b)
                }
                _ => String::new(),
            };
            println!(
                "  {:<10} RSS {:>6.0} B/activation, live heap {:>6.0} B/activation   (VmRSS {:.1} -> {:.1} MiB){}",
                kind,
                m.rss_per,
                m.heap_per,
                m.before as f64 / 1048576.0,
                m.after as f64 / 1048576.0,
                ratio
            );
        }
    }
    println!();
    println!(
        "cost ×base = time per operation / the matching baseline's (rates: baseline/runtime; latencies: runtime/baseline). Total run {:.1} s.",
        total.elapsed().as_secs_f64()
    );
    Ok(())
}
