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

use crate::routing::{ClusterRouter, Resolve};
use crate::transport::{ClusterKey, Peers, TransportConfig, TransportError};

/// Default time [`Client::connect`] tries the gateways before giving up.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a client reaches the cluster.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Silos to use as gateways, tried in order (any silo of the cluster works).
    pub gateways: Vec<SocketAddr>,
    /// Connection settings.
    pub transport: TransportConfig,
    /// How long [`Client::connect`] keeps trying the gateways.
    pub connect_timeout: Duration,
}

impl ClientConfig {
    /// A configuration with these gateways and default settings.
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

    /// Sets how long [`Client::connect`] keeps trying.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}

/// Why [`Client::connect`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The configuration lists no gateway.
    #[error("no gateway address given")]
    NoGateways,
    /// No gateway answered a ping before the connect timeout.
    #[error("no gateway answered: {0}")]
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
    /// Connects to the first gateway that answers a ping.
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
        let mut first_error = None;
        loop {
            let err = match gateways.ping(deadline).await {
                Ok(_) => break,
                Err(e) => e,
            };
            let first = first_error.get_or_insert_with(|| err.to_string());
            if Instant::now() >= deadline {
                peers.close().await;
                let last = err.to_string();
                let why = if *first == last {
                    last
                } else {
                    format!("{last} (first failure: {first})")
                };
                return Err(ConnectError::Unreachable(why));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let router = Arc::new(ClusterRouter::new(peers, gateways.clone(), None));
        Ok(Client { router, gateways })
    }

    /// A reference to the grain `G` with `key`.
    pub fn grain<G: Grain>(&self, key: impl fmt::Display) -> GrainRef<G> {
        GrainRef::new(self.router.clone() as Arc<dyn Router>, key)
    }

    /// Round-trip time to the current gateway.
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
        match self.call(Request::Ping, deadline).await? {
            Response::Pong => Ok(started.elapsed()),
            other => Err(CallError::Codec(format!(
                "unexpected answer to ping: {other:?}"
            ))),
        }
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
