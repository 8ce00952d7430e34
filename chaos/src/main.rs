//! `chaos`: the fault-injection harness's command line. See `chaos --help` and the
//! README's "Reliability" section.
//!
//! Exit status: 0 passed; 1 a violation (or an undecided check, or a silo crash, or
//! final reads that never answered); 2 the harness itself failed (e.g. no root for
//! namespaces).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use granary_chaos::cluster::Topology;
use granary_chaos::faults::{FaultKind, Mode};
use granary_chaos::net::NetKind;
use granary_chaos::run::{self, RunConfig};
use granary_chaos::soak::{self, SoakConfig};

#[derive(Debug, Parser)]
#[command(
    name = "chaos",
    about = "Granary's fault-injection harness: run a cluster under faults and check the history."
)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run a workload under a seeded fault schedule and check the history.
    Run(RunArgs),
    /// The soak: ~80 % of measured peak load for a while, with periodic slave restarts
    /// and every silo's RSS sampled each second.
    Soak(SoakArgs),
    /// Re-check a recorded history (a run directory's history.jsonl).
    Check { history: PathBuf },
    /// Remove namespaces and links left by harness runs that died.
    Cleanup,
}

/// What the run does when no flag says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Preset {
    /// CI: one kill -9, one SIGSTOP, one partition, in 60 s.
    Short,
    /// The long run: every fault kind, drawn at random, for 30 minutes.
    Mixed,
}

#[derive(Debug, clap::Args)]
struct Common {
    /// Seed of the fault schedule and the workload's choices (replay with the same one).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Network namespaces per silo (root) or loopback (partitions via the filter only).
    #[arg(long, value_enum, default_value = "netns")]
    net: NetKind,
    /// Slaves.
    #[arg(long, default_value_t = 3)]
    slaves: usize,
    /// Master candidates: 1 runs a lone master; with more, they elect the acting master
    /// and the others stand by, each with a replica of the embedded store.
    #[arg(long, default_value_t = 1)]
    candidates: usize,
    /// Where run directories go.
    #[arg(long, default_value = "chaos-runs")]
    out: PathBuf,
    /// The chaos-silo binary (default: next to this one).
    #[arg(long)]
    silo: Option<PathBuf>,
    /// Each call's timeout.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    timeout: Duration,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    #[command(flatten)]
    common: Common,
    /// Defaults for the flags below.
    #[arg(long, value_enum, default_value = "short")]
    preset: Preset,
    /// How long the workload runs (faults included).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// The fault kinds (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    faults: Option<Vec<FaultKind>>,
    /// `once`: each listed fault once, in order; `mixed`: drawn at random until the end.
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// Workers: counter,register,account.
    #[arg(long, value_delimiter = ',', default_values_t = [4, 6, 2])]
    workers: Vec<usize>,
    /// Keys: counter,register,account.
    #[arg(long, value_delimiter = ',', default_values_t = [16, 8, 12])]
    keys: Vec<usize>,
    /// Operations per second per worker (0: unthrottled).
    #[arg(long, default_value_t = 40.0)]
    rate: f64,
    /// Print the fault schedule this seed gives, and exit without running anything.
    #[arg(long)]
    plan: bool,
}

#[derive(Debug, clap::Args)]
struct SoakArgs {
    #[command(flatten)]
    common: Common,
    /// How long the steady load runs.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10m")]
    duration: Duration,
    /// How long peak throughput is measured first.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "20s")]
    peak_for: Duration,
    /// Share of the peak to run at.
    #[arg(long, default_value_t = 0.8)]
    load: f64,
    /// A slave is restarted this often (kill -9 and SIGTERM alternately).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    restart_every: Duration,
    /// Concurrent workers.
    #[arg(long, default_value_t = 24)]
    workers: usize,
}

fn silo_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path);
    }
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name("chaos-silo");
    anyhow::ensure!(
        path.exists(),
        "{} not found: build it (cargo build --manifest-path chaos/Cargo.toml --bins) or pass --silo",
        path.display()
    );
    Ok(path)
}

fn run_config(args: RunArgs) -> anyhow::Result<RunConfig> {
    let c = args.common;
    let (duration, faults, mode) = match args.preset {
        Preset::Short => (
            Duration::from_secs(60),
            vec![FaultKind::Kill, FaultKind::Pause, FaultKind::Isolate],
            Mode::Once,
        ),
        Preset::Mixed => (
            Duration::from_secs(30 * 60),
            FaultKind::ALL.to_vec(),
            Mode::Mixed,
        ),
    };
    let triple = |v: &[usize], what: &str| -> anyhow::Result<[usize; 3]> {
        <[usize; 3]>::try_from(v)
            .map_err(|_| anyhow::anyhow!("--{what} takes three numbers: counter,register,account"))
    };
    let scenario = match args.preset {
        Preset::Short => "short",
        Preset::Mixed => "mixed",
    };
    Ok(RunConfig {
        scenario: scenario.to_owned(),
        seed: c.seed,
        duration: args.duration.unwrap_or(duration),
        net: c.net,
        topology: Topology {
            candidates: c.candidates,
            slaves: c.slaves,
        },
        faults: args.faults.unwrap_or(faults),
        mode: args.mode.unwrap_or(mode),
        out: c.out,
        silo: silo_binary(c.silo)?,
        workers: triple(&args.workers, "workers")?,
        keys: triple(&args.keys, "keys")?,
        rate: (args.rate > 0.0).then_some(args.rate),
        timeout: c.timeout,
    })
}

async fn main_async(args: Args) -> anyhow::Result<bool> {
    match args.command {
        Cmd::Run(args) => {
            let plan_only = args.plan;
            let cfg = run_config(args)?;
            if plan_only {
                let plan = granary_chaos::faults::schedule(
                    cfg.seed,
                    &cfg.faults,
                    cfg.mode,
                    cfg.duration,
                    cfg.topology.slaves,
                );
                for p in plan {
                    let victim = p.slave.map_or_else(String::new, |s| format!("s{s}"));
                    println!(
                        "{:>7.1}s {:<24} {victim:<4} held {:.1}s",
                        p.at.as_secs_f64(),
                        p.kind.name(),
                        p.hold.as_secs_f64()
                    );
                }
                return Ok(true);
            }
            Ok(run::run(&cfg).await?.passed())
        }
        Cmd::Soak(args) => {
            let c = args.common;
            let cfg = SoakConfig {
                seed: c.seed,
                net: c.net,
                topology: Topology {
                    candidates: c.candidates,
                    slaves: c.slaves,
                },
                out: c.out,
                silo: silo_binary(c.silo)?,
                duration: args.duration,
                peak_for: args.peak_for,
                load: args.load,
                restart_every: args.restart_every,
                workers: args.workers,
                timeout: c.timeout,
            };
            Ok(soak::soak(&cfg).await?.passed())
        }
        Cmd::Check { history } => {
            let findings = run::recheck(&history)?;
            println!("{}", serde_json::to_string_pretty(&findings)?);
            Ok(findings.violations.is_empty() && findings.unknown.is_empty())
        }
        Cmd::Cleanup => {
            let removed = granary_chaos::net::cleanup_stale();
            println!("removed {removed} stale namespace(s)/link(s)");
            Ok(true)
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chaos: {e}");
            return ExitCode::from(2);
        }
    };
    // Ctrl-C drops the run's future: its guards kill the silos and remove the
    // namespaces and the tmpfs before we exit.
    let outcome = runtime.block_on(async {
        tokio::select! {
            outcome = main_async(args) => outcome,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; cleaned up")),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}
