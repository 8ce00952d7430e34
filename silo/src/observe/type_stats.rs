//! [`TypeStats`]: what one grain type did on this silo, counted by its activations'
//! turns (the runtime's [`TurnObserver`]) and by its dispatcher. Plain atomics, read at
//! scrape time by the metrics exporter and by status requests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use granary_proto::status::{LatencyBuckets, LATENCY_BOUNDS_US};
use granary_proto::CallError;
use granary_runtime::activation::TurnObserver;

/// Counters of one grain type on one silo.
#[derive(Debug)]
pub struct TypeStats {
    /// The type's wire name.
    grain_type: &'static str,
    /// Messages handled, per message wire name (the names registered for the type).
    messages: Vec<(&'static str, AtomicU64)>,
    /// Handler latency, one count per [`LATENCY_BOUNDS_US`] bucket plus overflow.
    latency: Vec<AtomicU64>,
    /// Sum of handler latencies, in microseconds.
    latency_sum_us: AtomicU64,
    /// Turns that ended in each [`CallError::KINDS`] error.
    failures: Vec<AtomicU64>,
    /// Activations created.
    activated: AtomicU64,
    /// Activations that ended.
    deactivated: AtomicU64,
}

/// A copy of [`TypeStats`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeStatsSnapshot {
    /// The type's wire name.
    pub grain_type: &'static str,
    /// Messages handled per message name.
    pub messages: Vec<(&'static str, u64)>,
    /// Handler latency.
    pub latency: LatencyBuckets,
    /// Failed turns per [`CallError::kind`] (only kinds that occurred).
    pub failures: Vec<(&'static str, u64)>,
    /// Activations created.
    pub activated: u64,
    /// Activations that ended.
    pub deactivated: u64,
}

impl TypeStatsSnapshot {
    /// Messages handled, all message types.
    pub fn messages_total(&self) -> u64 {
        self.messages.iter().map(|(_, n)| n).sum()
    }
}

impl TypeStats {
    /// Counters for `grain_type`, whose messages are named `messages`.
    pub fn new(grain_type: &'static str, messages: impl IntoIterator<Item = &'static str>) -> Self {
        Self {
            grain_type,
            messages: messages
                .into_iter()
                .map(|m| (m, AtomicU64::new(0)))
                .collect(),
            latency: (0..=LATENCY_BOUNDS_US.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            latency_sum_us: AtomicU64::new(0),
            failures: CallError::KINDS.iter().map(|_| AtomicU64::new(0)).collect(),
            activated: AtomicU64::new(0),
            deactivated: AtomicU64::new(0),
        }
    }

    /// An activation was created.
    pub(crate) fn activation_created(&self) {
        self.activated.fetch_add(1, Ordering::Relaxed);
    }

    /// An activation ended.
    pub(crate) fn activation_ended(&self) {
        self.deactivated.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> TypeStatsSnapshot {
        TypeStatsSnapshot {
            grain_type: self.grain_type,
            messages: self
                .messages
                .iter()
                .map(|(name, n)| (*name, n.load(Ordering::Relaxed)))
                .collect(),
            latency: LatencyBuckets {
                counts: self
                    .latency
                    .iter()
                    .map(|c| c.load(Ordering::Relaxed))
                    .collect(),
                sum_us: self.latency_sum_us.load(Ordering::Relaxed),
            },
            failures: CallError::KINDS
                .iter()
                .zip(&self.failures)
                .map(|(kind, n)| (*kind, n.load(Ordering::Relaxed)))
                .filter(|(_, n)| *n > 0)
                .collect(),
            activated: self.activated.load(Ordering::Relaxed),
            deactivated: self.deactivated.load(Ordering::Relaxed),
        }
    }
}

impl TurnObserver for TypeStats {
    fn turn(&self, message: &'static str, elapsed: Duration, failed: Option<&CallError>) {
        if let Some((_, n)) = self.messages.iter().find(|(name, _)| *name == message) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        self.latency[LatencyBuckets::bucket_of(elapsed)].fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
        if let Some(err) = failed {
            let kind = err.kind();
            if let Some(i) = CallError::KINDS.iter().position(|k| *k == kind) {
                self.failures[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_are_counted_per_message_with_latency_and_failures() {
        let stats = TypeStats::new("t/v1", ["A", "B"]);
        stats.turn("A", Duration::from_micros(10), None);
        stats.turn("A", Duration::from_micros(100), None);
        stats.turn(
            "B",
            Duration::from_millis(3),
            Some(&CallError::Handler("no".into())),
        );
        stats.activation_created();
        let snap = stats.snapshot();
        assert_eq!(snap.messages, vec![("A", 2), ("B", 1)]);
        assert_eq!(snap.messages_total(), 3);
        assert_eq!(snap.latency.count(), 3);
        assert_eq!(snap.latency.sum_us, 3_110);
        assert_eq!(snap.failures, vec![("handler", 1)]);
        assert_eq!((snap.activated, snap.deactivated), (1, 0));
    }
}
