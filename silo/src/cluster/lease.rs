//! Leadership through a lease record in the store every silo shares (MongoDB), so the
//! last master candidate standing can act alone.
//!
//! The record (`granary.leader/v1` / `master` in the grain store, written with the
//! store's etag compare-and-swap) holds the acting master's epoch, its id and a renewal
//! counter. The holder renews it every candidate beat; its lease runs `leader_lease`
//! from when it *sent* a renewal that succeeded. Another candidate takes over only after
//! it saw the record unchanged (same etag) for `vote_guard`, which is longer: every
//! renewal changes the etag, so by then the holder's lease has run out, on any clock that
//! runs at the usual rate. Candidates wait longer the lower their address ranks (Bully:
//! the highest live candidate takes over first).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use granary_proto::codec;
use granary_proto::packet::SiloId;
use granary_proto::GrainId;
use granary_runtime::{GrainStorage, StorageError};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::membership::{ExternalLease, Timing};

/// The reserved grain type of the lease record (type names starting with `granary.` are
/// Granary's own).
pub(crate) const LEASE_TYPE: &str = "granary.leader/v1";

/// The lease record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct LeaseRecord {
    epoch: u64,
    holder: SiloId,
    renewals: u64,
}

fn lease_id() -> GrainId {
    GrainId::new(LEASE_TYPE, "master")
}

/// Runs for a candidate in shared-store mode: takes, renews or loses the lease and
/// tells the membership task (`verdicts`).
pub(super) async fn hold_lease(
    store: Arc<dyn GrainStorage>,
    me: SiloId,
    peers: Vec<SocketAddr>,
    timing: Timing,
    verdicts: mpsc::Sender<ExternalLease>,
    stop: CancellationToken,
) {
    // Bully order: candidates with higher addresses try first.
    let rank = peers.iter().filter(|p| **p > me.udp).count() as u32;
    let patience = timing.vote_guard + timing.candidate_beat * rank;
    let mut held: Option<(LeaseRecord, String)> = None;
    let mut seen: Option<(String, Instant)> = None;
    let mut tick = tokio::time::interval(timing.candidate_beat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let sent = Instant::now();
        if let Some((record, etag)) = held.take() {
            let renewed = LeaseRecord {
                renewals: record.renewals + 1,
                ..record
            };
            match write(&store, &renewed, Some(&etag)).await {
                Ok(etag) => {
                    held = Some((renewed, etag));
                    let until = sent + timing.leader_lease;
                    let _ = verdicts
                        .send(ExternalLease::Held {
                            epoch: renewed.epoch,
                            until,
                        })
                        .await;
                }
                Err(e) if e.is_conflict() => {
                    tracing::warn!("another candidate took the master lease in the shared store");
                    let _ = verdicts.send(ExternalLease::Lost).await;
                }
                // The store did not answer: keep trying while the lease lasts (the
                // membership task steps down by itself when it runs out).
                Err(e) => {
                    tracing::warn!("renewing the master lease in the shared store: {e}");
                    held = Some((record, etag));
                }
            }
            continue;
        }
        let current = match store.read(&lease_id()).await {
            Ok(current) => current,
            Err(e) => {
                tracing::debug!("reading the master lease: {e}");
                continue;
            }
        };
        let (next, expected) = match current {
            None => (
                LeaseRecord {
                    epoch: 1,
                    holder: me,
                    renewals: 0,
                },
                None,
            ),
            Some(stored) => {
                let record: LeaseRecord = match codec::decode(&stored.data) {
                    Ok(record) => record,
                    Err(e) => {
                        tracing::error!(
                            "the master lease record is unreadable ({e}); taking it over"
                        );
                        LeaseRecord {
                            epoch: 0,
                            holder: me,
                            renewals: 0,
                        }
                    }
                };
                let unchanged_since = match &seen {
                    Some((etag, since)) if *etag == stored.etag => *since,
                    _ => {
                        seen = Some((stored.etag.clone(), sent));
                        sent
                    }
                };
                if sent.saturating_duration_since(unchanged_since) < patience {
                    continue;
                }
                (
                    LeaseRecord {
                        epoch: record.epoch + 1,
                        holder: me,
                        renewals: 0,
                    },
                    Some(stored.etag),
                )
            }
        };
        match write(&store, &next, expected.as_deref()).await {
            Ok(etag) => {
                tracing::info!(
                    "took the master lease in the shared store for epoch {}",
                    next.epoch
                );
                held = Some((next, etag));
                seen = None;
                let _ = verdicts
                    .send(ExternalLease::Held {
                        epoch: next.epoch,
                        until: sent + timing.leader_lease,
                    })
                    .await;
            }
            Err(e) if e.is_conflict() => seen = None,
            Err(e) => tracing::debug!("taking the master lease: {e}"),
        }
    }
}

async fn write(
    store: &Arc<dyn GrainStorage>,
    record: &LeaseRecord,
    expected: Option<&str>,
) -> Result<String, StorageError> {
    let data = codec::encode(record).map_err(|e| StorageError::Failed(e.to_string()))?;
    store.write(&lease_id(), &data, expected).await
}
