//! The soak: measure peak throughput, then hold ~80 % of it for a long time while a
//! slave is restarted now and then (kill -9 and SIGTERM in turn), sampling every
//! silo's resident memory each second. Reports memory growth per silo (want flat),
//! error rate and latency per minute (want no drift), and checks the history as a run
//! does.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::cluster::Topology;
use crate::faults::{FaultKind, Mode, Planned};
use crate::history::{Op, Outcome, Recorder};
use crate::net::NetKind;
use crate::report::{Report, Window};
use crate::run::{self, RunConfig, Stage};
use crate::workload::{Keys, FINAL_READER};

/// The soak's settings.
#[derive(Clone, Debug)]
pub struct SoakConfig {
    /// Seed of the workers' choices.
    pub seed: u64,
    /// Namespaces or loopback.
    pub net: NetKind,
    /// How many silos of each kind.
    pub topology: Topology,
    /// Where run directories go.
    pub out: PathBuf,
    /// The `chaos-silo` binary.
    pub silo: PathBuf,
    /// How long the steady load runs.
    pub duration: Duration,
    /// How long peak throughput is measured first.
    pub peak_for: Duration,
    /// Share of the peak to hold (0.8).
    pub load: f64,
    /// A slave is restarted this often.
    pub restart_every: Duration,
    /// Concurrent workers.
    pub workers: usize,
    /// Each call's timeout.
    pub timeout: Duration,
}

/// One minute of the steady phase.
#[derive(Clone, Debug, Serialize)]
pub struct Minute {
    /// Minutes since the steady phase began.
    pub minute: usize,
    /// Operations invoked in it.
    pub ops: u64,
    /// Operations per second.
    pub ops_per_s: f64,
    /// Failed or indeterminate, in %.
    pub error_pct: f64,
    /// Median latency of acknowledged operations.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
}

/// Resident memory of one silo process (one incarnation).
#[derive(Clone, Debug, Serialize)]
pub struct Rss {
    /// The silo's name.
    pub silo: String,
    /// Its process id (one incarnation).
    pub pid: u32,
    /// Samples taken.
    pub samples: usize,
    /// How long it was sampled.
    pub seconds: f64,
    /// The first sample taken at least 30 s into its life (warm), and the last.
    pub warm_kib: u64,
    /// The last sample.
    pub last_kib: u64,
    /// The largest sample.
    pub max_kib: u64,
    /// Least-squares slope over its warm samples, KiB per minute.
    pub slope_kib_per_min: f64,
}

/// What the soak found.
#[derive(Clone, Debug, Serialize)]
pub struct SoakReport {
    /// Acknowledged operations per second, unthrottled.
    pub peak_ops_per_s: f64,
    /// The load held: `load` × peak.
    pub target_ops_per_s: f64,
    /// The steady phase, minute by minute.
    pub minutes: Vec<Minute>,
    /// Every silo incarnation's memory.
    pub rss: Vec<Rss>,
    /// The steady phase's run report.
    pub run: Report,
}

impl SoakReport {
    /// Whether the soak passed (as a run).
    pub fn passed(&self) -> bool {
        self.run.passed()
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn minutes(ops: &[Op], from: u64) -> Vec<Minute> {
    let mut out: Vec<(u64, u64, Vec<u64>)> = Vec::new();
    for op in ops
        .iter()
        .filter(|op| op.worker != FINAL_READER && op.invoked >= from)
    {
        let m = ((op.invoked - from) / 60_000_000) as usize;
        if out.len() <= m {
            out.resize_with(m + 1, || (0, 0, Vec::new()));
        }
        out[m].0 += 1;
        match op.outcome {
            Outcome::Ok(_) => out[m].2.push(op.completed - op.invoked),
            _ => out[m].1 += 1,
        }
    }
    out.into_iter()
        .enumerate()
        .map(|(minute, (ops, errors, mut lat))| {
            lat.sort_unstable();
            Minute {
                minute,
                ops,
                ops_per_s: ops as f64 / 60.0,
                error_pct: 100.0 * errors as f64 / ops.max(1) as f64,
                p50_ms: percentile(&lat, 0.5),
                p99_ms: percentile(&lat, 0.99),
            }
        })
        .collect()
}

fn slope(samples: &[(f64, u64)]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let my = samples.iter().map(|s| s.1 as f64).sum::<f64>() / n;
    let num: f64 = samples.iter().map(|s| (s.0 - mx) * (s.1 as f64 - my)).sum();
    let den: f64 = samples.iter().map(|s| (s.0 - mx).powi(2)).sum();
    if den == 0.0 {
        0.0
    } else {
        num / den * 60.0
    }
}

/// Runs the soak.
pub async fn soak(cfg: &SoakConfig) -> anyhow::Result<SoakReport> {
    // Roles: half counters, 40 % registers, the rest accounts.
    let counters = cfg.workers / 2;
    let registers = cfg.workers * 2 / 5;
    let accounts = cfg.workers - counters - registers;
    let mut run_cfg = RunConfig {
        scenario: "soak".into(),
        seed: cfg.seed,
        duration: cfg.duration,
        net: cfg.net,
        topology: cfg.topology,
        faults: vec![FaultKind::Kill],
        mode: Mode::Once,
        out: cfg.out.clone(),
        silo: cfg.silo.clone(),
        workers: [counters, registers, accounts],
        keys: [64, 32, 32],
        rate: None,
        timeout: cfg.timeout,
    };
    let mut stage = Stage::start(&run_cfg).await?;
    eprintln!(
        "chaos soak: measuring peak for {:?} ({} workers)…",
        cfg.peak_for, cfg.workers
    );

    // Peak: unthrottled, on keys of their own.
    let peak_keys = Arc::new(Keys::new(cfg.seed + 1_000_000, 64, 32, 32));
    let peak_rec = Arc::new(Recorder::new(std::time::Instant::now()));
    let (handles, stop) = run::start_workload(&run_cfg, &stage, &peak_keys, &peak_rec).await?;
    tokio::time::sleep(cfg.peak_for).await;
    run::stop_workload(handles, &stop).await;
    // The peak phase is checked like the rest, so its keys get their final reads too.
    let client = crate::workload::connect(&stage.gateways(), 0).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let peak_unanswered =
        crate::workload::final_reads(&client, &peak_keys, &peak_rec, deadline).await;
    client.close().await;
    let peak_ops = peak_rec.snapshot();
    let ok = peak_ops
        .iter()
        .filter(|op| op.worker != FINAL_READER && op.outcome.ok().is_some())
        .count();
    let peak = ok as f64 / cfg.peak_for.as_secs_f64();
    let target = peak * cfg.load;
    eprintln!(
        "chaos soak: peak {peak:.0} ops/s; holding {target:.0} ops/s for {:?}",
        cfg.duration
    );

    // Steady phase.
    run_cfg.rate = Some(target / cfg.workers as f64);
    let keys = Arc::new(Keys::new(cfg.seed, 64, 32, 32));
    let started = Instant::now();
    let rec = Arc::new(Recorder::new(started.into_std()));
    let (handles, stop) = run::start_workload(&run_cfg, &stage, &keys, &rec).await?;
    let mut samples: Vec<(String, u32, f64, u64)> = Vec::new();
    let mut windows = Vec::new();
    let mut failures = Vec::new();
    let mut next_restart = started + cfg.restart_every;
    let mut restarts = 0usize;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < cfg.duration {
        tick.tick().await;
        let t = started.elapsed().as_secs_f64();
        for slot in 0..stage.cluster.topology.silos() {
            if let Some(pid) = stage.cluster.pid(slot) {
                if let Some(kib) = rss_kib(pid) {
                    samples.push((stage.cluster.name(slot).to_owned(), pid, t, kib));
                }
            }
        }
        if Instant::now() >= next_restart
            && started.elapsed() + Duration::from_secs(20) < cfg.duration
        {
            next_restart += cfg.restart_every;
            let n = restarts % cfg.topology.slaves.max(1);
            let slot = cfg.topology.slave(n);
            let graceful = restarts % 2 == 1;
            let start = rec.now();
            eprintln!(
                "chaos soak: {:>5.0}s restart {} ({})",
                t,
                stage.cluster.name(slot),
                if graceful { "SIGTERM" } else { "kill -9" }
            );
            if graceful {
                if let Err(e) = stage
                    .cluster
                    .stop_gracefully(slot, Duration::from_secs(30))
                    .await
                {
                    failures.push(format!("graceful restart: {e}"));
                }
            } else {
                stage.cluster.kill9(slot);
            }
            stage.cluster.start(&stage.net, slot)?;
            windows.push(Window {
                fault: Planned {
                    kind: FaultKind::Kill,
                    at: Duration::from_micros(start),
                    hold: Duration::ZERO,
                    slave: Some(n),
                },
                victim: Some(stage.cluster.name(slot).to_owned()),
                start,
                healed: rec.now(),
            });
            restarts += 1;
        }
    }
    run::stop_workload(handles, &stop).await;
    if let Err(e) = stage.cluster.check_alive() {
        failures.push(e.to_string());
    }
    let unanswered = match run::settle_and_read(&mut stage, &keys, &rec).await {
        Ok(u) => u,
        Err(e) => {
            failures.push(format!("{e:#}"));
            Vec::new()
        }
    };
    stage.cluster.kill_all();
    // The peak phase's history is checked too.
    let peak_findings = crate::check::check_all(&peak_ops);
    if !peak_findings.violations.is_empty() || !peak_unanswered.is_empty() {
        failures.push(format!(
            "peak phase: {} violation(s), final reads never answered for {peak_unanswered:?}",
            peak_findings.violations.len()
        ));
        for v in &peak_findings.violations {
            failures.push(format!("peak phase [{} {}] {}", v.model, v.key, v.what));
        }
    }
    let report = run::finish(&run_cfg, &stage.dir, &rec, &windows, unanswered, failures)?;

    let ops = rec.snapshot();
    let minutes = minutes(&ops, 0);
    let mut rss: Vec<Rss> = Vec::new();
    let mut csv = String::from("t_s,silo,pid,rss_kib\n");
    let mut incarnations: Vec<(String, u32)> = samples.iter().map(|s| (s.0.clone(), s.1)).collect();
    incarnations.dedup();
    incarnations.sort();
    incarnations.dedup();
    for (t, silo, pid, kib) in samples.iter().map(|s| (s.2, &s.0, s.1, s.3)) {
        let _ = writeln!(csv, "{t:.1},{silo},{pid},{kib}");
    }
    for (silo, pid) in incarnations {
        let mine: Vec<(f64, u64)> = samples
            .iter()
            .filter(|s| s.0 == silo && s.1 == pid)
            .map(|s| (s.2, s.3))
            .collect();
        let born = mine.first().map_or(0.0, |s| s.0);
        let warm: Vec<(f64, u64)> = mine
            .iter()
            .copied()
            .filter(|s| s.0 >= born + 30.0)
            .collect();
        let Some(&(_, warm_kib)) = warm.first() else {
            continue;
        };
        rss.push(Rss {
            silo,
            pid,
            samples: mine.len(),
            seconds: mine.last().map_or(0.0, |s| s.0) - born,
            warm_kib,
            last_kib: mine.last().map_or(0, |s| s.1),
            max_kib: mine.iter().map(|s| s.1).max().unwrap_or(0),
            slope_kib_per_min: slope(&warm),
        });
    }
    std::fs::write(stage.dir.join("rss.csv"), csv)?;
    let soak = SoakReport {
        peak_ops_per_s: peak,
        target_ops_per_s: target,
        minutes,
        rss,
        run: report,
    };
    std::fs::write(
        stage.dir.join("soak.json"),
        serde_json::to_vec_pretty(&soak)?,
    )?;
    let text = soak_text(&soak);
    std::fs::write(stage.dir.join("soak.txt"), &text)?;
    print!("{text}");
    Ok(soak)
}

fn soak_text(s: &SoakReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "== soak: peak {:.0} ops/s, held {:.0} ops/s (target)",
        s.peak_ops_per_s, s.target_ops_per_s
    );
    let _ = writeln!(out, "   minute  ops/s  errors   p50 ms   p99 ms");
    for m in &s.minutes {
        let _ = writeln!(
            out,
            "   {:>6} {:>6.0} {:>6.2} % {:>8.2} {:>8.2}",
            m.minute, m.ops_per_s, m.error_pct, m.p50_ms, m.p99_ms
        );
    }
    let _ = writeln!(
        out,
        "   silo  pid      lived   warm MiB  last MiB  max MiB  slope KiB/min"
    );
    for r in &s.rss {
        let _ = writeln!(
            out,
            "   {:<5} {:<8} {:>5.0} s  {:>8.1}  {:>8.1}  {:>7.1}  {:>+10.1}",
            r.silo,
            r.pid,
            r.seconds,
            r.warm_kib as f64 / 1024.0,
            r.last_kib as f64 / 1024.0,
            r.max_kib as f64 / 1024.0,
            r.slope_kib_per_min
        );
    }
    out
}
