//! Remote grain calls between processes: latency and throughput of a client calling
//! grains hosted by another process, against the bare TCP transport as a baseline.
//!
//! The benchmark starts a small cluster on 127.0.0.1 as child processes — a master
//! (`--storage memory`: the grain directory and an in-memory store, served over TCP) and
//! ONE slave (hosts the grains) — and is itself the client ([`granary_client::Client`],
//! gateway = the master). After the first resolve through the master, every call goes
//! straight from this process to the slave, so a call is one TCP round trip
//! client → slave; a `Counter.Add` adds a second one, slave → master, to write the state.
//!
//! The silo binary is the release `silo` of `grains-example`. By default the benchmark
//! builds it first, running `cargo build --release -p granary-example --bin silo` in the
//! main workspace (a no-op when it is up to date); `--silo PATH` uses a given binary
//! instead and skips the build. The children get SIGTERM (then SIGKILL after 3 s) when
//! the benchmark ends, also on error (a drop guard); only a SIGKILL of the benchmark
//! itself leaves them running.
//!
//! Scenarios (each with a warm-up; throughput points and latency runs repeated `--reps`
//! times, median reported; the repetitions of a raw `Ping` and the grain call it is
//! compared with are interleaved, so outside load skews both alike):
//! 1. sequential latency, one caller, one grain: raw transport `Ping`, `Counter.Get`
//!    (main figure: read only, no storage), `Greeter.Hello`, `Counter.Add(1)` (writes);
//! 2. pipelined throughput: C concurrent callers (1, 16, 64, 256) asking `Counter.Get`
//!    over 1,000 counters, against raw `Ping`s at the same concurrency;
//! 3. `Counter.Add(1)` over 1,000 counters with C = 64: throughput and latency;
//! 4. tell throughput (`tell(Get)`, one-way; a remote tell resolves once the message is
//!    queued in the grain's mailbox on the slave), plus the rate including the drain of
//!    the mailboxes.
//!
//! Everything — client, slave and master — shares this machine's cores, so the figures
//! are for a co-located cluster: CPU time spent per call in each process is printed too.
//!
//! ```text
//! cargo run --release --manifest-path bench/Cargo.toml --bin cluster -- \
//!     [--reps 5] [--seconds 1] [--asks 10000] [--threads N] [--silo PATH]
//! ```

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use granary_net::transport::{Peers, TransportConfig};
use granary_client::{Client, ClientConfig};
use granary_example::{Add, Counter, Get, Greeter, Hello};
use granary_proto::frame::{Request, Response};
use granary_runtime::GrainRef;
use tokio::time::Instant;

/// Deadline of every call made by the benchmark.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Counters the throughput scenarios spread their calls over.
const KEYS: usize = 1_000;
/// Concurrency levels of the pipelined scenario.
const CONCURRENCY: [usize; 4] = [1, 16, 64, 256];
/// Sequential calls before each sequential latency run.
const SEQ_WARMUP: usize = 1_000;
/// Load before each throughput point.
const LOOP_WARMUP: Duration = Duration::from_millis(300);

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
struct Args {
    reps: usize,
    seconds: f64,
    asks: usize,
    threads: Option<usize>,
    silo: Option<PathBuf>,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
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

// ---------------------------------------------------------------------------------
// The cluster: child processes and their clean-up.

/// Builds the example silo in the main workspace and returns the binary's path.
fn build_silo() -> anyhow::Result<PathBuf> {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .canonicalize()
        .context("locating the main workspace")?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "building the silo: cargo build --release -p granary-example --bin silo (in {})",
        root.display()
    );
    let status = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "-p",
            "granary-example",
            "--bin",
            "silo",
        ])
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("building the silo failed ({status})");
    }
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    };
    let silo = target
        .join("release")
        .join(format!("silo{}", std::env::consts::EXE_SUFFIX));
    if !silo.is_file() {
        bail!("built, but {} does not exist", silo.display());
    }
    Ok(silo)
}

/// Free ports on 127.0.0.1: `tcp` TCP ones and `udp` UDP ones. All sockets are held
/// until every port is chosen, so the ports are distinct.
fn free_ports(tcp: usize, udp: usize) -> anyhow::Result<(Vec<u16>, Vec<u16>)> {
    let tcps = (0..tcp)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let udps = (0..udp)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let tcp_ports = tcps
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?;
    let udp_ports = udps
        .iter()
        .map(|s| s.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()?;
    Ok((tcp_ports, udp_ports))
}

/// The master and the slave as child processes; stopped when dropped.
struct Cluster {
    /// `(name, process)`, in start order.
    children: Vec<(&'static str, Child)>,
    /// The children's stdout/stderr (`master.log`, `slave.log`).
    logs: tempfile::TempDir,
    master: SocketAddr,
    slave: SocketAddr,
}

impl Cluster {
    fn start(silo: &Path) -> anyhow::Result<Cluster> {
        let (tcp, udp) = free_ports(2, 2)?;
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let mut cluster = Cluster {
            children: Vec::new(),
            logs: tempfile::tempdir()?,
            master: addr(tcp[0]),
            slave: addr(tcp[1]),
        };
        let master_udp = addr(udp[0]).to_string();
        let master_tcp = cluster.master.to_string();
        let slave_tcp = cluster.slave.to_string();
        let slave_udp = addr(udp[1]).to_string();
        cluster.spawn(
            silo,
            "master",
            &[
                "--role",
                "master",
                "--listen",
                &master_tcp,
                "--udp",
                &master_udp,
                "--storage",
                "memory",
            ],
        )?;
        cluster.spawn(
            silo,
            "slave",
            &[
                "--role",
                "slave",
                "--listen",
                &slave_tcp,
                "--udp",
                &slave_udp,
                "--master",
                &master_udp,
            ],
        )?;
        Ok(cluster)
    }

    fn spawn(&mut self, silo: &Path, name: &'static str, args: &[&str]) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.logs.path().join(format!("{name}.log")))?;
        let child = Command::new(silo)
            .args(args)
            // Warnings only: per-call logging would be measured too.
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting the {name} ({})", silo.display()))?;
        self.children.push((name, child));
        Ok(())
    }

    fn pid(&self, name: &str) -> u32 {
        self.children
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, c)| c.id())
    }

    /// The children's logs and exit states, for an error report.
    fn report(&mut self) -> String {
        let mut out = String::new();
        for (name, child) in &mut self.children {
            let state = match child.try_wait() {
                Ok(Some(status)) => format!("exited ({status})"),
                Ok(None) => "running".to_owned(),
                Err(e) => format!("unknown ({e})"),
            };
            let log = std::fs::read_to_string(self.logs.path().join(format!("{name}.log")))
                .unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let _ = writeln!(out, "--- {name}: {state}; last log lines:");
            for line in tail.into_iter().rev() {
                let _ = writeln!(out, "    {line}");
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Slave first (it saves and releases its grains), then the master.
        for (name, child) in self.children.iter_mut().rev() {
            if matches!(child.try_wait(), Ok(Some(_))) {
                continue;
            }
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .stderr(Stdio::null())
                .status();
            let deadline = std::time::Instant::now() + Duration::from_secs(3);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    _ => {
                        eprintln!("the {name} did not stop on SIGTERM; killing it");
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// CPU accounting from /proc (Linux; other systems print no CPU figures).

/// Processes whose CPU time is tracked: this one, the slave, the master.
#[derive(Clone, Copy)]
struct Pids {
    client: u32,
    slave: u32,
    master: u32,
}

/// Clock ticks per second of /proc/PID/stat times.
fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// User + system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it are plain.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the name.
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// CPU ticks of the three processes at one instant.
#[derive(Clone, Copy, Default)]
struct Cpu([u64; 3]);

impl Cpu {
    fn now(pids: Pids) -> Cpu {
        let t = |pid| cpu_ticks(pid).unwrap_or(0);
        Cpu([t(pids.client), t(pids.slave), t(pids.master)])
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu([0, 1, 2].map(|i| self.0[i].saturating_sub(before.0[i])))
    }

    fn add(&mut self, other: Cpu) {
        for i in 0..3 {
            self.0[i] += other.0[i];
        }
    }

    /// CPU microseconds per operation in each process: "client/slave/master".
    fn per_op(self, ops: usize, ticks_per_s: f64) -> String {
        if ops == 0 || self.0 == [0; 3] {
            return "-".to_owned();
        }
        let us = |t: u64| t as f64 / ticks_per_s * 1e6 / ops as f64;
        format!(
            "{:.1}/{:.1}/{:.1}",
            us(self.0[0]),
            us(self.0[1]),
            us(self.0[2])
        )
    }
}

// ---------------------------------------------------------------------------------
// The calls being measured.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// Raw transport round trip to the slave: `Request::Ping` → `Response::Pong`.
    Ping,
    /// `Counter.Get` ask (read only).
    CounterGet,
    /// `Counter.Add(1)` ask (the slave writes the state to the master's store).
    CounterAdd,
    /// `Greeter.Hello` ask (a string each way).
    GreeterHello,
    /// `tell(Get)` on a counter (one-way).
    TellGet,
}

impl Op {
    fn label(self) -> &'static str {
        match self {
            Op::Ping => "raw transport Ping",
            Op::CounterGet => "Counter.Get ask",
            Op::CounterAdd => "Counter.Add(1) ask (+write)",
            Op::GreeterHello => "Greeter.Hello ask",
            Op::TellGet => "Counter tell(Get)",
        }
    }
}

/// What the calls need: references, and a transport of its own for the baseline.
struct Ctx {
    counters: Vec<GrainRef<Counter>>,
    greeters: Vec<GrainRef<Greeter>>,
    /// A connection pool separate from the client's, for the raw `Ping`s.
    peers: Peers,
    slave: SocketAddr,
    pids: Pids,
    ticks: f64,
}

impl Ctx {
    async fn call(&self, op: Op, i: usize) -> Result<(), String> {
        let t = CALL_TIMEOUT;
        match op {
            Op::Ping => {
                match self
                    .peers
                    .call(self.slave, Request::Ping, Instant::now() + t)
                    .await
                {
                    Ok(Response::Pong) => Ok(()),
                    Ok(other) => Err(format!("unexpected answer to Ping: {other:?}")),
                    Err(e) => Err(e.to_string()),
                }
            }
            Op::CounterGet => self.counters[i % KEYS]
                .ask(Get)
                .timeout(t)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Op::CounterAdd => self.counters[i % KEYS]
                .ask(Add(1))
                .timeout(t)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Op::GreeterHello => self.greeters[i % KEYS]
                .ask(Hello("bench".to_owned()))
                .timeout(t)
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            Op::TellGet => self.counters[i % KEYS]
                .tell(Get)
                .timeout(t)
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

/// One run: how many calls, how long, and (if recorded) their latencies.
#[derive(Default)]
struct Run {
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

    fn pct(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }
}

/// The `p`-th percentile (0–100) of sorted `values`, nearest rank.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
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
async fn drain(ctx: &Arc<Ctx>) -> anyhow::Result<()> {
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

// ---------------------------------------------------------------------------------
// Reporting.

fn fmt_us(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us >= 10_000.0 {
        format!("{:.1} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn fmt_rate(r: f64) -> String {
    if r >= 10_000.0 {
        format!("{:.1} k/s", r / 1000.0)
    } else {
        format!("{r:.0} /s")
    }
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
struct SeqResult {
    op: Op,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    /// Worst over all repetitions.
    max: Duration,
    rate: f64,
    cpu: String,
}

/// Throughput results at one concurrency (medians over repetitions).
struct LoopResult {
    label: String,
    c: usize,
    rate: f64,
    min: f64,
    max: f64,
    p50: Duration,
    p99: Duration,
    cpu: String,
    note: String,
}

fn median_duration(runs: &[Run], f: impl Fn(&Run) -> Duration) -> Duration {
    Duration::from_secs_f64(median(runs.iter().map(|r| f(r).as_secs_f64()).collect()))
}

/// Sequential latency of each of `ops`. The repetitions are interleaved (a repetition
/// of every op, then the next round), so that load from outside the benchmark hits
/// all of them alike and their ratios stay meaningful.
async fn measure_sequential(ctx: &Ctx, ops: &[Op], args: &Args) -> Vec<SeqResult> {
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
                p50: median_duration(&runs, |r| r.pct(50.0)),
                p99: median_duration(&runs, |r| r.pct(99.0)),
                p999: median_duration(&runs, |r| r.pct(99.9)),
                max: runs.iter().map(|r| r.pct(100.0)).max().unwrap_or_default(),
                rate: median(runs.iter().map(Run::rate).collect()),
                cpu: cpu.per_op(calls, ctx.ticks),
            }
        })
        .collect()
}

/// Closed-loop throughput of each of `ops` with `c` callers, repetitions interleaved
/// as in [`measure_sequential`].
async fn measure_loops(
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
            note = format!("{} incl. drain", fmt_rate(median(drained)));
        }
        if errors > 0 {
            note.push_str(&format!(" {errors} errors"));
        }
        results.push(LoopResult {
            label: op.label().to_owned(),
            c,
            rate: median(rates.clone()),
            min: rates.iter().copied().fold(f64::INFINITY, f64::min),
            max: rates.iter().copied().fold(0.0, f64::max),
            p50: median_duration(&runs, |r| r.pct(50.0)),
            p99: median_duration(&runs, |r| r.pct(99.0)),
            cpu: cpu.per_op(calls, ctx.ticks),
            note,
        });
    }
    Ok(results)
}

// ---------------------------------------------------------------------------------

async fn bench(
    cluster_addrs: (SocketAddr, SocketAddr),
    pids: Pids,
    args: &Args,
) -> anyhow::Result<()> {
    let (master, slave) = cluster_addrs;
    let client =
        Client::connect(ClientConfig::new([master]).with_connect_timeout(Duration::from_secs(20)))
            .await
            .context("connecting to the master gateway")?;

    // Ready once the slave has joined and a grain can be placed on it.
    let probe = client.grain::<Counter>("ready-probe");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match probe.ask(Get).timeout(Duration::from_secs(2)).await {
            Ok(_) => break,
            // Until the slave has joined, the master has nowhere to place the grain.
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => bail!("the cluster did not become ready in 30 s: {e}"),
        }
    }

    let ctx = Arc::new(Ctx {
        counters: (0..KEYS)
            .map(|i| client.grain::<Counter>(format!("c{i}")))
            .collect(),
        greeters: (0..KEYS)
            .map(|i| client.grain::<Greeter>(format!("g{i}")))
            .collect(),
        peers: Peers::new(TransportConfig::default()),
        slave,
        pids,
        ticks: clock_ticks(),
    });

    // Activate every grain (and fill the client's directory cache), then check that
    // the master placed them on the slave: calls must go client → slave.
    drain(&ctx).await?;
    for i in 0..KEYS {
        ctx.call(Op::GreeterHello, i)
            .await
            .map_err(|e| anyhow::anyhow!("activating greeters: {e}"))?;
    }
    let gateway = Peers::new(TransportConfig::default());
    let id = ctx.counters[0].id().clone();
    match gateway
        .call(
            master,
            Request::DirectoryResolve { grain: id },
            Instant::now() + CALL_TIMEOUT,
        )
        .await
    {
        Ok(Response::Directory(Ok(Some(owner)))) if owner.addr == slave => {}
        other => bail!("counter c0 is not placed on the slave: {other:?}"),
    }
    gateway.close().await;

    println!(
        "cluster ready: master {master} (directory + memory store), slave {slave}; \
         client = this process ({} tokio worker threads); {} warm grains",
        args.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        2 * KEYS
    );
    println!("load average before: {}", load_average());
    println!(
        "each point: warm-up, then {} repetitions; medians reported \
         (sequential: {} calls per repetition; loops: {} s per repetition)\n",
        args.reps, args.asks, args.seconds
    );

    // 1. Sequential latency.
    eprintln!("[1/4] sequential latency …");
    let seq = measure_sequential(
        &ctx,
        &[Op::Ping, Op::CounterGet, Op::GreeterHello, Op::CounterAdd],
        args,
    )
    .await;

    // 2. Pipelined throughput, raw Ping vs Counter.Get.
    eprintln!("[2/4] pipelined throughput …");
    let mut pipelined = Vec::new();
    for c in CONCURRENCY {
        pipelined.extend(measure_loops(&ctx, &[Op::Ping, Op::CounterGet], c, args).await?);
    }

    // 3. Asks that write state (slave → master store).
    eprintln!("[3/4] asks with storage writes …");
    let writes = measure_loops(&ctx, &[Op::CounterAdd], 64, args)
        .await?
        .remove(0);

    // 4. Tells.
    eprintln!("[4/4] tells …");
    let mut tells = Vec::new();
    for c in [1, 64] {
        tells.extend(measure_loops(&ctx, &[Op::TellGet], c, args).await?);
    }

    client.close().await;
    ctx.peers.close().await;

    // Report.
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
    for r in &seq {
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
    for r in &pipelined {
        row(r);
    }
    println!("\n3. Asks that write state: Counter.Add(1) → slave writes to the master's memory store over TCP");
    header();
    row(&writes);
    println!("\n4. Tells (one-way; a remote tell resolves once queued in the slave's mailbox)");
    header();
    for r in &tells {
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
    Ok(())
}

/// The first three fields of /proc/loadavg (1, 5, 15 minutes), or "?".
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse()?;
    // Links the example grains into this process (their registrations) for encoding.
    let _ = granary_example::grain_types();
    let silo = match &args.silo {
        Some(path) => path.clone(),
        None => build_silo()?,
    };
    let mut cluster = Cluster::start(&silo)?;
    let pids = Pids {
        client: std::process::id(),
        slave: cluster.pid("slave"),
        master: cluster.pid("master"),
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = args.threads {
        builder.worker_threads(n);
    }
    let runtime = builder.build()?;
    let addrs = (cluster.master, cluster.slave);
    let args = Arc::new(args);
    // On a worker thread, like an application's tasks: a future driven by `block_on`
    // runs on this thread, and every wake-up from the I/O driver would cross threads.
    let result = runtime.block_on(async move {
        tokio::spawn(async move { bench(addrs, pids, &args).await })
            .await
            .context("the benchmark task panicked")?
    });
    drop(runtime);
    if result.is_err() {
        eprintln!("{}", cluster.report());
    }
    drop(cluster);
    result
}
