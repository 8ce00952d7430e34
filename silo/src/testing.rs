//! [`TestCluster`]: a master and N slaves in one process, for integration tests.
//!
//! Every silo runs the real UDP membership and TCP transport on ephemeral 127.0.0.1
//! ports; the master serves an in-memory store (no database needed). Silos are plain
//! values, so tests can kill, restart and add them. Enabled by the `test-util` feature.
//!
//! ```ignore
//! let mut cluster = TestCluster::builder().slaves(2).build().await?;
//! cluster.wait_for_membership_stable(Duration::from_secs(10)).await?;
//! let client = cluster.client().await?;
//! client.grain::<Counter>("a").ask(Add(1)).await?;
//! cluster.kill_silo(0).await;          // slave 0 crashes
//! cluster.shutdown().await;
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use granary_client::{Client, ClientConfig, ConnectError};
use granary_runtime::GrainStorage;
use tokio::time::Instant;

use crate::cluster::{ClusterConfig, ClusterSilo};
use crate::membership::MembershipConfig;
use crate::silo::StartError;
use crate::storage::MemoryStorage;
use crate::transport::TransportConfig;
use crate::SiloConfig;

const LOCALHOST_ANY: &str = "127.0.0.1:0";

/// Polls `check` every 10 ms until it holds; panics with `what` after `timeout`.
/// Tests wait with this instead of sleeping and hoping.
pub async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Builds a [`TestCluster`].
#[derive(Debug, Clone)]
pub struct TestClusterBuilder {
    slaves: usize,
    silo: SiloConfig,
    heartbeat_interval: Duration,
    missed_heartbeats: u32,
    cluster_key: Option<Vec<u8>>,
    storage: Option<Arc<dyn GrainStorage>>,
    /// Slaves use the store directly (as with MongoDB) instead of through the master.
    shared_storage: bool,
    /// Every silo serves HTTP on an ephemeral 127.0.0.1 port.
    http: bool,
}

impl Default for TestClusterBuilder {
    fn default() -> Self {
        Self {
            slaves: 2,
            silo: SiloConfig::default(),
            heartbeat_interval: Duration::from_millis(100),
            missed_heartbeats: 3,
            cluster_key: Some(b"granary-test-cluster".to_vec()),
            storage: None,
            shared_storage: false,
            http: false,
        }
    }
}

impl TestClusterBuilder {
    /// Number of slaves (default 2).
    pub fn slaves(mut self, n: usize) -> Self {
        self.slaves = n;
        self
    }

    /// Silo settings of every silo (idle timeouts, mailbox size).
    pub fn silo_config(mut self, config: SiloConfig) -> Self {
        self.silo = config;
        self
    }

    /// Heartbeat interval and misses before a silo is declared dead (default
    /// 100 ms × 3, so failures are detected in tests within a second).
    pub fn heartbeats(mut self, interval: Duration, missed: u32) -> Self {
        self.heartbeat_interval = interval;
        self.missed_heartbeats = missed;
        self
    }

    /// The store the master serves (default: a fresh [`MemoryStorage`]).
    pub fn storage(mut self, storage: Arc<dyn GrainStorage>) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Every silo uses `storage` directly, as a production cluster does with MongoDB
    /// (by default slaves reach the master's store over TCP).
    pub fn shared_storage(mut self, storage: Arc<dyn GrainStorage>) -> Self {
        self.storage = Some(storage);
        self.shared_storage = true;
        self
    }

    /// Every silo serves HTTP (`/metrics`, `/health`, `/ready`, the master's dashboard)
    /// on an ephemeral 127.0.0.1 port; see [`ClusterSilo::http_addr`].
    pub fn http(mut self) -> Self {
        self.http = true;
        self
    }

    /// The HTTP address a silo binds, if the cluster serves HTTP.
    fn http_addr(&self) -> Option<SocketAddr> {
        self.http
            .then(|| LOCALHOST_ANY.parse().expect("valid address"))
    }

    /// Starts the master, then the slaves.
    pub async fn build(self) -> Result<TestCluster, StartError> {
        let storage = self
            .storage
            .clone()
            .unwrap_or_else(|| Arc::new(MemoryStorage::new()));
        let any: SocketAddr = LOCALHOST_ANY.parse().expect("valid address");
        let master_config = ClusterConfig::master(any, any)
            .with_membership(self.membership(MembershipConfig::master()));
        let master = ClusterSilo::start(
            self.silo.clone(),
            ClusterConfig {
                transport: transport(),
                http: self.http_addr(),
                ..master_config
            },
            Some(storage.clone()),
        )
        .await?;
        let mut cluster = TestCluster {
            builder: self,
            storage,
            master: Some(master),
            slaves: Vec::new(),
        };
        for _ in 0..cluster.builder.slaves {
            cluster.start_additional_silo().await?;
        }
        Ok(cluster)
    }

    fn membership(&self, base: MembershipConfig) -> MembershipConfig {
        let config = base
            .with_heartbeat_interval(self.heartbeat_interval)
            .with_missed_heartbeats(self.missed_heartbeats);
        match &self.cluster_key {
            Some(key) => config.with_cluster_key(key.clone()),
            None => config,
        }
    }
}

fn transport() -> TransportConfig {
    TransportConfig::default()
        .with_shutdown_grace(Duration::from_millis(200))
        .with_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

/// A master and its slaves in this process.
#[derive(Debug)]
pub struct TestCluster {
    builder: TestClusterBuilder,
    /// The store the master serves.
    storage: Arc<dyn GrainStorage>,
    master: Option<ClusterSilo>,
    /// Slaves by index; `None` once killed or stopped.
    slaves: Vec<Option<ClusterSilo>>,
}

impl TestCluster {
    /// A builder: master + 2 slaves, 100 ms heartbeats, in-memory store.
    pub fn builder() -> TestClusterBuilder {
        TestClusterBuilder::default()
    }

    /// The master.
    pub fn master(&self) -> &ClusterSilo {
        self.master
            .as_ref()
            .expect("the master runs until shutdown")
    }

    /// Slave `i`, if it runs.
    pub fn slave(&self, i: usize) -> Option<&ClusterSilo> {
        self.slaves.get(i).and_then(Option::as_ref)
    }

    /// Running slaves with their indexes.
    pub fn slaves(&self) -> impl Iterator<Item = (usize, &ClusterSilo)> {
        self.slaves
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }

    /// The store the master serves.
    pub fn storage(&self) -> &Arc<dyn GrainStorage> {
        &self.storage
    }

    async fn start_slave_on(
        &self,
        tcp: SocketAddr,
        udp: SocketAddr,
    ) -> Result<ClusterSilo, StartError> {
        let master_udp = self.master().id().udp;
        let config = ClusterConfig::slave(tcp, udp, master_udp)
            .with_membership(self.builder.membership(MembershipConfig::slave(master_udp)));
        ClusterSilo::start(
            self.builder.silo.clone(),
            ClusterConfig {
                transport: transport(),
                http: self.builder.http_addr(),
                ..config
            },
            None,
        )
        .await
    }

    /// Starts one more slave; returns its index.
    pub async fn start_additional_silo(&mut self) -> Result<usize, StartError> {
        let any: SocketAddr = LOCALHOST_ANY.parse().expect("valid address");
        let slave = self.start_slave_on(any, any).await?;
        self.slaves.push(Some(slave));
        Ok(self.slaves.len() - 1)
    }

    /// Crashes slave `i`: no goodbye, no state written.
    pub async fn kill_silo(&mut self, i: usize) {
        if let Some(slave) = self.slaves.get_mut(i).and_then(Option::take) {
            slave.abort().await;
        }
    }

    /// Stops slave `i` gracefully.
    pub async fn stop_silo(&mut self, i: usize) {
        if let Some(slave) = self.slaves.get_mut(i).and_then(Option::take) {
            slave.shutdown().await;
        }
    }

    /// Kills slave `i` and starts a new generation on the same ports.
    pub async fn restart_silo(&mut self, i: usize) -> Result<(), StartError> {
        let id = self
            .slave(i)
            .map(|s| s.id())
            .expect("restart a running slave");
        self.kill_silo(i).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.start_slave_on(id.tcp, id.udp).await {
                Ok(slave) => {
                    self.slaves[i] = Some(slave);
                    return Ok(());
                }
                // The old sockets may take a moment to be released.
                Err(StartError::Bind { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Crashes the master: no goodbye, so the slaves fence themselves once its lease
    /// runs out. The cluster has no master afterwards: [`TestCluster::master`],
    /// [`TestCluster::client`] and [`TestCluster::restart_master`] panic.
    pub async fn kill_master(&mut self) {
        if let Some(master) = self.master.take() {
            master.abort().await;
        }
    }

    /// Crashes the master and starts a new generation on the same ports and store.
    pub async fn restart_master(&mut self) -> Result<(), StartError> {
        let master = self.master.take().expect("the master runs until shutdown");
        let id = master.id();
        master.abort().await;
        let config = ClusterConfig::master(id.tcp, id.udp)
            .with_membership(self.builder.membership(MembershipConfig::master()));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let config = ClusterConfig {
                transport: transport(),
                http: self.builder.http_addr(),
                ..config.clone()
            };
            match ClusterSilo::start(
                self.builder.silo.clone(),
                config,
                Some(self.storage.clone()),
            )
            .await
            {
                Ok(master) => {
                    self.master = Some(master);
                    return Ok(());
                }
                Err(StartError::Bind { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Waits until every running silo sees the same active members (the master and the
    /// running slaves) and every slave is joined. Fails with a description at the deadline.
    pub async fn wait_for_membership_stable(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut expected: Vec<_> = self.slaves().map(|(_, s)| s.id()).collect();
            expected.push(self.master().id());
            expected.sort();
            let mut problems = Vec::new();
            for silo in std::iter::once(self.master()).chain(self.slaves().map(|(_, s)| s)) {
                let view = silo.membership();
                let mut active: Vec<_> = view.active_members().map(|m| m.id).collect();
                active.sort();
                if active != expected || !view.is_joined() {
                    problems.push(format!(
                        "{} sees {} active, joined={}",
                        silo.id(),
                        active.len(),
                        view.is_joined()
                    ));
                }
            }
            if problems.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "membership not stable after {timeout:?} (expected {} members): {}",
                    expected.len(),
                    problems.join("; ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A client using every running silo as a gateway (master first).
    pub async fn client(&self) -> Result<Client, ConnectError> {
        let gateways = std::iter::once(self.master().addr().addr)
            .chain(self.slaves().map(|(_, s)| s.addr().addr));
        let mut config = ClientConfig::new(gateways).with_connect_timeout(Duration::from_secs(5));
        if let Some(key) = &self.builder.cluster_key {
            config = config.with_cluster_key(key.clone());
        }
        Client::connect(config).await
    }

    /// The cluster key its silos use (clients need it), if any.
    pub fn cluster_key(&self) -> Option<&[u8]> {
        self.builder.cluster_key.as_deref()
    }

    /// Stops everything gracefully (the master shuts its slaves down first).
    pub async fn shutdown(mut self) {
        let slaves: Vec<_> = self.slaves.drain(..).flatten().collect();
        let master = self.master.take();
        let stopping = slaves.into_iter().map(|s| s.shutdown());
        let master = async {
            if let Some(master) = master {
                master.shutdown().await;
            }
        };
        futures::join!(futures::future::join_all(stopping), master);
    }
}
