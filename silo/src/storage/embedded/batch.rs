//! One transaction of grain writes and clears (group commit) and, on the acting master of
//! a replicated store, the batch's new [`StorePosition`] and its hand-off to the
//! replicator, which answers the waiting callers once a majority holds the batch.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use granary_proto::replica::{StoreChange, StorePosition};
use granary_runtime::{Etag, StorageError};
use redb::{Database, ReadableTable};
use tokio::sync::{mpsc, oneshot};

use super::replica::{read_position, write_position};
use super::{
    conflict, current_etag, encode, failed, record_id, refuse, Mutation, ETAG_COUNTER, GRAINS, META,
};

/// How the writer of a replicated store reaches the replicator.
#[derive(Debug)]
pub(crate) struct LeaderHook {
    /// The epoch this candidate acts as master for; 0 while it does not (writes are then
    /// refused: a standby's store only takes what the acting master sends).
    epoch: AtomicU64,
    /// Where committed batches go.
    committed: mpsc::UnboundedSender<Committed>,
}

impl LeaderHook {
    /// A hook sending committed batches to `committed`; not acting yet.
    pub(crate) fn new(committed: mpsc::UnboundedSender<Committed>) -> Self {
        Self {
            epoch: AtomicU64::new(0),
            committed,
        }
    }

    /// The epoch writes are accepted for (0: none).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Accept writes for `epoch` (0: refuse every write).
    pub(crate) fn set_epoch(&self, epoch: u64) {
        self.epoch.store(epoch, Ordering::Release);
    }
}

/// A batch the acting master committed locally, to be replicated before its callers are
/// answered.
#[derive(Debug)]
pub(crate) struct Committed {
    /// Where the store stood before the batch.
    pub(crate) prev: StorePosition,
    /// Where the batch brought it.
    pub(crate) next: StorePosition,
    /// The record changes.
    pub(crate) changes: Vec<StoreChange>,
    /// The callers waiting for it.
    pub(crate) waiters: Vec<Waiter>,
}

/// A caller waiting for its write, clear or barrier to be replicated.
#[derive(Debug)]
pub(crate) enum Waiter {
    /// A write; its new etag.
    Write(oneshot::Sender<Result<Etag, StorageError>>, Etag),
    /// A clear.
    Clear(oneshot::Sender<Result<(), StorageError>>),
    /// The acting master's first batch of its epoch.
    Barrier(oneshot::Sender<Result<(), StorageError>>),
}

impl Waiter {
    /// The batch is held by a majority: done.
    pub(crate) fn complete(self) {
        match self {
            Waiter::Write(reply, etag) => {
                let _ = reply.send(Ok(etag));
            }
            Waiter::Clear(reply) | Waiter::Barrier(reply) => {
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// The batch's fate is unknown (leadership lost before a majority confirmed it).
    pub(crate) fn fail(self, err: StorageError) {
        match self {
            Waiter::Write(reply, _) => {
                let _ = reply.send(Err(err));
            }
            Waiter::Clear(reply) | Waiter::Barrier(reply) => {
                let _ = reply.send(Err(err));
            }
        }
    }
}

/// What one mutation came to, if the batch commits: a waiter for a change, or the
/// answer to give at once (refusals, and clears of nothing).
enum Outcome {
    Changed(Waiter),
    Write(
        oneshot::Sender<Result<Etag, StorageError>>,
        Result<Etag, StorageError>,
    ),
    Clear(
        oneshot::Sender<Result<(), StorageError>>,
        Result<(), StorageError>,
    ),
}

/// Applies `batch` (writes, clears, barriers) in one transaction, commits, and answers
/// every caller — or, with a leader hook, hands the changes and their callers to the
/// replicator. Returns false if the batch failed on a database error (the handle may
/// need reopening).
pub(super) fn apply(
    db: &Database,
    path: &Path,
    session: u64,
    leader: Option<&Arc<LeaderHook>>,
    batch: Vec<Mutation>,
) -> bool {
    let acting = leader.map(|hook| hook.epoch());
    let (batch, refused): (Vec<Mutation>, Vec<Mutation>) =
        batch.into_iter().partition(|m| match (acting, m) {
            (None, _) => true,
            (Some(epoch), Mutation::Write { epoch: e, .. } | Mutation::Clear { epoch: e, .. }) => {
                epoch != 0 && *e == Some(epoch)
            }
            (Some(epoch), Mutation::Barrier { epoch: e, .. }) => epoch != 0 && *e == epoch,
            (Some(_), _) => false,
        });
    refuse(
        refused,
        &StorageError::Unavailable(
            "this candidate is not the acting master: its store only takes what the master replicates".into(),
        ),
    );
    if batch.is_empty() {
        return true;
    }
    let mut changes = Vec::new();
    let mut positions = None;
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(batch.len());
    let mut pending = batch.into_iter();
    let committed = (|| {
        let txn = db.begin_write().map_err(|e| failed(path, "writing", e))?;
        {
            let mut grains = txn
                .open_table(GRAINS)
                .map_err(|e| failed(path, "writing", e))?;
            let mut meta = txn
                .open_table(META)
                .map_err(|e| failed(path, "writing", e))?;
            let start = meta
                .get(ETAG_COUNTER)
                .map_err(|e| failed(path, "writing", e))?
                .map_or(0, |g| g.value());
            let mut counter = start;
            let mut barrier = false;
            for mutation in pending.by_ref() {
                let (grain, expected) = match &mutation {
                    Mutation::Write {
                        grain, expected, ..
                    }
                    | Mutation::Clear {
                        grain, expected, ..
                    } => (grain.clone(), expected.clone()),
                    Mutation::Barrier { .. } => {
                        let Mutation::Barrier { reply, .. } = mutation else {
                            unreachable!("matched above")
                        };
                        barrier = true;
                        outcomes.push(Outcome::Changed(Waiter::Barrier(reply)));
                        continue;
                    }
                    Mutation::Replicate { .. } | Mutation::Snapshot { .. } => {
                        unreachable!("applied alone")
                    }
                };
                let id = record_id(&grain);
                let found = match current_etag(&grain, &grains, &id, path) {
                    Ok(found) => found,
                    Err(e @ StorageError::Corrupt(_)) => {
                        outcomes.push(refused_outcome(mutation, e));
                        continue;
                    }
                    Err(e) => {
                        refuse(vec![mutation], &e);
                        return Err(e);
                    }
                };
                if found.as_deref() != expected.as_deref() {
                    let err = conflict(&grain, expected.as_deref(), found);
                    outcomes.push(refused_outcome(mutation, err));
                    continue;
                }
                match mutation {
                    Mutation::Write { data, reply, .. } => {
                        counter += 1;
                        let etag = format!("{session:x}-{counter}");
                        let record = encode(&etag, &data);
                        if let Err(e) = grains.insert(id.as_str(), record.as_slice()) {
                            let e = failed(path, "writing", e);
                            let _ = reply.send(Err(e.clone()));
                            return Err(e);
                        }
                        if acting.is_some() {
                            changes.push(StoreChange::Put { id, record });
                            outcomes.push(Outcome::Changed(Waiter::Write(reply, etag)));
                        } else {
                            outcomes.push(Outcome::Write(reply, Ok(etag)));
                        }
                    }
                    Mutation::Clear { reply, .. } => {
                        if found.is_some() {
                            if let Err(e) = grains.remove(id.as_str()) {
                                let e = failed(path, "clearing", e);
                                let _ = reply.send(Err(e.clone()));
                                return Err(e);
                            }
                            if acting.is_some() {
                                changes.push(StoreChange::Delete { id });
                                outcomes.push(Outcome::Changed(Waiter::Clear(reply)));
                                continue;
                            }
                        }
                        outcomes.push(Outcome::Clear(reply, Ok(())));
                    }
                    _ => unreachable!("matched above"),
                }
            }
            if counter != start {
                meta.insert(ETAG_COUNTER, counter)
                    .map_err(|e| failed(path, "writing", e))?;
            }
            if let Some(epoch) = acting.filter(|_| barrier || !changes.is_empty()) {
                let prev = read_position(&meta).map_err(|e| failed(path, "writing", e))?;
                let next = if prev.epoch == epoch {
                    StorePosition::new(epoch, prev.seq + 1)
                } else {
                    StorePosition::new(epoch, 1)
                };
                write_position(&mut meta, next).map_err(|e| failed(path, "writing", e))?;
                positions = Some((prev, next));
            }
        }
        txn.commit().map_err(|e| failed(path, "committing", e))
    })();
    if let Err(e) = committed {
        // Nothing of the batch was committed: every caller learns why.
        refuse(pending.collect(), &e);
        for outcome in outcomes {
            match outcome {
                Outcome::Changed(waiter) => waiter.fail(e.clone()),
                Outcome::Write(reply, _) => {
                    let _ = reply.send(Err(e.clone()));
                }
                Outcome::Clear(reply, _) => {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
        return false;
    }
    let mut waiters = Vec::new();
    for outcome in outcomes {
        match outcome {
            Outcome::Changed(waiter) => waiters.push(waiter),
            Outcome::Write(reply, result) => {
                let _ = reply.send(result);
            }
            Outcome::Clear(reply, result) => {
                let _ = reply.send(result);
            }
        }
    }
    match (leader, positions) {
        (Some(hook), Some((prev, next))) => {
            let batch = Committed {
                prev,
                next,
                changes,
                waiters,
            };
            if let Err(mpsc::error::SendError(batch)) = hook.committed.send(batch) {
                for waiter in batch.waiters {
                    waiter.fail(StorageError::Unavailable(
                        "the replicator stopped: the write is on this candidate only".into(),
                    ));
                }
            }
        }
        _ => {
            for waiter in waiters {
                waiter.complete();
            }
        }
    }
    true
}

/// The immediate answer to a mutation refused inside the batch (conflict, corrupt).
fn refused_outcome(mutation: Mutation, err: StorageError) -> Outcome {
    match mutation {
        Mutation::Write { reply, .. } => Outcome::Write(reply, Err(err)),
        Mutation::Clear { reply, .. } => Outcome::Clear(reply, Err(err)),
        _ => unreachable!("only writes and clears are refused"),
    }
}
