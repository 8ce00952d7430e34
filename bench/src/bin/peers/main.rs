//! In-process peers: Granary grains next to actix, ractor and kameo actors and the raw
//! tokio floor (a task per actor, bounded `mpsc` mailbox, `oneshot` reply), all doing
//! the same work: an actor that echoes an ask, counts a tell, reports its count.
//!
//! Scenarios (every repetition runs every system once, in an order that rotates per
//! repetition, so outside load hits all of them alike; medians of `--reps`):
//! - `local.tell`: one sender tells 100 actors round-robin for the window, timed until
//!   all of them have handled everything (ns/message);
//! - `local.ask.seq`: one caller asks one actor, one ask at a time (p50/p99, µs);
//! - `local.ask.256x256`: 256 callers, caller c asking actor c in a loop (asks/s);
//! - `local.spawn`: 100,000 fresh actors spawned by 64 tasks, each completing one ask
//!   (actors/s; live heap bytes per actor while all are alive; Granary: first-call
//!   activations in a fresh silo);
//! - `local.*.allocs`: heap allocations per sequential ask and per tell (counting
//!   allocator, one pass).
//!
//! Runtimes: Granary, raw, ractor and kameo share one multi-thread tokio runtime with
//! one worker per CPU; actix runs on its own `System` thread (a current-thread
//! runtime, actix's model), and so do its callers. No thread is pinned.
//!
//! ```text
//! cargo run --release --manifest-path bench/Cargo.toml --bin peers -- \
//!     [--reps 5] [--window-ms 300] [--spawn 100000] [--only granary,raw,...] \
//!     [--json PATH] [--smoke]
//! ```
//!
//! # Layout
//! - `main.rs`: the command line, the interleaved repetitions, the report.
//! - `peer`: the [`Peer`](peer::Peer) trait and the scenarios, written once.
//! - `granary`, `raw`, `actix`, `ractor`, `kameo`: each system's actor.

mod actix;
mod granary;
mod kameo;
mod peer;
mod ractor;
mod raw;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use granary_bench::alloc::CountingAlloc;
use granary_bench::report::{results_path, Better, Report};

use crate::peer::{
    allocations, ask_concurrent, ask_sequential, p50_p99, spawn_many, tell_round_robin, Peer,
};

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Every system, in the order of the first repetition.
const SYSTEMS: [&str; 5] = ["granary", "raw", "actix", "ractor", "kameo"];

#[derive(Debug, Clone)]
struct Args {
    reps: usize,
    window: Duration,
    spawn: usize,
    spawn_concurrency: usize,
    allocs: u64,
    only: Vec<String>,
    json: Option<PathBuf>,
    smoke: bool,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let smoke = granary_bench::smoke::enabled();
        let mut args = Args {
            reps: if smoke { 1 } else { 5 },
            window: Duration::from_millis(if smoke { 20 } else { 300 }),
            spawn: if smoke { 300 } else { 100_000 },
            spawn_concurrency: 64,
            allocs: if smoke { 200 } else { 20_000 },
            only: SYSTEMS.iter().map(|s| s.to_string()).collect(),
            json: None,
            smoke,
        };
        let mut it = granary_bench::smoke::args().into_iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--reps" => args.reps = value()?.parse::<usize>()?.max(1),
                "--window-ms" => args.window = Duration::from_millis(value()?.parse()?),
                "--spawn" => args.spawn = value()?.parse::<usize>()?.max(1),
                "--only" => args.only = value()?.split(',').map(str::to_owned).collect(),
                "--json" => args.json = Some(value()?.into()),
                "-h" | "--help" => {
                    println!(
                        "usage: peers [--reps 5] [--window-ms 300] [--spawn 100000] \
                         [--only granary,raw,actix,ractor,kameo] [--json PATH] [--smoke]"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown flag {other} (try --help)"),
            }
        }
        if let Some(bad) = args.only.iter().find(|s| !SYSTEMS.contains(&s.as_str())) {
            bail!("unknown system {bad} (one of {})", SYSTEMS.join(", "));
        }
        Ok(args)
    }
}

/// Runs every scenario once for `p`, on its executor, recording into `report`.
async fn one_rep<P: Peer>(p: &Arc<P>, args: &Args, report: &mut Report) {
    let name = P::NAME;
    let w = args.window;
    let ns = p.run(move |p| tell_round_robin(p, w)).await;
    report.record("local.tell", "ns/msg", Better::Lower, name, ns);
    let lat = p.run(move |p| ask_sequential(p, w)).await;
    let (p50, p99) = p50_p99(&lat);
    report.record("local.ask.seq.p50", "µs", Better::Lower, name, p50);
    report.record("local.ask.seq.p99", "µs", Better::Lower, name, p99);
    let rate = p.run(move |p| ask_concurrent(p, w)).await;
    report.record("local.ask.256x256", "asks/s", Better::Higher, name, rate);
    let (n, c) = (args.spawn, args.spawn_concurrency);
    let (rate, heap) = p.run(move |p| spawn_many(p, n, c)).await;
    report.record("local.spawn", "actors/s", Better::Higher, name, rate);
    report.record("local.spawn.heap", "B/actor", Better::Lower, name, heap);
}

/// The systems under test, started once and kept for every repetition.
struct Systems {
    granary: Option<Arc<granary::GranaryPeer>>,
    raw: Option<Arc<raw::RawPeer>>,
    actix: Option<Arc<actix::ActixPeer>>,
    ractor: Option<Arc<ractor::RactorPeer>>,
    kameo: Option<Arc<kameo::KameoPeer>>,
}

impl Systems {
    async fn start(only: &[String]) -> anyhow::Result<Systems> {
        let on = |s: &str| only.iter().any(|o| o == s);
        Ok(Systems {
            granary: match on("granary") {
                true => Some(Arc::new(granary::GranaryPeer::start().await?)),
                false => None,
            },
            raw: on("raw").then(|| Arc::new(raw::RawPeer::start())),
            actix: match on("actix") {
                true => Some(Arc::new(actix::ActixPeer::start().await?)),
                false => None,
            },
            ractor: match on("ractor") {
                true => Some(Arc::new(ractor::RactorPeer::start().await)),
                false => None,
            },
            kameo: on("kameo").then(|| Arc::new(kameo::KameoPeer::start())),
        })
    }

    /// One repetition of `system`, if it runs.
    async fn rep(&self, system: &str, args: &Args, report: &mut Report) {
        match system {
            "granary" => run_opt(&self.granary, args, report).await,
            "raw" => run_opt(&self.raw, args, report).await,
            "actix" => run_opt(&self.actix, args, report).await,
            "ractor" => run_opt(&self.ractor, args, report).await,
            _ => run_opt(&self.kameo, args, report).await,
        }
    }

    /// Allocations per ask and per tell of `system`, if it runs.
    async fn allocations(&self, system: &str, n: u64, report: &mut Report) {
        let counts = match system {
            "granary" => alloc_opt(&self.granary, n).await,
            "raw" => alloc_opt(&self.raw, n).await,
            "actix" => alloc_opt(&self.actix, n).await,
            "ractor" => alloc_opt(&self.ractor, n).await,
            _ => alloc_opt(&self.kameo, n).await,
        };
        if let Some((ask, tell)) = counts {
            report.record("local.ask.allocs", "allocs/ask", Better::Lower, system, ask);
            report.record(
                "local.tell.allocs",
                "allocs/tell",
                Better::Lower,
                system,
                tell,
            );
        }
    }

    async fn shutdown(self) {
        if let Some(g) = self.granary.and_then(|g| Arc::try_unwrap(g).ok()) {
            g.shutdown().await;
        }
        if let Some(a) = self.actix.and_then(|a| Arc::try_unwrap(a).ok()) {
            a.shutdown();
        }
        if let Some(r) = self.ractor.and_then(|r| Arc::try_unwrap(r).ok()) {
            r.shutdown().await;
        }
        if let Some(k) = self.kameo.and_then(|k| Arc::try_unwrap(k).ok()) {
            k.shutdown().await;
        }
    }
}

async fn run_opt<P: Peer>(p: &Option<Arc<P>>, args: &Args, report: &mut Report) {
    if let Some(p) = p {
        one_rep(p, args, report).await;
    }
}

async fn alloc_opt<P: Peer>(p: &Option<Arc<P>>, n: u64) -> Option<(f64, f64)> {
    match p {
        Some(p) => Some(p.run(move |p| allocations(p, n)).await),
        None => None,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut report = Report::start("peers", args.smoke);
    report.setup = vec![
        format!("{cpus} CPUs; no thread pinned"),
        format!(
            "granary, raw, ractor, kameo: one tokio multi-thread runtime, {cpus} worker threads"
        ),
        "actix: its own System thread (current-thread runtime); its callers run there too"
            .to_owned(),
        format!(
            "{} reps, systems interleaved (order rotates per rep); {} ms windows; {} spawns by {} tasks",
            args.reps,
            args.window.as_millis(),
            args.spawn,
            args.spawn_concurrency
        ),
        format!(
            "{} actors: tell round-robin to 100, ask 256 callers × 256 actors; raw and granary mailboxes hold {}",
            peer::ACTORS,
            granary_silo::config::DEFAULT_MAILBOX_CAPACITY
        ),
    ];
    let systems = Systems::start(&args.only).await?;
    let order: Vec<&str> = SYSTEMS
        .iter()
        .copied()
        .filter(|s| args.only.iter().any(|o| o == s))
        .collect();
    // One unmeasured pass warms every path (and the allocator's arenas).
    let mut warm = Report::default();
    let warm_args = Args {
        window: Duration::from_millis(50),
        spawn: args.spawn.min(10_000),
        ..args.clone()
    };
    for s in &order {
        systems.rep(s, &warm_args, &mut warm).await;
    }
    for rep in 0..args.reps {
        eprint!("peers: rep {}/{} …", rep + 1, args.reps);
        for k in 0..order.len() {
            let system = order[(rep + k) % order.len()];
            eprint!(" {system}");
            systems.rep(system, &args, &mut report).await;
        }
        eprintln!();
    }
    for s in &order {
        systems.allocations(s, args.allocs, &mut report).await;
    }
    systems.shutdown().await;
    report.finish();
    report.print();
    let path = args.json.clone().unwrap_or_else(|| {
        results_path(&format!(
            "peers{}-{}.json",
            if args.smoke { "-smoke" } else { "" },
            report.started_unix
        ))
    });
    report.write(&path)?;
    println!("results: {}", path.display());
    Ok(())
}
