//! A slave's load report: once per heartbeat interval, what its replicated grains did
//! over the interval (messages, handler time, queued messages), sent to the master.
//!
//! Only replicated types are sampled (single-activation grains are never copied, so
//! they cost nothing here), and only grains with load, plus, once, those that had
//! load in the previous report (so the master sees a load stop at once instead of
//! waiting for the old figure to go stale).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use granary_net::transport::Peers;
use granary_proto::frame::{Request, SiloAddr};
use granary_proto::replication::{GrainLoad, ReplicaRequest};
use granary_proto::GrainId;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::resolver::SiloResolver;

/// Most grains one report carries (the busiest).
pub(crate) const MAX_REPORTED: usize = 256;

/// Turns cumulative per-activation counters into per-interval load.
#[derive(Debug, Default)]
pub(crate) struct Sampler {
    /// Activation id → `(messages, busy)` at the previous sample.
    previous: HashMap<u64, (u64, Duration)>,
    /// When the previous sample was taken.
    at: Option<Instant>,
    /// Grains the previous report carried with load.
    loaded: HashSet<GrainId>,
}

impl Sampler {
    /// The load of every replicated grain of `catalog` since the previous call.
    pub(crate) fn sample(&mut self, catalog: &Catalog, now: Instant) -> Vec<GrainLoad> {
        let elapsed = self
            .at
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        self.at = Some(now);
        let mut previous = HashMap::new();
        // (copies, messages, busy, queued) per grain.
        let mut sums: HashMap<GrainId, (u32, u64, Duration, usize)> = HashMap::new();
        for dispatcher in catalog.dispatchers() {
            let Some(copies) = dispatcher.copies() else {
                continue;
            };
            for (key, activation, messages, busy, queued) in copies.sample() {
                let (m0, b0) = self.previous.get(&activation).copied().unwrap_or_default();
                previous.insert(activation, (messages, busy));
                let sum = sums
                    .entry(GrainId::new(dispatcher.grain_type(), key))
                    .or_default();
                sum.0 += 1;
                sum.1 += messages.saturating_sub(m0);
                sum.2 += busy.saturating_sub(b0);
                sum.3 += queued;
            }
        }
        self.previous = previous;
        if elapsed.is_zero() {
            return Vec::new(); // the first sample is only a baseline
        }
        let secs = elapsed.as_secs_f64();
        let mut loads: Vec<GrainLoad> = sums
            .into_iter()
            .map(|(grain, (copies, messages, busy, queued))| GrainLoad {
                grain,
                copies,
                rate_milli: (messages as f64 / secs * 1000.0) as u64,
                queue_milli: queued as u64 * 1000,
                busy_milli: (busy.as_secs_f64() / secs * 1000.0) as u64,
            })
            .filter(|l| {
                l.rate_milli > 0
                    || l.queue_milli > 0
                    || l.busy_milli > 0
                    || self.loaded.contains(&l.grain)
            })
            .collect();
        loads.sort_by_key(|l| std::cmp::Reverse((l.busy_milli, l.rate_milli)));
        loads.truncate(MAX_REPORTED);
        self.loaded = loads
            .iter()
            .filter(|l| l.rate_milli > 0 || l.queue_milli > 0 || l.busy_milli > 0)
            .map(|l| l.grain.clone())
            .collect();
        loads
    }
}

/// On a slave: samples the catalog every `every` and reports to the master.
pub(crate) async fn report_hot_grains(
    catalog: Arc<Catalog>,
    resolver: Arc<SiloResolver>,
    peers: Peers,
    me: SiloAddr,
    every: Duration,
    stop: CancellationToken,
) {
    if !catalog.dispatchers().iter().any(|d| d.copies().is_some()) {
        return; // nothing here is ever replicated
    }
    let mut sampler = Sampler::default();
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let grains = sampler.sample(&catalog, Instant::now());
        if grains.is_empty() {
            continue;
        }
        let deadline = Instant::now() + every.max(Duration::from_millis(200));
        let Ok(master) = resolver.master(deadline).await else {
            continue;
        };
        let request = Request::Replica(ReplicaRequest::Report { from: me, grains });
        if let Err(e) = peers.call(master, request, deadline).await {
            tracing::debug!(error = %e, "could not report hot grains to the master");
        }
    }
}
