//! The report: formatting of durations and rates, and the four result tables.

use std::time::Duration;

use granary_bench::sys::load_average;

use crate::measure::{LoopResult, SeqResult};
use crate::KEYS;

pub(crate) fn fmt_us(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

pub(crate) fn fmt_rate(r: f64) -> String {
    if r >= 10_000.0 {
        format!("{:.1} k/s", r / 1000.0)
    } else {
        format!("{r:.0} /s")
    }
}

/// Prints the results of the four scenarios and the grain-call overhead over the raw
/// transport. `seq` starts with `Ping` then `Counter.Get`; `pipelined` alternates
/// `Ping` and `Counter.Get` rows.
pub(crate) fn print(
    seq: &[SeqResult],
    pipelined: &[LoopResult],
    writes: &LoopResult,
    tells: &[LoopResult],
) {
    let load_after = load_average();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "== Remote calls between processes: client (this process) → slave (grains), \
         master (directory + store) — all on 127.0.0.1, {cores} cores shared by the 3 processes"
    );
    println!("load average after: {load_after} (other work on the machine skews the figures)");
    println!("\n1. Sequential latency, one caller, one grain (median of per-repetition percentiles; max = worst seen)");
    println!(
        "{:<30} {:>9} {:>9} {:>9} {:>9} {:>10}  CPU µs/call client/slave/master",
        "call", "p50", "p99", "p99.9", "max", "calls/s"
    );
    for r in seq {
        println!(
            "{:<30} {:>9} {:>9} {:>9} {:>9} {:>10}  {}",
            r.op.label(),
            fmt_us(r.p50),
            fmt_us(r.p99),
            fmt_us(r.p999),
            fmt_us(r.max),
            fmt_rate(r.rate),
            r.cpu
        );
    }

    let header = || {
        println!(
            "{:<30} {:>4} {:>11} {:>21} {:>9} {:>9}  CPU µs/call client/slave/master",
            "call", "C", "calls/s", "(min – max)", "p50", "p99"
        )
    };
    let row = |r: &LoopResult| {
        println!(
            "{:<30} {:>4} {:>11} {:>21} {:>9} {:>9}  {}  {}",
            r.label,
            r.c,
            fmt_rate(r.rate),
            format!("({} – {})", fmt_rate(r.min), fmt_rate(r.max)),
            fmt_us(r.p50),
            fmt_us(r.p99),
            r.cpu,
            r.note
        )
    };
    println!("\n2. Pipelined throughput: C callers, one call in flight each, over {KEYS} counters");
    header();
    for r in pipelined {
        row(r);
    }
    println!("\n3. Asks that write state: Counter.Add(1) → slave writes to the master's memory store over TCP");
    header();
    row(writes);
    println!("\n4. Tells (one-way; a remote tell resolves once queued in the slave's mailbox)");
    header();
    for r in tells {
        row(r);
    }

    println!("\nGrain-call overhead over the bare transport (Counter.Get vs Ping):");
    let ping = &seq[0];
    let get = &seq[1];
    println!(
        "  sequential: p50 {} vs {} ({:.2}×), p99 {} vs {} ({:.2}×)",
        fmt_us(get.p50),
        fmt_us(ping.p50),
        get.p50.as_secs_f64() / ping.p50.as_secs_f64(),
        fmt_us(get.p99),
        fmt_us(ping.p99),
        get.p99.as_secs_f64() / ping.p99.as_secs_f64(),
    );
    for pair in pipelined.chunks(2) {
        let (p, g) = (&pair[0], &pair[1]);
        println!(
            "  C={:<4} throughput {} vs {} ({:.0}% of raw)",
            p.c,
            fmt_rate(g.rate),
            fmt_rate(p.rate),
            100.0 * g.rate / p.rate
        );
    }
}
