//! The grain directory, kept by the master: which silo hosts each grain's one activation.
//!
//! `resolve` is the only way an entry is created: it returns the live entry for a grain
//! or, if there is none, places the grain on a slave and records that, atomically under
//! one lock. Concurrent first calls from anywhere in the cluster therefore race to this
//! one function, and all of them get the same answer: exactly one activation.
//!
//! Placement is power-of-two-choices over the live slaves, scored by how many directory
//! entries each holds plus the queue depth it last reported. The entry count is exact
//! and updated on every placement, so a burst of new grains between two heartbeats is
//! still spread evenly.
//!
//! A placement is *tentative* until the owning slave itself resolves the grain, which
//! it always does before activating it. A caller that resolves and then never calls
//! (a client that died) would otherwise leave an entry behind forever; the master
//! sweeps tentative entries older than [`TENTATIVE_TTL`].
//!
//! # Epochs and the rebuild after an election
//! The directory lives in the acting master's memory, for one leadership epoch. A newly
//! elected master starts it empty ([`Directory::ensure_epoch`]) and rebuilds it from the
//! slaves' reports of what they host ([`Directory::claim`]): their grains keep running.
//! Two claims of one grain: the first stays, the second is refused (that slave drops its
//! activation) and the conflict is logged. Until the *rebuild window* has passed, a grain
//! nobody claimed is not placed ([`Resolution::Wait`]): a slave that has not reported yet
//! may still host it, and every such slave has stopped running grains by the end of the
//! window (its hosting lease from the old master ran out).
//!
//! Grains that run hot may have copies beyond their home; [`copies`] records them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use granary_proto::frame::SiloAddr;
use granary_proto::{CallError, GrainId};

pub mod copies;

/// How long a placement may stay unconfirmed before [`Directory::sweep`] drops it: far
/// longer than any call waits between resolving and reaching the owner.
pub const TENTATIVE_TTL: Duration = Duration::from_secs(600);

/// A slave that may receive new activations, with its last reported load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Where it serves grain traffic.
    pub silo: SiloAddr,
    /// Messages queued there, from its last heartbeat.
    pub queue_depth: u64,
}

/// The master's grain directory.
#[derive(Debug, Default)]
pub struct Directory {
    /// Entries and per-silo counts; never locked across an `.await`.
    inner: Mutex<Inner>,
    /// Grains placed since the directory was created (metrics, placement storms).
    placements: std::sync::atomic::AtomicU64,
    /// Woken by claims and at a new epoch, for resolves waiting out a rebuild.
    changed: Notify,
}

/// Where a grain lives, or when to ask again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// The grain's one activation is (or will be) on this silo.
    Owner(SiloAddr),
    /// Nobody claimed the grain yet and the rebuild window runs until then: a slave that
    /// has not reported may still host it.
    Wait(Instant),
}

/// One directory entry.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The silo that hosts (or will host) the activation.
    silo: SiloAddr,
    /// The owner itself has resolved the grain (it activates it right after).
    confirmed: bool,
    /// When the grain was placed.
    placed: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    /// Grain → where its activation is.
    entries: HashMap<GrainId, Entry>,
    /// Silo → number of entries pointing at it (placement load).
    per_silo: HashMap<SiloAddr, usize>,
    /// The leadership epoch the entries belong to.
    epoch: u64,
    /// Unclaimed grains are not placed before this (the rebuild window).
    rebuild_until: Option<Instant>,
}

impl Inner {
    fn insert(&mut self, grain: GrainId, entry: Entry) {
        if let Some(old) = self.entries.insert(grain, entry) {
            self.dec(old.silo);
        }
        *self.per_silo.entry(entry.silo).or_default() += 1;
    }

    fn dec(&mut self, silo: SiloAddr) {
        if let Some(n) = self.per_silo.get_mut(&silo) {
            *n -= 1;
            if *n == 0 {
                self.per_silo.remove(&silo);
            }
        }
    }

    fn score(&self, c: &Candidate) -> u64 {
        self.per_silo.get(&c.silo).copied().unwrap_or(0) as u64 + c.queue_depth
    }

    /// Power of two choices: the less loaded of two distinct random candidates.
    fn place(&self, candidates: &[Candidate]) -> Option<SiloAddr> {
        match candidates.len() {
            0 => None,
            1 => Some(candidates[0].silo),
            n => {
                let a = fastrand::usize(..n);
                let mut b = fastrand::usize(..n - 1);
                if b >= a {
                    b += 1;
                }
                let (ca, cb) = (&candidates[a], &candidates[b]);
                Some(if self.score(cb) < self.score(ca) {
                    cb.silo
                } else {
                    ca.silo
                })
            }
        }
    }
}

impl Directory {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("directory poisoned")
    }

    /// Where `grain` is activated, if anywhere.
    pub fn lookup(&self, grain: &GrainId) -> Option<SiloAddr> {
        self.lock().entries.get(grain).map(|e| e.silo)
    }

    /// The epoch the entries belong to (0 before the first).
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Begins `epoch` unless the directory already serves it: a new master's directory,
    /// empty, with a rebuild window of `window` from now — none when `first` (no master
    /// ever placed a grain before, so no slave can host one).
    pub fn ensure_epoch(&self, epoch: u64, window: Duration, first: bool) {
        self.ensure_epoch_at(Instant::now(), epoch, window, first);
    }

    /// [`Self::ensure_epoch`] at `now` (simulations drive the clock).
    pub(crate) fn ensure_epoch_at(&self, now: Instant, epoch: u64, window: Duration, first: bool) {
        if self.epoch() == epoch {
            return;
        }
        let mut inner = self.lock();
        if inner.epoch == epoch {
            return;
        }
        inner.entries.clear();
        inner.per_silo.clear();
        inner.epoch = epoch;
        inner.rebuild_until = (!first).then(|| now + window);
        drop(inner);
        tracing::info!(
            "directory of epoch {epoch}: {}",
            if first {
                "the cluster's first, nothing to rebuild".to_owned()
            } else {
                format!(
                    "rebuilt from the slaves' reports; grains nobody claims wait {} before they are placed",
                    humantime::format_duration(window)
                )
            }
        );
        self.changed.notify_waiters();
    }

    /// Records that `silo` hosts `grains` (its report after an admission). A grain is
    /// kept there if the directory already places it there, or if nobody holds it and
    /// the rebuild window is still open; otherwise it is refused (returned), and the
    /// silo drops its activation: it lives elsewhere, or may have lived elsewhere since
    /// (a claim after the window comes from a slave that waited cut off, perhaps
    /// declared dead, so its copy may be stale). Kept claims are confirmed entries.
    pub fn claim(&self, silo: SiloAddr, grains: Vec<GrainId>) -> Vec<GrainId> {
        self.claim_at(Instant::now(), silo, grains)
    }

    /// [`Self::claim`] at `now`.
    pub(crate) fn claim_at(
        &self,
        now: Instant,
        silo: SiloAddr,
        grains: Vec<GrainId>,
    ) -> Vec<GrainId> {
        let mut inner = self.lock();
        let open = inner.rebuild_until.is_some_and(|until| now < until);
        let mut rejected = Vec::new();
        for grain in grains {
            match inner.entries.get_mut(&grain) {
                Some(entry) if entry.silo == silo => entry.confirmed = true,
                Some(entry) => {
                    tracing::warn!(
                        "{grain} is claimed by {silo} but already lives on {}: the activation on {silo} is dropped",
                        entry.silo
                    );
                    rejected.push(grain);
                }
                None if !open => {
                    tracing::warn!(
                        "{grain} is claimed by {silo} after the rebuild window: the activation on {silo} is dropped (it may be stale)"
                    );
                    rejected.push(grain);
                }
                None => inner.insert(
                    grain,
                    Entry {
                        silo,
                        confirmed: true,
                        placed: now,
                    },
                ),
            }
        }
        drop(inner);
        self.changed.notify_waiters();
        rejected
    }

    /// Waits until a claim arrives, a new epoch starts, or `until`.
    pub async fn changed_or(&self, until: Instant) {
        let changed = self.changed.notified();
        let _ = tokio::time::timeout_at(until, changed).await;
    }

    /// The live location of `grain`, placing it on one of `candidates` if it has none
    /// (or its entry points at a silo that is not a candidate any more, i.e. dead) and
    /// the rebuild window has passed. `from` is the silo asking, if any: when the owner
    /// asks, the entry is confirmed.
    pub fn resolve(
        &self,
        grain: &GrainId,
        candidates: &[Candidate],
        from: Option<SiloAddr>,
    ) -> Result<Resolution, CallError> {
        self.resolve_at(Instant::now(), grain, candidates, from)
    }

    /// [`Self::resolve`] at `now`.
    pub(crate) fn resolve_at(
        &self,
        now: Instant,
        grain: &GrainId,
        candidates: &[Candidate],
        from: Option<SiloAddr>,
    ) -> Result<Resolution, CallError> {
        let mut inner = self.lock();
        if let Some(entry) = inner.entries.get_mut(grain) {
            if candidates.iter().any(|c| c.silo == entry.silo) {
                entry.confirmed |= from == Some(entry.silo);
                return Ok(Resolution::Owner(entry.silo));
            }
        }
        if let Some(until) = inner.rebuild_until.filter(|until| now < *until) {
            return Ok(Resolution::Wait(until));
        }
        let silo = inner.place(candidates).ok_or_else(|| {
            CallError::Unreachable("no live slave silo to place the grain on".into())
        })?;
        let entry = Entry {
            silo,
            confirmed: from == Some(silo),
            placed: now,
        };
        inner.insert(grain.clone(), entry);
        self.placements
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(Resolution::Owner(silo))
    }

    /// Grains placed since the directory was created.
    pub fn placements(&self) -> u64 {
        self.placements.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Drops placements nobody confirmed within `ttl`; returns how many.
    pub fn sweep(&self, ttl: Duration) -> usize {
        let mut inner = self.lock();
        let now = Instant::now();
        let stale: Vec<(GrainId, SiloAddr)> = inner
            .entries
            .iter()
            .filter(|(_, e)| !e.confirmed && now.saturating_duration_since(e.placed) >= ttl)
            .map(|(g, e)| (g.clone(), e.silo))
            .collect();
        for (grain, silo) in &stale {
            inner.entries.remove(grain);
            inner.dec(*silo);
        }
        stale.len()
    }

    /// Removes the entry for `grain` if it still points at `silo` (a deactivation).
    pub fn unregister(&self, grain: &GrainId, silo: SiloAddr) -> bool {
        let mut inner = self.lock();
        if inner.entries.get(grain).is_some_and(|e| e.silo == silo) {
            inner.entries.remove(grain);
            inner.dec(silo);
            true
        } else {
            false
        }
    }

    /// Drops every entry on `silo` (it left or was declared dead); returns how many.
    pub fn remove_silo(&self, silo: SiloAddr) -> usize {
        let mut inner = self.lock();
        let before = inner.entries.len();
        inner.entries.retain(|_, e| e.silo != silo);
        inner.per_silo.remove(&silo);
        before - inner.entries.len()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when no grain is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries per silo.
    pub fn counts(&self) -> HashMap<SiloAddr, usize> {
        self.lock().per_silo.clone()
    }
}

#[cfg(test)]
mod tests;
