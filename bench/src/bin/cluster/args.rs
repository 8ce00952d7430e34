//! The command line.

use std::path::PathBuf;

use anyhow::{bail, Context};

const USAGE: &str = "\
usage: cluster [--reps N] [--seconds S] [--asks N] [--threads N] [--silo PATH]

  --reps N      repetitions of every measurement; the median is reported (default 5)
  --seconds S   length of one repetition of a throughput point (default 1)
  --asks N      calls per repetition of the sequential latency runs (default 10000)
  --threads N   worker threads of the client's tokio runtime (default: one per core)
  --silo PATH   the example silo binary to start; without it the benchmark runs
                `cargo build --release -p granary-example --bin silo` in the main
                workspace and uses target/release/silo";

/// Command-line settings.
#[derive(Debug)]
pub(crate) struct Args {
    pub(crate) reps: usize,
    pub(crate) seconds: f64,
    pub(crate) asks: usize,
    pub(crate) threads: Option<usize>,
    pub(crate) silo: Option<PathBuf>,
}

impl Args {
    pub(crate) fn parse() -> anyhow::Result<Args> {
        let mut args = Args {
            reps: 5,
            seconds: 1.0,
            asks: 10_000,
            threads: None,
            silo: None,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--reps" => args.reps = value()?.parse()?,
                "--seconds" => args.seconds = value()?.parse()?,
                "--asks" => args.asks = value()?.parse()?,
                "--threads" => args.threads = Some(value()?.parse()?),
                "--silo" => args.silo = Some(value()?.into()),
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => bail!("unknown argument {other:?}\n{USAGE}"),
            }
        }
        if args.reps == 0 || args.asks == 0 || args.seconds.is_nan() || args.seconds <= 0.0 {
            bail!("--reps, --asks and --seconds must be positive");
        }
        if args.threads == Some(0) {
            bail!("--threads must be positive");
        }
        Ok(args)
    }
}
