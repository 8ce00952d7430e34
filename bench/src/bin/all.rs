//! The side-by-side suite in one command: runs `peers` (in-process: Granary, raw tokio,
//! actix, ractor, kameo) and `remote` (Granary, ractor_cluster, raw TCP echo) `--runs`
//! times each, alternating them, then prints one line per metric (every system's
//! median of the run medians, and Granary's cost relative to each), checks the targets
//! of issue 15, and writes everything to `bench/results/all-<unix time>.json` (each
//! run's own JSON goes there too).
//!
//! ```text
//! cargo run --release --manifest-path bench/Cargo.toml --bin all -- [--runs 3] [--smoke]
//! ```
//!
//! Extra arguments after `--` are passed to both benchmarks (e.g. `-- --reps 7`).

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use granary_bench::report::{line, merge, results_path, Metric, Report, GRANARY};
use serde::Serialize;

/// A target of the issue: Granary's cost relative to `other` on `metric` must be at
/// most `max` (or Granary's own median at most `max` when `other` is `None`).
struct Target {
    what: &'static str,
    metric: &'static str,
    other: Option<&'static str>,
    max: f64,
}

const TARGETS: [Target; 7] = [
    Target {
        what: "remote sequential ask p50 ≤ 2× the raw echo p50",
        metric: "remote.seq.p50",
        other: Some("echo"),
        max: 2.0,
    },
    Target {
        what: "remote 256-concurrent throughput ≥ 3× ractor_cluster",
        metric: "remote.256",
        other: Some("ractor_cluster"),
        max: 1.0 / 3.0,
    },
    Target {
        what: "local tell at least as fast as actix",
        metric: "local.tell",
        other: Some("actix"),
        max: 1.0,
    },
    Target {
        what: "local sequential ask p50 within 2× of raw mpsc+oneshot",
        metric: "local.ask.seq.p50",
        other: Some("raw"),
        max: 2.0,
    },
    Target {
        what: "local 256×256 ask throughput within 2× of raw mpsc+oneshot",
        metric: "local.ask.256x256",
        other: Some("raw"),
        max: 2.0,
    },
    Target {
        what: "≤ 3 heap allocations per local ask",
        metric: "local.ask.allocs",
        other: None,
        max: 3.0,
    },
    Target {
        what: "≤ 2 KB live heap per idle activation",
        metric: "local.spawn.heap",
        other: None,
        max: 2048.0,
    },
];

/// What `all` writes: the merged metrics and every run's report.
#[derive(Serialize)]
struct Suite<'a> {
    runs: usize,
    smoke: bool,
    seconds: f64,
    load_start: String,
    load_end: String,
    metrics: &'a [Metric],
    targets: Vec<(String, Option<f64>, f64, bool)>,
    reports: &'a [Report],
}

fn main() -> anyhow::Result<()> {
    let smoke = granary_bench::smoke::enabled();
    let mut runs = if smoke { 1 } else { 3 };
    let mut extra = Vec::new();
    let mut it = granary_bench::smoke::args().into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => runs = it.next().context("--runs needs a value")?.parse()?,
            "-h" | "--help" => {
                println!("usage: all [--runs 3] [--smoke] [-- ARGS FOR peers AND remote]");
                return Ok(());
            }
            "--" => extra.extend(it.by_ref()),
            other => bail!("unknown flag {other} (try --help)"),
        }
    }
    let started = Instant::now();
    let load_start = granary_bench::sys::load_average();
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let peers = granary_bench::exe::sibling("peers")?;
    let remote = granary_bench::exe::sibling("remote")?;
    // The remote benchmark starts the bench's silo: build it now, outside any timing.
    granary_bench::exe::sibling("silo")?;
    let mut reports: Vec<Report> = Vec::new();
    for run in 0..runs {
        for (name, exe) in [("peers", &peers), ("remote", &remote)] {
            let path = results_path(&format!(
                "{name}{}-{stamp}-run{}.json",
                if smoke { "-smoke" } else { "" },
                run + 1
            ));
            eprintln!("== all: run {}/{runs}: {name}", run + 1);
            let mut cmd = Command::new(exe);
            cmd.arg("--json").arg(&path).args(&extra);
            if smoke {
                cmd.arg("--smoke");
            }
            let status = cmd.status().with_context(|| format!("running {name}"))?;
            if !status.success() {
                bail!("{name} failed ({status})");
            }
            reports.push(Report::read(&path)?);
        }
    }
    let metrics = merge(&reports);
    let load_end = granary_bench::sys::load_average();
    let seconds = started.elapsed().as_secs_f64();

    println!();
    println!(
        "== Granary side by side: {runs} run(s) of the suite, medians of run medians{}; \
         load average {load_start} at start, {load_end} at end; {seconds:.0} s",
        if smoke {
            " (SMOKE: figures meaningless)"
        } else {
            ""
        }
    );
    println!(
        "   (granary cost × = Granary's time, latency or bytes ÷ the other's; < 1 Granary cheaper)"
    );
    for fact in reports.iter().flat_map(|r| r.setup.iter()).take(9) {
        println!("   {fact}");
    }
    for m in &metrics {
        println!("{}", line(m));
    }
    println!();
    println!("Targets (issue 15):");
    let mut targets = Vec::new();
    for t in &TARGETS {
        let value = metrics
            .iter()
            .find(|m| m.name == t.metric)
            .and_then(|m| match t.other {
                Some(other) => m.cost_ratio(other),
                None => m.median(GRANARY),
            });
        let met = value.is_some_and(|v| v <= t.max);
        let shown = match (value, t.other) {
            (Some(v), Some(o)) => format!("granary cost × {v:.2} vs {o} (limit {:.2})", t.max),
            (Some(v), None) => format!("granary {v:.1} (limit {:.0})", t.max),
            (None, _) => "not measured".to_owned(),
        };
        println!(
            "  [{}] {}: {shown}",
            if met { "met" } else { "MISSED" },
            t.what
        );
        targets.push((t.what.to_owned(), value, t.max, met));
    }
    let path = results_path(&format!(
        "all{}-{stamp}.json",
        if smoke { "-smoke" } else { "" }
    ));
    let suite = Suite {
        runs,
        smoke,
        seconds,
        load_start,
        load_end,
        metrics: &metrics,
        targets,
        reports: &reports,
    };
    std::fs::write(&path, serde_json::to_string_pretty(&suite)?)?;
    println!("\nresults: {} ({seconds:.0} s)", path.display());
    Ok(())
}
