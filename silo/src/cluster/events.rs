//! [`ClusterSilo::membership_events`]: this silo's membership snapshots, diffed into
//! [`MembershipEvent`]s for programs that react to node failure.
//!
//! The diffing itself is [`MembershipTracker`] (shared with the client's stream, which
//! diffs polled status reports); this module turns a [`MembershipSnapshot`] into the
//! tracker's view and the `watch` channel of snapshots into a stream.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::stream::{self, Stream, StreamExt};
use granary_proto::packet::SiloId;
use granary_proto::status::{MemberPhase, MembershipEvent, MembershipTracker};
use tokio::sync::watch;

use super::ClusterSilo;
use crate::membership::{MemberStatus, MembershipSnapshot};

impl ClusterSilo {
    /// The membership changes this silo sees from now on, as a stream: a silo joined,
    /// left or died (each reported once), or another master took over.
    ///
    /// The stream starts from the current membership (which is not reported) and
    /// follows every new snapshot: on the master, as soon as a silo joins or says
    /// goodbye, and `missed_heartbeats` heartbeat intervals after one stops answering;
    /// on a slave, when the master tells it. A watcher that falls behind does not miss
    /// a change: snapshots keep tombstones of recent departures. The stream ends when
    /// the silo shuts down.
    ///
    /// ```no_run
    /// # async fn run(silo: &granary_silo::ClusterSilo) {
    /// use futures::StreamExt;
    /// use granary_proto::status::MembershipEvent;
    ///
    /// let mut events = silo.membership_events();
    /// while let Some(event) = events.next().await {
    ///     match event {
    ///         MembershipEvent::SiloDied(id) => println!("lost {id}: its grains move"),
    ///         other => println!("{other:?}"),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn membership_events(
        &self,
    ) -> impl Stream<Item = MembershipEvent> + Send + Unpin + 'static {
        events(self.subscribe())
    }
}

/// The events of the snapshots `updates` publishes after the current one.
pub(crate) fn events(
    mut updates: watch::Receiver<Arc<MembershipSnapshot>>,
) -> impl Stream<Item = MembershipEvent> + Send + Unpin + 'static {
    let current = updates.borrow_and_update().clone();
    let (master, members) = view(&current);
    let tracker = MembershipTracker::new(master, members);
    stream::unfold(
        (updates, tracker, VecDeque::new()),
        |(mut updates, mut tracker, mut pending)| async move {
            loop {
                if let Some(event) = pending.pop_front() {
                    return Some((event, (updates, tracker, pending)));
                }
                // Err only once the membership task is gone and every value was seen.
                updates.changed().await.ok()?;
                let snapshot = updates.borrow_and_update().clone();
                let (master, members) = view(&snapshot);
                pending.extend(tracker.update(master, members));
            }
        },
    )
    .boxed()
}

/// A snapshot as the tracker sees it: the master it follows and every member's phase.
pub(crate) fn view(snapshot: &MembershipSnapshot) -> (Option<SiloId>, Vec<(SiloId, MemberPhase)>) {
    let members = snapshot
        .members
        .values()
        .map(|m| {
            let phase = match m.status {
                MemberStatus::Active => MemberPhase::Active,
                MemberStatus::ShuttingDown => MemberPhase::Left,
                MemberStatus::Dead => MemberPhase::Dead,
            };
            (m.id, phase)
        })
        .collect();
    (snapshot.master, members)
}

#[cfg(test)]
mod tests;
