//! The replication side of the embedded store: where it stands ([`StorePosition`]),
//! applying the acting master's batches and snapshot chunks on a standby, exporting a
//! snapshot on the acting master, and a candidate's election state.
//!
//! A batch applies only on top of the position it was built from, in one transaction
//! that also records the new position, so a standby's records always equal the acting
//! master's at that position. A snapshot is staged chunk by chunk and replaces the
//! records, with its position, in one transaction at the end: a standby interrupted
//! mid-snapshot still holds its old, consistent records and position.

use std::path::Path;

use granary_proto::codec;
use granary_proto::replica::{ReplicaError, StoreChange, StorePosition};
use granary_runtime::StorageError;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table};
use tokio::sync::{mpsc, oneshot};

use super::{
    failed, EmbeddedStorage, Mutation, BLOBS, GRAINS, META, POSITION_EPOCH, POSITION_SEQ, STAGING,
};
use crate::membership::{ElectionState, ElectionStore};

/// Key of the election state in the blobs table.
const ELECTION: &str = "election";

/// One chunk of an exported snapshot; the last one carries the position.
pub(crate) type Chunk = (Vec<(String, Vec<u8>)>, Option<StorePosition>);

/// The position recorded in `meta`.
pub(super) fn read_position(
    meta: &impl ReadableTable<&'static str, u64>,
) -> Result<StorePosition, redb::StorageError> {
    let epoch = meta.get(POSITION_EPOCH)?.map_or(0, |g| g.value());
    let seq = meta.get(POSITION_SEQ)?.map_or(0, |g| g.value());
    Ok(StorePosition::new(epoch, seq))
}

/// Records `position` in `meta`.
pub(super) fn write_position(
    meta: &mut Table<'_, &'static str, u64>,
    position: StorePosition,
) -> Result<(), redb::StorageError> {
    meta.insert(POSITION_EPOCH, position.epoch)?;
    meta.insert(POSITION_SEQ, position.seq)?;
    Ok(())
}

/// Applies a standby's mutation (a batch or a snapshot chunk) in a transaction of its
/// own. Returns false if it failed on a database error.
pub(super) fn apply_alone(db: &Database, path: &Path, mutation: Mutation) -> bool {
    let (result, reply) = match mutation {
        Mutation::Replicate {
            prev,
            next,
            changes,
            reply,
        } => (replicate(db, path, prev, next, &changes), reply),
        Mutation::Snapshot {
            start,
            records,
            done,
            reply,
        } => (snapshot(db, path, start, records, done), reply),
        _ => unreachable!("only standby mutations are applied alone"),
    };
    let healthy = !matches!(&result, Err(Fault::Database(_)));
    let _ = reply.send(result.map_err(Fault::into_replica));
    healthy
}

/// Why a standby mutation failed: the store's fault, or the batch's.
enum Fault {
    Database(StorageError),
    Refused(ReplicaError),
}

impl Fault {
    fn into_replica(self) -> ReplicaError {
        match self {
            Fault::Database(e) => ReplicaError::Failed(e.to_string()),
            Fault::Refused(e) => e,
        }
    }
}

fn replicate(
    db: &Database,
    path: &Path,
    prev: StorePosition,
    next: StorePosition,
    changes: &[StoreChange],
) -> Result<StorePosition, Fault> {
    let db_err = |e: redb::Error| Fault::Database(failed(path, "replicating", e));
    let txn = db.begin_write().map_err(|e| db_err(e.into()))?;
    {
        let mut meta = txn.open_table(META).map_err(|e| db_err(e.into()))?;
        let position = read_position(&meta).map_err(|e| db_err(e.into()))?;
        if position != prev {
            return Err(Fault::Refused(ReplicaError::Diverged { position }));
        }
        let mut grains = txn.open_table(GRAINS).map_err(|e| db_err(e.into()))?;
        for change in changes {
            match change {
                StoreChange::Put { id, record } => {
                    grains
                        .insert(id.as_str(), record.as_slice())
                        .map_err(|e| db_err(e.into()))?;
                }
                StoreChange::Delete { id } => {
                    grains.remove(id.as_str()).map_err(|e| db_err(e.into()))?;
                }
            }
        }
        write_position(&mut meta, next).map_err(|e| db_err(e.into()))?;
    }
    txn.commit().map_err(|e| db_err(e.into()))?;
    Ok(next)
}

fn snapshot(
    db: &Database,
    path: &Path,
    start: bool,
    records: Vec<(String, Vec<u8>)>,
    done: Option<StorePosition>,
) -> Result<StorePosition, Fault> {
    let db_err = |e: redb::Error| Fault::Database(failed(path, "installing a snapshot", e));
    let txn = db.begin_write().map_err(|e| db_err(e.into()))?;
    let position = {
        let mut staging = txn.open_table(STAGING).map_err(|e| db_err(e.into()))?;
        if start {
            staging.retain(|_, _| false).map_err(|e| db_err(e.into()))?;
        }
        for (id, record) in &records {
            staging
                .insert(id.as_str(), record.as_slice())
                .map_err(|e| db_err(e.into()))?;
        }
        let mut meta = txn.open_table(META).map_err(|e| db_err(e.into()))?;
        match done {
            None => read_position(&meta).map_err(|e| db_err(e.into()))?,
            Some(position) => {
                let mut grains = txn.open_table(GRAINS).map_err(|e| db_err(e.into()))?;
                grains.retain(|_, _| false).map_err(|e| db_err(e.into()))?;
                for entry in staging.iter().map_err(|e| db_err(e.into()))? {
                    let (id, record) = entry.map_err(|e| db_err(e.into()))?;
                    grains
                        .insert(id.value(), record.value())
                        .map_err(|e| db_err(e.into()))?;
                }
                staging.retain(|_, _| false).map_err(|e| db_err(e.into()))?;
                write_position(&mut meta, position).map_err(|e| db_err(e.into()))?;
                position
            }
        }
    };
    txn.commit().map_err(|e| db_err(e.into()))?;
    Ok(position)
}

impl EmbeddedStorage {
    /// Where the store stands in the acting masters' streams of changes.
    pub fn position(&self) -> Result<StorePosition, StorageError> {
        let db = super::current(&self.db, &self.path)?;
        let txn = db
            .begin_read()
            .map_err(|e| failed(&self.path, "reading", e))?;
        let meta = txn
            .open_table(META)
            .map_err(|e| failed(&self.path, "reading", e))?;
        read_position(&meta).map_err(|e| failed(&self.path, "reading", e))
    }

    /// Number of grain records stored.
    pub fn record_count(&self) -> Result<u64, StorageError> {
        let db = super::current(&self.db, &self.path)?;
        let txn = db
            .begin_read()
            .map_err(|e| failed(&self.path, "reading", e))?;
        let grains = txn
            .open_table(GRAINS)
            .map_err(|e| failed(&self.path, "reading", e))?;
        grains.len().map_err(|e| failed(&self.path, "reading", e))
    }

    async fn submit_replica(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<StorePosition, ReplicaError>>) -> Mutation,
    ) -> Result<StorePosition, ReplicaError> {
        let queue = self.writes.as_ref().expect("the queue lives until drop");
        let (reply, answer) = oneshot::channel();
        queue
            .send(make(reply))
            .await
            .map_err(|_| ReplicaError::Failed("the store's writer stopped".into()))?;
        answer.await.map_err(|_| {
            ReplicaError::Failed("the store's writer stopped before answering".into())
        })?
    }

    /// On a standby: applies the acting master's batch `prev → next`.
    pub(crate) async fn replicate(
        &self,
        prev: StorePosition,
        next: StorePosition,
        changes: Vec<StoreChange>,
    ) -> Result<StorePosition, ReplicaError> {
        self.submit_replica(|reply| Mutation::Replicate {
            prev,
            next,
            changes,
            reply,
        })
        .await
    }

    /// On a standby: stages a snapshot chunk (`start`: the first), and installs the
    /// snapshot at `done` with the last one.
    pub(crate) async fn install_snapshot(
        &self,
        start: bool,
        records: Vec<(String, Vec<u8>)>,
        done: Option<StorePosition>,
    ) -> Result<StorePosition, ReplicaError> {
        self.submit_replica(|reply| Mutation::Snapshot {
            start,
            records,
            done,
            reply,
        })
        .await
    }

    /// On the acting master of `epoch`: commits an empty batch that starts the epoch's
    /// stream; it is answered once a majority holds everything before it.
    pub(crate) async fn barrier(&self, epoch: u64) -> Result<(), StorageError> {
        self.submit(|reply| Mutation::Barrier { epoch, reply })
            .await
    }

    /// On the acting master: the whole store as chunks of about `chunk_bytes`, read in
    /// one transaction (so the records and the position of the last chunk agree).
    pub(crate) fn export(&self, chunk_bytes: usize) -> mpsc::Receiver<Result<Chunk, StorageError>> {
        let (tx, rx) = mpsc::channel(2);
        let (handle, path) = (self.db.clone(), self.path.clone());
        tokio::task::spawn_blocking(move || {
            let read = || -> Result<(), StorageError> {
                let db = super::current(&handle, &path)?;
                let txn = db.begin_read().map_err(|e| failed(&path, "reading", e))?;
                let grains = txn
                    .open_table(GRAINS)
                    .map_err(|e| failed(&path, "reading", e))?;
                let meta = txn
                    .open_table(META)
                    .map_err(|e| failed(&path, "reading", e))?;
                let position = read_position(&meta).map_err(|e| failed(&path, "reading", e))?;
                let mut chunk = Vec::new();
                let mut size = 0;
                for entry in grains.iter().map_err(|e| failed(&path, "reading", e))? {
                    let (id, record) = entry.map_err(|e| failed(&path, "reading", e))?;
                    size += id.value().len() + record.value().len();
                    chunk.push((id.value().to_owned(), record.value().to_vec()));
                    if size >= chunk_bytes {
                        if tx
                            .blocking_send(Ok((std::mem::take(&mut chunk), None)))
                            .is_err()
                        {
                            return Ok(());
                        }
                        size = 0;
                    }
                }
                let _ = tx.blocking_send(Ok((chunk, Some(position))));
                Ok(())
            };
            if let Err(e) = read() {
                let _ = tx.blocking_send(Err(e));
            }
        });
        rx
    }
}

impl ElectionStore for EmbeddedStorage {
    fn load(&self) -> Result<ElectionState, String> {
        let db = super::current(&self.db, &self.path).map_err(|e| e.to_string())?;
        let txn = db.begin_read().map_err(|e| e.to_string())?;
        let blobs = txn.open_table(BLOBS).map_err(|e| e.to_string())?;
        match blobs.get(ELECTION).map_err(|e| e.to_string())? {
            Some(raw) => {
                codec::decode(raw.value()).map_err(|e| format!("unreadable election state: {e}"))
            }
            None => Ok(ElectionState::default()),
        }
    }

    fn save(&self, state: &ElectionState) -> Result<(), String> {
        let bytes = codec::encode(state).map_err(|e| e.to_string())?;
        let db = super::current(&self.db, &self.path).map_err(|e| e.to_string())?;
        let txn = db
            .begin_write()
            .map_err(|e| failed(&self.path, "saving the election state", e).to_string())?;
        {
            let mut blobs = txn
                .open_table(BLOBS)
                .map_err(|e| failed(&self.path, "saving the election state", e).to_string())?;
            blobs
                .insert(ELECTION, bytes.as_slice())
                .map_err(|e| failed(&self.path, "saving the election state", e).to_string())?;
        }
        txn.commit()
            .map_err(|e| failed(&self.path, "saving the election state", e).to_string())
    }

    fn is_durable(&self) -> bool {
        true
    }
}
