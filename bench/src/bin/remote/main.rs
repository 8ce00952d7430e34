//! Remote peers: a Granary remote ask next to a `ractor_cluster` remote call and the
//! floor, a raw tokio TCP echo with Granary's framing. Client and server are always in
//! separate processes on 127.0.0.1: this process is the client of all three; the
//! servers are child processes (a Granary master and slave from the bench's `silo`, a
//! ractor_cluster node and an echo server, both this binary with `--serve`).
//!
//! Scenarios (every repetition runs every system once, the order rotating per
//! repetition so outside load hits all alike; medians of `--reps`):
//! - `remote.seq`: one caller, one target, empty payload: p50/p99/p99.9 (HdrHistogram);
//! - `remote.256`: 256 callers, caller i calling grain/actor i (the echo: 256 callers
//!   on its one connection) in a loop for `--seconds`: calls/s;
//! - `remote.payload.*`: sequential calls with 100 B, 1 KB, 10 KB and 100 KB payloads
//!   echoed back (0 B is `remote.seq`): p50/p99.
//!
//! Every process uses tokio's multi-thread runtime with one worker per CPU; the client,
//! the servers (and Granary's master) share the machine's cores. No thread is pinned.
//!
//! ```text
//! cargo run --release --manifest-path bench/Cargo.toml --bin remote -- \
//!     [--reps 5] [--calls 5000] [--seconds 1] [--only granary,ractor_cluster,echo] \
//!     [--json PATH] [--smoke]
//! ```
//!
//! # Layout
//! - `main.rs`: the command line, the child processes, the repetitions, the report.
//! - `measure`: the [`Caller`](measure::Caller) trait and the two scenario shapes.
//! - `granary_side`, `ractor_side`, `echo_side`: each system's client (and server).

mod echo_side;
mod granary_side;
mod measure;
mod ractor_side;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use granary_bench::echo::EchoClient;
use granary_bench::procs::{free_ports, Cluster};
use granary_bench::report::{results_path, Better, Report};

use crate::granary_side::GranaryClient;
use crate::measure::{concurrent, sequential, Caller};
use crate::ractor_side::RactorClient;

/// Every system, in the order of the first repetition.
const SYSTEMS: [&str; 3] = ["granary", "ractor_cluster", "echo"];
/// Payload sizes of the sweep besides the empty one, with their metric names.
const PAYLOADS: [(usize, &str); 4] = [
    (100, "100B"),
    (1_000, "1KB"),
    (10_000, "10KB"),
    (100_000, "100KB"),
];

#[derive(Debug, Clone)]
struct Args {
    reps: usize,
    calls: usize,
    seconds: f64,
    only: Vec<String>,
    json: Option<PathBuf>,
    smoke: bool,
    /// Child mode: serve `echo` or `ractor` on this port.
    serve: Option<(String, u16)>,
}

impl Args {
    fn parse() -> anyhow::Result<Args> {
        let smoke = granary_bench::smoke::enabled();
        let mut args = Args {
            reps: if smoke { 1 } else { 5 },
            calls: if smoke { 100 } else { 5_000 },
            seconds: if smoke { 0.1 } else { 1.0 },
            only: SYSTEMS.iter().map(|s| s.to_string()).collect(),
            json: None,
            smoke,
            serve: None,
        };
        let mut it = granary_bench::smoke::args().into_iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--reps" => args.reps = value()?.parse::<usize>()?.max(1),
                "--calls" => args.calls = value()?.parse::<usize>()?.max(1),
                "--seconds" => args.seconds = value()?.parse()?,
                "--only" => args.only = value()?.split(',').map(str::to_owned).collect(),
                "--json" => args.json = Some(value()?.into()),
                "--serve" => {
                    let what = value()?;
                    let port = value()?.parse()?;
                    args.serve = Some((what, port));
                }
                "-h" | "--help" => {
                    println!(
                        "usage: remote [--reps 5] [--calls 5000] [--seconds 1] \
                         [--only granary,ractor_cluster,echo] [--json PATH] [--smoke]"
                    );
                    std::process::exit(0);
                }
                other => bail!("unknown flag {other} (try --help)"),
            }
        }
        if args.seconds.is_nan() || args.seconds <= 0.0 {
            bail!("--seconds must be positive");
        }
        if let Some(bad) = args.only.iter().find(|s| !SYSTEMS.contains(&s.as_str())) {
            bail!("unknown system {bad} (one of {})", SYSTEMS.join(", "));
        }
        Ok(args)
    }
}

/// A server child process (this binary with `--serve`), killed when dropped. It also
/// exits by itself when its standard input closes, i.e. when this process ends.
struct Server {
    child: Child,
}

impl Server {
    fn start(what: &str, port: u16) -> anyhow::Result<Server> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(["--serve", what, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting the {what} server"))?;
        let stdout = child.stdout.take().context("server stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let ready = lines.any(|l| l.is_ok_and(|l| l == "READY"));
            let _ = tx.send(ready);
        });
        let server = Server { child };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(true) => Ok(server),
            _ => bail!("the {what} server did not start"),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Child mode: serve until the parent goes away (standard input closes).
fn serve(what: &str, port: u16) -> anyhow::Result<()> {
    std::thread::spawn(|| {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        std::process::exit(0);
    });
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        match what {
            "echo" => {
                let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
                println!("READY");
                granary_bench::echo::serve(listener).await
            }
            "ractor" => ractor_side::serve(port).await,
            other => bail!("unknown --serve {other}"),
        }
    })
}

/// Every scenario once for one system, recording into `report`.
async fn one_rep<C: Caller>(
    name: &str,
    c: &Arc<C>,
    args: &Args,
    report: &mut Report,
) -> anyhow::Result<()> {
    let lat = sequential(c.as_ref(), &[], args.calls).await?;
    report.record("remote.seq.p50", "µs", Better::Lower, name, lat.p50);
    report.record("remote.seq.p99", "µs", Better::Lower, name, lat.p99);
    report.record("remote.seq.p99.9", "µs", Better::Lower, name, lat.p999);
    let rate = concurrent(c, Duration::from_secs_f64(args.seconds)).await?;
    report.record("remote.256", "calls/s", Better::Higher, name, rate);
    for (size, label) in PAYLOADS {
        let payload = vec![0xa5u8; size];
        // Fewer calls for big payloads: each moves twice the payload.
        let calls = (args.calls / (1 + size / 10_000)).max(20);
        let lat = sequential(c.as_ref(), &payload, calls).await?;
        let p50 = format!("remote.payload.{label}.p50");
        let p99 = format!("remote.payload.{label}.p99");
        report.record(&p50, "µs", Better::Lower, name, lat.p50);
        report.record(&p99, "µs", Better::Lower, name, lat.p99);
    }
    Ok(())
}

/// The clients of the systems that run.
struct Clients {
    granary: Option<Arc<GranaryClient>>,
    ractor: Option<Arc<RactorClient>>,
    echo: Option<Arc<EchoClient>>,
}

impl Clients {
    async fn rep(&self, system: &str, args: &Args, report: &mut Report) -> anyhow::Result<()> {
        match system {
            "granary" => opt(&self.granary, system, args, report).await,
            "ractor_cluster" => opt(&self.ractor, system, args, report).await,
            _ => opt(&self.echo, system, args, report).await,
        }
    }
}

async fn opt<C: Caller>(
    c: &Option<Arc<C>>,
    name: &str,
    args: &Args,
    report: &mut Report,
) -> anyhow::Result<()> {
    match c {
        Some(c) => one_rep(name, c, args, report)
            .await
            .with_context(|| format!("{name} failed")),
        None => Ok(()),
    }
}

/// The whole run, as a client of the servers at these addresses: the Granary master
/// and slave, this process's ractor node port and the ractor server, the echo server.
async fn bench(
    args: Args,
    granary: Option<(SocketAddr, SocketAddr)>,
    ractor_ports: Option<(u16, SocketAddr)>,
    echo: Option<SocketAddr>,
) -> anyhow::Result<Report> {
    let args = &args;
    let mut report = Report::start("remote", args.smoke);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    report.setup = vec![
        format!("{cpus} CPUs shared by every process; no thread pinned; 127.0.0.1"),
        format!(
            "client and every server: tokio multi-thread runtime, {cpus} worker threads"
        ),
        "granary: client → slave (grains), master (directory + memory store) a third process"
            .to_owned(),
        format!(
            "{} reps, systems interleaved (order rotates per rep); {} sequential calls; {} s per throughput point",
            args.reps, args.calls, args.seconds
        ),
    ];
    let clients = Clients {
        granary: match granary {
            Some((master, slave)) => Some(Arc::new(GranaryClient::connect(master, slave).await?)),
            None => None,
        },
        ractor: match ractor_ports {
            Some((own, server)) => Some(Arc::new(RactorClient::connect(own, server).await?)),
            None => None,
        },
        echo: match echo {
            Some(addr) => Some(Arc::new(EchoClient::connect(addr).await?)),
            None => None,
        },
    };
    let order: Vec<&str> = SYSTEMS
        .iter()
        .copied()
        .filter(|s| args.only.iter().any(|o| o == s))
        .collect();
    let warm = Args {
        calls: args.calls.min(1_000),
        seconds: args.seconds.min(0.3),
        ..args.clone()
    };
    let mut ignored = Report::default();
    for s in &order {
        clients.rep(s, &warm, &mut ignored).await?;
    }
    for rep in 0..args.reps {
        eprint!("remote: rep {}/{} …", rep + 1, args.reps);
        for k in 0..order.len() {
            let system = order[(rep + k) % order.len()];
            eprint!(" {system}");
            clients.rep(system, args, &mut report).await?;
        }
        eprintln!();
    }
    if let Some(g) = &clients.granary {
        g.close().await;
    }
    report.finish();
    Ok(report)
}

fn main() -> std::process::ExitCode {
    granary_bench::exe::exit_code(run())
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse()?;
    if let Some((what, port)) = &args.serve {
        return serve(what, *port);
    }
    let on = |s: &str| args.only.iter().any(|o| o == s);
    let (tcp, _) = free_ports(3, 0)?;
    let echo = match on("echo") {
        true => Some((Server::start("echo", tcp[0])?, tcp[0])),
        false => None,
    };
    let ractor = match on("ractor_cluster") {
        true => Some((Server::start("ractor", tcp[1])?, tcp[1])),
        false => None,
    };
    let mut cluster = match on("granary") {
        true => Some(Cluster::start(&granary_bench::exe::sibling("silo")?)?),
        false => None,
    };
    let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let runtime = tokio::runtime::Runtime::new()?;
    // On a worker thread, like an application's tasks: a future driven by `block_on`
    // runs on this thread, and every wake-up from the I/O driver would cross threads.
    let run = bench(
        args.clone(),
        cluster.as_ref().map(|c| (c.master, c.slave)),
        ractor.as_ref().map(|(_, port)| (tcp[2], local(*port))),
        echo.as_ref().map(|(_, port)| local(*port)),
    );
    let result = runtime.block_on(async move {
        tokio::spawn(run)
            .await
            .context("the benchmark task panicked")?
    });
    drop(runtime);
    let report = match result {
        Ok(report) => report,
        Err(e) => {
            if let Some(c) = cluster.as_mut() {
                eprintln!("{}", c.report());
            }
            return Err(e);
        }
    };
    drop((echo, ractor, cluster));
    report.print();
    let path = args.json.clone().unwrap_or_else(|| {
        results_path(&format!(
            "remote{}-{}.json",
            if args.smoke { "-smoke" } else { "" },
            report.started_unix
        ))
    });
    report.write(&path)?;
    println!("results: {}", path.display());
    Ok(())
}
