//! [`SiloMetrics`]: this silo's Prometheus metrics, served as OpenMetrics text at
//! `GET /metrics`.
//!
//! Each silo has its own [`Registry`] (no process-global recorder: a test process runs
//! many silos). The registry holds only [`Collector`]s that read, at scrape time, the
//! counters the silo keeps anyway, so what is exported is exact and nothing is counted
//! twice:
//!
//! ```text
//! SiloMetrics (Registry)
//! ├── GrainCollector ── Catalog ── Dispatcher per type: table (activations, queues)
//! │                                └── TypeStats (turns, latency, failures, lifecycle)
//! ├── CallCollector ── CallStats (counted by the gateway)
//! ├── StorageCollector ── StorageStats (counted by InstrumentedStorage)
//! ├── MembershipCollector ── membership snapshot + MembershipCounts (counted by
//! │                          `count_membership`, a task of the silo)
//! ├── DirectoryCollector ── Directory (on the master)
//! ├── ReplicationCollector ── copy tables; the master's Controller (replication.rs)
//! └── ProcessCollector ── /proc (CPU, memory), start time
//! ```
//!
//! Labels are bounded: grain type, message name, error kind, outcome, provider, op,
//! member state; never a grain key.

use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use granary_proto::frame::Response;
use granary_proto::packet::SiloId;
use granary_proto::status::{LatencyBuckets, LATENCY_BOUNDS_US};
use granary_proto::CallError;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::process;
use crate::catalog::Catalog;
use crate::directory::Directory;
use crate::membership::{Hosting, MemberStatus, MembershipSnapshot, SiloRole};
use crate::replication::controller::Controller;
use crate::storage::instrumented::StorageStats;

mod replication;

/// The `Content-Type` of [`SiloMetrics::encode`]'s text.
pub(crate) const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The values of `granary_call_outcomes_total`'s `outcome` label besides the
/// [`CallError::KINDS`]: `ok` (a reply, or a tell queued) and `moved` (not hosted here;
/// the caller was sent to the owner).
const OUTCOME_OK: &str = "ok";
const OUTCOME_MOVED: &str = "moved";

/// Grain calls served by this silo's gateway (calls that arrived over TCP).
#[derive(Debug)]
pub(crate) struct CallStats {
    /// Calls being served now.
    in_flight: AtomicU64,
    /// Finished calls: `ok`, `moved`, then one per [`CallError::KINDS`] entry.
    outcomes: Vec<AtomicU64>,
}

impl Default for CallStats {
    fn default() -> Self {
        Self {
            in_flight: AtomicU64::new(0),
            outcomes: (0..CallError::KINDS.len() + 2)
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }
}

impl CallStats {
    /// A call starts: it is in flight until the guard is finished or dropped (a call
    /// whose connection went away is dropped, and counted in no outcome).
    pub(crate) fn begin(&self) -> CallGuard<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        CallGuard { stats: self }
    }

    /// `(outcome, calls)`, every outcome.
    fn outcomes(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        [OUTCOME_OK, OUTCOME_MOVED]
            .into_iter()
            .chain(CallError::KINDS)
            .zip(&self.outcomes)
            .map(|(name, n)| (name, n.load(Ordering::Relaxed)))
    }
}

/// One call in flight; see [`CallStats::begin`].
#[derive(Debug)]
pub(crate) struct CallGuard<'a> {
    stats: &'a CallStats,
}

impl CallGuard<'_> {
    /// The call ended with `response` (the answer to a `Request::Grain`).
    pub(crate) fn finish(self, response: &Response) {
        let index = match response {
            Response::Grain(Ok(_)) => 0,
            Response::Moved(_) => 1,
            Response::Grain(Err(e)) => {
                let kind = e.kind();
                2 + CallError::KINDS
                    .iter()
                    .position(|k| *k == kind)
                    .unwrap_or(0)
            }
            // Not an answer to a grain call; never produced for one.
            _ => return,
        };
        self.stats.outcomes[index].fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Membership changes this silo saw, counted by [`count_membership`].
#[derive(Debug, Default)]
pub(crate) struct MembershipCounts {
    joins: AtomicU64,
    deaths: AtomicU64,
    fencings: AtomicU64,
    /// Times this slave's hosting lease ran out while serving.
    suspensions: AtomicU64,
}

/// Everything [`SiloMetrics`] reads.
#[derive(Debug)]
pub(crate) struct MetricSources {
    /// Master or slave.
    pub(crate) role: SiloRole,
    /// When the silo started (uptime).
    pub(crate) started: Instant,
    /// Its grains.
    pub(crate) catalog: Arc<Catalog>,
    /// Grain calls its gateway served.
    pub(crate) calls: Arc<CallStats>,
    /// Its grain store's operations.
    pub(crate) storage: Arc<StorageStats>,
    /// Its view of the cluster.
    pub(crate) membership: watch::Receiver<Arc<MembershipSnapshot>>,
    /// The directory, on the master.
    pub(crate) directory: Option<Arc<Directory>>,
    /// The replication decisions, on the master.
    pub(crate) replication: Option<Arc<Controller>>,
}

/// The metrics of one silo: a [`Registry`] of collectors over its live counters.
#[derive(Debug)]
pub(crate) struct SiloMetrics {
    /// Encoded on every scrape.
    registry: Registry,
    /// Fed by the [`count_membership`] task, read by the membership collector.
    membership_counts: Arc<MembershipCounts>,
    /// For the membership task.
    role: SiloRole,
}

impl SiloMetrics {
    /// A registry over `sources`. Joins, deaths and fencing are counted only while the
    /// future of [`SiloMetrics::count_membership`] runs.
    pub(crate) fn new(sources: MetricSources) -> Self {
        let counts = Arc::new(MembershipCounts::default());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(replication::ReplicationCollector {
            catalog: sources.catalog.clone(),
            controller: sources.replication,
        }));
        registry.register_collector(Box::new(GrainCollector {
            catalog: sources.catalog,
        }));
        registry.register_collector(Box::new(CallCollector {
            calls: sources.calls,
        }));
        registry.register_collector(Box::new(StorageCollector {
            stats: sources.storage,
        }));
        registry.register_collector(Box::new(MembershipCollector {
            snapshot: sources.membership,
            counts: counts.clone(),
        }));
        if let Some(directory) = sources.directory {
            registry.register_collector(Box::new(DirectoryCollector { directory }));
        }
        registry.register_collector(Box::new(ProcessCollector {
            started: sources.started,
        }));
        Self {
            registry,
            membership_counts: counts,
            role: sources.role,
        }
    }

    /// The task that counts joins, deaths and fencing from `updates` until `stop`.
    pub(crate) fn count_membership(
        &self,
        updates: watch::Receiver<Arc<MembershipSnapshot>>,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        count_membership(updates, self.role, self.membership_counts.clone(), stop)
    }

    /// Every metric, as OpenMetrics text ending in `# EOF`.
    pub(crate) fn encode(&self) -> Result<String, fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

/// Counts, from membership snapshots: members that joined (on the master, every slave
/// that became active; on a slave, members that appeared after its own first join),
/// members that died (distinct ids seen dead), and this slave's fencing (its grains
/// dropped) and suspensions (serving, then its lease ran out while neither it nor the
/// master was leaving).
async fn count_membership(
    mut updates: watch::Receiver<Arc<MembershipSnapshot>>,
    role: SiloRole,
    counts: Arc<MembershipCounts>,
    stop: CancellationToken,
) {
    let mut counter = MembershipCounter::new(role);
    loop {
        let snapshot = updates.borrow_and_update().clone();
        counter.observe(&snapshot, &counts);
        tokio::select! {
            () = stop.cancelled() => return,
            changed = updates.changed() => if changed.is_err() { return },
        }
    }
}

/// What [`count_membership`] remembers between snapshots.
#[derive(Debug)]
struct MembershipCounter {
    role: SiloRole,
    /// Other members seen active (each counts as one join, once).
    active_seen: HashSet<SiloId>,
    /// Members seen dead (each counts as one death, once).
    dead_seen: HashSet<SiloId>,
    /// Set once members appearing are joins: at once on the master, after a slave's
    /// first joined view (which is the cluster it joined, not joins it saw).
    baseline: bool,
    /// The previous snapshot's hosting state.
    was: Hosting,
}

impl MembershipCounter {
    fn new(role: SiloRole) -> Self {
        Self {
            role,
            active_seen: HashSet::new(),
            dead_seen: HashSet::new(),
            baseline: role == SiloRole::Master,
            was: Hosting::Suspended,
        }
    }

    fn observe(&mut self, snapshot: &MembershipSnapshot, counts: &MembershipCounts) {
        let joined = snapshot.is_joined();
        for member in snapshot.members.values() {
            if member.id == snapshot.me {
                continue;
            }
            match member.status {
                MemberStatus::Active => {
                    if self.active_seen.insert(member.id) && self.baseline {
                        counts.joins.fetch_add(1, Ordering::Relaxed);
                    }
                }
                MemberStatus::Dead => {
                    if self.dead_seen.insert(member.id) {
                        counts.deaths.fetch_add(1, Ordering::Relaxed);
                    }
                }
                MemberStatus::ShuttingDown => {}
            }
        }
        self.baseline |= joined;
        let now = snapshot.hosting;
        if self.role == SiloRole::Slave && now != self.was {
            let leaving = |id: &SiloId| {
                snapshot
                    .get(id)
                    .is_some_and(|m| m.status == MemberStatus::ShuttingDown)
            };
            let master_leaving = snapshot.master.as_ref().is_some_and(leaving);
            let ending = leaving(&snapshot.me) || master_leaving;
            match now {
                Hosting::Fenced => {
                    counts.fencings.fetch_add(1, Ordering::Relaxed);
                }
                Hosting::Suspended if self.was == Hosting::Serving && !ending => {
                    counts.suspensions.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        self.was = now;
    }
}

/// Writes one metric family's descriptor and returns its encoder.
fn family<'a>(
    encoder: &'a mut DescriptorEncoder<'_>,
    name: &'a str,
    help: &str,
    unit: Option<&'a Unit>,
    kind: MetricType,
) -> Result<MetricEncoder<'a>, fmt::Error> {
    encoder.encode_descriptor(name, help, unit, kind)
}

fn counter(metric: &mut MetricEncoder<'_>, labels: &impl EncodeLabelSet, v: u64) -> fmt::Result {
    ConstCounter::new(v).encode(metric.encode_family(labels)?)
}

fn gauge(metric: &mut MetricEncoder<'_>, labels: &impl EncodeLabelSet, v: u64) -> fmt::Result {
    ConstGauge::new(v).encode(metric.encode_family(labels)?)
}

/// A [`LatencyBuckets`] histogram in seconds: the bounds of [`LATENCY_BOUNDS_US`], then
/// `+Inf`.
fn histogram(
    metric: &mut MetricEncoder<'_>,
    labels: &impl EncodeLabelSet,
    latency: &LatencyBuckets,
) -> fmt::Result {
    let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_US
        .iter()
        .map(|us| *us as f64 / 1e6)
        .chain([f64::INFINITY])
        .zip(latency.counts.iter().copied())
        .collect();
    let sum = latency.sum_us as f64 / 1e6;
    metric
        .encode_family(labels)?
        .encode_histogram::<NoLabelSet>(sum, latency.count(), &buckets, None)
}

/// Per grain type: activations, lifecycle, messages, handler latency and failures,
/// queue depth.
#[derive(Debug)]
struct GrainCollector {
    catalog: Arc<Catalog>,
}

impl Collector for GrainCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let types: Vec<_> = self
            .catalog
            .dispatchers()
            .iter()
            .map(|d| (d.load(), d.type_stats().snapshot()))
            .collect();
        let mut m = family(
            &mut encoder,
            "granary_activations",
            "Live activations on this silo, per grain type.",
            None,
            MetricType::Gauge,
        )?;
        for ((activations, _), t) in &types {
            gauge(&mut m, &[("grain_type", t.grain_type)], *activations as u64)?;
        }
        let mut m = family(
            &mut encoder,
            "granary_activations_created",
            "Activations created on this silo, per grain type.",
            None,
            MetricType::Counter,
        )?;
        for (_, t) in &types {
            counter(&mut m, &[("grain_type", t.grain_type)], t.activated)?;
        }
        let mut m = family(
            &mut encoder,
            "granary_activations_deactivated",
            "Activations that ended on this silo (idle, fenced, failed or shut down), per grain type.",
            None,
            MetricType::Counter,
        )?;
        for (_, t) in &types {
            counter(&mut m, &[("grain_type", t.grain_type)], t.deactivated)?;
        }
        let mut m = family(
            &mut encoder,
            "granary_messages_handled",
            "Turns run on this silo (messages handled, failed ones included), per grain type and message name.",
            None,
            MetricType::Counter,
        )?;
        for (_, t) in &types {
            for (message, n) in &t.messages {
                counter(
                    &mut m,
                    &[("grain_type", t.grain_type), ("message", message)],
                    *n,
                )?;
            }
        }
        let mut m = family(
            &mut encoder,
            "granary_handler_duration",
            "Time a turn's handler ran, per grain type.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (_, t) in &types {
            histogram(&mut m, &[("grain_type", t.grain_type)], &t.latency)?;
        }
        let mut m = family(
            &mut encoder,
            "granary_handler_failures",
            "Turns that ended in an error, per grain type and error kind (handler, panicked, storage, ...).",
            None,
            MetricType::Counter,
        )?;
        for (_, t) in &types {
            for (kind, n) in &t.failures {
                counter(&mut m, &[("grain_type", t.grain_type), ("kind", kind)], *n)?;
            }
        }
        let mut m = family(
            &mut encoder,
            "granary_mailbox_queue_depth",
            "Messages waiting in mailboxes on this silo, summed over a grain type's activations.",
            None,
            MetricType::Gauge,
        )?;
        for ((_, queued), t) in &types {
            gauge(&mut m, &[("grain_type", t.grain_type)], *queued as u64)?;
        }
        Ok(())
    }
}

/// Grain calls served by the gateway.
#[derive(Debug)]
struct CallCollector {
    calls: Arc<CallStats>,
}

impl Collector for CallCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let m = family(
            &mut encoder,
            "granary_calls_in_flight",
            "Grain calls that arrived at this silo over TCP (from clients and other silos) and are being served. Calls between grains of one silo are not counted.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.calls.in_flight.load(Ordering::Relaxed)).encode(m)?;
        let mut m = family(
            &mut encoder,
            "granary_call_outcomes",
            "Grain calls that arrived at this silo over TCP (from clients and other silos), by how they ended: ok (replied, or a tell queued), moved (not hosted here; the caller was sent to the owner), or the CallError kind. Calls between grains of one silo, and calls whose connection closed before the answer, are not counted.",
            None,
            MetricType::Counter,
        )?;
        for (outcome, n) in self.calls.outcomes() {
            counter(&mut m, &[("outcome", outcome)], n)?;
        }
        Ok(())
    }
}

/// The grain store's operations.
#[derive(Debug)]
struct StorageCollector {
    stats: Arc<StorageStats>,
}

impl Collector for StorageCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let provider = self.stats.provider();
        let ops = self.stats.snapshot();
        let mut m = family(
            &mut encoder,
            "granary_storage_operation_duration",
            "Grain-state operations of this silo's store, failed ones included, per provider (memory, embedded, mongodb; master: through the master) and op (read, write, clear). On the master: the operations it serves to slaves. The /ready probe is not counted.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for op in &ops {
            histogram(
                &mut m,
                &[("provider", provider), ("op", op.op)],
                &op.latency,
            )?;
        }
        let mut m = family(
            &mut encoder,
            "granary_storage_errors",
            "Failed grain-state operations, per provider, op and error kind (conflict, unavailable, too_large, failed, corrupt).",
            None,
            MetricType::Counter,
        )?;
        for op in &ops {
            for (kind, n) in &op.errors {
                counter(
                    &mut m,
                    &[("provider", provider), ("op", op.op), ("kind", kind)],
                    *n,
                )?;
            }
        }
        Ok(())
    }
}

/// This silo's view of membership.
#[derive(Debug)]
struct MembershipCollector {
    snapshot: watch::Receiver<Arc<MembershipSnapshot>>,
    counts: Arc<MembershipCounts>,
}

impl Collector for MembershipCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let (mut active, mut leaving, mut dead) = (0u64, 0u64, 0u64);
        for member in self.snapshot.borrow().members.values() {
            match member.status {
                MemberStatus::Active => active += 1,
                MemberStatus::ShuttingDown => leaving += 1,
                MemberStatus::Dead => dead += 1,
            }
        }
        let mut m = family(
            &mut encoder,
            "granary_membership_members",
            "Members this silo knows, itself included, by state: active, leaving (left or leaving gracefully), dead (leaving and dead are the recent departures it still remembers).",
            None,
            MetricType::Gauge,
        )?;
        for (state, n) in [("active", active), ("leaving", leaving), ("dead", dead)] {
            gauge(&mut m, &[("state", state)], n)?;
        }
        let counts = &self.counts;
        let m = family(
            &mut encoder,
            "granary_membership_joins",
            "Members that joined while this silo watched: on the master, every slave that joined; on a slave, members that appeared after its own join.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(counts.joins.load(Ordering::Relaxed)).encode(m)?;
        let m = family(
            &mut encoder,
            "granary_membership_deaths",
            "Members this silo saw declared dead (missed heartbeats, or replaced by a newer generation).",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(counts.deaths.load(Ordering::Relaxed)).encode(m)?;
        let m = family(
            &mut encoder,
            "granary_fencing_events",
            "Times this slave was fenced (the acting master did not count it any more, or every candidate was silent for a lease) and dropped its grains without writing; 0 on candidates.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(counts.fencings.load(Ordering::Relaxed)).encode(m)?;
        let m = family(
            &mut encoder,
            "granary_suspensions",
            "Times this slave's hosting lease ran out while serving (its grains waited for a master to renew it); 0 on candidates.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(counts.suspensions.load(Ordering::Relaxed)).encode(m)?;
        let (epoch, acting) = {
            let snapshot = self.snapshot.borrow();
            (snapshot.epoch, u64::from(snapshot.is_acting_master()))
        };
        let m = family(
            &mut encoder,
            "granary_master_epoch",
            "The acting master's leadership epoch this silo knows (it grows with every election).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(epoch).encode(m)?;
        let m = family(
            &mut encoder,
            "granary_acting_master",
            "1 on the acting master, 0 elsewhere.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(acting).encode(m)
    }
}

/// The master's directory.
#[derive(Debug)]
struct DirectoryCollector {
    directory: Arc<Directory>,
}

impl Collector for DirectoryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let m = family(
            &mut encoder,
            "granary_directory_entries",
            "Grains in the master's directory (placed or active on a slave).",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.directory.len() as u64).encode(m)?;
        let m = family(
            &mut encoder,
            "granary_directory_placements",
            "Grains the master's directory placed on a slave since it started.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.directory.placements()).encode(m)
    }
}

/// CPU, memory and uptime of this process and silo.
#[derive(Debug)]
struct ProcessCollector {
    started: Instant,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let (cpu_ms, rss_bytes) = process::usage();
        let m = family(
            &mut encoder,
            "process_cpu",
            "CPU time this process used, user and system (0 where /proc is missing).",
            Some(&Unit::Seconds),
            MetricType::Counter,
        )?;
        ConstCounter::new(cpu_ms as f64 / 1e3).encode(m)?;
        let m = family(
            &mut encoder,
            "process_resident_memory",
            "Resident memory of this process (0 where /proc is missing).",
            Some(&Unit::Bytes),
            MetricType::Gauge,
        )?;
        ConstGauge::new(rss_bytes).encode(m)?;
        let m = family(
            &mut encoder,
            "granary_uptime",
            "Time since this silo started.",
            Some(&Unit::Seconds),
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.started.elapsed().as_secs_f64()).encode(m)
    }
}

#[cfg(test)]
mod tests;
