//! Granary: a master and a slave (the bench's `silo`, child processes) and this process
//! as a [`Client`] calling [`Echo`] grains on the slave. After the first resolve through
//! the master, every call is one TCP round trip client → slave.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use granary_bench::grains::{Echo, Payload};
use granary_client::{Client, ClientConfig};
use granary_net::transport::{Peers, TransportConfig};
use granary_proto::frame::{Request, Response};
use granary_runtime::GrainRef;

use crate::measure::{Caller, TARGETS};

/// Deadline of one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The client and its references to the [`TARGETS`] echo grains.
pub(crate) struct GranaryClient {
    client: Client,
    grains: Vec<GrainRef<Echo>>,
}

impl GranaryClient {
    /// Connects to the cluster's `master`, waits until a grain can be placed, activates
    /// the echo grains and checks that they live on the `slave`.
    pub(crate) async fn connect(master: SocketAddr, slave: SocketAddr) -> anyhow::Result<Self> {
        let client = Client::connect(
            ClientConfig::new([master]).with_connect_timeout(Duration::from_secs(20)),
        )
        .await
        .context("connecting to the master gateway")?;
        let grains: Vec<_> = (0..TARGETS)
            .map(|i| client.grain::<Echo>(format_args!("e{i}")))
            .collect();
        // Ready once the slave has joined and a grain can be placed on it.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match grains[0]
                .ask(Payload(Vec::new()))
                .timeout(Duration::from_secs(2))
                .await
            {
                Ok(_) => break,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => bail!("the Granary cluster did not become ready in 30 s: {e}"),
            }
        }
        for g in &grains {
            g.ask(Payload(Vec::new())).timeout(CALL_TIMEOUT).await?;
        }
        let gateway = Peers::new(TransportConfig::default());
        let answer = gateway
            .call(
                master,
                Request::DirectoryResolve {
                    grain: grains[0].id().clone(),
                    from: None,
                },
                tokio::time::Instant::now() + CALL_TIMEOUT,
            )
            .await;
        gateway.close().await;
        match answer {
            Ok(Response::Directory {
                result: Ok(Some(owner)),
                ..
            }) if owner.addr == slave => {}
            other => bail!("echo grain e0 is not placed on the slave: {other:?}"),
        }
        Ok(GranaryClient { client, grains })
    }

    pub(crate) async fn close(&self) {
        self.client.close().await;
    }
}

impl Caller for GranaryClient {
    async fn call(&self, target: usize, payload: &[u8]) -> anyhow::Result<usize> {
        let echoed = self.grains[target]
            .ask(Payload(payload.to_vec()))
            .timeout(CALL_TIMEOUT)
            .await?;
        Ok(echoed.0.len())
    }
}
