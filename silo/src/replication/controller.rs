//! [`Controller`]: the master's side of replication. It collects the slaves' load
//! reports, judges each replicated grain once per interval ([`Hotness`]), grows or
//! shrinks its copy set ([`CopySets`]), places new copies on the least-loaded live
//! slaves, and tells every silo concerned. Every decision is logged at info level with
//! the figures that triggered it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use granary_net::transport::Peers;
use granary_proto::frame::{Request, Response, SiloAddr};
use granary_proto::replication::{
    CopyKind, GrainLoad, HostedActivation, ReplicaRequest, ReplicaResponse,
};
use granary_proto::GrainId;
use granary_runtime::Scaling;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::decide::{Decision, Hotness, Load};
use crate::catalog::Catalog;
use crate::directory::copies::{CopySets, SetChange};
use crate::directory::Directory;
use crate::membership::MembershipSnapshot;
use crate::resolver::SiloResolver;

/// How long a silo's report counts, in report intervals (a silo that stops reporting a
/// grain, or dies, stops adding to its load after this).
const FRESH_INTERVALS: u32 = 3;

/// How long the master waits for a silo to take a new copy set.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(2);

/// How a replicated type is judged (from the master's registry and config).
#[derive(Debug, Clone, Copy)]
struct TypePolicy {
    kind: CopyKind,
    scaling: Scaling,
    max_local: usize,
}

/// One grain the master is watching.
#[derive(Debug)]
struct Tracked {
    /// Its windows.
    hot: Hotness,
    /// The latest report of each silo hosting it.
    loads: HashMap<SiloAddr, (Instant, Load)>,
}

/// Decisions so far, per kind (for metrics).
#[derive(Debug, Default)]
pub(crate) struct DecisionCounts {
    /// Copies added.
    pub(crate) grown: AtomicU64,
    /// Copies removed because load stayed low.
    pub(crate) shrunk: AtomicU64,
    /// Copies removed because their silo (or their home) went away.
    pub(crate) dropped: AtomicU64,
}

/// The master's replication decisions.
#[derive(Debug)]
pub(crate) struct Controller {
    /// Replicated types by name.
    policies: HashMap<&'static str, TypePolicy>,
    /// The copy sets.
    sets: Mutex<CopySets>,
    /// Grains being watched.
    tracked: Mutex<HashMap<GrainId, Tracked>>,
    /// Homes of grains.
    directory: Arc<Directory>,
    /// Live slaves and their load.
    membership: watch::Receiver<Arc<MembershipSnapshot>>,
    /// Connections to the slaves.
    peers: Peers,
    /// Owns the notification tasks.
    tasks: TaskTracker,
    /// The report interval.
    interval: Duration,
    /// What was decided.
    pub(crate) counts: DecisionCounts,
}

impl Controller {
    /// A controller for the replicated types of `catalog`, on the master of epoch
    /// `epoch`, judging every `interval`.
    pub(crate) fn new(
        catalog: &Catalog,
        directory: Arc<Directory>,
        membership: watch::Receiver<Arc<MembershipSnapshot>>,
        peers: Peers,
        (epoch, interval): (u64, Duration),
    ) -> Self {
        let policies = catalog
            .dispatchers()
            .iter()
            .filter_map(|d| {
                let copies = d.copies()?;
                Some((
                    d.grain_type(),
                    TypePolicy {
                        kind: copies.kind(),
                        scaling: *copies.scaling(),
                        max_local: copies.max_local(),
                    },
                ))
            })
            .collect();
        Self {
            policies,
            sets: Mutex::new(CopySets::new(epoch)),
            tracked: Mutex::new(HashMap::new()),
            directory,
            membership,
            peers,
            tasks: TaskTracker::new(),
            interval,
            counts: DecisionCounts::default(),
        }
    }

    /// True when some grain type may be replicated.
    pub(crate) fn has_policies(&self) -> bool {
        !self.policies.is_empty()
    }

    /// `(grains with copies, copies beyond their homes)`.
    pub(crate) fn set_counts(&self) -> (usize, usize) {
        let sets = self.sets.lock().expect("copy sets poisoned");
        let members = sets.iter().map(|(_, s)| s.members.len()).sum();
        (sets.len(), members)
    }

    /// The copies of `grain` (home first), for status and tests.
    pub(crate) fn silos_of(&self, grain: &GrainId) -> Vec<SiloAddr> {
        match self.directory.lookup(grain) {
            Some(home) => self
                .sets
                .lock()
                .expect("copy sets poisoned")
                .silos_of(grain, home),
            None => Vec::new(),
        }
    }

    /// A slave's load report.
    pub(crate) fn report(&self, from: SiloAddr, grains: Vec<GrainLoad>) {
        let now = Instant::now();
        let mut tracked = self.tracked.lock().expect("tracked grains poisoned");
        for load in grains {
            let Some(policy) = self.policies.get(load.grain.type_name.as_ref()) else {
                continue;
            };
            let entry = tracked
                .entry(load.grain.clone())
                .or_insert_with(|| Tracked {
                    hot: Hotness::new(policy.kind, policy.scaling, policy.max_local),
                    loads: HashMap::new(),
                });
            entry.loads.insert(from, (now, Load::from_report(&load)));
        }
    }

    /// `silo` no longer hosts `grain` (it deactivated there).
    pub(crate) fn released(self: &Arc<Self>, grain: &GrainId, silo: SiloAddr) {
        let change = self
            .sets
            .lock()
            .expect("copy sets poisoned")
            .released(grain, silo);
        if let Some(change) = change {
            tracing::info!(%grain, "copy on {silo} released (deactivated there); copies now: {}", change.set.silos().count());
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            self.notify(change);
        }
    }

    /// `silo` left or died: its copies leave their sets.
    pub(crate) fn silo_gone(self: &Arc<Self>, silo: SiloAddr) {
        let changes = self
            .sets
            .lock()
            .expect("copy sets poisoned")
            .silo_gone(silo);
        for (_, t) in self
            .tracked
            .lock()
            .expect("tracked grains poisoned")
            .iter_mut()
        {
            t.loads.remove(&silo);
        }
        for change in changes {
            let why = if change.set.home == silo {
                "its home (the primary) is gone: the copies are dropped and the grain comes back from storage"
            } else {
                "that copy is dropped"
            };
            tracing::info!(grain = %change.grain, "silo {silo} is gone: {why}; copies now: {}", change.set.silos().count());
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            self.notify(change);
        }
    }

    /// After a master change: rebuilds the copy sets from what each slave reports it
    /// hosts (`ClusterSilo::hosted` there), homes taken from the directory (rebuilt
    /// first), and tells the silos. Replicas whose grain has no home are left to stop
    /// by themselves: their primary is gone, so their lease runs out.
    pub(crate) fn rebuild(self: &Arc<Self>, reports: &[(SiloAddr, Vec<HostedActivation>)]) {
        let (changes, orphans) = self.sets.lock().expect("copy sets poisoned").rebuild(
            reports
                .iter()
                .map(|(silo, hosted)| (*silo, hosted.as_slice())),
            |grain| self.directory.lookup(grain),
        );
        for (silo, grain) in orphans {
            tracing::info!(%grain, "replica on {silo} has no primary in the rebuilt directory; it stops when its lease runs out");
        }
        for change in changes {
            tracing::info!(grain = %change.grain, "copy set rebuilt: {} copies", change.set.silos().count());
            self.notify(change);
        }
    }

    /// Judges every watched grain once (called every interval), while this silo is the
    /// acting master. A new leadership epoch starts from no sets: the sets it issues are
    /// newer than any of an earlier master, so silos take them over the old ones.
    pub(crate) fn tick(self: &Arc<Self>) {
        let now = Instant::now();
        let fresh = self.interval * FRESH_INTERVALS;
        let snapshot = self.membership.borrow().clone();
        if !snapshot.is_acting_master() {
            return;
        }
        {
            let mut sets = self.sets.lock().expect("copy sets poisoned");
            if sets.epoch() != snapshot.epoch {
                if !sets.is_empty() {
                    tracing::info!(
                        "acting master of epoch {}: copy sets start over ({} were known)",
                        snapshot.epoch,
                        sets.len()
                    );
                }
                *sets = CopySets::new(snapshot.epoch);
                self.tracked
                    .lock()
                    .expect("tracked grains poisoned")
                    .clear();
            }
        }
        let mut changes = Vec::new();
        let mut tracked = self.tracked.lock().expect("tracked grains poisoned");
        tracked.retain(|grain, t| {
            let Some(home) = self.directory.lookup(grain) else {
                return false; // not active anywhere
            };
            let mut sets = self.sets.lock().expect("copy sets poisoned");
            let current = sets.silos_of(grain, home);
            t.loads
                .retain(|_, (at, _)| now.saturating_duration_since(*at) <= fresh);
            let load = t
                .loads
                .values()
                .fold(Load::default(), |sum, (_, l)| sum.plus(*l));
            t.hot.observe(now, load);
            let policy = self.policies[grain.type_name.as_ref()];
            let decision = t.hot.decide(now, current.len());
            tracing::trace!(%grain, copies = current.len(), %load, ?decision, "judged");
            match decision {
                Decision::Keep => {}
                Decision::Grow { to, load } => {
                    let add = self.place(&snapshot, &current, to - current.len());
                    if !add.is_empty() {
                        tracing::info!(
                            %grain,
                            "replicating ({}): {} -> {} copies: {load} over the last {:?} (thresholds per copy: busy {}%, {} queued, {} msg/s); new copies on {}",
                            kind_name(policy.kind),
                            current.len(),
                            current.len() + add.len(),
                            policy.scaling.window,
                            policy.scaling.hot_busy_pct,
                            policy.scaling.hot_queue,
                            policy.scaling.hot_rate,
                            list(&add)
                        );
                        self.counts
                            .grown
                            .fetch_add(add.len() as u64, Ordering::Relaxed);
                        changes.push(sets.grow(grain, policy.kind, home, &add));
                        t.hot.changed();
                    }
                }
                Decision::Shrink { to, load } => {
                    let remove: Vec<SiloAddr> = current[to.max(1)..].to_vec();
                    if let Some(change) = sets.shrink(grain, &remove) {
                        tracing::info!(
                            %grain,
                            "scaling in ({}): {} -> {} copies: the load needed at most {to} over the cool-down of {:?} (last interval: {load}); removing the copies on {}",
                            kind_name(policy.kind),
                            current.len(),
                            change.set.silos().count(),
                            t.hot.cool_down(),
                            list(&remove)
                        );
                        self.counts
                            .shrunk
                            .fetch_add(remove.len() as u64, Ordering::Relaxed);
                        changes.push(change);
                        t.hot.changed();
                    }
                }
            }
            current.len() > 1 || !t.hot.is_cold(now)
        });
        drop(tracked);
        for change in changes {
            self.notify(change);
        }
    }

    /// Up to `n` live slaves outside `current`, least loaded first (directory entries
    /// plus reported queue depth).
    fn place(
        &self,
        snapshot: &MembershipSnapshot,
        current: &[SiloAddr],
        n: usize,
    ) -> Vec<SiloAddr> {
        let counts = self.directory.counts();
        let mut candidates: Vec<(u64, SiloAddr)> = SiloResolver::candidates(snapshot)
            .into_iter()
            .filter(|c| !current.contains(&c.silo))
            .map(|c| {
                (
                    counts.get(&c.silo).copied().unwrap_or(0) as u64 + c.queue_depth,
                    c.silo,
                )
            })
            .collect();
        candidates.sort();
        candidates.into_iter().take(n).map(|(_, s)| s).collect()
    }

    /// Tells every silo concerned about `change` (the home first), in a task of its
    /// own. A new member that cannot take its copy leaves the set again.
    fn notify(self: &Arc<Self>, change: SetChange) {
        let me = self.clone();
        self.tasks.spawn(async move {
            let recipients = change.recipients();
            let request = |_: SiloAddr| {
                Request::Replica(ReplicaRequest::Copies {
                    grain: change.grain.clone(),
                    set: change.set.clone(),
                })
            };
            let deadline = Instant::now() + NOTIFY_TIMEOUT;
            let (home, others) = recipients.split_first().expect("a set has a home");
            // The home (a primary) learns its replicas before they ask it for state.
            let _ = me.peers.call(home.addr, request(*home), deadline).await;
            let answers = futures::future::join_all(others.iter().map(|silo| {
                let call = me.peers.call(silo.addr, request(*silo), deadline);
                async move { (*silo, call.await) }
            }))
            .await;
            for (silo, answer) in answers {
                let applied = matches!(answer, Ok(Response::Replica(ReplicaResponse::Applied)));
                if !applied && change.set.members.contains(&silo) {
                    tracing::info!(grain = %change.grain, "silo {silo} did not take its copy ({answer:?}); dropping it from the set");
                    me.released(&change.grain, silo);
                }
            }
        });
    }

    /// Stops the notification tasks (shutdown).
    pub(crate) async fn close(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }
}

fn kind_name(kind: CopyKind) -> &'static str {
    match kind {
        CopyKind::StatelessWorker => "stateless worker",
        CopyKind::ReadReplicas => "read replicas",
    }
}

fn list(silos: &[SiloAddr]) -> String {
    silos
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// On the master: judges the watched grains every `every`.
pub(crate) async fn run_controller(
    controller: Arc<Controller>,
    every: Duration,
    stop: CancellationToken,
) {
    if !controller.has_policies() {
        return;
    }
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = tick.tick() => controller.tick(),
        }
    }
    controller.close().await;
}
