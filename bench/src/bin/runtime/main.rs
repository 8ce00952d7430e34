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
//!
//! # Layout
//! - `main.rs`: the run: set-up, repetitions, report.
//! - `args`: the command line; `grains`: the benchmark's grains.
//! - `scenarios`: the runtime's side of each scenario; `baseline`: the raw tokio floor.
//! - `rep`: one repetition of scenarios 1–5; `results`: the table and its ratios.
//! - `alloc`: the counting allocator and section 6 (allocations per operation).
//! - `memory`: memory per live activation, from a probe child process.

mod alloc;
mod args;
mod baseline;
mod grains;
mod memory;
mod rep;
mod results;
mod scenarios;

use std::sync::Arc;
use std::time::{Duration, Instant};

use granary_runtime::prelude::*;
use granary_runtime::GrainStorage;
use granary_silo::storage::MemoryStorage;
use granary_silo::{Silo, SiloConfig};
use tokio::sync::mpsc;

use crate::args::Args;
use crate::baseline::{b_concurrent, b_sequential, spawn_server, BMsg};
use crate::grains::{Cold, Hot};
use crate::results::Results;
use crate::scenarios::{activation_run, ask_concurrent, ask_sequential, counts, filled_storage};

/// What every repetition measures against: the silo with its warm grains, the baseline
/// servers of the same shapes, and the pre-filled store of the stateful activations.
struct Fixtures {
    silo: Silo,
    /// One grain that every caller asks.
    hot: Arc<Vec<GrainRef<Hot>>>,
    /// `--grains` grains asked at random.
    many: Arc<Vec<GrainRef<Hot>>>,
    /// One grain and `--grains` grains for the tell scenarios.
    tell_one: Arc<Vec<GrainRef<Hot>>>,
    tell_many: Arc<Vec<GrainRef<Hot>>>,
    /// The baseline servers, the same shapes as the four above.
    b_hot: Arc<Vec<mpsc::Sender<BMsg>>>,
    b_many: Arc<Vec<mpsc::Sender<BMsg>>>,
    b_tell_one: Arc<Vec<mpsc::Sender<BMsg>>>,
    b_tell_many: Arc<Vec<mpsc::Sender<BMsg>>>,
    /// State records for `--activations` keys of the stateful grain.
    stored_storage: Arc<dyn GrainStorage>,
}

impl Fixtures {
    /// Starts the silo and the baseline servers, activates every grain and warms up.
    async fn start(args: &Args) -> anyhow::Result<Fixtures> {
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
        activation_run::<Cold>(Arc::new(MemoryStorage::new()), args).await?;
        Ok(Fixtures {
            silo,
            hot,
            many,
            tell_one,
            tell_many,
            b_hot,
            b_many,
            b_tell_one,
            b_tell_many,
            stored_storage,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    if let Some(kind) = args.rss_child.clone() {
        return memory::rss_child(&kind, &args).await;
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
    let fixtures = Fixtures::start(&args).await?;

    let mut res = Results::default();
    for rep in 0..args.reps {
        eprint!("rep {}/{} …", rep + 1, args.reps);
        let t = Instant::now();
        rep::one_rep(&mut res, &fixtures, &args).await?;
        eprintln!(" {:.1} s", t.elapsed().as_secs_f64());
    }
    alloc::record_allocations(&mut res, &fixtures, &args).await?;
    fixtures.silo.shutdown().await;

    let mem = if args.rss {
        memory::probe_all(&args)?
    } else {
        Vec::new()
    };

    println!();
    res.print();
    if !mem.is_empty() {
        memory::print_memory(&mem, &args);
    }
    println!();
    println!(
        "cost ×base = time per operation / the matching baseline's (rates: baseline/runtime; latencies: runtime/baseline). Total run {:.1} s.",
        total.elapsed().as_secs_f64()
    );
    Ok(())
}
