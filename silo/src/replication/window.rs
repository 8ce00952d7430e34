//! [`Window`]: the samples of the last `span` of time, oldest first.
//!
//! Time is the tokio clock ([`tokio::time::Instant`]), so tests drive windows and
//! cool-downs with a paused clock.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// Timestamped samples over a sliding span of time.
#[derive(Debug, Clone)]
pub(crate) struct Window<T> {
    /// How far back samples are kept.
    span: Duration,
    /// `(when, sample)`, oldest first.
    samples: VecDeque<(Instant, T)>,
    /// When the first sample was pushed (the window is *full* once `span` has passed
    /// since then).
    since: Option<Instant>,
}

impl<T> Window<T> {
    /// An empty window over `span`.
    pub(crate) fn new(span: Duration) -> Self {
        Self {
            span,
            samples: VecDeque::new(),
            since: None,
        }
    }

    /// Adds `sample` taken at `at`, dropping samples older than `at - span`.
    pub(crate) fn push(&mut self, at: Instant, sample: T) {
        self.since.get_or_insert(at);
        self.samples.push_back((at, sample));
        while let Some((t, _)) = self.samples.front() {
            if at.saturating_duration_since(*t) > self.span {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// True once samples have been pushed for at least the whole span (so a mean
    /// speaks for the whole window, not for a blip).
    pub(crate) fn is_full(&self, now: Instant) -> bool {
        self.since
            .is_some_and(|since| now.saturating_duration_since(since) >= self.span)
    }

    /// Forgets everything: the window fills again from the next sample.
    pub(crate) fn reset(&mut self) {
        self.samples.clear();
        self.since = None;
    }

    /// The samples in the window, oldest first.
    pub(crate) fn samples(&self) -> impl Iterator<Item = &T> {
        self.samples.iter().map(|(_, s)| s)
    }

    /// Number of samples in the window.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.samples.len()
    }
}

#[cfg(test)]
mod tests;
