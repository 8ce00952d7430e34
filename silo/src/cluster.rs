//! A clustered silo: membership over UDP, grain traffic over TCP, the master's directory.
//!
//! ```text
//! ClusterSilo
//! ├── Membership (UDP task): HANDSHAKE/WELCOME/HEARTBEAT…, publishes snapshots
//! ├── TCP server (transport::serve) ── Gateway: grain calls, directory, storage, ping
//! ├── ClusterRouter (granary-client): directory cache, calls to other silos (Peers)
//! │   └── SiloLocal ── Catalog ── Dispatcher per type ── activation tasks
//! ├── load reporter: catalog load → heartbeat LoadReport
//! ├── hot-grain reporter (slave): replicated grains' load → the master's Controller
//! ├── replication controller (master): copy sets grown and shrunk by load
//! ├── membership watcher: departed silos → directory/caches/connections; fencing
//! ├── membership_events (per subscriber): snapshots diffed into MembershipEvents
//! └── reminder keeper (master candidates, while acting): wakes the reminder shards
//! ```
//!
//! The **master** keeps the [`Directory`] and, by default, the grain store, which it
//! serves to slaves over TCP (so a one-machine cluster needs no database). It hosts no
//! grains itself. **Slaves** host grains placed on them by the master.
//!
//! Shutdown runs in stages, in reverse order of start-up: grains are deactivated (state
//! written, directory entries released), then the silo leaves membership, then the TCP
//! server and connections close. A master first tells the slaves to shut down and keeps
//! serving the directory and store until they have released their grains.

mod events;
mod lease;
mod local;
mod report;
mod tasks;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use granary_net::routing::ClusterRouter;
use granary_net::transport::{ClusterKey, Peers, TransportConfig};
use granary_proto::frame::SiloAddr;
use granary_proto::packet::{LoadReport, SiloId};
use granary_proto::replica::StorePosition;
use granary_proto::status::{ClusterEvent, ClusterStatus, SiloStatus};
use granary_proto::{CallError, GrainId};
use granary_runtime::{Grain, GrainRef, GrainStorage, HostingLease, Router};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::catalog::Catalog;
use crate::config::SiloConfig;
use crate::directory::Directory;
use crate::dispatcher::DispatcherStats;
use crate::gateway::{Gateway, MasterParts, ReplicationParts};
use crate::membership::{
    ElectionMode, ElectionStore, Membership, MembershipConfig, MembershipIo, MembershipSnapshot,
    MemoryElectionStore, SiloRole,
};
use crate::observe::http::{url as http_url, HttpState};
use crate::observe::metrics::{CallStats, MetricSources, SiloMetrics};
use crate::observe::status::StatusSource;
use crate::observe::EventLog;
use crate::reminders::keep_reminders;
use crate::replication::controller::{run_controller, Controller};
use crate::replication::copies::CopyEnv;
use crate::replication::reporter::report_hot_grains;
use crate::replication::HostedActivation;
use crate::silo::{build_catalog, StartError};
use crate::storage::instrumented::InstrumentedStorage;
use crate::storage::{EmbeddedStorage, RemoteStorage, ReplicatedStore};
use crate::transport::serve;

use crate::resolver::{silo_addr, EpochRules, SiloResolver};
pub(crate) use local::SiloLocal;
use tasks::{report_load, sweep_directory, watch_membership, watch_placements};

/// How long a master waits, at shutdown, for slaves to release their grains.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The stores a clustered silo runs on (see [`ClusterSilo::start_on`]).
#[derive(Clone, Debug, Default)]
pub struct SiloStore {
    /// The grain store. On a master candidate: the store it serves while it acts
    /// (required unless `embedded` is given). On a slave: `None` uses the acting
    /// master's store over the cluster protocol; `Some` (MongoDB, shared by every silo)
    /// is used directly.
    pub grains: Option<Arc<dyn GrainStorage>>,
    /// A master candidate's embedded store: replicated among the candidates (when there
    /// are several and the election is by quorum), and where the candidate keeps its
    /// election state.
    pub embedded: Option<Arc<EmbeddedStorage>>,
    /// Where a candidate keeps its election state when `embedded` does not (default: in
    /// memory, so a restarted lone master starts its epochs from the clock).
    pub election: Option<Arc<dyn ElectionStore>>,
}

/// `a, b, c` for log lines.
fn join_addrs(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Network settings of a clustered silo.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// TCP address to bind for grain traffic (`0` port: any free port).
    pub listen: SocketAddr,
    /// UDP address to bind for membership.
    pub udp: SocketAddr,
    /// TCP address others should use to reach this silo (default: the bound address,
    /// with an unspecified IP replaced by 127.0.0.1). Set it when binding `0.0.0.0`.
    pub advertise: Option<SocketAddr>,
    /// UDP address others should use (same default rule).
    pub advertise_udp: Option<SocketAddr>,
    /// Role, master address, heartbeats, cluster key.
    pub membership: MembershipConfig,
    /// Frame size, connection caps, timeouts and backoff of the TCP transport. Its
    /// cluster key defaults to the membership's, so one key guards UDP and TCP.
    pub transport: TransportConfig,
    /// How long a master waits at shutdown for slaves to release their grains.
    pub drain_timeout: Duration,
    /// HTTP address to bind for `/metrics`, `/health`, `/ready` and (on the master) the
    /// dashboard; `None` (the default) serves no HTTP.
    pub http: Option<SocketAddr>,
}

impl ClusterConfig {
    /// A master on the given addresses.
    pub fn master(listen: SocketAddr, udp: SocketAddr) -> Self {
        Self {
            listen,
            udp,
            advertise: None,
            advertise_udp: None,
            membership: MembershipConfig::master(),
            transport: TransportConfig::default(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            http: None,
        }
    }

    /// A slave on the given addresses, joining the master at `master_udp`.
    pub fn slave(listen: SocketAddr, udp: SocketAddr, master_udp: SocketAddr) -> Self {
        Self {
            membership: MembershipConfig::slave(master_udp),
            ..Self::master(listen, udp)
        }
    }

    /// Changes the membership settings.
    pub fn with_membership(mut self, membership: MembershipConfig) -> Self {
        self.membership = membership;
        self
    }

    /// Serves HTTP (metrics, health probes, the master's dashboard) on `addr`.
    pub fn with_http(mut self, addr: SocketAddr) -> Self {
        self.http = Some(addr);
        self
    }
}

/// A running clustered silo (master or slave).
pub struct ClusterSilo {
    /// This silo's membership id.
    me: SiloId,
    /// Master or slave.
    role: SiloRole,
    /// Dispatchers and activations.
    catalog: Arc<Catalog>,
    /// The router references from this silo use.
    router: Arc<ClusterRouter>,
    /// The master's directory.
    directory: Option<Arc<Directory>>,
    /// The UDP membership protocol.
    membership: Membership,
    /// Stops the TCP server and the helper tasks.
    stop: CancellationToken,
    /// Owns the TCP server and helper tasks.
    tasks: TaskTracker,
    /// Drain timeout for a master's shutdown.
    drain_timeout: Duration,
    /// Builds status reports (also served to peers by the gateway).
    status: Arc<StatusSource>,
    /// Where the HTTP port is bound, if it serves one.
    http_addr: Option<SocketAddr>,
    /// A master with no other candidates: its graceful leave shuts the cluster down.
    lone_master: bool,
    /// A master candidate's replication decisions (they act while it is the acting
    /// master; `None` on a slave).
    replication: Option<Arc<Controller>>,
}

fn advertised(bound: SocketAddr, configured: Option<SocketAddr>) -> SocketAddr {
    match configured {
        Some(addr) => addr,
        None if bound.ip().is_unspecified() => {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), bound.port())
        }
        None => bound,
    }
}

impl ClusterSilo {
    /// Binds the sockets and starts a clustered silo.
    ///
    /// `storage`: the grain store. Required on a master candidate (it is served to the
    /// slaves while it acts); on a slave, `None` uses the acting master's store over the
    /// cluster protocol, `Some` (e.g. MongoDB) is used directly. For a store replicated
    /// among master candidates, use [`ClusterSilo::start_on`].
    pub async fn start(
        config: SiloConfig,
        cluster: ClusterConfig,
        storage: Option<Arc<dyn GrainStorage>>,
    ) -> Result<ClusterSilo, StartError> {
        let store = SiloStore {
            grains: storage,
            ..SiloStore::default()
        };
        Self::start_on(config, cluster, store).await
    }

    /// Binds the sockets and starts a clustered silo on `store` (see [`SiloStore`]).
    pub async fn start_on(
        config: SiloConfig,
        cluster: ClusterConfig,
        store: SiloStore,
    ) -> Result<ClusterSilo, StartError> {
        let tcp_err = |source| StartError::Bind {
            what: "TCP",
            addr: cluster.listen,
            source,
        };
        let udp_err = |source| StartError::Bind {
            what: "UDP",
            addr: cluster.udp,
            source,
        };
        let listener = TcpListener::bind(cluster.listen).await.map_err(tcp_err)?;
        let udp = UdpSocket::bind(cluster.udp).await.map_err(udp_err)?;
        let http = match cluster.http {
            Some(addr) => {
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| StartError::Bind {
                            what: "HTTP",
                            addr,
                            source,
                        })?,
                )
            }
            None => None,
        };
        let http_addr = http.as_ref().and_then(|l| l.local_addr().ok());
        let tcp_addr = advertised(listener.local_addr().map_err(tcp_err)?, cluster.advertise);
        let udp_addr = advertised(udp.local_addr().map_err(udp_err)?, cluster.advertise_udp);
        let me = SiloId::new(tcp_addr, udp_addr, SiloId::generation_now());
        let role = cluster.membership.role;
        let timing = cluster.membership.timing();
        // One secret guards both planes: membership datagrams and TCP connections.
        let mut transport = cluster.transport.clone();
        if transport.cluster_key.is_none() {
            let key = cluster
                .membership
                .cluster_key
                .clone()
                .and_then(ClusterKey::new);
            transport = transport.with_cluster_key(key);
        }

        let peers = Peers::new(transport.clone());
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (load_tx, load_rx) = watch::channel(LoadReport::default());
        let (position_tx, position_rx) = watch::channel(StorePosition::default());
        let (reported_tx, reported_rx) = watch::channel(0u64);
        let shared_lease =
            role == SiloRole::Master && cluster.membership.election == ElectionMode::SharedStore;
        let (lease_tx, lease_rx) = mpsc::channel(4);
        // A slave may run grains only under the acting master's lease; a candidate never
        // hosts grains, so its lease is never held.
        let hosting = Arc::new(HostingLease::new(match role {
            SiloRole::Slave => timing.write_grace,
            SiloRole::Master => Duration::ZERO,
        }));
        let election: Arc<dyn ElectionStore> = match (&store.embedded, &store.election) {
            (_, Some(election)) => election.clone(),
            (Some(embedded), None) => embedded.clone(),
            (None, None) => Arc::new(MemoryElectionStore::default()),
        };
        let durable_epochs = election.is_durable() || shared_lease;
        let io = MembershipIo {
            load: load_rx,
            position: position_rx,
            reported: reported_rx,
            external: shared_lease.then_some(lease_rx),
            hosting: hosting.clone(),
            election,
        };
        let membership = Membership::start_with(cluster.membership.clone(), udp, me, io)
            .map_err(StartError::Membership)?;
        let leadership = membership.leadership();

        // The store: a slave's own (MongoDB) or the acting master's over TCP; a
        // candidate's, replicated among the candidates when it is embedded and not alone.
        let mut replicated = None;
        let storage: Arc<dyn GrainStorage> = match (role, store.grains, store.embedded) {
            (SiloRole::Slave, Some(grains), _) => grains,
            (SiloRole::Slave, None, _) => {
                Arc::new(RemoteStorage::new(peers.clone(), membership.subscribe()))
            }
            (SiloRole::Master, _, Some(embedded))
                if !cluster.membership.peers.is_empty() && !shared_lease =>
            {
                let store = ReplicatedStore::start(
                    embedded,
                    cluster.membership.peers.len() + 1,
                    peers.clone(),
                    membership.subscribe(),
                    leadership.clone(),
                    position_tx,
                    &tasks,
                    stop.clone(),
                )
                .map_err(StartError::Storage)?;
                replicated = Some(store.clone());
                Arc::new(store)
            }
            (SiloRole::Master, Some(grains), _) => grains,
            (SiloRole::Master, None, Some(embedded)) => embedded,
            (SiloRole::Master, None, None) => return Err(StartError::MasterNeedsStorage),
        };
        if shared_lease {
            tasks.spawn(lease::hold_lease(
                storage.clone(),
                me,
                cluster.membership.peers.clone(),
                timing,
                lease_tx,
                stop.clone(),
            ));
        }
        // Every operation of the grains here (and, on the acting master, of the slaves it
        // serves) is timed and counted for the metrics; `/ready` probes the store itself.
        let unmetered = storage;
        // The reminder keeper polls the store every second: not counted as grain traffic.
        let keeper_store = unmetered.clone();
        let metered = InstrumentedStorage::new(unmetered.clone());
        let storage_stats = metered.stats();
        let storage: Arc<dyn GrainStorage> = Arc::new(metered);
        let catalog = build_catalog(&config, storage.clone(), hosting)?;
        let directory = (role == SiloRole::Master).then(|| Arc::new(Directory::new()));
        let resolver = Arc::new(SiloResolver::new(
            directory.clone(),
            leadership.clone(),
            membership.subscribe(),
            peers.clone(),
            silo_addr(&me),
            EpochRules {
                rebuild_window: timing.rebuild_window,
                durable: durable_epochs,
            },
        ));
        let local = Arc::new(SiloLocal::new(silo_addr(&me), Arc::downgrade(&catalog)));
        let router = Arc::new(ClusterRouter::new(
            peers.clone(),
            resolver.clone(),
            Some(local.clone()),
        ));
        let _ = catalog.shared.router.set(router.clone() as Arc<dyn Router>);
        // A replica must stop serving before its primary's silo can be declared dead
        // (and the primary re-activated elsewhere): at most half of that time.
        let lease = config.replication.lease.min(
            cluster.membership.heartbeat_interval.saturating_mul(
                cluster
                    .membership
                    .missed_heartbeats
                    .saturating_sub(1)
                    .max(1),
            ) / 2,
        );
        let _ = catalog.shared.copies.set(CopyEnv {
            me: silo_addr(&me),
            peers: peers.clone(),
            lease,
        });
        let controller = directory.as_ref().map(|directory| {
            Arc::new(Controller::new(
                &catalog,
                directory.clone(),
                membership.subscribe(),
                peers.clone(),
                (me.generation, cluster.membership.heartbeat_interval),
            ))
        });
        if role == SiloRole::Slave {
            let _ = catalog
                .shared
                .release
                .set(resolver.release_hook(silo_addr(&me)));
        }

        let events = Arc::new(EventLog::new());
        let status = Arc::new(StatusSource {
            me,
            role,
            started: Instant::now(),
            catalog: catalog.clone(),
            membership: membership.subscribe(),
            events: events.clone(),
        });
        let calls = Arc::new(CallStats::default());
        if let Some(listener) = http {
            let metrics = Arc::new(SiloMetrics::new(MetricSources {
                role,
                started: status.started,
                catalog: catalog.clone(),
                calls: calls.clone(),
                storage: storage_stats,
                membership: membership.subscribe(),
                directory: directory.clone(),
                replication: controller.clone(),
            }));
            tasks.spawn(metrics.count_membership(membership.subscribe(), stop.clone()));
            let state = Arc::new(HttpState {
                status: status.clone(),
                peers: peers.clone(),
                storage: unmetered,
                metrics,
                stop: stop.clone(),
            });
            tasks.spawn(crate::observe::http::serve(listener, state, stop.clone()));
        }
        let gateway = Arc::new(Gateway::new(
            router.clone(),
            resolver.clone(),
            MasterParts {
                directory: directory.clone(),
                store: (role == SiloRole::Master).then(|| storage.clone()),
                replicated,
            },
            membership.subscribe(),
            status.clone(),
            calls,
            ReplicationParts {
                catalog: catalog.clone(),
                controller: controller.clone(),
                lease,
            },
        ));
        tasks.spawn(serve(
            listener,
            gateway,
            transport,
            stop.clone().cancelled_owned(),
        ));
        tasks.spawn(report_load(
            catalog.clone(),
            load_tx,
            cluster.membership.heartbeat_interval,
            stop.clone(),
        ));
        tasks.spawn(watch_membership(
            membership.subscribe(),
            role,
            (directory.clone(), controller.clone()),
            router.clone(),
            local,
            events.clone(),
            stop.clone(),
        ));
        if role == SiloRole::Slave {
            tasks.spawn(report::report_to_masters(
                membership.subscribe(),
                Arc::downgrade(&catalog),
                peers.clone(),
                silo_addr(&me),
                reported_tx,
                events.clone(),
                stop.clone(),
            ));
        }
        if role == SiloRole::Master {
            // The acting master keeps the reminder shards running (a standby waits).
            let leadership = leadership.clone();
            tasks.spawn(keep_reminders(
                keeper_store,
                router.clone(),
                Box::new(move || leadership.borrow().is_acting()),
                stop.clone(),
            ));
        }
        match &controller {
            Some(controller) => {
                tasks.spawn(run_controller(
                    controller.clone(),
                    cluster.membership.heartbeat_interval,
                    stop.clone(),
                ));
            }
            None => {
                tasks.spawn(report_hot_grains(
                    catalog.clone(),
                    resolver.clone(),
                    peers.clone(),
                    silo_addr(&me),
                    cluster.membership.heartbeat_interval,
                    stop.clone(),
                ));
            }
        }
        if let Some(directory) = &directory {
            tasks.spawn(sweep_directory(directory.clone(), stop.clone()));
            tasks.spawn(watch_placements(
                directory.clone(),
                me,
                events.clone(),
                stop.clone(),
            ));
        }
        let keyed = if cluster.membership.cluster_key.is_some() {
            "with the cluster key"
        } else {
            "without a cluster key"
        };
        let store = match http_addr {
            Some(addr) => format!("{}; HTTP {}", storage.name(), http_url(addr)),
            None => storage.name().to_owned(),
        };
        let masters = &cluster.membership.masters;
        match role {
            SiloRole::Slave if masters.len() == 1 => tracing::info!(
                "silo started: slave {me}, joining the master at {} {keyed}; grain store: {store}",
                masters[0]
            ),
            SiloRole::Slave => tracing::info!(
                "silo started: slave {me}, joining the acting master among {} {keyed}; grain store: {store}",
                join_addrs(masters)
            ),
            SiloRole::Master if cluster.membership.peers.is_empty() => {
                tracing::info!("silo started: {role} {me} {keyed}; grain store: {store}")
            }
            SiloRole::Master => tracing::info!(
                "silo started: master candidate {me} with {} other candidate(s) ({}) {keyed}; grain store: {store}",
                cluster.membership.peers.len(),
                join_addrs(&cluster.membership.peers)
            ),
        }
        Ok(ClusterSilo {
            me,
            role,
            catalog,
            router,
            directory,
            membership,
            stop,
            tasks,
            drain_timeout: cluster.drain_timeout,
            status,
            http_addr,
            lone_master: role == SiloRole::Master && cluster.membership.peers.is_empty(),
            replication: controller,
        })
    }

    /// Every activation on this silo with its role (single, primary, replica, stateless
    /// worker): what a master needs to rebuild its copy sets. (The directory report a
    /// slave sends a new master lists the grains it owns: single activations, primaries,
    /// and the workers of grains whose home it is.)
    pub fn hosted(&self) -> Vec<HostedActivation> {
        self.catalog.hosted_with_roles()
    }

    /// On the acting master, after an election: rebuilds the copy sets of replicated grains
    /// from the slaves' [`ClusterSilo::hosted`] reports (the directory first), and tells
    /// the silos. Does nothing on a slave.
    pub fn rebuild_copy_sets(&self, reports: &[(SiloAddr, Vec<HostedActivation>)]) {
        if let Some(controller) = &self.replication {
            controller.rebuild(reports);
        }
    }

    /// On the master: the silos hosting `grain` (its home first, then its copies).
    /// Empty on a slave, or for a grain active nowhere.
    pub fn copies_of(&self, grain: &GrainId) -> Vec<SiloAddr> {
        self.replication
            .as_ref()
            .map_or_else(Vec::new, |c| c.silos_of(grain))
    }

    /// Where this silo serves HTTP (`/metrics`, `/health`, `/ready`, the dashboard).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// What this silo reports about itself (as `client status` shows it).
    pub fn status(&self) -> SiloStatus {
        self.status.silo_status()
    }

    /// The whole cluster as the master sees it (a slave asks its master).
    pub async fn cluster_status(&self) -> Result<ClusterStatus, CallError> {
        self.status.cluster_status(self.router.peers()).await
    }

    /// Recent cluster events this silo recorded (on the master: joins, departures,
    /// deaths, placement storms; on a slave: its own fencing), oldest first.
    pub fn events(&self) -> Vec<ClusterEvent> {
        self.status.events.recent()
    }

    /// This silo's membership id (TCP and UDP addresses, generation).
    pub fn id(&self) -> SiloId {
        self.me
    }

    /// The address grain traffic for this silo goes to.
    pub fn addr(&self) -> SiloAddr {
        silo_addr(&self.me)
    }

    /// Master or slave.
    pub fn role(&self) -> SiloRole {
        self.role
    }

    /// Waits until this silo is joined (a slave: welcomed by its master; a master at
    /// once). Fails after `timeout`.
    pub async fn wait_joined(
        &self,
        timeout: Duration,
    ) -> Result<(), crate::membership::MembershipError> {
        self.membership.wait_joined(timeout).await.map(|_| ())
    }

    /// The current membership view.
    pub fn membership(&self) -> Arc<MembershipSnapshot> {
        self.membership.snapshot()
    }

    /// Membership updates.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MembershipSnapshot>> {
        self.membership.subscribe()
    }

    /// A reference to the grain `G` with `key`, routed through the cluster.
    pub fn grain<G: Grain>(&self, key: impl std::fmt::Display) -> GrainRef<G> {
        GrainRef::new(self.router.clone() as Arc<dyn Router>, key)
    }

    /// The master's directory (`None` on a slave).
    pub fn directory(&self) -> Option<&Arc<Directory>> {
        self.directory.as_ref()
    }

    /// Number of grains active on this silo.
    pub fn activation_count(&self) -> usize {
        self.catalog.load().0
    }

    /// True if `grain` is active on this silo.
    pub fn hosts(&self, grain: &GrainId) -> bool {
        self.catalog
            .dispatcher(&grain.type_name)
            .is_some_and(|d| d.is_active(&grain.key))
    }

    /// Load figures of every grain type here.
    pub fn stats(&self) -> Vec<DispatcherStats> {
        self.catalog.stats()
    }

    /// Activations created on this silo since it started, every grain type together
    /// (a grain that kept running through a failover is not counted again).
    pub fn activations_created(&self) -> u64 {
        self.catalog
            .dispatchers()
            .iter()
            .map(|d| d.type_stats().snapshot().activated)
            .sum()
    }

    /// Resolves when the master told this slave to shut down (or, on any silo, when
    /// [`ClusterSilo::shutdown`] started).
    pub async fn shutdown_requested(&self) {
        tokio::select! {
            () = self.membership.shutdown_requested() => {}
            () = self.stop.cancelled() => {}
        }
    }

    /// Graceful shutdown, in stages: a lone master tells slaves to leave and waits (up to
    /// the drain timeout) until they have released their grains; a master candidate with
    /// standbys stops acting at once (the others elect its successor; the slaves keep
    /// their grains); a slave deactivates its grains (writing state, releasing directory
    /// entries). Then the silo leaves membership and closes its server and connections.
    pub async fn shutdown(self) {
        tracing::info!("shutting down {} {}", self.role, self.me);
        let ClusterSilo {
            catalog,
            router,
            directory,
            membership,
            stop,
            tasks,
            drain_timeout,
            lone_master,
            ..
        } = self;
        match directory {
            Some(_) if !lone_master => {
                membership.leave().await;
                deactivate_all(&catalog).await;
            }
            Some(directory) => {
                // A lone master: the slaves shut down, saving their grains through this
                // master, which keeps acting until they have released them.
                membership.announce_shutdown();
                let until = Instant::now() + drain_timeout;
                while !directory.is_empty() && Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if !directory.is_empty() {
                    tracing::warn!(
                        grains = directory.len(),
                        "slaves did not release every grain before the drain timeout"
                    );
                }
                deactivate_all(&catalog).await;
                membership.leave().await;
            }
            None => {
                deactivate_all(&catalog).await;
                membership.leave().await;
            }
        }
        stop.cancel();
        tasks.close();
        tasks.wait().await;
        router.peers().close().await;
        tracing::info!("silo stopped");
    }

    /// Stops without any goodbye: no SHUTDOWN is sent and connections are cut first, so a
    /// slave on the master's store writes no state. For tests that simulate a crash
    /// in-process; the faithful crash is `kill -9` of the silo binary.
    pub async fn abort(self) {
        let ClusterSilo {
            catalog,
            router,
            membership,
            stop,
            tasks,
            ..
        } = self;
        membership.abort().await;
        stop.cancel();
        router.peers().close().await;
        // With its connections closed first, a slave on the master's store cannot write
        // state any more: its activations stop without saving, as in a crash.
        catalog.shared.closing.store(true, Ordering::Release);
        catalog.shared.stop.cancel();
        catalog.shared.tracker.close();
        catalog.shared.tracker.wait().await;
        tasks.close();
        tasks.wait().await;
    }
}

impl std::fmt::Debug for ClusterSilo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSilo")
            .field("me", &self.me)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// Deactivates every grain of `catalog` and waits for the activations to finish.
async fn deactivate_all(catalog: &Catalog) {
    let shared = &catalog.shared;
    shared.closing.store(true, Ordering::Release);
    shared.stop.cancel();
    shared.tracker.close();
    shared.tracker.wait().await;
}
