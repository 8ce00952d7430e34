//! Hot-grain replication: one hot grain on a cluster of a master and three slaves,
//! replication off against on, in the same run.
//!
//! Two clusters of the bench's `silo` binary (built with this benchmark's profile; it
//! hosts the example grains) run side by side on 127.0.0.1,
//! identical but for `--replication off` / `on`; both masters keep their grain store
//! in memory, or with `--storage embedded` in the default embedded store (durable
//! writes with group commit). This process is the client. Scenarios, each measured `--reps` times with the repetitions of the two
//! clusters interleaved (off, on, off, on, …) so outside load hits both alike:
//!
//! - **(a) stateless worker**: `Digest.Hash` on one key with `--work-us` (200) of CPU
//!   per message (hash rounds calibrated in this process), `--callers` (64) callers
//!   spread over `--clients` clients as in (b);
//! - **(b) read replicas**: `Gauge` on one key, 90 % `Level` (reads) and 10 %
//!   `Bump(1)` (writes), the callers spread over `--clients` clients (default: one per
//!   caller), since each client (router) is one read-your-writes session: a session
//!   that writes often makes its reads wait for replicas to catch up.
//!
//! Each repetition is closed-loop for `--seconds` (5) after a short warm-up; with
//! replication on, the first repetition of a scenario first waits (up to
//! `--settle-secs`, 40) until the grain has copies on more than one slave, and the
//! copies stay between repetitions (the cool-down, 30 s by default, is longer than a
//! repetition of the other cluster). Reported: median throughput, p50 and p99 of the
//! calls, and the on/off ratio. Everything shares this machine's cores: on 2 cores the
//! ideal ratio is bounded by them, and the client itself takes CPU.
//!
//! `--smoke` runs one short repetition of each, with little load (CI).
//!
//! ```text
//! cargo run --release --manifest-path bench/Cargo.toml --bin replication -- \
//!     [--reps 5] [--seconds 5] [--callers 64] [--clients N] [--work-us 200] \
//!     [--storage memory|embedded] [--only a|b] [--silo PATH]
//! ```
//!
//! # Layout
//! - `main.rs`: the run; `cluster`: the two clusters; `load`: closed-loop runs and
//!   their figures.

mod cluster;
mod load;

use std::time::Duration;

use anyhow::{bail, Context};
use granary_bench::stats::median;
use granary_bench::sys::load_average;

use crate::cluster::{Clusters, Mode};
use crate::load::{Figures, Scenario};

/// Command-line settings.
#[derive(Debug, Clone)]
pub(crate) struct Args {
    pub(crate) reps: usize,
    pub(crate) seconds: u64,
    pub(crate) callers: usize,
    pub(crate) clients: usize,
    pub(crate) work_us: u64,
    pub(crate) settle: Duration,
    pub(crate) silo: Option<std::path::PathBuf>,
    /// `memory` or `embedded`.
    pub(crate) storage: String,
    /// Run only scenario `a` or `b`.
    pub(crate) only: Option<String>,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let smoke = granary_bench::smoke::enabled();
        let mut args = Args {
            reps: 5,
            seconds: 5,
            callers: 64,
            clients: 0,
            work_us: 200,
            settle: Duration::from_secs(40),
            silo: None,
            storage: "memory".into(),
            only: None,
        };
        if smoke {
            args.reps = 1;
            args.seconds = 1;
            args.callers = 8;
            args.work_us = 20;
            args.settle = Duration::from_secs(3);
        }
        let mut it = granary_bench::smoke::args().into_iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--reps" => args.reps = value()?.parse::<usize>()?.max(1),
                "--seconds" => args.seconds = value()?.parse::<u64>()?.max(1),
                "--callers" => args.callers = value()?.parse::<usize>()?.max(1),
                "--clients" => args.clients = value()?.parse::<usize>()?.max(1),
                "--work-us" => args.work_us = value()?.parse()?,
                "--settle-secs" => args.settle = Duration::from_secs(value()?.parse()?),
                "--silo" => args.silo = Some(value()?.into()),
                "--storage" => args.storage = value()?,
                "--only" => args.only = Some(value()?),
                "-h" | "--help" => {
                    println!(
                        "replication [--reps 5] [--seconds 5] [--callers 64] [--clients N] \
                         [--work-us 200] [--settle-secs 40] [--storage memory|embedded] \
                         [--only a|b] [--silo PATH]"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown flag {other} (see --help)"),
            }
        }
        if !matches!(args.storage.as_str(), "memory" | "embedded") {
            bail!("--storage is memory or embedded");
        }
        if args.clients == 0 {
            args.clients = args.callers;
        }
        Ok(args)
    }
}

/// Hash rounds that take about `work_us` in this process (the silos run the same
/// release code on the same machine).
fn calibrate(work_us: u64) -> u32 {
    const PROBE: u32 = 2_000_000;
    let mut best = Duration::MAX;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        std::hint::black_box(granary_example::digest::mix(1, PROBE));
        best = best.min(t.elapsed());
    }
    let per_round_ns = best.as_nanos() as f64 / f64::from(PROBE);
    ((work_us as f64 * 1_000.0) / per_round_ns).round().max(1.0) as u32
}

fn main() -> std::process::ExitCode {
    granary_bench::exe::exit_code(run())
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse()?;
    let _ = granary_example::grain_types();
    let silo = match &args.silo {
        Some(path) => path.clone(),
        None => granary_bench::exe::sibling("silo")?,
    };
    let rounds = calibrate(args.work_us);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let mut clusters = Clusters::start(&silo, &args.storage)?;
    let result = runtime.block_on(async {
        let task_args = args.clone();
        let addrs = clusters.gateways();
        tokio::spawn(async move { bench(addrs, rounds, &task_args).await })
            .await
            .context("the benchmark task panicked")?
    });
    drop(runtime);
    if result.is_err() {
        eprintln!("{}", clusters.report());
    }
    result
}

async fn bench(
    gateways: [std::net::SocketAddr; 2],
    rounds: u32,
    args: &Args,
) -> anyhow::Result<()> {
    let clusters = cluster::connect(gateways, args.clients).await?;
    println!(
        "two clusters (master + 3 slaves each, {} store), replication off and on; \
         {} callers over {} clients; {} µs of work = {rounds} hash rounds; {} reps × {} s, \
         interleaved",
        args.storage, args.callers, args.clients, args.work_us, args.reps, args.seconds
    );
    println!("load average before: {}", load_average());
    let mut table = Vec::new();
    let scenarios = [Scenario::Worker { rounds }, Scenario::ReadMostly]
        .into_iter()
        .filter(|s| args.only.as_deref().is_none_or(|only| only == s.letter()));
    for scenario in scenarios {
        eprintln!("[{}] …", scenario.name());
        let mut figures = [Vec::new(), Vec::new()];
        for rep in 0..args.reps {
            for mode in [Mode::Off, Mode::On] {
                let cluster = &clusters[mode as usize];
                if rep == 0 && mode == Mode::On {
                    let settled = cluster.settle(scenario, args).await?;
                    eprintln!("  replication on: {settled}");
                }
                let run = cluster.measure(scenario, args).await;
                eprintln!("  rep {} {:>3}: {}", rep + 1, mode.name(), run.line());
                figures[mode as usize].push(run);
            }
        }
        let copies = clusters[Mode::On as usize].copies(scenario).await;
        table.push((scenario, figures, copies));
    }
    println!("load average after: {}\n", load_average());
    println!(
        "{:<34} {:>5} {:>12} {:>10} {:>10} {:>7} {:>8}",
        "scenario", "repl", "calls/s", "p50", "p99", "errors", "copies"
    );
    for (scenario, figures, copies) in &table {
        let mut rates = [0.0; 2];
        for mode in [Mode::Off, Mode::On] {
            let runs = &figures[mode as usize];
            let rate = median(&runs.iter().map(Figures::rate).collect::<Vec<_>>());
            rates[mode as usize] = rate;
            let p50 = median(&runs.iter().map(|r| r.p50_us()).collect::<Vec<_>>());
            let p99 = median(&runs.iter().map(|r| r.p99_us()).collect::<Vec<_>>());
            let errors: usize = runs.iter().map(|r| r.errors).sum();
            let shown = match mode {
                Mode::Off => "1".to_owned(),
                Mode::On => copies.clone(),
            };
            println!(
                "{:<34} {:>5} {:>12.0} {:>8.0}µs {:>8.0}µs {:>7} {:>8}",
                scenario.name(),
                mode.name(),
                rate,
                p50,
                p99,
                errors,
                shown
            );
        }
        println!(
            "{:<34} {:>5} {:>11.2}×",
            "",
            "on/off",
            rates[Mode::On as usize] / rates[Mode::Off as usize]
        );
    }
    for cluster in clusters {
        cluster.close().await;
    }
    Ok(())
}
