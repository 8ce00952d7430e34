//! ractor: one actor per slot, asked with `call` (an `RpcReplyPort`), told with `cast`.
//!
//! ractor is built with its `cluster` feature here (the remote benchmark needs it), so
//! every actor is also entered in ractor's process-wide pid registry, as in any
//! ractor_cluster deployment.

use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;

use crate::peer::{Peer, ACTORS};

/// The echo/count actor.
pub(crate) struct EchoActor;

/// Its messages.
pub(crate) enum Msg {
    Ping(u64, RpcReplyPort<u64>),
    Bump,
    Count(RpcReplyPort<u64>),
}

// Local-only messages (never serialized) under ractor's `cluster` feature.
impl ractor::Message for Msg {}

impl Actor for EchoActor {
    type Msg = Msg;
    type State = u64;
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Msg>, _: ()) -> Result<u64, ActorProcessingErr> {
        Ok(0)
    }

    async fn handle(
        &self,
        _: ActorRef<Msg>,
        msg: Msg,
        handled: &mut u64,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            Msg::Ping(x, reply) => {
                *handled += 1;
                let _ = reply.send(x);
            }
            Msg::Bump => *handled += 1,
            Msg::Count(reply) => {
                let _ = reply.send(*handled);
            }
        }
        Ok(())
    }
}

async fn ask(actor: &ActorRef<Msg>, x: u64) -> u64 {
    match actor.call(|reply| Msg::Ping(x, reply), None).await {
        Ok(CallResult::Success(v)) => v,
        _ => panic!("ractor ask failed"),
    }
}

async fn spawn() -> (ActorRef<Msg>, JoinHandle<()>) {
    Actor::spawn(None, EchoActor, ())
        .await
        .expect("ractor spawn")
}

/// [`ACTORS`] ractor actors.
pub(crate) struct RactorPeer {
    actors: Vec<(ActorRef<Msg>, JoinHandle<()>)>,
}

impl RactorPeer {
    pub(crate) async fn start() -> RactorPeer {
        let mut actors = Vec::with_capacity(ACTORS);
        for _ in 0..ACTORS {
            actors.push(spawn().await);
        }
        RactorPeer { actors }
    }

    pub(crate) async fn shutdown(self) {
        stop_all(self.actors).await;
    }
}

async fn stop_all(actors: Vec<(ActorRef<Msg>, JoinHandle<()>)>) {
    for (actor, _) in &actors {
        actor.stop(None);
    }
    for (_, handle) in actors {
        let _ = handle.await;
    }
}

impl Peer for RactorPeer {
    const NAME: &'static str = "ractor";
    type Actor = (ActorRef<Msg>, JoinHandle<()>);

    async fn ask(&self, i: usize, x: u64) -> u64 {
        ask(&self.actors[i].0, x).await
    }

    async fn tell(&self, i: usize) {
        self.actors[i].0.cast(Msg::Bump).expect("cast");
    }

    async fn count(&self, i: usize) -> u64 {
        match self.actors[i].0.call(Msg::Count, None).await {
            Ok(CallResult::Success(v)) => v,
            _ => panic!("ractor count failed"),
        }
    }

    async fn spawn_one(&self, n: usize) -> Self::Actor {
        let actor = spawn().await;
        ask(&actor.0, n as u64).await;
        actor
    }

    async fn spawn_end(&self, actors: Vec<Self::Actor>) {
        stop_all(actors).await;
    }
}
