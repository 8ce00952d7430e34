//! Shared helpers of the multi-process tests: the real `silo` and `client` binaries on
//! 127.0.0.1. Each test file includes it with `mod support;` and `use support::*;`.
//!
//! Every test owns a [`Procs`] guard: a temporary directory (embedded store, one log file
//! per process) and every silo process it spawned. Dropping the guard SIGKILLs the
//! children that are still running and removes the directory; when the test failed, the
//! tail of every log is printed first. Ports are picked by binding `127.0.0.1:0` and
//! released just before the silo binds them, so a cluster start is retried once with
//! fresh ports if a silo exits early (a port was taken in between).
//!
//! Which slave hosts which grain is observed from the outside through the silos' logs:
//! children run with `granary_runtime::activation=trace`, which logs one
//! `activated grain=TYPE/KEY` line per activation.
//!
//! The helpers, for a new test file:
//!
//! - a cluster: [`Procs::start_cluster`] (a master and N slaves, joined), then
//!   [`Procs::ports`], [`Procs::kill9`], [`Procs::sigterm`], [`Procs::restart`], …;
//! - one silo with any command line: [`SiloSpec::new`] (flags, environment, and the
//!   ports if the test needs to reach it) and [`Procs::spawn`]; its stdout and stderr go
//!   to one log file, read with [`Procs::log`], awaited with [`Procs::wait_for_line`]
//!   and [`Procs::wait_exit`];
//! - a silo expected to exit at once (a bad flag, say): [`Procs::run_silo`], which
//!   returns its exit status, stdout and stderr separately;
//! - the client binary: [`client_bin`] (one gateway, must succeed, stdout) or
//!   [`run_client`] (any arguments, any outcome);
//! - the library client: [`connect`] (with [`KEY`]) and [`get_counter`];
//! - [`bounded`] around a test body, so a hang fails with the logs printed;
//! - `/metrics` of in-process silos: [`metrics::scrape`] (parsed and checked).

// Every test binary includes this module and uses only part of it.
#![allow(dead_code)]

mod load;
pub mod metrics;
mod procs;
mod readme;
pub mod walkthrough;

// Not every test file names every type.
#[allow(unused_imports)]
pub use load::CounterLoad;
#[allow(unused_imports)]
pub use procs::{Candidates, Cluster, Procs, SiloSpec};
#[allow(unused_imports)]
pub use readme::{flag, fresh_ports, substitute, PortMap};

use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use granary_client::{Client, ClientConfig};
use granary_example::{Counter, Get};
use tokio::time::Instant;

/// The `silo` binary of this package.
pub const SILO: &str = env!("CARGO_BIN_EXE_silo");
/// The `client` binary of this package.
pub const CLIENT: &str = env!("CARGO_BIN_EXE_client");
/// The cluster key of the tests that use one.
pub const KEY: &str = "granary-process-tests";
/// Time allowed for a whole cluster (master and slaves) to start and join.
pub const START: Duration = Duration::from_secs(20);
/// How long a one-shot run of a binary ([`run_bin`]) may take before it counts as hung.
pub const RUN_LIMIT: Duration = Duration::from_secs(20);
/// Environment variables the binaries read as flags; cleared so the tests are hermetic.
pub const FLAG_VARS: &[&str] = &[
    "GRANARY_ROLE",
    "GRANARY_LISTEN",
    "GRANARY_UDP",
    "GRANARY_ADVERTISE",
    "GRANARY_ADVERTISE_UDP",
    "GRANARY_MASTER",
    "GRANARY_PEERS",
    "GRANARY_STORAGE",
    "GRANARY_IDLE_TIMEOUT",
    "GRANARY_HEARTBEAT_INTERVAL",
    "GRANARY_MISSED_HEARTBEATS",
    "GRANARY_CLUSTER_KEY",
    "GRANARY_GATEWAY",
    "GRANARY_TIMEOUT",
    "GRANARY_CONNECT_TIMEOUT",
    "GRANARY_LOG_FORMAT",
    "GRANARY_REPLICATION",
    "GRANARY_SCALING",
];

/// A silo's TCP (grain traffic) and UDP (membership) addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub tcp: SocketAddr,
    pub udp: SocketAddr,
}

/// Two ports the kernel just handed out on 127.0.0.1, released for a silo to bind.
pub fn free_ports() -> Ports {
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a UDP port");
    Ports {
        tcp: tcp.local_addr().unwrap(),
        udp: udp.local_addr().unwrap(),
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs a test body with a deadline; `procs` outlives it, so a timeout still panics with
/// the guard alive and the logs get printed.
pub async fn bounded<F: Future<Output = ()>>(limit: Duration, body: F) {
    if tokio::time::timeout(limit, body).await.is_err() {
        panic!("test did not finish within {limit:?}");
    }
}

/// How a one-shot run of a binary ended.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program` to its end and returns what it printed; panics if it runs longer than
/// [`RUN_LIMIT`] (it is killed first). Stdin is closed, the [`FLAG_VARS`] are cleared
/// and then `env` is set, so a test passes the `GRANARY_*` variables it means to.
/// `shown` names the command in panic messages.
pub async fn run_bin(
    program: &str,
    args: &[String],
    env: &[(String, String)],
    dir: Option<&Path>,
    shown: &str,
) -> Output {
    let mut command = Command::new(program);
    command
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for var in FLAG_VARS {
        command.env_remove(var);
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("spawn `{shown}`: {e}"));
    // Drained on threads, so a chatty child never blocks on a full pipe.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        let mut pipe = pipe.unwrap();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + RUN_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{shown}` hung");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Runs the client binary with exactly `args` (gateways included) and returns how it
/// ended, whatever that was.
pub async fn run_client(args: &[String]) -> Output {
    let shown = format!("client {}", args.join(" "));
    run_bin(CLIENT, args, &[], None, &shown).await
}

/// Runs the client binary against `gateway` with a 5 s call timeout; returns its stdout,
/// trimmed. Panics if it fails or hangs.
pub async fn client_bin(gateway: SocketAddr, args: &[&str]) -> String {
    let mut all: Vec<String> = ["--gateway", &gateway.to_string(), "--timeout", "5s"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    all.extend(args.iter().map(|s| s.to_string()));
    let shown = format!("client --gateway {gateway} {}", args.join(" "));
    let output = run_bin(CLIENT, &all, &[], None, &shown).await;
    assert!(
        output.status.success(),
        "`{shown}` failed ({}): {}",
        output.status,
        output.stderr
    );
    output.stdout.trim().to_owned()
}

/// A library client with the tests' cluster key.
pub async fn connect(gateways: &[SocketAddr]) -> Client {
    Client::connect(
        ClientConfig::new(gateways.iter().copied())
            .with_connect_timeout(Duration::from_secs(5))
            .with_cluster_key(KEY.as_bytes()),
    )
    .await
    .expect("connect a client")
}

/// Reads counter `key`, retrying (until `deadline`) while it is not served.
pub async fn get_counter(client: &Client, key: &str, deadline: Instant) -> i64 {
    let counter = client.grain::<Counter>(key);
    loop {
        match counter.ask(Get).timeout(Duration::from_millis(500)).await {
            Ok(value) => return value,
            Err(e) => assert!(
                Instant::now() < deadline,
                "counter {key} not served in time: {e}"
            ),
        }
    }
}
