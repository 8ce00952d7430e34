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

use std::sync::Arc;

mod scaling;
pub use scaling::{parse_scaling_flag, ScalingFlag, Switch};

use crate::cluster::{ClusterConfig, ClusterSilo, SiloStore};
use crate::membership::{ElectionMode, MembershipConfig, SiloRole};
use crate::storage::{EmbeddedStorage, StorageSpec};
use crate::{SiloConfig, StartError};

/// Start a Granary silo (master candidate or slave).
///
/// Every flag can also be set through the environment variable named in brackets.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "silo",
    version,
    about = "Start a Granary silo: a master candidate (grain directory and store; one acts, the others stand by) or a slave (hosts grains).",
    long_about = None
)]
pub struct SiloArgs {
    /// Master candidates keep the grain directory (and by default the grain store; one of
    /// them acts, elected, the others stand by); slaves host grains. Default: slave when
    /// --master is given, else master.
    #[arg(long, value_enum, env = "GRANARY_ROLE")]
    pub role: Option<Role>,

    /// TCP address (HOST:PORT) to listen on for grain traffic from clients and silos.
    #[arg(long, env = "GRANARY_LISTEN", default_value = "127.0.0.1:7100")]
    pub listen: String,

    /// UDP address (HOST:PORT) to listen on for membership (heartbeats).
    #[arg(long, env = "GRANARY_UDP", default_value = "127.0.0.1:7101")]
    pub udp: String,

    /// TCP address (HOST:PORT) other silos and clients use to reach this one. Needed
    /// when listening on 0.0.0.0; host names are resolved at start.
    #[arg(long, env = "GRANARY_ADVERTISE")]
    pub advertise: Option<String>,

    /// UDP address (HOST:PORT) other silos use to reach this one.
    #[arg(long, env = "GRANARY_ADVERTISE_UDP")]
    pub advertise_udp: Option<String>,

    /// A master candidate's UDP address (HOST:PORT, its --udp); makes this silo a slave.
    /// Repeat it (or separate with commas) to name several candidates: the slave finds
    /// the acting master among them.
    #[arg(long, env = "GRANARY_MASTER", value_delimiter = ',')]
    pub master: Vec<String>,

    /// Another master candidate's UDP address (HOST:PORT, its --udp); repeat it (or
    /// separate with commas) for each. Makes this silo one of several master candidates:
    /// a majority of them elects the acting master (3 candidates survive the loss of 1).
    #[arg(long, env = "GRANARY_PEERS", value_delimiter = ',')]
    pub peer: Vec<String>,

    /// Grain store: `embedded:PATH` (or a bare path), `memory`, or `mongodb://…`.
    /// Default on a master candidate: embedded:granary-data/grains.redb, served to the
    /// slaves by the acting master and replicated to the other candidates. Default on a
    /// slave: the acting master's store. With mongodb://, give every silo the same URI.
    #[arg(long, env = "GRANARY_STORAGE")]
    pub storage: Option<StorageSpec>,

    /// Deactivate grains idle this long (e.g. 15m, 30s).
    #[arg(long, env = "GRANARY_IDLE_TIMEOUT", value_parser = humantime::parse_duration, default_value = "15m")]
    pub idle_timeout: Duration,

    /// Time between heartbeats (a slave missing 3 is declared dead; candidates beat each
    /// other eight times as often).
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

    /// HTTP address (HOST:PORT) for `/metrics` (Prometheus), `/health`, `/ready` and, on
    /// the master, the dashboard at `/`. Off unless given.
    #[arg(long, env = "GRANARY_HTTP")]
    pub http: Option<String>,

    /// Copy hot grains whose type declares it (stateless workers, read replicas): `on`,
    /// or `off` to run every grain type as a single activation.
    #[arg(long, value_enum, env = "GRANARY_REPLICATION", default_value = "on")]
    pub replication: Switch,

    /// Scaling of one replicated grain type, over what it declares: TYPE:KEY=VALUE,…
    /// with keys max-copies, max-local, busy (%), queue, rate (msg/s; 0 off), window,
    /// cool-down (e.g. `my.grain/v1:max-copies=3,cool-down=10s`). Repeat per type (in
    /// the environment, separate them with `;`). Give every silo the same.
    #[arg(long = "scaling", env = "GRANARY_SCALING", value_delimiter = ';', value_parser = parse_scaling_flag)]
    pub scaling: Vec<ScalingFlag>,

    /// Log format: `text` for people (colours only on a terminal; NO_COLOR turns them
    /// off), `json` (one object per line) for log shippers. Filter with RUST_LOG.
    #[arg(long, value_enum, env = "GRANARY_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

/// How log lines are written (to standard output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global `tracing` subscriber: `RUST_LOG` filters (default `info`); in
/// `text` format, ANSI colours only when standard output is a terminal and `NO_COLOR`
/// is unset.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // A second call (tests, embedding) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout())
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            builder.with_ansi(ansi).try_init()
        }
        LogFormat::Json => builder.json().with_ansi(false).try_init(),
    };
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

/// Resolves HOST:PORT once (a listen address names this machine: no waiting).
async fn resolve_local(what: &str, addr: &str) -> Result<SocketAddr, RunError> {
    match tokio::net::lookup_host(addr).await.map(|mut it| it.next()) {
        Ok(Some(resolved)) => Ok(resolved),
        Ok(None) => Err(RunError::Config(format!(
            "{what} `{addr}` resolves to no address"
        ))),
        Err(e) => Err(RunError::Config(format!(
            "{what} `{addr}` is not a HOST:PORT this machine can resolve ({e})"
        ))),
    }
}

/// Resolves HOST:PORT of another machine, retrying for a while (in containers, names
/// appear late); says once that it waits.
async fn resolve(what: &str, addr: &str) -> Result<SocketAddr, RunError> {
    const WAIT: Duration = Duration::from_secs(30);
    let deadline = Instant::now() + WAIT;
    let mut said = false;
    loop {
        match tokio::net::lookup_host(addr).await.map(|mut it| it.next()) {
            Ok(Some(resolved)) => return Ok(resolved),
            Ok(None) | Err(_) if Instant::now() < deadline => {
                if !said {
                    said = true;
                    tracing::info!(
                        "waiting up to {}s for {what} `{addr}` to resolve",
                        WAIT.as_secs()
                    );
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(None) => {
                return Err(RunError::Config(format!(
                    "{what} `{addr}` resolves to no address"
                )))
            }
            Err(e) => {
                return Err(RunError::Config(format!(
                    "{what} `{addr}` does not resolve ({e}); give HOST:PORT"
                )))
            }
        }
    }
}

/// The role to run: `--role` if given (refusing `--role master` with `--master`, and
/// `--peer` on a slave), else slave with `--master` and master without. Also says how it
/// was chosen.
fn choose_role(args: &SiloArgs) -> Result<(Role, &'static str), RunError> {
    let master = args.master.join(",");
    match (args.role, args.master.is_empty(), args.peer.is_empty()) {
        (_, false, false) => Err(RunError::Config(format!(
            "--master {master} with --peer {}: --master names the candidates a slave joins, \
             --peer the other candidates of a master candidate; give one or the other",
            args.peer.join(",")
        ))),
        (Some(Role::Master), false, _) => Err(RunError::Config(format!(
            "--role master with --master {master}: a silo given --master joins that master as a \
             slave; drop --role master (or say --role slave), or drop --master to start a new \
             cluster (other master candidates are named with --peer)"
        ))),
        (Some(Role::Slave), true, _) => Err(RunError::Config(
            "--role slave needs --master HOST:PORT (a master candidate's --udp address)".into(),
        )),
        (Some(role), _, _) => Ok((role, "")),
        (None, false, _) => Ok((Role::Slave, " (slave because --master is given)")),
        (None, true, true) => Ok((Role::Master, " (master because no --master is given)")),
        (None, true, false) => Ok((Role::Master, " (master candidate because --peer is given)")),
    }
}

/// Opens the store a silo of `role` runs on (see [`SiloStore`]): a candidate's embedded
/// store as such (it is replicated among the candidates and keeps the election state).
async fn open_store(role: Role, spec: Option<&StorageSpec>) -> Result<SiloStore, RunError> {
    match (role, spec) {
        (Role::Slave, None) => Ok(SiloStore::default()),
        (Role::Slave, Some(spec)) => {
            if !matches!(spec, StorageSpec::Mongo { .. }) {
                tracing::warn!("this slave has a store of its own ({spec}): grains that move to another slave will not find their state");
            }
            Ok(SiloStore {
                grains: Some(spec.open().await?),
                ..SiloStore::default()
            })
        }
        (Role::Master, spec) => {
            let spec = spec.cloned().unwrap_or_default();
            tracing::info!("opening the grain store {spec}");
            match &spec {
                StorageSpec::Embedded(path) => {
                    let path = path.clone();
                    let store = tokio::task::spawn_blocking(move || EmbeddedStorage::open(path))
                        .await
                        .map_err(|e| {
                            RunError::Storage(granary_runtime::StorageError::Failed(format!(
                                "opening embedded store: {e}"
                            )))
                        })??;
                    Ok(SiloStore {
                        embedded: Some(Arc::new(store)),
                        ..SiloStore::default()
                    })
                }
                _ => Ok(SiloStore {
                    grains: Some(spec.open().await?),
                    ..SiloStore::default()
                }),
            }
        }
    }
}

/// Runs a silo until `shutdown` resolves (or, on a slave, until the master says
/// SHUTDOWN), then shuts it down gracefully.
pub async fn run(args: SiloArgs, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let (role, why) = choose_role(&args)?;
    let listen = resolve_local("--listen", &args.listen).await?;
    let udp = resolve_local("--udp", &args.udp).await?;
    tracing::info!(
        "starting a {} silo{why}: TCP {listen}, UDP {udp}",
        match role {
            Role::Master => "master",
            Role::Slave => "slave",
        }
    );
    let mut membership = match role {
        Role::Slave => {
            let mut masters = Vec::new();
            for master in &args.master {
                masters.push(resolve("--master", master).await?);
            }
            MembershipConfig {
                role: SiloRole::Slave,
                masters,
                ..MembershipConfig::default()
            }
        }
        Role::Master => {
            let mut peers = Vec::new();
            for peer in &args.peer {
                peers.push(resolve("--peer", peer).await?);
            }
            MembershipConfig::candidate(peers)
        }
    }
    .with_heartbeat_interval(args.heartbeat_interval)
    .with_missed_heartbeats(args.missed_heartbeats);
    if role == Role::Master && matches!(args.storage, Some(StorageSpec::Mongo { .. })) {
        // Every silo shares the store: candidates elect through a lease in it, so the
        // last candidate standing can act alone.
        membership = membership.with_election(ElectionMode::SharedStore);
    }
    if let Some(key) = &args.cluster_key {
        membership = membership.with_cluster_key(key.as_bytes().to_vec());
    }
    let mut cluster = ClusterConfig::master(listen, udp).with_membership(membership);
    if let Some(addr) = &args.http {
        cluster.http = Some(resolve_local("--http", addr).await?);
    }
    if let Some(addr) = &args.advertise {
        cluster.advertise = Some(resolve("--advertise", addr).await?);
    }
    if let Some(addr) = &args.advertise_udp {
        cluster.advertise_udp = Some(resolve("--advertise-udp", addr).await?);
    }
    let store = open_store(role, args.storage.as_ref()).await?;
    let config = scaling::configure(
        SiloConfig::default().with_idle_timeout(args.idle_timeout),
        args.replication,
        &args.scaling,
    )?;
    let silo = ClusterSilo::start_on(config, cluster, store).await?;
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

/// Parses the command line, sets up logging ([`init_logging`]), and runs a silo until
/// Ctrl-C or SIGTERM. A failure is reported once, on standard error (as a JSON log line
/// with `--log-format json`), and the process exits with status 1.
pub fn main() -> ExitCode {
    let args = SiloArgs::parse();
    let format = args.log_format;
    init_logging(format);
    let result = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime.block_on(run(args, shutdown_signal())),
        Err(e) => Err(RunError::Config(format!(
            "cannot start the async runtime: {e}"
        ))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match format {
                LogFormat::Text => eprintln!("error: {e}"),
                LogFormat::Json => tracing::error!("{e}"),
            }
            ExitCode::FAILURE
        }
    }
}
