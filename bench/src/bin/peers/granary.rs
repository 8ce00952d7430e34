//! Granary: grains of [`Bench`] in one silo, called through typed references.

use std::sync::{Arc, Mutex};

use granary_bench::grains::{Bench, Bump, Count, Ping};
use granary_runtime::prelude::*;
use granary_runtime::Router;
use granary_silo::storage::MemoryStorage;
use granary_silo::{Silo, SiloConfig};

use crate::peer::{Peer, ACTORS};

/// A silo with [`ACTORS`] warm grains, and a fresh silo per spawn run.
pub(crate) struct GranaryPeer {
    silo: Silo,
    grains: Vec<GrainRef<Bench>>,
    /// The silo of the current spawn run.
    spawning: Mutex<Option<(Silo, Arc<dyn Router>)>>,
}

impl GranaryPeer {
    pub(crate) async fn start() -> anyhow::Result<GranaryPeer> {
        let silo = Silo::start(SiloConfig::default(), Arc::new(MemoryStorage::new())).await?;
        let grains: Vec<_> = (0..ACTORS)
            .map(|i| silo.grain::<Bench>(format_args!("a{i}")))
            .collect();
        for g in &grains {
            g.ask(Count).await?;
        }
        Ok(GranaryPeer {
            silo,
            grains,
            spawning: Mutex::new(None),
        })
    }

    pub(crate) async fn shutdown(self) {
        self.silo.shutdown().await;
    }

    fn spawn_router(&self) -> Arc<dyn Router> {
        let spawning = self.spawning.lock().expect("spawning");
        spawning.as_ref().expect("spawn_begin ran").1.clone()
    }
}

impl Peer for GranaryPeer {
    const NAME: &'static str = "granary";
    /// Activations live in the silo's table; nothing to hold.
    type Actor = ();

    async fn ask(&self, i: usize, x: u64) -> u64 {
        self.grains[i].ask(Ping(x)).await.expect("ask")
    }

    async fn tell(&self, i: usize) {
        self.grains[i].tell(Bump).await.expect("tell")
    }

    async fn count(&self, i: usize) -> u64 {
        self.grains[i].ask(Count).await.expect("count")
    }

    async fn spawn_begin(&self) {
        let silo = Silo::start(SiloConfig::default(), Arc::new(MemoryStorage::new()))
            .await
            .expect("spawn silo");
        // The first activation of the type builds per-type state: not per-actor memory.
        silo.grain::<Bench>("warm").ask(Count).await.expect("warm");
        let router = silo.router();
        *self.spawning.lock().expect("spawning") = Some((silo, router));
    }

    async fn spawn_one(&self, n: usize) {
        let grain = GrainRef::<Bench>::new(self.spawn_router(), format_args!("s{n}"));
        grain.ask(Ping(n as u64)).await.expect("activation");
    }

    async fn spawn_end(&self, _: Vec<()>) {
        let spawning = self.spawning.lock().expect("spawning").take();
        if let Some((silo, _)) = spawning {
            silo.shutdown().await;
        }
    }
}
