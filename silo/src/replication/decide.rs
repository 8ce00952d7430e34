//! How many copies a grain needs: pure functions over measured load, and
//! [`Hotness`], the per-grain windows the master decides from.
//!
//! The need is target tracking, as in Kubernetes' horizontal autoscaler: a copy should
//! stay under every threshold of the type's [`Scaling`], so the load needs
//! `max(busy / hot_busy, queued / hot_queue, rate / hot_rate)` activations (rounded
//! up). Read replicas put one activation on each silo; stateless workers run up to
//! `max_local` per silo, so they need that many fewer silos. The need is computed for
//! every report interval. Growing takes the median need over the window, so the load
//! must exceed the thresholds for more than half of it (a blip, or one odd reading,
//! adds no copy); shrinking waits until the need of every interval of the cool-down
//! was below the copy count, then shrinks to the largest of them.

use std::fmt;
use std::time::Duration;

use granary_proto::replication::{CopyKind, GrainLoad};
use granary_runtime::Scaling;
use tokio::time::Instant;

use super::window::Window;

/// The load of one grain over one interval, summed over its copies.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Load {
    /// Messages handled per second.
    pub(crate) rate: f64,
    /// Messages waiting.
    pub(crate) queue: f64,
    /// Activations' worth of handler time per second (1.0: one copy busy all along).
    pub(crate) busy: f64,
    /// Activations that carried it.
    pub(crate) activations: u32,
}

impl Load {
    /// One silo's report.
    pub(crate) fn from_report(load: &GrainLoad) -> Self {
        Self {
            rate: load.rate_milli as f64 / 1000.0,
            queue: load.queue_milli as f64 / 1000.0,
            busy: load.busy_milli as f64 / 1000.0,
            activations: load.copies,
        }
    }

    /// The sum of two loads (two silos).
    pub(crate) fn plus(self, other: Load) -> Load {
        Load {
            rate: self.rate + other.rate,
            queue: self.queue + other.queue,
            busy: self.busy + other.busy,
            activations: self.activations + other.activations,
        }
    }

    /// The mean of `loads` (zero for none).
    pub(crate) fn mean<'a>(loads: impl Iterator<Item = &'a Load>) -> Load {
        let (mut sum, mut n) = (Load::default(), 0u32);
        for load in loads {
            sum = sum.plus(*load);
            n += 1;
        }
        if n == 0 {
            return sum;
        }
        let n_f = f64::from(n);
        Load {
            rate: sum.rate / n_f,
            queue: sum.queue / n_f,
            busy: sum.busy / n_f,
            activations: sum.activations / n,
        }
    }
}

impl fmt::Display for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.0} msg/s, {:.1} queued, busy {:.0}% over {} activation(s)",
            self.rate,
            self.queue,
            self.busy * 100.0,
            self.activations
        )
    }
}

/// Activations `load` needs so that each stays under every threshold of `scaling`.
pub(crate) fn needed_activations(load: &Load, scaling: &Scaling) -> u32 {
    let mut need = 1.0f64;
    if scaling.hot_busy_pct > 0 {
        need = need.max(load.busy / (f64::from(scaling.hot_busy_pct) / 100.0));
    }
    if scaling.hot_queue > 0 {
        need = need.max(load.queue / f64::from(scaling.hot_queue));
    }
    if scaling.hot_rate > 0 {
        need = need.max(load.rate / f64::from(scaling.hot_rate));
    }
    // Rounded up, but a hair over a whole number (0.75 busy / 0.75 = 1.000001) is not
    // another copy.
    (need - 1e-6).ceil().clamp(1.0, f64::from(u32::MAX)) as u32
}

/// Silos `load` needs: one activation per silo for read replicas, up to `max_local`
/// per silo for stateless workers; between 1 and `max_copies`.
pub(crate) fn needed_silos(
    load: &Load,
    scaling: &Scaling,
    kind: CopyKind,
    max_local: usize,
) -> usize {
    let activations = needed_activations(load, scaling) as usize;
    let silos = match kind {
        CopyKind::ReadReplicas => activations,
        CopyKind::StatelessWorker => activations.div_ceil(max_local.max(1)),
    };
    silos.clamp(1, usize::from(scaling.max_copies.max(1)))
}

/// What the master does with one grain.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Decision {
    /// Nothing.
    Keep,
    /// Add copies until the grain spreads over `to` silos; `load` (the window's mean)
    /// is why.
    Grow {
        /// Silos wanted.
        to: usize,
        /// The measured load.
        load: Load,
    },
    /// Remove copies until `to` silos remain; `load` (the last interval) is why.
    Shrink {
        /// Silos wanted.
        to: usize,
        /// The measured load.
        load: Load,
    },
}

/// The windows one replicated grain is judged by.
#[derive(Debug)]
pub(crate) struct Hotness {
    /// The policy.
    scaling: Scaling,
    /// Read replicas or stateless workers.
    kind: CopyKind,
    /// Local workers per silo (stateless workers).
    max_local: usize,
    /// Load and silos needed per interval over `scaling.window`: grows copies.
    load: Window<(Load, usize)>,
    /// Silos needed per interval over `scaling.cool_down`: shrinks them.
    needs: Window<usize>,
    /// The last interval's load.
    last: Load,
    /// When an interval last carried any load.
    last_busy: Option<Instant>,
}

impl Hotness {
    /// Fresh windows for a grain of `kind` under `scaling`.
    pub(crate) fn new(kind: CopyKind, scaling: Scaling, max_local: usize) -> Self {
        Self {
            scaling,
            kind,
            max_local,
            load: Window::new(scaling.window),
            needs: Window::new(scaling.cool_down),
            last: Load::default(),
            last_busy: None,
        }
    }

    /// The cool-down of the grain's policy.
    pub(crate) fn cool_down(&self) -> Duration {
        self.scaling.cool_down
    }

    /// The most silos its copies may spread over.
    pub(crate) fn max_copies(&self) -> usize {
        usize::from(self.scaling.max_copies.max(1))
    }

    /// Records one interval's load, measured at `now`.
    pub(crate) fn observe(&mut self, now: Instant, load: Load) {
        let need = needed_silos(&load, &self.scaling, self.kind, self.max_local);
        self.load.push(now, (load, need));
        self.needs.push(now, need);
        self.last = load;
        if load.rate > 0.0 || load.queue > 0.0 || load.busy > 0.0 {
            self.last_busy = Some(now);
        }
    }

    /// True when no interval carried load for the whole cool-down (the grain can be
    /// forgotten once it has no copies either).
    pub(crate) fn is_cold(&self, now: Instant) -> bool {
        let quiet = self
            .last_busy
            .is_none_or(|t| now.saturating_duration_since(t) >= self.scaling.cool_down);
        // Never busy: cold once watched for a cool-down.
        self.needs.is_full(now) && quiet
    }

    /// What to do with a grain that spreads over `current` silos.
    pub(crate) fn decide(&self, now: Instant, current: usize) -> Decision {
        if self.load.is_full(now) {
            let mut needs: Vec<usize> = self.load.samples().map(|(_, n)| *n).collect();
            needs.sort_unstable();
            let want = needs.get(needs.len() / 2).copied().unwrap_or(1);
            if want > current && current < self.max_copies() {
                return Decision::Grow {
                    to: want.min(self.max_copies()),
                    load: Load::mean(self.load.samples().map(|(l, _)| l)),
                };
            }
        }
        if current > 1 && self.needs.is_full(now) {
            let want = self.needs.samples().copied().max().unwrap_or(1);
            if want < current {
                return Decision::Shrink {
                    to: want,
                    load: self.last,
                };
            }
        }
        Decision::Keep
    }

    /// The copies changed: the scale-out window starts over, so the next growth is
    /// judged on load measured with the new copies.
    pub(crate) fn changed(&mut self) {
        self.load.reset();
    }

    /// Number of load samples in the window (tests).
    #[cfg(test)]
    pub(crate) fn samples(&self) -> usize {
        self.load.len()
    }
}
