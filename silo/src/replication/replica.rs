//! A read replica's link to its primary: the read [`Lease`] and [`follow`], the task
//! that keeps the replica's state in step.
//!
//! The replica *pulls*: it sends [`ReplicaRequest::Sync`] to the primary's silo, which
//! answers as soon as the primary has a newer durable state, or after a poll interval
//! with none. Every answer renews the lease, counted from when the request was **sent**
//! (on the replica's monotonic clock), so the lease can only end earlier than the
//! primary's own view of it, never later. Without an answer the lease runs out and the
//! replica stops serving reads (they go to the primary); when the primary says it is
//! not the primary any more (it deactivated, or the replica left the set) the replica
//! deactivates.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use granary_net::transport::Peers;
use granary_proto::frame::{Request, Response, SiloAddr};
use granary_proto::replication::{ReplicaRequest, ReplicaResponse};
use granary_proto::GrainId;
use granary_runtime::replication::{ReplicaGate, Snapshot};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Until when a replica may serve reads, on the tokio monotonic clock.
#[derive(Debug)]
pub(crate) struct Lease {
    /// The clock's origin for `until_us`.
    base: Instant,
    /// Microseconds after `base` at which the lease ends (0: never granted).
    until_us: AtomicU64,
}

impl Default for Lease {
    fn default() -> Self {
        Self::new()
    }
}

impl Lease {
    /// A lease not granted yet.
    pub(crate) fn new() -> Self {
        Self {
            base: Instant::now(),
            until_us: AtomicU64::new(0),
        }
    }

    /// The primary granted `length`, in answer to a request sent at `sent`.
    pub(crate) fn renew(&self, sent: Instant, length: Duration) {
        let until = (sent + length).saturating_duration_since(self.base);
        let until = u64::try_from(until.as_micros()).unwrap_or(u64::MAX);
        self.until_us.fetch_max(until, Ordering::AcqRel);
    }

    /// Ends the lease now (the primary is gone).
    pub(crate) fn revoke(&self) {
        self.until_us.store(0, Ordering::Release);
    }

    /// True while the lease runs.
    pub(crate) fn is_valid(&self) -> bool {
        let now = Instant::now().saturating_duration_since(self.base);
        let now = u64::try_from(now.as_micros()).unwrap_or(u64::MAX);
        now < self.until_us.load(Ordering::Acquire)
    }
}

impl ReplicaGate for Lease {
    fn may_serve(&self) -> bool {
        self.is_valid()
    }
}

/// What [`follow`] needs.
#[derive(Debug)]
pub(crate) struct Follow {
    /// The grain.
    pub(crate) grain: GrainId,
    /// This silo (the primary checks it is in the set).
    pub(crate) me: SiloAddr,
    /// The primary's silo.
    pub(crate) primary: SiloAddr,
    /// Connections.
    pub(crate) peers: Peers,
    /// The lease the answers renew.
    pub(crate) lease: Arc<Lease>,
    /// Where the primary's snapshots go (the replica activation receives them).
    pub(crate) updates: watch::Sender<Option<Snapshot>>,
    /// Stops the replica activation (when its primary is gone).
    pub(crate) stop_replica: CancellationToken,
    /// Ends this task (shutdown, or the replica ended).
    pub(crate) stop: CancellationToken,
    /// How long the primary may hold a poll (a quarter of the lease).
    pub(crate) poll: Duration,
}

/// Consecutive leases without an answer after which the replica gives up.
const GIVE_UP_AFTER_LEASES: u32 = 3;

/// Keeps a replica in step with its primary until the primary or the replica is gone.
pub(crate) async fn follow(f: Follow) {
    let mut activation = None;
    let mut have = 0;
    let mut last_answer = Instant::now();
    let mut pause = Duration::from_millis(10);
    let wait_ms = u32::try_from(f.poll.as_millis()).unwrap_or(u32::MAX);
    loop {
        if f.updates.is_closed() {
            return; // the replica activation ended
        }
        let sent = Instant::now();
        let request = Request::Replica(ReplicaRequest::Sync {
            grain: f.grain.clone(),
            from: f.me,
            activation,
            have,
            wait_ms,
        });
        let deadline = sent + f.poll * 2 + Duration::from_secs(1);
        let answer = tokio::select! {
            () = f.stop.cancelled() => return,
            answer = f.peers.call(f.primary.addr, request, deadline) => answer,
        };
        match answer {
            Ok(Response::Replica(ReplicaResponse::Synced {
                activation: primary,
                version,
                state,
                lease_ms,
            })) => {
                if activation.is_some_and(|a| a != primary) {
                    break; // another primary activation: not ours
                }
                activation = Some(primary);
                if let Some(state) = state {
                    if version >= have || f.updates.borrow().is_none() {
                        have = version;
                        f.updates.send_replace(Some(Snapshot {
                            version,
                            state: Arc::new(state),
                        }));
                    }
                }
                f.lease
                    .renew(sent, Duration::from_millis(u64::from(lease_ms)));
                last_answer = Instant::now();
                pause = Duration::from_millis(10);
            }
            Ok(Response::Replica(ReplicaResponse::NotPrimary)) => break,
            other => {
                tracing::debug!(grain = %f.grain, primary = %f.primary, answer = ?other, "replica sync failed; retrying");
                let lease = f.poll * 4;
                if last_answer.elapsed() > lease * GIVE_UP_AFTER_LEASES {
                    tracing::info!(grain = %f.grain, primary = %f.primary, "replica lost its primary (no answer for {:?}); deactivating", last_answer.elapsed());
                    break;
                }
                tokio::select! {
                    () = f.stop.cancelled() => return,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(f.poll);
            }
        }
    }
    f.lease.revoke();
    f.stop_replica.cancel();
}
