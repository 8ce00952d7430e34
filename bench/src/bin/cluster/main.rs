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
//! The silo binary is the bench's own `silo` (Granary's silo command line hosting the
//! example grains), built first with this benchmark's profile (a no-op when it is up to
//! date); `--silo PATH` uses a given binary instead and skips the build. The children get SIGTERM (then SIGKILL after 3 s) when
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
//!
//! # Layout
//! - `main.rs`: the run: start the cluster, connect, measure, report.
//! - `args`: the command line; the child processes are `granary_bench::procs`.
//! - `calls`: what one call of each kind does; `measure`: sequential and closed-loop
//!   runs; `cpu`: CPU time per process; `report`: the tables.

mod args;
mod calls;
mod cpu;
mod measure;
mod report;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use granary_bench::procs::Cluster;
use granary_bench::sys::{clock_ticks, load_average};
use granary_client::{Client, ClientConfig};
use granary_example::{Counter, Get, Greeter};
use granary_net::transport::{Peers, TransportConfig};
use granary_proto::frame::{Request, Response};
use tokio::time::Instant;

use crate::args::Args;
use crate::calls::{Ctx, Op};
use crate::cpu::Pids;
use crate::measure::{drain, measure_loops, measure_sequential};

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

/// Connects to the cluster at `(master, slave)`, waits until a grain can be placed,
/// checks that the grains live on the slave, runs the four scenarios and prints the
/// report.
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
            Request::DirectoryResolve {
                grain: id,
                from: None,
            },
            Instant::now() + CALL_TIMEOUT,
        )
        .await
    {
        Ok(Response::Directory {
            result: Ok(Some(owner)),
            ..
        }) if owner.addr == slave => {}
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

    report::print(&seq, &pipelined, &writes, &tells);
    Ok(())
}

fn main() -> std::process::ExitCode {
    granary_bench::exe::exit_code(run())
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse()?;
    // Links the example grains into this process (their registrations) for encoding.
    let _ = granary_example::grain_types();
    let silo = match &args.silo {
        Some(path) => path.clone(),
        None => granary_bench::exe::sibling("silo")?,
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
