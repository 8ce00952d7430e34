//! The two clusters under test (replication off and on): their processes, their
//! clients, and what they say about the hot grain's copies.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use granary_bench::procs::{free_ports, Children};
use granary_client::{Client, ClientConfig};
use granary_example::{Digest, Gauge, Hash};
use granary_runtime::Grain;
use tokio::time::Instant;

use crate::load::{closed_loop, Figures, Scenario};
use crate::Args;

/// Slaves per cluster.
const SLAVES: usize = 3;
/// Load before each measured repetition.
const WARMUP: Duration = Duration::from_millis(500);

/// Replication off or on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Off = 0,
    On = 1,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::On => "on",
        }
    }
}

/// Both clusters' processes.
pub(crate) struct Clusters {
    children: Children,
    /// The masters' TCP addresses, off then on.
    gateways: [SocketAddr; 2],
}

impl Clusters {
    /// Starts a master and three slaves with replication off, and the same with it on.
    pub(crate) fn start(silo: &Path, storage: &str) -> anyhow::Result<Clusters> {
        let (tcp, udp) = free_ports(2 * (SLAVES + 1), 2 * (SLAVES + 1))?;
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port)).to_string();
        let mut children = Children::new()?;
        let mut gateways = Vec::new();
        for (c, mode) in [Mode::Off, Mode::On].into_iter().enumerate() {
            let base = c * (SLAVES + 1);
            let replication = mode.name();
            let (master_tcp, master_udp) = (addr(tcp[base]), addr(udp[base]));
            let store = match storage {
                "embedded" => format!(
                    "embedded:{}",
                    children.dir().join(format!("{replication}.redb")).display()
                ),
                _ => "memory".to_owned(),
            };
            children.spawn(
                silo,
                &format!("{replication}-master"),
                &[
                    "--listen",
                    &master_tcp,
                    "--udp",
                    &master_udp,
                    "--storage",
                    &store,
                    "--replication",
                    replication,
                ],
                &[],
            )?;
            for s in 1..=SLAVES {
                let (slave_tcp, slave_udp) = (addr(tcp[base + s]), addr(udp[base + s]));
                children.spawn(
                    silo,
                    &format!("{replication}-slave{s}"),
                    &[
                        "--listen",
                        &slave_tcp,
                        "--udp",
                        &slave_udp,
                        "--master",
                        &master_udp,
                        "--replication",
                        replication,
                    ],
                    // The replication decisions, in the log of a failed run.
                    &[("RUST_LOG", "warn,granary_silo::replication=info")],
                )?;
            }
            gateways.push(master_tcp.parse()?);
        }
        Ok(Clusters {
            children,
            gateways: [gateways[0], gateways[1]],
        })
    }

    /// The masters' addresses, off then on.
    pub(crate) fn gateways(&self) -> [SocketAddr; 2] {
        self.gateways
    }

    /// The processes' logs and states, for an error report.
    pub(crate) fn report(&mut self) -> String {
        self.children.report()
    }
}

/// One cluster as the benchmark calls it.
pub(crate) struct Cluster {
    /// Replication off or on.
    mode: Mode,
    /// Its clients (read-your-writes sessions).
    clients: Vec<Client>,
}

/// Connects `clients` clients to each cluster and waits until each serves the hot
/// grains; returns them off then on.
pub(crate) async fn connect(
    gateways: [SocketAddr; 2],
    clients: usize,
) -> anyhow::Result<Vec<Cluster>> {
    let mut out = Vec::new();
    for (mode, gateway) in [Mode::Off, Mode::On].into_iter().zip(gateways) {
        let mut all = Vec::new();
        for _ in 0..clients {
            let config = ClientConfig::new([gateway]).with_connect_timeout(Duration::from_secs(20));
            all.push(Client::connect(config).await?);
        }
        // Ready once every slave has joined: until then some placements fail.
        let deadline = Instant::now() + Duration::from_secs(30);
        let probe = all[0].grain::<Digest>("ready");
        loop {
            let status = all[0].cluster_status().await;
            let joined = status.as_ref().map_or(0, |s| s.silos.len());
            let answered = probe
                .ask(Hash { seed: 1, rounds: 1 })
                .timeout(Duration::from_secs(2))
                .await;
            if joined == SLAVES + 1 && answered.is_ok() {
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "the {} cluster did not become ready in 30 s ({joined} silos)",
                    mode.name()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        out.push(Cluster { mode, clients: all });
    }
    Ok(out)
}

impl Cluster {
    /// With replication on: loads the grain until it has copies on more than one slave
    /// (or `args.settle` passed); says how many and how long it took.
    pub(crate) async fn settle(&self, scenario: Scenario, args: &Args) -> anyhow::Result<String> {
        let started = Instant::now();
        let deadline = started + args.settle;
        loop {
            closed_loop(
                &self.clients,
                scenario,
                args.callers,
                Duration::from_secs(1),
            )
            .await;
            let (silos, copies) = self.copy_count(scenario).await;
            if silos >= 2 {
                return Ok(format!(
                    "{copies} copies on {silos} silos after {:.1} s of load",
                    started.elapsed().as_secs_f64()
                ));
            }
            if Instant::now() >= deadline {
                return Ok(format!(
                    "still {copies} copies on {silos} silos after {:?} of load",
                    args.settle
                ));
            }
        }
    }

    /// One repetition: a warm-up, then `args.seconds` measured.
    pub(crate) async fn measure(&self, scenario: Scenario, args: &Args) -> Figures {
        closed_loop(&self.clients, scenario, args.callers, WARMUP).await;
        closed_loop(
            &self.clients,
            scenario,
            args.callers,
            Duration::from_secs(args.seconds),
        )
        .await
    }

    /// `(silos serving the hot grain, copies)` from the cluster status: silos that list
    /// it among their hot grains, and the most copies one of them counts.
    async fn copy_count(&self, scenario: Scenario) -> (usize, u32) {
        let grain_type = match scenario {
            Scenario::Worker { .. } => Digest::TYPE_NAME,
            Scenario::ReadMostly => Gauge::TYPE_NAME,
        };
        let Ok(status) = self.clients[0].cluster_status().await else {
            return (0, 0);
        };
        let rows: Vec<u32> = status
            .silos
            .iter()
            .flat_map(|s| s.hot_grains.iter())
            .filter(|g| g.grain_type == grain_type && g.key == "hot")
            .map(|g| g.replicas)
            .collect();
        (rows.len(), rows.into_iter().max().unwrap_or(0))
    }

    /// The copies now, for the table (`-` with replication off).
    pub(crate) async fn copies(&self, scenario: Scenario) -> String {
        if self.mode == Mode::Off {
            return "1".into();
        }
        let (silos, copies) = self.copy_count(scenario).await;
        format!("{copies} ({silos} silos)")
    }

    /// Closes the clients.
    pub(crate) async fn close(self) {
        for client in self.clients {
            client.close().await;
        }
    }
}
