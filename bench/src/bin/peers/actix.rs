//! actix: its actors and their callers run on an actix `System` of their own (one
//! thread with a current-thread tokio runtime, as `#[actix::main]` sets up); asks are
//! `send`, tells `do_send` (actix's fire-and-forget, which does not wait for mailbox
//! space). The benchmark's jobs are shipped to that thread and run there.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use actix::prelude::*;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::peer::{Peer, ACTORS};

/// The echo/count actor.
#[derive(Default)]
pub(crate) struct EchoActor {
    handled: u64,
}

impl Actor for EchoActor {
    type Context = Context<Self>;
}

#[derive(Message)]
#[rtype(result = "u64")]
pub(crate) struct Ping(u64);

#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Bump;

#[derive(Message)]
#[rtype(result = "u64")]
pub(crate) struct Count;

impl Handler<Ping> for EchoActor {
    type Result = u64;
    fn handle(&mut self, Ping(x): Ping, _: &mut Context<Self>) -> u64 {
        self.handled += 1;
        x
    }
}

impl Handler<Bump> for EchoActor {
    type Result = ();
    fn handle(&mut self, _: Bump, _: &mut Context<Self>) {
        self.handled += 1;
    }
}

impl Handler<Count> for EchoActor {
    type Result = u64;
    fn handle(&mut self, _: Count, _: &mut Context<Self>) -> u64 {
        self.handled
    }
}

/// A job for the actix thread.
type Job = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

/// [`ACTORS`] actix actors on a dedicated actix system thread.
pub(crate) struct ActixPeer {
    actors: Vec<Addr<EchoActor>>,
    jobs: mpsc::UnboundedSender<Job>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl ActixPeer {
    pub(crate) async fn start() -> anyhow::Result<ActixPeer> {
        let (jobs, mut queue) = mpsc::unbounded_channel::<Job>();
        let (ready, actors) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("actix-system".into())
            .spawn(move || {
                actix::System::new().block_on(async move {
                    let actors: Vec<Addr<EchoActor>> =
                        (0..ACTORS).map(|_| EchoActor::default().start()).collect();
                    let _ = ready.send(actors);
                    while let Some(job) = queue.recv().await {
                        job().await;
                    }
                });
            })?;
        Ok(ActixPeer {
            actors: actors.await?,
            jobs,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Ends the job loop and the actix system, and joins its thread.
    pub(crate) fn shutdown(self) {
        let ActixPeer {
            actors,
            jobs,
            thread,
        } = self;
        drop(actors);
        drop(jobs);
        let thread = thread.into_inner().expect("thread");
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

impl Peer for ActixPeer {
    const NAME: &'static str = "actix";
    type Actor = Addr<EchoActor>;

    async fn ask(&self, i: usize, x: u64) -> u64 {
        self.actors[i].send(Ping(x)).await.expect("actix send")
    }

    async fn tell(&self, i: usize) {
        self.actors[i].do_send(Bump);
    }

    async fn count(&self, i: usize) -> u64 {
        self.actors[i].send(Count).await.expect("actix count")
    }

    async fn spawn_one(&self, n: usize) -> Addr<EchoActor> {
        let actor = EchoActor::default().start();
        actor.send(Ping(n as u64)).await.expect("actix send");
        actor
    }

    async fn spawn_end(&self, actors: Vec<Addr<EchoActor>>) {
        // An actor stops once its last address is gone and its mailbox is empty.
        drop(actors);
    }

    fn spawn<F>(future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        // The actix system's runtime is a current-thread runtime inside a `LocalSet`.
        tokio::task::spawn_local(future)
    }

    fn run<T, F, Fut>(self: &Arc<Self>, job: F) -> impl Future<Output = T> + Send
    where
        T: Send + 'static,
        F: FnOnce(Arc<Self>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let me = self.clone();
        let boxed: Job = Box::new(move || {
            Box::pin(async move {
                let _ = tx.send(job(me).await);
            })
        });
        let sent = self.jobs.send(boxed).is_ok();
        async move {
            assert!(sent, "the actix system is running");
            rx.await.expect("the actix job finished")
        }
    }
}
