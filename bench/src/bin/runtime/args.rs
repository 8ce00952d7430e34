//! The command line.

use std::time::Duration;

use anyhow::{bail, Context};

/// Command-line settings.
#[derive(Debug, Clone)]
pub(crate) struct Args {
    pub(crate) reps: usize,
    pub(crate) window: Duration,
    pub(crate) grains: usize,
    pub(crate) hot_callers: Vec<usize>,
    pub(crate) many_callers: Vec<usize>,
    pub(crate) tell_senders: usize,
    pub(crate) activations: usize,
    pub(crate) activation_concurrency: usize,
    pub(crate) rss: bool,
    /// Internal: run as the memory-probe child for this kind and exit.
    pub(crate) rss_child: Option<String>,
}

fn list(s: &str) -> anyhow::Result<Vec<usize>> {
    s.split(',')
        .map(|x| x.trim().parse::<usize>().context("bad list"))
        .collect()
}

impl Args {
    pub(crate) fn parse() -> anyhow::Result<Args> {
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
        if granary_bench::smoke::enabled() {
            // CI: every scenario once, a few hundred calls each.
            args.reps = 1;
            args.window = Duration::from_millis(20);
            args.grains = 50;
            args.hot_callers = vec![4];
            args.many_callers = vec![4];
            args.tell_senders = 4;
            args.activations = 300;
            args.activation_concurrency = 8;
        }
        let mut it = granary_bench::smoke::args().into_iter();
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
                         [--activations 100000] [--activation-concurrency 64] [--no-rss] [--smoke]"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown flag {other} (try --help)"),
            }
        }
        Ok(args)
    }
}
