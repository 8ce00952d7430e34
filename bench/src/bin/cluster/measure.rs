//! Running the calls: sequential latency runs and closed-loop throughput runs, their
//! repetitions interleaved, summarised as medians.

use std::sync::Arc;
use std::time::Duration;

use granary_bench::stats::{median, min_max, percentile};
use tokio::time::Instant;

use crate::args::Args;
use crate::calls::{Ctx, Op};
use crate::cpu::Cpu;
use crate::report::fmt_rate;
use crate::{KEYS, LOOP_WARMUP, SEQ_WARMUP};

/// One run: how many calls, how long, and (if recorded) their latencies.
#[derive(Default)]
pub(crate) struct Run {
    ops: usize,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
    /// Sorted.
    latencies: Vec<Duration>,
    cpu: Cpu,
}

impl Run {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q`-quantile (0.5: median) of the latencies.
    fn pct(&self, q: f64) -> Duration {
        percentile(&self.latencies, q)
    }
}

/// `n` calls one after the other on grain key 0.
async fn sequential(ctx: &Ctx, op: Op, n: usize) -> Run {
    let mut run = Run {
        latencies: Vec::with_capacity(n),
        ..Run::default()
    };
    let cpu = Cpu::now(ctx.pids);
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        match ctx.call(op, 0).await {
            Ok(()) => {
                run.latencies.push(t.elapsed());
                run.ops += 1;
            }
            Err(e) => {
                run.errors += 1;
                run.first_error.get_or_insert(e);
            }
        }
    }
    run.elapsed = started.elapsed();
    run.cpu = Cpu::now(ctx.pids).since(cpu);
    run.latencies.sort_unstable();
    run
}

/// `c` callers, each calling in a loop (one call in flight each) for `length`; caller
/// `w` goes through keys `w, w + c, w + 2c, …` (mod 1,000).
async fn closed_loop(ctx: &Arc<Ctx>, op: Op, c: usize, length: Duration) -> Run {
    let cpu = Cpu::now(ctx.pids);
    let started = Instant::now();
    let stop = started + length;
    let workers: Vec<_> = (0..c)
        .map(|w| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let mut run = Run::default();
                let mut i = w;
                while Instant::now() < stop {
                    let t = Instant::now();
                    match ctx.call(op, i).await {
                        Ok(()) => {
                            run.latencies.push(t.elapsed());
                            run.ops += 1;
                        }
                        Err(e) => {
                            run.errors += 1;
                            run.first_error.get_or_insert(e);
                        }
                    }
                    i += c;
                }
                run
            })
        })
        .collect();
    let mut total = Run::default();
    for worker in workers {
        let run = worker.await.expect("benchmark worker panicked");
        total.ops += run.ops;
        total.errors += run.errors;
        if total.first_error.is_none() {
            total.first_error = run.first_error;
        }
        total.latencies.extend(run.latencies);
    }
    // Callers finish the call in flight at `stop`: count until the last one ends.
    total.elapsed = started.elapsed();
    total.cpu = Cpu::now(ctx.pids).since(cpu);
    total.latencies.sort_unstable();
    total
}

/// Asks `Get` of every counter, 64 at a time: returns once every earlier message to
/// them (FIFO mailboxes) has been handled.
pub(crate) async fn drain(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
    let c = 64;
    let workers: Vec<_> = (0..c)
        .map(|w| {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                for i in (w..KEYS).step_by(c) {
                    ctx.call(Op::CounterGet, i).await?;
                }
                Ok::<_, String>(())
            })
        })
        .collect();
    for worker in workers {
        worker
            .await?
            .map_err(|e| anyhow::anyhow!("draining: {e}"))?;
    }
    Ok(())
}

/// Adds up the errors of `runs`; prints the first, if any.
fn check_errors(what: &str, runs: &[Run]) -> usize {
    let errors = runs.iter().map(|r| r.errors).sum();
    if errors > 0 {
        let first = runs.iter().find_map(|r| r.first_error.as_deref());
        eprintln!("  ! {what}: {errors} failed calls; first: {first:?}");
    }
    errors
}

/// Sequential latency results of one call type (medians over repetitions).
pub(crate) struct SeqResult {
    pub(crate) op: Op,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) p999: Duration,
    /// Worst over all repetitions.
    pub(crate) max: Duration,
    pub(crate) rate: f64,
    pub(crate) cpu: String,
}

/// Throughput results at one concurrency (medians over repetitions).
pub(crate) struct LoopResult {
    pub(crate) label: String,
    pub(crate) c: usize,
    pub(crate) rate: f64,
    pub(crate) min: f64,
    pub(crate) max: f64,
    pub(crate) p50: Duration,
    pub(crate) p99: Duration,
    pub(crate) cpu: String,
    pub(crate) note: String,
}

fn median_duration(runs: &[Run], f: impl Fn(&Run) -> Duration) -> Duration {
    let secs: Vec<f64> = runs.iter().map(|r| f(r).as_secs_f64()).collect();
    Duration::from_secs_f64(median(&secs))
}

/// Sequential latency of each of `ops`. The repetitions are interleaved (a repetition
/// of every op, then the next round), so that load from outside the benchmark hits
/// all of them alike and their ratios stay meaningful.
pub(crate) async fn measure_sequential(ctx: &Ctx, ops: &[Op], args: &Args) -> Vec<SeqResult> {
    for &op in ops {
        let _ = sequential(ctx, op, SEQ_WARMUP).await;
    }
    let mut runs: Vec<Vec<Run>> = ops.iter().map(|_| Vec::new()).collect();
    for _ in 0..args.reps {
        for (i, &op) in ops.iter().enumerate() {
            runs[i].push(sequential(ctx, op, args.asks).await);
        }
    }
    ops.iter()
        .zip(runs)
        .map(|(&op, runs)| {
            check_errors(op.label(), &runs);
            let mut cpu = Cpu::default();
            runs.iter().for_each(|r| cpu.add(r.cpu));
            let calls = runs.iter().map(|r| r.ops).sum();
            SeqResult {
                op,
                p50: median_duration(&runs, |r| r.pct(0.5)),
                p99: median_duration(&runs, |r| r.pct(0.99)),
                p999: median_duration(&runs, |r| r.pct(0.999)),
                max: runs.iter().map(|r| r.pct(1.0)).max().unwrap_or_default(),
                rate: median(&runs.iter().map(Run::rate).collect::<Vec<_>>()),
                cpu: cpu.per_op(calls, ctx.ticks),
            }
        })
        .collect()
}

/// Closed-loop throughput of each of `ops` with `c` callers, repetitions interleaved
/// as in [`measure_sequential`].
pub(crate) async fn measure_loops(
    ctx: &Arc<Ctx>,
    ops: &[Op],
    c: usize,
    args: &Args,
) -> anyhow::Result<Vec<LoopResult>> {
    let length = Duration::from_secs_f64(args.seconds);
    for &op in ops {
        let _ = closed_loop(ctx, op, c, LOOP_WARMUP).await;
        if op == Op::TellGet {
            drain(ctx).await?;
        }
    }
    let mut runs: Vec<Vec<Run>> = ops.iter().map(|_| Vec::new()).collect();
    let mut drained_rates: Vec<Vec<f64>> = ops.iter().map(|_| Vec::new()).collect();
    for _ in 0..args.reps {
        for (i, &op) in ops.iter().enumerate() {
            let mut run = closed_loop(ctx, op, c, length).await;
            if op == Op::TellGet {
                // Tells resolve once queued: count the time until the slave has
                // handled them all, too.
                let cpu = Cpu::now(ctx.pids);
                let t = Instant::now();
                drain(ctx).await?;
                let drain_time = t.elapsed();
                run.cpu.add(Cpu::now(ctx.pids).since(cpu));
                drained_rates[i].push(run.ops as f64 / (run.elapsed + drain_time).as_secs_f64());
            }
            runs[i].push(run);
        }
    }
    let mut results = Vec::new();
    for ((&op, runs), drained) in ops.iter().zip(runs).zip(drained_rates) {
        let errors = check_errors(&format!("{} C={c}", op.label()), &runs);
        let mut cpu = Cpu::default();
        runs.iter().for_each(|r| cpu.add(r.cpu));
        let calls = runs.iter().map(|r| r.ops).sum();
        let rates: Vec<f64> = runs.iter().map(Run::rate).collect();
        let mut note = String::new();
        if !drained.is_empty() {
            note = format!("{} incl. drain", fmt_rate(median(&drained)));
        }
        if errors > 0 {
            note.push_str(&format!(" {errors} errors"));
        }
        let (min, max) = min_max(&rates);
        results.push(LoopResult {
            label: op.label().to_owned(),
            c,
            rate: median(&rates),
            min,
            max,
            p50: median_duration(&runs, |r| r.pct(0.5)),
            p99: median_duration(&runs, |r| r.pct(0.99)),
            cpu: cpu.per_op(calls, ctx.ticks),
            note,
        });
    }
    Ok(results)
}
