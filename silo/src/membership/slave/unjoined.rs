//! What a slave that is not joined says about it, and how often: the first line after
//! two unanswered HANDSHAKEs (or at the next tick when a candidate rejects our cluster
//! key), then after silences of 4, 8, 16 … heartbeat intervals, up to
//! [`REPORT_MAX`](super::REPORT_MAX): one line per back-off step.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use granary_proto::packet::AuthRejection;

use super::REPORT_MAX;

/// The back-off state of the "not joined" lines.
#[derive(Debug)]
pub(super) struct Unjoined {
    /// When the slave started handshaking.
    since: Instant,
    /// HANDSHAKE rounds sent since.
    handshakes: u32,
    /// When the next line is due.
    next_report: Instant,
    /// The silence after that line.
    every: Duration,
    /// Lines reported since `since`.
    reports: u32,
    /// The last auth rejection a candidate sent, if any.
    rejected: Option<AuthRejection>,
}

impl Unjoined {
    pub(super) fn new(now: Instant, interval: Duration) -> Self {
        let first = interval * 2;
        Self {
            since: now,
            handshakes: 0,
            next_report: now + first,
            every: first,
            reports: 0,
            rejected: None,
        }
    }

    /// Lines reported so far.
    #[cfg(test)]
    pub(super) fn reports(&self) -> u32 {
        self.reports
    }

    /// A candidate refused our packet for its cluster key: a certain cause, said at the
    /// next tick.
    pub(super) fn rejected(&mut self, now: Instant, reason: AuthRejection) {
        if self.rejected.is_none() && self.reports == 0 {
            self.next_report = now;
        }
        self.rejected = Some(reason);
    }

    /// One more round of HANDSHAKEs to `targets`; logs a line when one is due.
    pub(super) fn tick(&mut self, now: Instant, targets: &[SocketAddr]) {
        self.handshakes += 1;
        if now < self.next_report {
            return;
        }
        let addr = match targets {
            [one] => format!("the master at {one}"),
            many => format!(
                "any master candidate ({})",
                many.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let waited = humantime::format_duration(Duration::from_secs(
            now.saturating_duration_since(self.since).as_secs(),
        ));
        match self.rejected {
            Some(AuthRejection::WrongKey) => tracing::warn!(
                "wrong cluster key: {addr} rejects this silo's packets; \
                 give every silo and client the same --cluster-key (GRANARY_CLUSTER_KEY)"
            ),
            Some(AuthRejection::KeyRequired) => tracing::warn!(
                "{addr} requires a cluster key and this silo has none: \
                 pass --cluster-key (GRANARY_CLUSTER_KEY)"
            ),
            Some(AuthRejection::NoKeyExpected) => tracing::warn!(
                "this silo has a cluster key but {addr} has none: \
                 give both the same --cluster-key, or neither"
            ),
            None => tracing::warn!(
                "cannot reach {addr}: no answer to {} HANDSHAKE(s) in {waited}; \
                 check that it runs and that --master names its --udp address (still trying)",
                self.handshakes
            ),
        }
        self.reports += 1;
        self.every = (self.every * 2).min(REPORT_MAX);
        self.next_report = now + self.every;
    }
}
