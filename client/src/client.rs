//! [`Client`]: a process outside the cluster that calls grains through silo gateways.
//!
//! The client asks a gateway where a grain lives (the gateway asks the master's
//! directory), then calls the owning silo directly and caches the answer. If a gateway
//! stops answering, the next one in the list is used.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use granary_proto::frame::{Request, Response, SiloAddr};
use granary_proto::{CallError, GrainId};
use granary_runtime::{Grain, GrainRef, Router};
use tokio::time::Instant;

use granary_net::routing::{ClusterRouter, Resolve};
use granary_net::transport::{ClusterKey, Peers, TransportConfig, TransportError};

/// Default time [`Client::connect`] tries the gateways before giving up.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

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
}

impl Gateways {
    fn current(&self) -> SocketAddr {
        self.addrs[self.current.load(Ordering::Relaxed) % self.addrs.len()]
    }

    /// Sends `request` to the current gateway, moving on to the next one while the
    /// gateways are unreachable (each is tried once per call).
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
                Err(e) => return Err(e.into()),
            }
        }
        Err(last)
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
            Response::Directory(Ok(Some(silo))) => Ok(silo),
            Response::Directory(Ok(None)) => Err(CallError::Unreachable(
                "the directory placed the grain nowhere".into(),
            )),
            Response::Directory(Err(e)) => Err(e),
            other => Err(CallError::Codec(format!(
                "unexpected directory answer: {other:?}"
            ))),
        }
    }
}
