//! ractor_cluster: a server node (a child process) hosting [`TARGETS`] echo actors in
//! the process group [`GROUP`], and this process as a client node that finds them
//! there and calls them (`ActorRef::call`, the message serialized by
//! `RactorClusterMessage`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeServer, NodeServerMessage, RactorClusterMessage};

use crate::measure::{Caller, TARGETS};

/// The process group the server's echo actors join.
const GROUP: &str = "bench-echo";
/// Both nodes' cookie (ractor_cluster's shared secret).
const COOKIE: &str = "granary-bench";
/// Deadline of one call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The echo actor.
struct EchoActor;

/// Its one message: a remote call with a byte payload.
#[derive(RactorClusterMessage)]
enum EchoMsg {
    #[rpc]
    Echo(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

impl Actor for EchoActor {
    type Msg = EchoMsg;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, me: ActorRef<EchoMsg>, _: ()) -> Result<(), ActorProcessingErr> {
        ractor::pg::join(GROUP.to_owned(), vec![me.get_cell()]);
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<EchoMsg>,
        EchoMsg::Echo(bytes, reply): EchoMsg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let _ = reply.send(bytes);
        Ok(())
    }
}

/// A node server on 127.0.0.1:`port`.
async fn node(port: u16, name: &str) -> anyhow::Result<ActorRef<NodeServerMessage>> {
    let server = NodeServer::new(
        port,
        COOKIE.to_owned(),
        name.to_owned(),
        "127.0.0.1".to_owned(),
        None,
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (node, _) = Actor::spawn(None, server, ())
        .await
        .context("starting the ractor_cluster node server")?;
    Ok(node)
}

/// Child mode: the server node and its echo actors; runs until the process ends.
pub(crate) async fn serve(port: u16) -> anyhow::Result<()> {
    let _node = node(port, "bench-server").await?;
    for _ in 0..TARGETS {
        Actor::spawn(None, EchoActor, ()).await?;
    }
    println!("READY");
    std::future::pending::<()>().await;
    Ok(())
}

/// The client node and the server's echo actors, as it sees them.
pub(crate) struct RactorClient {
    _node: ActorRef<NodeServerMessage>,
    actors: Vec<ActorRef<EchoMsg>>,
}

impl RactorClient {
    /// Starts a client node on `own_port`, connects to the server at `server` and waits
    /// until all [`TARGETS`] remote echo actors are known here.
    pub(crate) async fn connect(own_port: u16, server: SocketAddr) -> anyhow::Result<Self> {
        let node = node(own_port, "bench-client").await?;
        ractor_cluster::client_connect(&node, server)
            .await
            .with_context(|| format!("connecting to the ractor_cluster node at {server}"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut members: Vec<_> = ractor::pg::get_members(&GROUP.to_owned())
                .into_iter()
                .filter(|a| !a.get_id().is_local())
                .collect();
            if members.len() >= TARGETS {
                members.sort_by_key(|a| a.get_id().pid());
                let actors = members.into_iter().map(ActorRef::from).collect();
                return Ok(RactorClient {
                    _node: node,
                    actors,
                });
            }
            if Instant::now() >= deadline {
                bail!(
                    "only {} of {TARGETS} remote ractor actors appeared in 30 s",
                    members.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Caller for RactorClient {
    async fn call(&self, target: usize, payload: &[u8]) -> anyhow::Result<usize> {
        let payload = payload.to_vec();
        match self.actors[target]
            .call(|reply| EchoMsg::Echo(payload, reply), Some(CALL_TIMEOUT))
            .await
        {
            Ok(CallResult::Success(bytes)) => Ok(bytes.len()),
            Ok(CallResult::Timeout) => bail!("ractor call timed out"),
            Ok(CallResult::SenderError) => bail!("ractor call: the reply port was dropped"),
            Err(e) => bail!("ractor call failed: {e}"),
        }
    }
}
