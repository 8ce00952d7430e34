//! The command line.

use std::path::PathBuf;

use anyhow::{bail, Context};

const USAGE: &str = "\
usage: cluster [--reps N] [--seconds S] [--asks N] [--threads N] [--silo PATH] [--smoke]

  --reps N      repetitions of every measurement; the median is reported (default 5)
  --seconds S   length of one repetition of a throughput point (default 1)
  --asks N      calls per repetition of the sequential latency runs (default 10000)
  --threads N   worker threads of the client's tokio runtime (default: one per core)
  --silo PATH   the silo binary to start; without it the benchmark builds the
                bench's own `silo` (same profile) and uses it
  --smoke       one repetition of a few hundred calls per point (CI: checks it runs)";

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
        if granary_bench::smoke::enabled() {
            args.reps = 1;
            args.seconds = 0.1;
            args.asks = 200;
        }
        let mut it = granary_bench::smoke::args().into_iter();
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
