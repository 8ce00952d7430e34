//! Calls the example grains in a running cluster. Prints bare values, for scripts.
//!
//! ```text
//! client --gateway 127.0.0.1:7100 counter add alice 5     # prints the new value
//! client --gateway 127.0.0.1:7100 --gateway 127.0.0.1:7200 greet world Ada
//! client --gateway 127.0.0.1:7100 status            # the cluster as tables
//! client --gateway 127.0.0.1:7100 status --watch    # … redrawn every second
//! client --gateway 127.0.0.1:7100 lock acquire jobs  # prints the fencing token
//! client --gateway 127.0.0.1:7100 var watch config   # prints every change
//! client --gateway 127.0.0.1:7100 mandelbrot --width 1600 --height 1200 --out m.png
//! ```

// `src/bin/status.rs` would be a binary of its own.
#[path = "client/coord.rs"]
mod coord;
#[path = "client/mandelbrot.rs"]
mod mandelbrot;
#[path = "client/status.rs"]
mod status;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use granary_client::{Client, ClientConfig};
use granary_example::{Account, Add, Counter, Follow, Followers, Get, Greeter, Hello};

/// Call the example grains (Greeter, Counter, Account, Lock, Variable, Beacon, the Mandelbrot job) in a Granary cluster.
#[derive(Debug, Parser)]
#[command(name = "client", version)]
struct Args {
    /// A silo to use as gateway (HOST:PORT); repeat for failover.
    #[arg(
        long = "gateway",
        env = "GRANARY_GATEWAY",
        value_delimiter = ',',
        required = true
    )]
    gateways: Vec<String>,

    /// The cluster's shared secret, if the silos run with `--cluster-key`.
    #[arg(long, env = "GRANARY_CLUSTER_KEY", hide_env_values = true)]
    cluster_key: Option<String>,

    /// Deadline of each call.
    #[arg(long, env = "GRANARY_TIMEOUT", value_parser = humantime::parse_duration, default_value = "10s")]
    timeout: Duration,

    /// How long to keep trying the gateways before giving up.
    #[arg(long, env = "GRANARY_CONNECT_TIMEOUT", value_parser = humantime::parse_duration, default_value = "3s")]
    connect_timeout: Duration,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check that a gateway answers; prints the round-trip time.
    Ping,
    /// Show the cluster: silos (dead ones too), grain types, hot grains, recent events.
    ///
    /// Takes two reports INTERVAL apart, so message rates and p99 latencies are those of
    /// that interval.
    Status {
        /// Redraw every INTERVAL until interrupted.
        #[arg(long)]
        watch: bool,
        /// Time between the two reports (and between redraws).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
        interval: Duration,
    },
    /// Ask greeter KEY to greet NAME.
    Greet { key: String, name: String },
    /// The persistent counters.
    Counter {
        #[command(subcommand)]
        command: CounterCommand,
    },
    /// The social accounts.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Distributed locks: leases, fencing tokens, waiters in line.
    Lock {
        #[command(subcommand)]
        command: coord::LockCommand,
    },
    /// Versioned variables: get, set, watch changes.
    Var {
        #[command(subcommand)]
        command: coord::VarCommand,
    },
    /// Beacons: grains woken by a durable reminder.
    Beacon {
        #[command(subcommand)]
        command: coord::BeaconCommand,
    },
    /// Render a Mandelbrot image on the cluster and write a PNG (Ctrl-C cancels the job).
    ///
    /// A job grain splits the image into row bands and farms them out to worker grains
    /// spread over the slaves; a progress bar shows the bands as they come in.
    Mandelbrot(mandelbrot::Options),
}

#[derive(Debug, Subcommand)]
enum CounterCommand {
    /// Add N to counter KEY; prints the new value.
    Add {
        key: String,
        #[arg(allow_negative_numbers = true)]
        n: i64,
    },
    /// Print counter KEY.
    Get { key: String },
}

#[derive(Debug, Subcommand)]
enum AccountCommand {
    /// Account A follows account B; prints B's follower count.
    Follow { a: String, b: String },
    /// Print account A's follower count.
    Followers { a: String },
}

async fn resolve(addrs: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    let mut out = Vec::new();
    for addr in addrs {
        let found = tokio::net::lookup_host(addr.as_str())
            .await
            .map_err(|e| anyhow::anyhow!("gateway `{addr}`: {e}"))?;
        out.extend(found.take(1));
    }
    Ok(out)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let gateways = resolve(&args.gateways).await?;
    let mut config = ClientConfig::new(gateways).with_connect_timeout(args.connect_timeout);
    if let Some(key) = &args.cluster_key {
        config = config.with_cluster_key(key.as_bytes());
    }
    let client = Client::connect(config).await?;
    let t = args.timeout;
    match args.command {
        Command::Ping => println!(
            "pong from {} in {:?}",
            client.gateway(),
            client.ping().await?
        ),
        Command::Status { watch, interval } => status::run(&client, interval, watch).await?,
        Command::Greet { key, name } => println!(
            "{}",
            client
                .grain::<Greeter>(key)
                .ask(Hello(name))
                .timeout(t)
                .await?
        ),
        Command::Counter {
            command: CounterCommand::Add { key, n },
        } => {
            println!(
                "{}",
                client.grain::<Counter>(key).ask(Add(n)).timeout(t).await?
            )
        }
        Command::Counter {
            command: CounterCommand::Get { key },
        } => {
            println!(
                "{}",
                client.grain::<Counter>(key).ask(Get).timeout(t).await?
            )
        }
        Command::Account {
            command: AccountCommand::Follow { a, b },
        } => {
            println!(
                "{}",
                client.grain::<Account>(a).ask(Follow(b)).timeout(t).await?
            )
        }
        Command::Lock { command } => coord::lock(&client, command, t).await?,
        Command::Var { command } => coord::var(&client, command, t).await?,
        Command::Beacon { command } => coord::beacon(&client, command, t).await?,
        Command::Account {
            command: AccountCommand::Followers { a },
        } => {
            println!(
                "{}",
                client.grain::<Account>(a).ask(Followers).timeout(t).await?
            )
        }
        Command::Mandelbrot(options) => {
            if !mandelbrot::run(&client, options).await? {
                // The job's cancel is queued on the connection: close it cleanly so it
                // is sent, then exit as an interrupted command does.
                client.close().await;
                std::process::exit(130);
            }
        }
    }
    client.close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
