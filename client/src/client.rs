//! [`Client`]: a process outside the cluster that calls grains through silo gateways.
//!
//! The client asks a gateway where a grain lives (the gateway asks the master's
//! directory), then calls the owning silo directly and caches the answer. If a gateway
//! stops answering, the next one in the list is used.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::{self, Stream, StreamExt};
use granary_proto::frame::{Request, Response, SiloAddr};
use granary_proto::status::{ClusterStatus, MembershipEvent, MembershipTracker};
use granary_proto::{CallError, GrainId};
use granary_runtime::{Grain, GrainRef, Router};
use tokio::time::Instant;

use granary_net::routing::{ClusterRouter, Resolve};
use granary_net::transport::{ClusterKey, Peers, TransportConfig, TransportError};

/// Default time [`Client::connect`] tries the gateways before giving up.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How often [`Client::membership_events`] asks for the cluster status.
pub const DEFAULT_MEMBERSHIP_POLL: Duration = Duration::from_secs(1);

/// How long [`Client::cluster_status`] waits for the answer: the master gives slow
/// slaves 1 s, and a slave gateway asks the master for up to 3 s.
const STATUS_DEADLINE: Duration = Duration::from_secs(5);

/// How a client reaches the cluster: its gateways and options.
///
/// ```
/// use std::time::Duration;
/// use granary_client::ClientConfig;
///
/// let config = ClientConfig::new(["127.0.0.1:7100".parse().unwrap()])
///     .with_cluster_key("s3cret")                       // the silos' --cluster-key
///     .with_connect_timeout(Duration::from_secs(1));
/// # let _ = config;
/// ```
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Silos to use as gateways, tried in order (any silo of the cluster works).
    gateways: Vec<SocketAddr>,
    /// Connection settings.
    transport: TransportConfig,
    /// How long [`Client::connect`] keeps trying the gateways.
    connect_timeout: Duration,
}

impl ClientConfig {
    /// A configuration with these gateways (tried in order; any silo of the cluster
    /// works) and default settings: no cluster key, a connect timeout of
    /// [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn new(gateways: impl IntoIterator<Item = SocketAddr>) -> Self {
        Self {
            gateways: gateways.into_iter().collect(),
            transport: TransportConfig::default(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// Authenticates connections with the cluster's key (`--cluster-key` of the silos).
    pub fn with_cluster_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.transport.cluster_key = ClusterKey::new(key);
        self
    }

    /// Sets how long [`Client::connect`] keeps trying the gateways, and how long one
    /// TCP connect may take (at most this long).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self.transport.connect_timeout = self.transport.connect_timeout.min(timeout);
        self
    }

    /// Sets the largest frame (message or reply, encoded) the client sends or accepts;
    /// it must match the silos' limit. Default 8 MiB.
    pub fn with_max_frame(mut self, bytes: usize) -> Self {
        self.transport.max_frame = bytes;
        self
    }

    /// The gateways, in the order they are tried.
    pub fn gateways(&self) -> &[SocketAddr] {
        &self.gateways
    }

    /// How long [`Client::connect`] keeps trying.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }
}

/// Why [`Client::connect`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The configuration lists no gateway.
    #[error("no gateway address given")]
    NoGateways,
    /// No gateway answered a ping before the connect timeout. The text names each
    /// gateway and why it failed, e.g.
    /// `cannot reach silo at 127.0.0.1:7100 (connection refused)`.
    #[error("{0}")]
    Unreachable(String),
}

/// A connection to a Granary cluster.
#[derive(Clone)]
pub struct Client {
    /// Routes calls straight to owning silos.
    router: Arc<ClusterRouter>,
    /// Resolves through the gateways.
    gateways: Arc<Gateways>,
}

impl Client {
    /// Connects to the first gateway that answers a ping, trying them all again (with a
    /// short pause) until the connect timeout; then fails with every gateway's reason.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), granary_client::ConnectError> {
    /// use granary_client::{Client, ClientConfig};
    /// let client = Client::connect(ClientConfig::new(["127.0.0.1:7100".parse().unwrap()])).await?;
    /// # let _ = client; Ok(()) }
    /// ```
    pub async fn connect(config: ClientConfig) -> Result<Client, ConnectError> {
        if config.gateways.is_empty() {
            return Err(ConnectError::NoGateways);
        }
        let peers = Peers::new(config.transport.clone());
        let gateways = Arc::new(Gateways {
            peers: peers.clone(),
            addrs: config.gateways,
            current: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
        });
        let deadline = Instant::now() + config.connect_timeout;
        let mut failures: Vec<String> = Vec::new();
        'connect: loop {
            for (index, &addr) in gateways.addrs.iter().enumerate() {
                if index < failures.len() && peers.next_attempt(addr).is_some() {
                    // Still in connect backoff: its last reason stands.
                    continue;
                }
                match gateways.ping_one(addr, deadline).await {
                    Ok(_) => {
                        gateways.current.store(index, Ordering::Relaxed);
                        break 'connect;
                    }
                    Err(e) => {
                        let why = match e {
                            CallError::Unreachable(why) | CallError::Lost(why) => why,
                            CallError::Timeout => format!(
                                "cannot reach silo at {addr} (no answer within {:?})",
                                config.connect_timeout
                            ),
                            other => format!("silo at {addr}: {other}"),
                        };
                        if let Some(slot) = failures.get_mut(index) {
                            *slot = why;
                        } else {
                            failures.push(why);
                        }
                    }
                }
            }
            // Try again when the first gateway leaves its connect backoff (so the
            // reasons kept are real connect failures), or give up if that is too late.
            let now = Instant::now();
            let wake = gateways
                .addrs
                .iter()
                .map(|addr| peers.next_attempt(*addr).unwrap_or(now))
                .min()
                .unwrap_or(now)
                .max(now + Duration::from_millis(20));
            if wake >= deadline {
                peers.close().await;
                return Err(ConnectError::Unreachable(failures.join("; ")));
            }
            tokio::time::sleep_until(wake).await;
        }
        let router = Arc::new(ClusterRouter::new(peers, gateways.clone(), None));
        Ok(Client { router, gateways })
    }

    /// A typed reference to the grain `G` with `key`; creating it costs nothing and
    /// sends nothing. The grain is activated on its first message.
    ///
    /// `G` must be registered with `register_grain!` in its crate, and only messages
    /// listed there can be sent (both checked at compile time).
    pub fn grain<G: Grain>(&self, key: impl fmt::Display) -> GrainRef<G> {
        GrainRef::new(self.router.clone() as Arc<dyn Router>, key)
    }

    /// Round-trip time to the current gateway (failing over to the next ones).
    pub async fn ping(&self) -> Result<Duration, CallError> {
        self.gateways
            .ping(Instant::now() + DEFAULT_CONNECT_TIMEOUT)
            .await
    }

    /// The whole cluster as the master sees it, asked through the gateways (failing over
    /// to the next one while a gateway is unreachable; a slave gateway asks the master):
    /// every member, dead and departed ones included, each live silo's own report (load,
    /// per grain type counters and latency, hot grains) and the recent cluster events.
    ///
    /// Counters are cumulative since each silo started: take two reports and subtract
    /// to get rates and the latency of the interval between them.
    ///
    /// ```no_run
    /// # async fn run(client: &granary_client::Client) -> Result<(), granary_client::CallError> {
    /// let status = client.cluster_status().await?;
    /// for member in &status.members {
    ///     println!("{} {} {}", member.role.as_str(), member.id, member.state.as_str());
    /// }
    /// for silo in &status.silos {
    ///     for t in &silo.grain_types {
    ///         let p99 = t.latency.quantile(0.99);
    ///         println!("{} {}: {} messages, p99 {p99:?}", silo.id, t.grain_type, t.messages);
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn cluster_status(&self) -> Result<ClusterStatus, CallError> {
        self.gateways
            .cluster_status(Instant::now() + STATUS_DEADLINE)
            .await
    }

    /// The membership changes of the cluster from now on, as a stream: a silo joined,
    /// left or died (each reported once), or another master took over. Polls
    /// [`Client::cluster_status`] every [`DEFAULT_MEMBERSHIP_POLL`] (1 s) and compares
    /// the members; see [`Client::membership_events_every`].
    ///
    /// Fails if the first status cannot be had: it is the baseline, and what it already
    /// shows (silos dead before the call, say) is not reported. Afterwards a failed
    /// poll is skipped (logged at debug) and the next one compares with the last
    /// answer, so nothing is lost while the gateways fail over. The stream never ends;
    /// drop it to stop polling.
    ///
    /// Latency: a change is reported up to one poll interval (plus the status round
    /// trip) after the master's membership sees it, which is itself, for a crash,
    /// `missed_heartbeats × heartbeat_interval` (3 s by default) after the silo
    /// stopped. In a silo, `ClusterSilo::membership_events` is pushed instead of polled.
    ///
    /// ```no_run
    /// # async fn run(client: &granary_client::Client) -> Result<(), granary_client::CallError> {
    /// use futures::StreamExt;
    /// use granary_client::status::MembershipEvent;
    ///
    /// let mut events = client.membership_events().await?;
    /// while let Some(event) = events.next().await {
    ///     if let MembershipEvent::SiloDied(silo) = event {
    ///         println!("{silo} died; its grains are re-activated elsewhere on their next call");
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn membership_events(
        &self,
    ) -> Result<impl Stream<Item = MembershipEvent> + Send + Unpin + 'static, CallError> {
        self.membership_events_every(DEFAULT_MEMBERSHIP_POLL).await
    }

    /// [`Client::membership_events`], polling every `interval` (at least 10 ms).
    pub async fn membership_events_every(
        &self,
        interval: Duration,
    ) -> Result<impl Stream<Item = MembershipEvent> + Send + Unpin + 'static, CallError> {
        let baseline = self.cluster_status().await?;
        let tracker = MembershipTracker::from_status(&baseline);
        let mut ticks = tokio::time::interval(interval.max(Duration::from_millis(10)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate and the baseline is fresh: skip it.
        ticks.reset();
        let gateways = self.gateways.clone();
        Ok(stream::unfold(
            (gateways, ticks, tracker, VecDeque::new()),
            |(gateways, mut ticks, mut tracker, mut pending)| async move {
                loop {
                    if let Some(event) = pending.pop_front() {
                        return Some((event, (gateways, ticks, tracker, pending)));
                    }
                    ticks.tick().await;
                    match gateways
                        .cluster_status(Instant::now() + STATUS_DEADLINE)
                        .await
                    {
                        Ok(status) => pending.extend(tracker.update_status(&status)),
                        Err(e) => {
                            tracing::debug!(error = %e, "cluster status poll failed; trying again")
                        }
                    }
                }
            },
        )
        .boxed())
    }

    /// The gateway currently in use.
    pub fn gateway(&self) -> SocketAddr {
        self.gateways.current()
    }

    /// Closes every connection; calls in flight fail with `Lost`.
    pub async fn close(&self) {
        self.router.peers().close().await;
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("gateways", &self.gateways.addrs)
            .finish()
    }
}

/// The gateway list, with failover.
#[derive(Debug)]
struct Gateways {
    peers: Peers,
    addrs: Vec<SocketAddr>,
    /// Index of the gateway in use.
    current: AtomicUsize,
    /// The newest master epoch a directory answer came from.
    epoch: AtomicU64,
}

impl Gateways {
    fn current(&self) -> SocketAddr {
        self.addrs[self.current.load(Ordering::Relaxed) % self.addrs.len()]
    }

    /// Sends `request` to the current gateway, moving on to the next one while the
    /// gateways are unreachable (each is tried once per call). A gateway that lets the
    /// call time out is left for the next call (found by the chaos harness: a client
    /// whose gateway was SIGSTOPped failed every call until it resumed).
    async fn call(&self, request: Request, deadline: Instant) -> Result<Response, CallError> {
        let start = self.current.load(Ordering::Relaxed);
        let mut last = CallError::Unreachable("no gateway".into());
        for i in 0..self.addrs.len() {
            let index = (start + i) % self.addrs.len();
            match self
                .peers
                .call(self.addrs[index], request.clone(), deadline)
                .await
            {
                Ok(response) => {
                    self.current.store(index, Ordering::Relaxed);
                    return Ok(response);
                }
                Err(e @ (TransportError::Unreachable(_) | TransportError::Lost(_))) => {
                    tracing::debug!(gateway = %self.addrs[index], error = %e, "gateway failed; trying the next");
                    last = e.into();
                }
                Err(e) => {
                    if e == TransportError::Timeout {
                        // A gateway that holds calls without answering (paused, cut
                        // off): the next call starts at the next gateway. This one is
                        // not retried: its deadline is spent.
                        let next = (index + 1) % self.addrs.len();
                        let _ = self.current.compare_exchange(
                            start,
                            next,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                    return Err(e.into());
                }
            }
        }
        Err(last)
    }

    /// The master's cluster status, through the current gateway (failing over).
    async fn cluster_status(&self, deadline: Instant) -> Result<ClusterStatus, CallError> {
        match self.call(Request::ClusterStatus, deadline).await? {
            Response::ClusterStatus(status) => status.map(|s| *s),
            _ => Err(CallError::Codec(
                "the gateway answered a status request with something else (is it a Granary silo of this version?)".into(),
            )),
        }
    }

    async fn ping(&self, deadline: Instant) -> Result<Duration, CallError> {
        let started = Instant::now();
        expect_pong(self.call(Request::Ping, deadline).await?)?;
        Ok(started.elapsed())
    }

    /// Pings one gateway, without failing over.
    async fn ping_one(&self, addr: SocketAddr, deadline: Instant) -> Result<(), CallError> {
        expect_pong(self.peers.call(addr, Request::Ping, deadline).await?)
    }
}

fn expect_pong(response: Response) -> Result<(), CallError> {
    match response {
        Response::Pong => Ok(()),
        _ => Err(CallError::Codec(
            "the gateway answered a ping with something else (is it a Granary silo of this version?)".into(),
        )),
    }
}

#[async_trait]
impl Resolve for Gateways {
    async fn resolve(&self, grain: &GrainId, deadline: Instant) -> Result<SiloAddr, CallError> {
        match self
            .call(
                Request::DirectoryResolve {
                    grain: grain.clone(),
                    from: None,
                },
                deadline,
            )
            .await?
        {
            Response::Directory { epoch, result } => {
                // An answer from a master older than one already heard from is stale.
                let newest = self.epoch.fetch_max(epoch, Ordering::AcqRel);
                if epoch < newest {
                    return Err(CallError::Unreachable(format!(
                        "a directory answer from epoch {epoch}, older than {newest}"
                    )));
                }
                match result {
                    Ok(Some(silo)) => Ok(silo),
                    Ok(None) => Err(CallError::Unreachable(
                        "the directory placed the grain nowhere".into(),
                    )),
                    Err(e) => Err(e),
                }
            }
            other => Err(CallError::Codec(format!(
                "unexpected directory answer: {other:?}"
            ))),
        }
    }
}
