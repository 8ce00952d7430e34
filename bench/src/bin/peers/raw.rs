//! The floor: a bare tokio task per "actor" with a bounded `mpsc` mailbox (the capacity
//! of Granary's default mailbox), answering through a `oneshot`.

use tokio::sync::{mpsc, oneshot};

use crate::peer::{Peer, ACTORS};

/// What a raw actor receives.
pub(crate) enum Msg {
    Ping(u64, oneshot::Sender<u64>),
    Bump,
    Count(oneshot::Sender<u64>),
}

/// A server task with a bounded mailbox.
fn spawn_actor() -> mpsc::Sender<Msg> {
    let (tx, mut rx) = mpsc::channel(granary_silo::config::DEFAULT_MAILBOX_CAPACITY);
    tokio::spawn(async move {
        let mut handled = 0u64;
        while let Some(m) = rx.recv().await {
            match m {
                Msg::Ping(x, reply) => {
                    handled += 1;
                    let _ = reply.send(x);
                }
                Msg::Bump => handled += 1,
                Msg::Count(reply) => {
                    let _ = reply.send(handled);
                }
            }
        }
    });
    tx
}

async fn ask(actor: &mpsc::Sender<Msg>, x: u64) -> u64 {
    let (tx, rx) = oneshot::channel();
    actor.send(Msg::Ping(x, tx)).await.expect("send");
    rx.await.expect("reply")
}

/// [`ACTORS`] raw server tasks.
pub(crate) struct RawPeer {
    actors: Vec<mpsc::Sender<Msg>>,
}

impl RawPeer {
    pub(crate) fn start() -> RawPeer {
        RawPeer {
            actors: (0..ACTORS).map(|_| spawn_actor()).collect(),
        }
    }
}

impl Peer for RawPeer {
    const NAME: &'static str = "raw";
    type Actor = mpsc::Sender<Msg>;

    async fn ask(&self, i: usize, x: u64) -> u64 {
        ask(&self.actors[i], x).await
    }

    async fn tell(&self, i: usize) {
        self.actors[i].send(Msg::Bump).await.expect("send");
    }

    async fn count(&self, i: usize) -> u64 {
        let (tx, rx) = oneshot::channel();
        self.actors[i].send(Msg::Count(tx)).await.expect("send");
        rx.await.expect("count")
    }

    async fn spawn_one(&self, n: usize) -> mpsc::Sender<Msg> {
        let actor = spawn_actor();
        ask(&actor, n as u64).await;
        actor
    }

    async fn spawn_end(&self, actors: Vec<mpsc::Sender<Msg>>) {
        // Dropping the senders ends the tasks.
        drop(actors);
    }
}
