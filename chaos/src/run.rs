//! One harness run: network, cluster, workload, faults, final reads, checks, report.
//!
//! Everything a run creates is owned by values dropped when it ends, also on error,
//! panic or Ctrl-C (the caller drops the run's future): the silo processes are killed
//! ([`Cluster`]), the namespaces removed ([`Net`]), the tmpfs unmounted ([`Tmpfs`]).
//! The run's directory keeps the history (`history.jsonl`), the schedule, the report
//! (`report.json`, `report.txt`) and every silo's log.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use tokio::time::Instant;

use crate::check;
use crate::cluster::{Cluster, Topology};
use crate::faults::{self, FaultKind, Mode, Rules};
use crate::history::{self, Recorder};
use crate::net::{Net, NetKind};
use crate::report::{Report, Window};
use crate::workload::{self, Keys, Role, Worker};

/// Everything a run needs to know.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// A short name for the report (`short`, `mixed`, `soak`…).
    pub scenario: String,
    /// Seed of the schedule and of the workers' choices.
    pub seed: u64,
    /// How long the workload runs (faults included).
    pub duration: Duration,
    /// Namespaces or loopback.
    pub net: NetKind,
    /// How many silos of each kind.
    pub topology: Topology,
    /// The fault kinds to draw from.
    pub faults: Vec<FaultKind>,
    /// Each listed fault once, or drawn at random.
    pub mode: Mode,
    /// Where run directories go.
    pub out: PathBuf,
    /// The `chaos-silo` binary.
    pub silo: PathBuf,
    /// Workers per role: counter, register, account.
    pub workers: [usize; 3],
    /// Keys per role: counter, register, account.
    pub keys: [usize; 3],
    /// Operations per second per worker (`None`: unthrottled).
    pub rate: Option<f64>,
    /// Each call's timeout.
    pub timeout: Duration,
}

/// A small tmpfs for the master's store (so the disk can be filled), unmounted on drop.
#[derive(Debug)]
pub struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `64m`) on `dir`.
    pub fn mount(dir: &Path, size: &str) -> anyhow::Result<Tmpfs> {
        std::fs::create_dir_all(dir)?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .context("run mount")?;
        if !status.success() {
            bail!("cannot mount a tmpfs on {} (needs root)", dir.display());
        }
        Ok(Tmpfs {
            dir: dir.to_owned(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// The run's directory: `OUT/SCENARIO-seedN-UNIXTIME`.
fn run_dir(cfg: &RunConfig) -> anyhow::Result<PathBuf> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let dir = cfg
        .out
        .join(format!("{}-seed{}-{now}", cfg.scenario, cfg.seed));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The network, the store volume and the running cluster of a run.
#[derive(Debug)]
pub struct Stage {
    // Dropped in this order: silos first, then the volume, then the network.
    /// The silo processes.
    pub cluster: Cluster,
    /// The fault filter's rules files.
    pub rules: Rules,
    /// The master's store directory.
    pub store: PathBuf,
    _tmpfs: Option<Tmpfs>,
    /// The silos' network.
    pub net: Net,
    /// The run's directory.
    pub dir: PathBuf,
}

impl Stage {
    /// Builds the network, mounts the store volume if the disk may be filled, and
    /// starts every silo.
    pub async fn start(cfg: &RunConfig) -> anyhow::Result<Stage> {
        let dir = run_dir(cfg)?;
        let net = match cfg.net {
            NetKind::Netns => Net::netns(cfg.topology.silos())?,
            NetKind::Loopback => Net::loopback(cfg.topology.silos())?,
        };
        let store = dir.join("store");
        let tmpfs = if cfg.faults.contains(&FaultKind::DiskFull) {
            Some(Tmpfs::mount(&store, "64m")?)
        } else {
            std::fs::create_dir_all(&store)?;
            None
        };
        let mut cluster = Cluster::new(cfg.topology, cfg.silo.clone(), &dir, store.clone());
        let rules = Rules::new(&cluster)?;
        cluster.start_all(&net, Duration::from_secs(60)).await?;
        Ok(Stage {
            cluster,
            rules,
            store,
            _tmpfs: tmpfs,
            net,
            dir,
        })
    }

    /// Every silo's TCP address (the clients' gateways).
    pub fn gateways(&self) -> Vec<std::net::SocketAddr> {
        (0..self.cluster.topology.silos())
            .map(|slot| self.net.tcp(slot))
            .collect()
    }
}

/// Starts the workers; returns their handles and the stop flag.
pub async fn start_workload(
    cfg: &RunConfig,
    stage: &Stage,
    keys: &Arc<Keys>,
    rec: &Arc<Recorder>,
) -> anyhow::Result<(Vec<tokio::task::JoinHandle<()>>, Arc<AtomicBool>)> {
    let stop = Arc::new(AtomicBool::new(false));
    let gateways = stage.gateways();
    let mut handles = Vec::new();
    let roles = [Role::Counter, Role::Register, Role::Account];
    let mut id = 0u32;
    for (role, &count) in roles.iter().zip(&cfg.workers) {
        for _ in 0..count {
            let client = workload::connect(&gateways, id as usize).await?;
            let worker = Worker {
                id,
                role: *role,
                seed: cfg.seed,
                period: cfg.rate.map(|r| Duration::from_secs_f64(1.0 / r)),
                timeout: cfg.timeout,
            };
            handles.push(tokio::spawn(workload::run(
                worker,
                client,
                keys.clone(),
                rec.clone(),
                stop.clone(),
            )));
            id += 1;
        }
    }
    Ok((handles, stop))
}

/// Stops the workers (each finishes its call in flight).
pub async fn stop_workload(handles: Vec<tokio::task::JoinHandle<()>>, stop: &AtomicBool) {
    stop.store(true, Ordering::Relaxed);
    for handle in handles {
        let _ = tokio::time::timeout(Duration::from_secs(30), handle).await;
    }
}

/// Heals everything, waits until every silo serves, and reads every key.
pub async fn settle_and_read(
    stage: &mut Stage,
    keys: &Keys,
    rec: &Recorder,
) -> anyhow::Result<Vec<String>> {
    stage.rules.clear()?;
    let deadline = Instant::now() + Duration::from_secs(90);
    for slot in 0..stage.cluster.topology.silos() {
        stage
            .cluster
            .wait_serving(&stage.net, slot, deadline)
            .await
            .with_context(|| {
                format!(
                    "after the faults, {} does not serve",
                    stage.cluster.name(slot)
                )
            })?;
    }
    let client = workload::connect(&stage.gateways(), 0).await?;
    let unanswered =
        workload::final_reads(&client, keys, rec, Instant::now() + Duration::from_secs(60)).await;
    client.close().await;
    Ok(unanswered)
}

/// Checks, reports (to the run directory and stdout) and returns the report.
pub fn finish(
    cfg: &RunConfig,
    dir: &Path,
    rec: &Recorder,
    windows: &[Window],
    unanswered: Vec<String>,
    mut failures: Vec<String>,
) -> anyhow::Result<Report> {
    let ops = rec.snapshot();
    history::write_jsonl(&ops, &dir.join("history.jsonl"))?;
    let checked = Instant::now();
    let findings = check::check_all(&ops);
    eprintln!(
        "chaos: checked {} operations in {:.1?}",
        ops.len(),
        checked.elapsed()
    );
    let mut report = Report::new(
        cfg.scenario.clone(),
        cfg.seed,
        cfg.duration.as_secs_f64(),
        &ops,
        windows,
        findings,
        unanswered,
    );
    report.failures.append(&mut failures);
    std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    let text = report.text();
    std::fs::write(dir.join("report.txt"), &text)?;
    std::fs::write(dir.join("faults.md"), report.by_kind_table())?;
    print!("{text}");
    println!("   table row: {}", report.table_row());
    println!("   run directory: {}", dir.display());
    Ok(report)
}

/// One whole run.
pub async fn run(cfg: &RunConfig) -> anyhow::Result<Report> {
    let plan = faults::schedule(
        cfg.seed,
        &cfg.faults,
        cfg.mode,
        cfg.duration,
        cfg.topology.slaves,
    );
    let mut stage = Stage::start(cfg).await?;
    std::fs::write(
        stage.dir.join("schedule.json"),
        serde_json::to_vec_pretty(&plan)?,
    )?;
    eprintln!(
        "chaos: {} (seed {}): {} silos on {:?}, {} fault(s) planned; logs in {}",
        cfg.scenario,
        cfg.seed,
        cfg.topology.silos(),
        cfg.net,
        plan.len(),
        stage.dir.display()
    );
    let keys = Arc::new(Keys::new(cfg.seed, cfg.keys[0], cfg.keys[1], cfg.keys[2]));
    let started = Instant::now();
    let rec = Arc::new(Recorder::new(started.into_std()));
    let (handles, stop) = start_workload(cfg, &stage, &keys, &rec).await?;

    let mut windows = Vec::new();
    let mut failures = Vec::new();
    for fault in &plan {
        tokio::time::sleep_until(started + fault.at).await;
        if let Err(e) = stage.cluster.check_alive() {
            failures.push(format!("before {}: {e}", fault.kind.name()));
            break;
        }
        let victim = fault.slave.map(|s| {
            stage
                .cluster
                .name(stage.cluster.topology.slave(s))
                .to_owned()
        });
        let start = rec.now();
        eprintln!(
            "chaos: {:>6.1}s {} {}",
            start as f64 / 1e6,
            fault.kind.name(),
            victim.as_deref().unwrap_or("")
        );
        stage.apply(fault)?;
        tokio::time::sleep(fault.hold).await;
        stage.heal(fault)?;
        windows.push(Window {
            fault: *fault,
            victim,
            start,
            healed: rec.now(),
        });
    }
    tokio::time::sleep_until(started + cfg.duration).await;
    stop_workload(handles, &stop).await;
    if let Err(e) = stage.cluster.check_alive() {
        failures.push(e.to_string());
    }
    let unanswered = match settle_and_read(&mut stage, &keys, &rec).await {
        Ok(unanswered) => unanswered,
        Err(e) => {
            failures.push(format!("{e:#}"));
            Vec::new()
        }
    };
    stage.cluster.kill_all();
    finish(cfg, &stage.dir, &rec, &windows, unanswered, failures)
}

/// Re-checks a recorded history (`history.jsonl` of a run directory).
pub fn recheck(path: &Path) -> anyhow::Result<check::Findings> {
    let ops = history::read_jsonl(path)?;
    Ok(check::check_all(&ops))
}
