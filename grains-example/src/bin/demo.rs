//! The main job: a local cluster (a master and two slaves, in this process, on
//! 127.0.0.1) serving the example grains on the embedded store, exercised through a
//! real TCP client.
//!
//! Each run adds 1 to the persistent counter `demo`, so its value grows from run to run:
//! state survives a restart. `--serve` keeps the cluster up for the `client` binary and
//! the dashboard, which the master serves on `--http` (default 127.0.0.1:7180).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use granary_client::{Client, ClientConfig};
use granary_example::{Account, Add, Counter, Follow, Followers, Greeter, Hello};
use granary_silo::cluster::{ClusterConfig, ClusterSilo};
use granary_silo::membership::MembershipConfig;
use granary_silo::storage::StorageSpec;
use granary_silo::SiloConfig;

/// Run a local Granary cluster serving the example grains, and call them.
#[derive(Debug, Parser)]
struct Args {
    /// Grain store the master serves: `embedded:PATH` (or a bare path), `memory`, or `mongodb://…`.
    #[arg(long, env = "GRANARY_STORAGE", default_value_t = StorageSpec::default())]
    storage: StorageSpec,

    /// The master's TCP gateway address.
    #[arg(long, default_value = "127.0.0.1:7100")]
    gateway: SocketAddr,

    /// The master's HTTP address: the dashboard at `/`, health probes, metrics; `off`
    /// serves none. Default: 127.0.0.1:7180, or none (with a note) if that port is taken.
    #[arg(long)]
    http: Option<String>,

    /// Keep serving after the demo calls, until Ctrl-C (use the `client` binary and the
    /// dashboard meanwhile).
    #[arg(long)]
    serve: bool,
}

/// The dashboard's address when `--http` is not given.
const DEFAULT_HTTP: &str = "127.0.0.1:7180";

/// Where the master serves HTTP: `--http` as given (`off`: nowhere), else
/// [`DEFAULT_HTTP`] unless another program holds it.
fn http_addr(flag: Option<&str>) -> anyhow::Result<Option<SocketAddr>> {
    match flag {
        Some("off") => Ok(None),
        Some(addr) => addr
            .parse()
            .map(Some)
            .map_err(|e| anyhow::anyhow!("--http {addr}: {e}; give IP:PORT, or off")),
        None => {
            let addr: SocketAddr = DEFAULT_HTTP.parse()?;
            // Probed, then released for the master to bind: a second demo still runs.
            match std::net::TcpListener::bind(addr) {
                Ok(_) => Ok(Some(addr)),
                Err(e) => {
                    println!("dashboard: off ({addr}: {e}; pass --http IP:PORT)");
                    Ok(None)
                }
            }
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let args = Args::parse();
    println!(
        "granary demo: grain types {}",
        granary_example::grain_types().join(", ")
    );
    println!("grain store: {}", args.storage);
    let storage = args.storage.open().await?;

    let any: SocketAddr = "127.0.0.1:0".parse()?;
    let master_udp = SocketAddr::new(args.gateway.ip(), 0);
    let mut master_config = ClusterConfig::master(args.gateway, master_udp);
    if let Some(http) = http_addr(args.http.as_deref())? {
        master_config = master_config.with_http(http);
    }
    let master = ClusterSilo::start(SiloConfig::default(), master_config, Some(storage)).await?;
    let mut slaves = Vec::new();
    for _ in 0..2 {
        let config = ClusterConfig::slave(any, any, master.id().udp)
            .with_membership(MembershipConfig::slave(master.id().udp));
        slaves.push(ClusterSilo::start(SiloConfig::default(), config, None).await?);
    }
    for slave in &slaves {
        slave.wait_joined(Duration::from_secs(10)).await?;
    }
    println!(
        "cluster: master {} + slaves {}, {}",
        master.addr().addr,
        slaves[0].addr().addr,
        slaves[1].addr().addr
    );

    let client = Client::connect(ClientConfig::new([master.addr().addr])).await?;
    let t = Duration::from_secs(10);
    let greeting = client
        .grain::<Greeter>("world")
        .ask(Hello("demo".into()))
        .timeout(t)
        .await?;
    println!("greeter world   -> {greeting}");
    let value = client
        .grain::<Counter>("demo")
        .ask(Add(1))
        .timeout(t)
        .await?;
    println!("counter demo    -> {value}  (persisted: run the demo again and it grows)");
    client
        .grain::<Account>("alice")
        .ask(Follow("bob".into()))
        .timeout(t)
        .await?;
    client
        .grain::<Account>("carol")
        .ask(Follow("bob".into()))
        .timeout(t)
        .await?;
    let followers = client
        .grain::<Account>("bob")
        .ask(Followers)
        .timeout(t)
        .await?;
    println!("account bob     -> {followers} followers (alice and carol follow bob, across silos)");
    for (i, slave) in slaves.iter().enumerate() {
        println!("slave {i} hosts {} grain(s)", slave.activation_count());
    }

    match (master.http_addr(), args.serve) {
        (Some(http), true) => println!("dashboard: http://{http}/"),
        (Some(http), false) => {
            println!("dashboard: http://{http}/ while the demo runs (--serve keeps it up)")
        }
        (None, _) => {}
    }
    if args.serve {
        println!(
            "serving; try: cargo run -p granary-example --bin client -- --gateway {} counter get demo   (Ctrl-C stops)",
            master.addr().addr
        );
        granary_silo::cli::shutdown_signal().await;
    }
    client.close().await;
    // The master tells the slaves to save their grains and leave, then stops.
    let stopping = slaves.into_iter().map(|s| s.shutdown());
    futures::join!(futures::future::join_all(stopping), master.shutdown());
    println!("demo done: state saved, cluster stopped");
    Ok(())
}
