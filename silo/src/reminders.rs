//! The reminder keeper: keeps the reminder shards running (see
//! [`granary_runtime::reminder`] for where reminders live and what a tick guarantees).
//!
//! Reminders are kept by [`REMINDER_SHARDS`] system grains, activated like any grain.
//! Nothing would activate a shard after its slave died, or after a full cluster
//! restart, so one silo keeps them: the acting master in a cluster (a standby does
//! nothing until it acts), or a stand-alone silo itself. Every [`KEEP_INTERVAL`] it
//! - reads the stored table of each shard it does not know to hold reminders (a shard
//!   with none keeps no record), and
//! - asks each shard that holds reminders to stay awake ([`ShardWake`]): the ask
//!   activates a shard that is not active, wherever the directory places it, and the
//!   shard answers whether it still holds any.
//!
//! So a shard is back within about [`KEEP_INTERVAL`] of the cluster being able to place
//! it, and delivers the ticks it missed then. A cluster that uses no reminder costs
//! [`REMINDER_SHARDS`] reads of absent records per interval on the acting master.

use std::sync::Arc;
use std::time::Duration;

use granary_runtime::reminder::{shard_id, shard_key, ReminderShard, ShardWake, REMINDER_SHARDS};
use granary_runtime::{GrainRef, GrainStorage, Router};
use tokio_util::sync::CancellationToken;

/// How often the keeper looks at the shards.
pub const KEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How long a wake may take (activation included).
const WAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether this silo keeps the reminders now (the acting master; always for a
/// stand-alone silo).
pub(crate) type Acting = Box<dyn Fn() -> bool + Send + Sync>;

/// Runs the keeper until `stop`.
pub(crate) async fn keep_reminders(
    storage: Arc<dyn GrainStorage>,
    router: Arc<dyn Router>,
    acting: Acting,
    stop: CancellationToken,
) {
    let mut interval = tokio::time::interval(KEEP_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Shards known to hold reminders (their record was found, or they said so).
    let mut known = vec![false; REMINDER_SHARDS as usize];
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = interval.tick() => {}
        }
        if !acting() {
            known.fill(false);
            continue;
        }
        let rounds = (0..REMINDER_SHARDS)
            .map(|shard| keep_shard(&*storage, &router, shard, known[shard as usize]));
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            outcome = futures::future::join_all(rounds) => outcome,
        };
        for (shard, holds) in outcome.into_iter().enumerate() {
            known[shard] = holds;
        }
    }
}

/// One round for one shard: reads its record unless it is `known` to hold reminders,
/// wakes it if it does. Returns whether it is known to hold reminders afterwards.
async fn keep_shard(
    storage: &dyn GrainStorage,
    router: &Arc<dyn Router>,
    shard: u32,
    known: bool,
) -> bool {
    if !known {
        match storage.read(&shard_id(shard)).await {
            Ok(Some(_)) => {}
            Ok(None) => return false,
            Err(e) => {
                tracing::debug!(shard, error = %e, "reminder keeper: the shard's table could not be read");
                return false;
            }
        }
    }
    let wake = GrainRef::<ReminderShard>::new(router.clone(), shard_key(shard))
        .ask(ShardWake)
        .timeout(WAKE_TIMEOUT)
        .await;
    match wake {
        Ok(holds) => holds,
        Err(e) => {
            tracing::debug!(shard, error = %e, "reminder keeper: the shard did not answer; trying again");
            true
        }
    }
}
