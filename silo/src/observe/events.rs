//! [`EventLog`]: the last few hundred things that happened to the cluster as this silo
//! saw them (joins, departures, deaths, fencing, placement storms), for the dashboard's
//! feed and `client status`. The master's log holds the cluster's story; a slave's holds
//! what only it sees (its own fencing).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use granary_proto::packet::SiloId;
use granary_proto::status::{ClusterEvent, ClusterEventKind};

/// Events kept; older ones are dropped.
pub const EVENT_LOG_CAPACITY: usize = 256;

/// A bounded, in-memory log of cluster events.
#[derive(Debug, Default)]
pub struct EventLog {
    /// Oldest first; never locked across an `.await`.
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    events: VecDeque<ClusterEvent>,
    next_seq: u64,
}

impl EventLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `kind` happened to `silo`, with a sentence for people.
    pub fn record(&self, kind: ClusterEventKind, silo: SiloId, detail: impl Into<String>) {
        let at_unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.next_seq += 1;
        let event = ClusterEvent {
            seq: inner.next_seq,
            at_unix_ms,
            kind,
            silo,
            detail: detail.into(),
        };
        if inner.events.len() == EVENT_LOG_CAPACITY {
            inner.events.pop_front();
        }
        inner.events.push_back(event);
    }

    /// The events kept, oldest first.
    pub fn recent(&self) -> Vec<ClusterEvent> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.events.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_the_newest_events_in_order() {
        let log = EventLog::new();
        let silo = SiloId::new(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap(),
            1,
        );
        for i in 0..EVENT_LOG_CAPACITY + 5 {
            log.record(ClusterEventKind::Joined, silo, format!("event {i}"));
        }
        let recent = log.recent();
        assert_eq!(recent.len(), EVENT_LOG_CAPACITY);
        assert_eq!(recent[0].detail, "event 5");
        assert!(recent.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    }
}
