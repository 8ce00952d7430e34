//! [`TestCluster`]: master candidates and slaves in one process, for integration tests.
//!
//! Every silo runs the real UDP membership and TCP transport on ephemeral 127.0.0.1
//! ports. A lone master (the default) serves an in-memory store; several candidates
//! ([`TestClusterBuilder::candidates`]) each keep an embedded store in a temporary
//! directory, replicated from the acting master, or — with
//! [`TestClusterBuilder::shared_storage`] — share one store and elect through a lease in
//! it. Silos are plain values, so tests can kill, restart and add them.
//!
//! ```ignore
//! let mut cluster = TestCluster::builder().slaves(2).build().await?;
//! cluster.wait_for_membership_stable(Duration::from_secs(10)).await?;
//! let client = cluster.client().await?;
//! client.grain::<Counter>("a").ask(Add(1)).await?;
//! cluster.kill_silo(0).await;          // slave 0 crashes
//! cluster.shutdown().await;
//! ```

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use granary_client::{Client, ClientConfig, ConnectError};
use granary_runtime::GrainStorage;
use tokio::time::Instant;

use crate::cluster::{ClusterConfig, ClusterSilo, SiloStore};
use crate::membership::{ElectionMode, ElectionStore, MembershipConfig, MemoryElectionStore};
use crate::silo::StartError;
use crate::storage::{EmbeddedStorage, MemoryStorage};
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
    candidates: usize,
    silo: SiloConfig,
    /// Heartbeats as set by [`Self::heartbeats`]; `None`: the defaults.
    heartbeats: Option<(Duration, u32)>,
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
            candidates: 1,
            silo: SiloConfig::default(),
            heartbeats: None,
            // A key of its own per cluster: a test's silo never joins (or answers)
            // another test's cluster that reuses a freed port in the same binary.
            cluster_key: Some(format!("granary-test-{:016x}", fastrand::u64(..)).into_bytes()),
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

    /// Number of master candidates (default 1: a lone master). With more, one acts
    /// (elected) and the others stand by; each keeps an embedded store in a temporary
    /// directory, replicated from the acting master — unless the cluster uses
    /// [`Self::shared_storage`], where they elect through a lease in the shared store.
    pub fn candidates(mut self, n: usize) -> Self {
        self.candidates = n.max(1);
        self
    }

    /// Silo settings of every silo (idle timeouts, mailbox size).
    pub fn silo_config(mut self, config: SiloConfig) -> Self {
        self.silo = config;
        self
    }

    /// Heartbeat interval and misses before a silo is declared dead. Default 100 ms × 5
    /// with a lone master (a slave's hosting lease is then 450 ms from the heartbeat the
    /// master answered: room for a loaded test machine, failures seen within 0.5 s), and
    /// 200 ms × 5 with several candidates (the acting master's lease is then 250 ms, from
    /// beats every 50 ms, so a busy test machine does not depose it).
    pub fn heartbeats(mut self, interval: Duration, missed: u32) -> Self {
        self.heartbeats = Some((interval, missed));
        self
    }

    /// The store a lone master serves (default: a fresh [`MemoryStorage`]).
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

    /// Starts the master candidates, then the slaves.
    pub async fn build(self) -> Result<TestCluster, StartError> {
        let storage = self
            .storage
            .clone()
            .unwrap_or_else(|| Arc::new(MemoryStorage::new()));
        let dir = tempfile::tempdir().map_err(|e| {
            StartError::Storage(granary_runtime::StorageError::Failed(format!(
                "temporary directory: {e}"
            )))
        })?;
        let n = self.candidates;
        let candidates = (0..n)
            .map(|i| CandidateSlot {
                tcp: free_tcp(),
                udp: free_udp(),
                path: dir.path().join(format!("candidate-{i}.redb")),
                election: Arc::new(MemoryElectionStore::durable()),
                silo: None,
            })
            .collect();
        let mut cluster = TestCluster {
            builder: self,
            storage,
            _dir: dir,
            candidates,
            slaves: Vec::new(),
        };
        for i in 0..n {
            cluster.start_candidate(i).await?;
        }
        if n > 1 {
            cluster
                .wait_for_acting_master(Duration::from_secs(20))
                .await
                .map_err(|e| StartError::Storage(granary_runtime::StorageError::Unavailable(e)))?;
        }
        for _ in 0..cluster.builder.slaves {
            cluster.start_additional_silo().await?;
        }
        Ok(cluster)
    }

    fn membership(&self, base: MembershipConfig) -> MembershipConfig {
        let (interval, missed) = self.heartbeats.unwrap_or(if self.candidates > 1 {
            (Duration::from_millis(200), 5)
        } else {
            (Duration::from_millis(100), 5)
        });
        let config = base
            .with_heartbeat_interval(interval)
            .with_missed_heartbeats(missed);
        match &self.cluster_key {
            Some(key) => config.with_cluster_key(key.clone()),
            None => config,
        }
    }
}

/// A free TCP port on 127.0.0.1 (for candidates, which must know each other's
/// addresses before they start).
fn free_tcp() -> SocketAddr {
    TcpListener::bind(LOCALHOST_ANY)
        .and_then(|l| l.local_addr())
        .expect("a free TCP port on 127.0.0.1")
}

/// A free UDP port on 127.0.0.1.
fn free_udp() -> SocketAddr {
    UdpSocket::bind(LOCALHOST_ANY)
        .and_then(|s| s.local_addr())
        .expect("a free UDP port on 127.0.0.1")
}

fn transport() -> TransportConfig {
    TransportConfig::default()
        .with_shutdown_grace(Duration::from_millis(200))
        .with_backoff(Duration::from_millis(20), Duration::from_millis(200))
}

/// One master candidate: its fixed addresses, its store and election state (kept across
/// restarts), and the running silo.
#[derive(Debug)]
struct CandidateSlot {
    tcp: SocketAddr,
    udp: SocketAddr,
    /// Its embedded store (several candidates, not sharing a store).
    path: PathBuf,
    /// Its election state with a lone master or a shared store.
    election: Arc<MemoryElectionStore>,
    silo: Option<ClusterSilo>,
}

/// Master candidates and their slaves in this process.
#[derive(Debug)]
pub struct TestCluster {
    builder: TestClusterBuilder,
    /// The store a lone master serves, or every silo shares.
    storage: Arc<dyn GrainStorage>,
    /// Where replicated candidates keep their stores.
    _dir: tempfile::TempDir,
    candidates: Vec<CandidateSlot>,
    /// Slaves by index; `None` once killed or stopped.
    slaves: Vec<Option<ClusterSilo>>,
}

impl TestCluster {
    /// A builder: a lone master + 2 slaves, 100 ms heartbeats (5 may be missed),
    /// in-memory store.
    pub fn builder() -> TestClusterBuilder {
        TestClusterBuilder::default()
    }

    /// True when candidates replicate embedded stores among themselves.
    fn replicated(&self) -> bool {
        self.candidates.len() > 1 && !self.builder.shared_storage
    }

    async fn start_candidate(&mut self, i: usize) -> Result<(), StartError> {
        let peers: Vec<SocketAddr> = self
            .candidates
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, c)| c.udp)
            .collect();
        let mut membership = self.builder.membership(MembershipConfig::candidate(peers));
        if self.builder.shared_storage && self.candidates.len() > 1 {
            membership = membership.with_election(ElectionMode::SharedStore);
        }
        let slot = &self.candidates[i];
        let config = ClusterConfig {
            transport: transport(),
            http: self.builder.http_addr(),
            ..ClusterConfig::master(slot.tcp, slot.udp).with_membership(membership)
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let store = if self.replicated() {
                let path = self.candidates[i].path.clone();
                let embedded = tokio::task::spawn_blocking(move || EmbeddedStorage::open(path))
                    .await
                    .map_err(|e| {
                        StartError::Storage(granary_runtime::StorageError::Failed(e.to_string()))
                    })??;
                SiloStore {
                    embedded: Some(Arc::new(embedded)),
                    ..SiloStore::default()
                }
            } else {
                SiloStore {
                    grains: Some(self.storage.clone()),
                    election: Some(self.candidates[i].election.clone() as Arc<dyn ElectionStore>),
                    ..SiloStore::default()
                }
            };
            match ClusterSilo::start_on(self.builder.silo.clone(), config.clone(), store).await {
                Ok(silo) => {
                    self.candidates[i].silo = Some(silo);
                    return Ok(());
                }
                // The old sockets (or store file) may take a moment to be released.
                Err(StartError::Bind { .. } | StartError::Storage(_))
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The acting master (or, while none acts, the first running candidate).
    pub fn master(&self) -> &ClusterSilo {
        let running = || self.candidates.iter().filter_map(|c| c.silo.as_ref());
        running()
            .find(|c| c.membership().is_acting_master())
            .or_else(|| running().next())
            .expect("a master candidate runs")
    }

    /// Candidate `i`, if it runs.
    pub fn candidate(&self, i: usize) -> Option<&ClusterSilo> {
        self.candidates.get(i).and_then(|c| c.silo.as_ref())
    }

    /// Index of the acting master among the candidates, if one acts now.
    pub fn acting_master(&self) -> Option<usize> {
        self.candidates.iter().position(|c| {
            c.silo
                .as_ref()
                .is_some_and(|s| s.membership().is_acting_master())
        })
    }

    /// Waits until a candidate acts as master and every running silo follows it;
    /// returns its index.
    pub async fn wait_for_acting_master(&self, timeout: Duration) -> Result<usize, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.acting_master() {
                let id = self.candidate(i).map(|c| c.id());
                let all_follow = self
                    .candidates
                    .iter()
                    .filter_map(|c| c.silo.as_ref())
                    .map(|s| s.membership().master)
                    .chain(self.slaves().map(|(_, s)| s.membership().master))
                    .all(|m| m == id);
                if all_follow {
                    return Ok(i);
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "no acting master everyone follows after {timeout:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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

    /// The store a lone master serves, or every silo shares. (Replicated candidates
    /// keep one each: see [`Self::candidate_store_path`].)
    pub fn storage(&self) -> &Arc<dyn GrainStorage> {
        &self.storage
    }

    /// Where replicated candidate `i` keeps its embedded store.
    pub fn candidate_store_path(&self, i: usize) -> &std::path::Path {
        &self.candidates[i].path
    }

    async fn start_slave_on(
        &self,
        tcp: SocketAddr,
        udp: SocketAddr,
    ) -> Result<ClusterSilo, StartError> {
        let mut membership = MembershipConfig::slave(self.candidates[0].udp);
        for c in &self.candidates[1..] {
            membership = membership.with_master(c.udp);
        }
        let config = ClusterConfig::slave(tcp, udp, self.candidates[0].udp)
            .with_membership(self.builder.membership(membership));
        let store = SiloStore {
            grains: self.builder.shared_storage.then(|| self.storage.clone()),
            ..SiloStore::default()
        };
        ClusterSilo::start_on(
            self.builder.silo.clone(),
            ClusterConfig {
                transport: transport(),
                http: self.builder.http_addr(),
                ..config
            },
            store,
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

    /// Crashes master candidate `i`: no goodbye.
    pub async fn kill_candidate(&mut self, i: usize) {
        if let Some(silo) = self.candidates.get_mut(i).and_then(|c| c.silo.take()) {
            silo.abort().await;
        }
    }

    /// Starts candidate `i` again (a new generation on the same addresses and store).
    pub async fn restart_candidate(&mut self, i: usize) -> Result<(), StartError> {
        self.kill_candidate(i).await;
        self.start_candidate(i).await
    }

    /// Crashes the acting master (a lone master: the only one). With no other
    /// candidate, the cluster has no master afterwards: [`TestCluster::master`] and
    /// [`TestCluster::client`] panic until [`TestCluster::restart_master`].
    pub async fn kill_master(&mut self) {
        let i = self.acting_master().unwrap_or(0);
        self.kill_candidate(i).await;
    }

    /// Crashes the acting master and starts a new generation of it on the same ports and
    /// store.
    pub async fn restart_master(&mut self) -> Result<(), StartError> {
        let i = self.acting_master().unwrap_or(0);
        self.restart_candidate(i).await
    }

    /// Every running silo: candidates first, then slaves.
    fn running(&self) -> impl Iterator<Item = &ClusterSilo> {
        self.candidates
            .iter()
            .filter_map(|c| c.silo.as_ref())
            .chain(self.slaves().map(|(_, s)| s))
    }

    /// Waits until one candidate acts, every running silo follows it, the acting master
    /// and every slave see exactly the running slaves, and every slave serves. Fails with a description at
    /// the deadline.
    pub async fn wait_for_membership_stable(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let mut problems = Vec::new();
            match self.acting_master() {
                None => problems.push("no candidate acts as master".to_owned()),
                Some(i) => {
                    let master = self.candidate(i).expect("acting runs");
                    let mut expected: Vec<_> = self.slaves().map(|(_, s)| s.id()).collect();
                    expected.push(master.id());
                    expected.sort();
                    let view = master.membership();
                    let mut active: Vec<_> = view
                        .active_members()
                        .filter(|m| !m.is_candidate || m.id == master.id())
                        .map(|m| m.id)
                        .collect();
                    active.sort();
                    if active != expected {
                        problems.push(format!(
                            "the acting master sees {} of {} members",
                            active.len(),
                            expected.len()
                        ));
                    }
                    // Every slave sees the same members as the master (a departure or a
                    // join reaches the slaves one SLAVE_DISCONNECT/CONNECT later).
                    for (_, slave) in self.slaves() {
                        let view = slave.membership();
                        let mut seen: Vec<_> = view
                            .active_members()
                            .filter(|m| !m.is_candidate || m.id == master.id())
                            .map(|m| m.id)
                            .collect();
                        seen.sort();
                        if seen != expected {
                            problems.push(format!(
                                "{} sees {} of {} members",
                                slave.id(),
                                seen.len(),
                                expected.len()
                            ));
                        }
                    }
                    for silo in self.running() {
                        let view = silo.membership();
                        if view.master != Some(master.id()) || !view.is_joined() {
                            problems.push(format!(
                                "{} follows {:?}, joined={}",
                                silo.id(),
                                view.master.map(|m| m.to_string()),
                                view.is_joined()
                            ));
                        }
                    }
                }
            }
            if problems.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "membership not stable after {timeout:?}: {}",
                    problems.join("; ")
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A client using every running silo as a gateway (candidates first).
    pub async fn client(&self) -> Result<Client, ConnectError> {
        let gateways = self.running().map(|s| s.addr().addr);
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

    /// Stops everything gracefully (a lone master shuts its slaves down first).
    pub async fn shutdown(mut self) {
        let slaves: Vec<_> = self.slaves.drain(..).flatten().collect();
        let candidates: Vec<_> = self
            .candidates
            .iter_mut()
            .filter_map(|c| c.silo.take())
            .collect();
        let stopping = slaves.into_iter().map(|s| s.shutdown());
        let masters = candidates.into_iter().map(|c| c.shutdown());
        futures::join!(
            futures::future::join_all(stopping),
            futures::future::join_all(masters)
        );
    }
}
