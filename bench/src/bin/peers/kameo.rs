//! kameo: one actor per slot (bounded mailbox, kameo's default of 64), asked with
//! `ask`, told with `tell`.

use kameo::actor::{ActorRef, Spawn};
use kameo::message::{Context, Message};
use kameo::Actor;

use crate::peer::{Peer, ACTORS};

/// The echo/count actor.
#[derive(Actor, Default)]
pub(crate) struct EchoActor {
    handled: u64,
}

pub(crate) struct Ping(u64);
pub(crate) struct Bump;
pub(crate) struct Count;

impl Message<Ping> for EchoActor {
    type Reply = u64;
    async fn handle(&mut self, Ping(x): Ping, _: &mut Context<Self, u64>) -> u64 {
        self.handled += 1;
        x
    }
}

impl Message<Bump> for EchoActor {
    type Reply = ();
    async fn handle(&mut self, _: Bump, _: &mut Context<Self, ()>) {
        self.handled += 1;
    }
}

impl Message<Count> for EchoActor {
    type Reply = u64;
    async fn handle(&mut self, _: Count, _: &mut Context<Self, u64>) -> u64 {
        self.handled
    }
}

/// [`ACTORS`] kameo actors.
pub(crate) struct KameoPeer {
    actors: Vec<ActorRef<EchoActor>>,
}

impl KameoPeer {
    pub(crate) fn start() -> KameoPeer {
        KameoPeer {
            actors: (0..ACTORS)
                .map(|_| EchoActor::spawn(EchoActor::default()))
                .collect(),
        }
    }

    pub(crate) async fn shutdown(self) {
        stop_all(self.actors).await;
    }
}

async fn stop_all(actors: Vec<ActorRef<EchoActor>>) {
    for actor in &actors {
        actor.kill();
    }
    for actor in &actors {
        actor.wait_for_shutdown().await;
    }
}

impl Peer for KameoPeer {
    const NAME: &'static str = "kameo";
    type Actor = ActorRef<EchoActor>;

    async fn ask(&self, i: usize, x: u64) -> u64 {
        self.actors[i].ask(Ping(x)).await.expect("kameo ask")
    }

    async fn tell(&self, i: usize) {
        self.actors[i].tell(Bump).await.expect("kameo tell")
    }

    async fn count(&self, i: usize) -> u64 {
        self.actors[i].ask(Count).await.expect("kameo count")
    }

    async fn spawn_one(&self, n: usize) -> ActorRef<EchoActor> {
        let actor = EchoActor::spawn(EchoActor::default());
        actor.ask(Ping(n as u64)).await.expect("kameo ask");
        actor
    }

    async fn spawn_end(&self, actors: Vec<ActorRef<EchoActor>>) {
        stop_all(actors).await;
    }
}
