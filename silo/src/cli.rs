//! The silo command line: flags (each also an environment variable) and [`main`].
//!
//! A grain crate's silo binary is a few lines: reference the grain crate so the linker
//! keeps its registrations, then hand over to [`main`]:
//!
//! ```ignore
//! fn main() -> std::process::ExitCode {
//!     my_grains::register();            // any function of the grain crate
//!     granary_silo::cli::main()
//! }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use tokio::time::Instant;

use crate::cluster::{ClusterConfig, ClusterSilo};
use crate::membership::MembershipConfig;
use crate::storage::StorageSpec;
use crate::{SiloConfig, StartError};

/// Start a Granary silo (master or slave).
///
/// Every flag can also be set through the environment variable named in brackets.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "silo",
    version,
    about = "Start a Granary silo: a master (grain directory and store) or a slave (hosts grains).",
    long_about = None
)]
pub struct SiloArgs {
    /// Master keeps the grain directory (and by default the grain store); slaves host grains.
    #[arg(long, value_enum, env = "GRANARY_ROLE", default_value = "master")]
    pub role: Role,

    /// TCP address to listen on for grain traffic from clients and silos.
    #[arg(long, env = "GRANARY_LISTEN", default_value = "127.0.0.1:7100")]
    pub listen: SocketAddr,

    /// UDP address to listen on for membership (heartbeats).
    #[arg(long, env = "GRANARY_UDP", default_value = "127.0.0.1:7101")]
    pub udp: SocketAddr,

    /// TCP address (HOST:PORT) other silos and clients use to reach this one. Needed
    /// when listening on 0.0.0.0; host names are resolved at start.
    #[arg(long, env = "GRANARY_ADVERTISE")]
    pub advertise: Option<String>,

    /// UDP address (HOST:PORT) other silos use to reach this one.
    #[arg(long, env = "GRANARY_ADVERTISE_UDP")]
    pub advertise_udp: Option<String>,

    /// The master's UDP address (HOST:PORT); required for a slave.
    #[arg(long, env = "GRANARY_MASTER")]
    pub master: Option<String>,

    /// Grain store: `embedded:PATH` (or a bare path), `memory`, or `mongodb://…`.
    /// Default on the master: embedded:granary-data/grains.redb, served to the slaves.
    /// Default on a slave: the master's store.
    #[arg(long, env = "GRANARY_STORAGE")]
    pub storage: Option<StorageSpec>,

    /// Deactivate grains idle this long (e.g. 15m, 30s).
    #[arg(long, env = "GRANARY_IDLE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "15m")]
    pub idle_timeout: Duration,

    /// Time between heartbeats (a silo missing 3 is declared dead).
    #[arg(long, env = "GRANARY_HEARTBEAT_INTERVAL", value_parser = humantime::parse_duration, default_value = "1s")]
    pub heartbeat_interval: Duration,

    /// Heartbeats a silo may miss before it is declared dead.
    #[arg(long, env = "GRANARY_MISSED_HEARTBEATS", default_value_t = 3)]
    pub missed_heartbeats: u32,

    /// Shared secret: membership packets are HMAC-signed with it (unsigned or wrongly
    /// signed ones are dropped), and every TCP connection must answer an HMAC challenge
    /// before its first frame. Use the same key on every silo and client.
    #[arg(long, env = "GRANARY_CLUSTER_KEY", hide_env_values = true)]
    pub cluster_key: Option<String>,
}

/// A silo's role on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Keeps the directory and the store.
    Master,
    /// Hosts grains.
    Slave,
}

/// Why [`run`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A flag is missing or wrong.
    #[error("{0}")]
    Config(String),
    /// The grain store could not be opened.
    #[error("opening the grain store: {0}")]
    Storage(#[from] granary_runtime::StorageError),
    /// The silo could not start.
    #[error(transparent)]
    Start(#[from] StartError),
}

/// Resolves HOST:PORT, retrying for a while (in containers, names appear late).
async fn resolve(what: &str, addr: &str) -> Result<SocketAddr, RunError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::net::lookup_host(addr).await.map(|mut it| it.next()) {
            Ok(Some(resolved)) => return Ok(resolved),
            Ok(None) | Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(None) => {
                return Err(RunError::Config(format!(
                    "{what} `{addr}` resolves to no address"
                )))
            }
            Err(e) => return Err(RunError::Config(format!("{what} `{addr}`: {e}"))),
        }
    }
}

/// Runs a silo until `shutdown` resolves (or, on a slave, until the master says
/// SHUTDOWN), then shuts it down gracefully.
pub async fn run(args: SiloArgs, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let mut membership = match args.role {
        Role::Master => MembershipConfig::master(),
        Role::Slave => {
            let master = args.master.as_deref().ok_or_else(|| {
                RunError::Config(
                    "a slave needs --master HOST:PORT (the master's UDP address)".into(),
                )
            })?;
            MembershipConfig::slave(resolve("--master", master).await?)
        }
    }
    .with_heartbeat_interval(args.heartbeat_interval)
    .with_missed_heartbeats(args.missed_heartbeats);
    if let Some(key) = &args.cluster_key {
        membership = membership.with_cluster_key(key.as_bytes().to_vec());
    }
    let mut cluster = ClusterConfig::master(args.listen, args.udp).with_membership(membership);
    if let Some(addr) = &args.advertise {
        cluster.advertise = Some(resolve("--advertise", addr).await?);
    }
    if let Some(addr) = &args.advertise_udp {
        cluster.advertise_udp = Some(resolve("--advertise-udp", addr).await?);
    }
    let storage = match (args.role, &args.storage) {
        (Role::Master, spec) => {
            let spec = spec.clone().unwrap_or_default();
            tracing::info!(storage = %spec, "opening the grain store");
            Some(spec.open().await?)
        }
        (Role::Slave, None) => None,
        (Role::Slave, Some(spec)) => {
            if !matches!(spec, StorageSpec::Mongo { .. }) {
                tracing::warn!(storage = %spec, "a slave with a store of its own: grains that move to another slave will not find their state");
            }
            Some(spec.open().await?)
        }
    };
    let config = SiloConfig::default().with_idle_timeout(args.idle_timeout);
    let silo = ClusterSilo::start(config, cluster, storage).await?;
    tokio::select! {
        () = shutdown => tracing::info!("shutdown signal received"),
        () = silo.shutdown_requested() => tracing::info!("the master asked this silo to shut down"),
    }
    silo.shutdown().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Parses the command line, sets up logging (`RUST_LOG`, default `info`), and runs a
/// silo until Ctrl-C or SIGTERM.
pub fn main() -> ExitCode {
    let args = SiloArgs::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "silo failed");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
