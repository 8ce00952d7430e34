//! Embedded provider: grain state in one [redb](https://docs.rs/redb) file on local disk.
//!
//! redb is pure Rust (no C toolchain, unlike RocksDB or SQLite bindings), ACID, and
//! crash-safe: copy-on-write B-trees with checksummed commits, so a killed process
//! leaves the last committed state readable.
//!
//! # Layout of the file
//! - table `grains`: [`record_id`](super::record_id) → `[FORMAT][etag len][etag][state]`.
//! - table `meta`: `etag_counter` → the last etag number issued (`u64`); on master
//!   candidates, `position_epoch` / `position_seq` → where the replicated store stands.
//! - table `blobs`: a candidate's election state.
//! - table `staging`: a snapshot being received from the acting master.
//!
//! # Etags
//! An etag is `<session>-<n>`: `session` is drawn at random each time the file is
//! opened, `n` comes from the persisted counter, incremented in the same write
//! transaction as the record. A stale writer therefore never sees its etag reissued:
//! not after a `clear` and re-create, not after a restart (the counter survives), and
//! not after the file is restored from an older backup (the session differs).
//!
//! # Concurrency and durability (group commit)
//! One writer thread owns every write transaction. It takes all writes and clears that
//! are queued (up to [`EmbeddedStorage::MAX_BATCH`]), applies them in order in one redb transaction, each
//! with its own etag check, commits once, and only then answers each caller. Commits use
//! redb's default durability (`Immediate`: on disk when `commit` returns), so an
//! acknowledged write is durable, while concurrent writers share one fsync instead of
//! paying one each. Of concurrent writers holding the same etag exactly one wins: the
//! others see the record it wrote. A conflict or an unreadable record fails only its own
//! write; an I/O error (e.g. disk full) fails the whole batch with [`StorageError::Failed`].
//!
//! # Replication among master candidates
//! On the acting master, every batch that changes records also advances the store's
//! [`StorePosition`] in the same transaction and is handed, with its waiting callers, to
//! the replicator (see [`super::replicated`]), which answers them once a majority of the
//! candidates hold the batch durably. On a standby, batches and snapshot chunks from the
//! acting master are applied by the same writer thread (`replica`).
//!
//! # Recovering from I/O errors
//! After an I/O error redb refuses further work on its handle. The writer then reopens
//! the file (waiting for reads in flight to let go of the old handle), so once space is
//! freed, writes succeed again without restarting the silo. Committed records are never
//! affected: a failed commit leaves the last committed state in place.
//! Reads run on tokio's blocking pool in their own read transactions.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use granary_proto::replica::{ReplicaError, StoreChange, StorePosition};
use granary_proto::GrainId;
use granary_runtime::{Etag, GrainStorage, StorageError, StoredState};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};

use super::record_id;

mod batch;
mod replica;

use batch::apply;
pub(crate) use batch::{Committed, LeaderHook, Waiter};

/// Grain records: record id → encoded record.
const GRAINS: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("grains");
/// Store-wide values: [`ETAG_COUNTER`], [`POSITION_EPOCH`], [`POSITION_SEQ`].
const META: TableDefinition<'static, &'static str, u64> = TableDefinition::new("meta");
/// Key in [`META`] of the last etag number issued.
const ETAG_COUNTER: &str = "etag_counter";
/// Keys in [`META`] of the store's replication position.
const POSITION_EPOCH: &str = "position_epoch";
const POSITION_SEQ: &str = "position_seq";
/// Opaque values: a candidate's election state.
const BLOBS: TableDefinition<'static, &'static str, &'static [u8]> = TableDefinition::new("blobs");
/// A snapshot being received, chunk by chunk, before it replaces `grains`.
const STAGING: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("staging");
/// First byte of every record; bump when the layout changes.
const FORMAT: u8 = 1;
/// Mutations queued for the writer before callers wait.
const QUEUE: usize = 4096;

/// What the writer thread does: grain writes and clears (batched), the acting master's
/// barrier, and a standby's replicated batches and snapshot chunks (one per transaction).
enum Mutation {
    Write {
        grain: GrainId,
        data: Vec<u8>,
        expected: Option<String>,
        /// The acting master's epoch the write was accepted in (replicated stores only).
        epoch: Option<u64>,
        reply: oneshot::Sender<Result<Etag, StorageError>>,
    },
    Clear {
        grain: GrainId,
        expected: Option<String>,
        epoch: Option<u64>,
        reply: oneshot::Sender<Result<(), StorageError>>,
    },
    /// The acting master's first batch of an epoch: no change, a new position.
    Barrier {
        epoch: u64,
        reply: oneshot::Sender<Result<(), StorageError>>,
    },
    /// A standby applies a batch from the acting master.
    Replicate {
        prev: StorePosition,
        next: StorePosition,
        changes: Vec<StoreChange>,
        reply: oneshot::Sender<Result<StorePosition, ReplicaError>>,
    },
    /// A standby applies a snapshot chunk from the acting master.
    Snapshot {
        start: bool,
        records: Vec<(String, Vec<u8>)>,
        done: Option<StorePosition>,
        reply: oneshot::Sender<Result<StorePosition, ReplicaError>>,
    },
}

impl Mutation {
    /// True for what the writer applies in a transaction of its own.
    fn is_alone(&self) -> bool {
        matches!(self, Mutation::Replicate { .. } | Mutation::Snapshot { .. })
    }
}

/// The open database, shared by reads and the writer. `None` only between a failed
/// reopen and the next attempt.
type Handle = Arc<RwLock<Option<Arc<Database>>>>;

/// How long a reopen waits for reads in flight to drop the old handle.
const REOPEN_WAIT: Duration = Duration::from_secs(5);

/// Keeps grain state in a redb file. Cheap to share: clone the `Arc` you hold it in.
#[derive(Debug)]
pub struct EmbeddedStorage {
    /// The open database; swapped by the writer when it reopens the file.
    db: Handle,
    /// Where the file lives, for error messages.
    path: PathBuf,
    /// Queue of the writer thread; dropped first on drop, which ends the thread.
    writes: Option<mpsc::Sender<Mutation>>,
    /// The writer thread, joined on drop (it has nothing queued by then: every write
    /// borrows the store until it is answered).
    writer: Option<JoinHandle<()>>,
    /// Set once when the store is replicated among master candidates: the writer hands
    /// committed batches to the replicator through it.
    leader: Arc<OnceLock<Arc<LeaderHook>>>,
}

impl std::fmt::Debug for Mutation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mutation::Write { grain, .. } => write!(f, "Write({grain})"),
            Mutation::Clear { grain, .. } => write!(f, "Clear({grain})"),
            Mutation::Barrier { epoch, .. } => write!(f, "Barrier({epoch})"),
            Mutation::Replicate { next, .. } => write!(f, "Replicate({next})"),
            Mutation::Snapshot { done, .. } => write!(f, "Snapshot(done: {done:?})"),
        }
    }
}

impl Drop for EmbeddedStorage {
    fn drop(&mut self) {
        self.writes.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl EmbeddedStorage {
    /// Largest state accepted, 64 MiB: far above any sane grain, far below redb's limit.
    pub const MAX_STATE_BYTES: usize = 64 * 1024 * 1024;

    /// Most writes and clears applied (and made durable) in one transaction.
    pub const MAX_BATCH: usize = 512;

    /// Opens (or creates) the store at `path`, creating missing parent directories.
    ///
    /// Blocks: it may recover the file after a crash. From async code call it inside
    /// `tokio::task::spawn_blocking` (as [`StorageSpec::open`](super::StorageSpec::open)
    /// does). Fails if another process has the file open.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StorageError> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StorageError::Failed(format!("creating directory {}: {e}", parent.display()))
            })?;
        }
        let db = Database::create(&path).map_err(|e| failed(&path, "opening", e))?;
        // Create every table up front so reads never meet a missing table.
        let txn = db.begin_write().map_err(|e| failed(&path, "opening", e))?;
        {
            txn.open_table(GRAINS)
                .map_err(|e| failed(&path, "opening", e))?;
            txn.open_table(META)
                .map_err(|e| failed(&path, "opening", e))?;
            txn.open_table(BLOBS)
                .map_err(|e| failed(&path, "opening", e))?;
            txn.open_table(STAGING)
                .map_err(|e| failed(&path, "opening", e))?;
        }
        txn.commit().map_err(|e| failed(&path, "opening", e))?;
        let db: Handle = Arc::new(RwLock::new(Some(Arc::new(db))));
        let (writes, queue) = mpsc::channel(QUEUE);
        let leader: Arc<OnceLock<Arc<LeaderHook>>> = Arc::default();
        let writer = {
            let (db, path, session) = (db.clone(), path.clone(), fastrand::u64(1..));
            let leader = leader.clone();
            std::thread::Builder::new()
                .name("granary-redb-writer".into())
                .spawn(move || run_writer(&db, &path, session, &leader, queue))
                .map_err(|e| StorageError::Failed(format!("starting the writer thread: {e}")))?
        };
        Ok(Self {
            db,
            path,
            writes: Some(writes),
            writer: Some(writer),
            leader,
        })
    }

    /// Makes this store replicable: on the acting master, committed batches go to
    /// `hook`. Set at most once; returns false if it was set before.
    pub(crate) fn attach_leader_hook(&self, hook: Arc<LeaderHook>) -> bool {
        self.leader.set(hook).is_ok()
    }

    /// The epoch the acting master's writes carry (replicated stores only).
    fn writing_epoch(&self) -> Option<u64> {
        self.leader.get().map(|hook| hook.epoch())
    }

    /// Queues the mutation `make` builds around a reply channel, and waits until the
    /// writer has committed (or refused) it.
    async fn submit<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StorageError>>) -> Mutation,
    ) -> Result<T, StorageError> {
        let queue = self.writes.as_ref().expect("the queue lives until drop");
        let (reply, answer) = oneshot::channel();
        // A stopped writer (the store is closing: a silo shutting down or killed) is an
        // unavailable store, not a refusal: the caller may send the write again
        // elsewhere (a write it had taken may have committed; its outcome is unknown).
        queue.send(make(reply)).await.map_err(|_| {
            StorageError::Unavailable(format!("the writer of {} stopped", self.path.display()))
        })?;
        answer.await.map_err(|_| {
            StorageError::Unavailable(
                "the writer stopped before answering: the outcome is unknown".into(),
            )
        })?
    }

    /// Runs `f` on the blocking pool with a handle to the database.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Database, &Path) -> Result<T, StorageError> + Send + 'static,
    {
        let handle = Arc::clone(&self.db);
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let db = current(&handle, &path)?;
            f(&db, &path)
        })
        .await
        .map_err(|e| StorageError::Failed(format!("embedded storage task failed: {e}")))?
    }
}

/// The database to use now, reopening the file if a previous reopen failed.
fn current(handle: &Handle, path: &Path) -> Result<Arc<Database>, StorageError> {
    if let Some(db) = handle
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
    {
        return Ok(db);
    }
    reopen(handle, path)
}

/// Replaces the database handle with a fresh one on the same file (redb refuses work
/// on a handle after an I/O error). Waits up to [`REOPEN_WAIT`] for reads in flight to
/// drop the old handle, since the file stays locked until they do.
fn reopen(handle: &Handle, path: &Path) -> Result<Arc<Database>, StorageError> {
    let mut slot = handle.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(mut old) = slot.take() {
        let until = std::time::Instant::now() + REOPEN_WAIT;
        loop {
            match Arc::try_unwrap(old) {
                Ok(db) => {
                    drop(db);
                    break;
                }
                Err(shared) if std::time::Instant::now() < until => {
                    old = shared;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(shared) => {
                    *slot = Some(shared);
                    return Err(StorageError::Failed(format!(
                        "reopening {}: the old handle is still in use",
                        path.display()
                    )));
                }
            }
        }
    }
    let db = Arc::new(Database::create(path).map_err(|e| failed(path, "reopening", e))?);
    *slot = Some(db.clone());
    tracing::warn!(path = %path.display(), "embedded store reopened after an I/O error");
    Ok(db)
}

/// The writer thread: applies queued mutations until the queue closes — grain writes in
/// batches, replicated batches and snapshot chunks one per transaction — and reopens the
/// file after a transaction fails on an I/O error.
fn run_writer(
    handle: &Handle,
    path: &Path,
    session: u64,
    leader: &OnceLock<Arc<LeaderHook>>,
    mut queue: mpsc::Receiver<Mutation>,
) {
    let mut next: Option<Mutation> = None;
    loop {
        let Some(first) = next.take().or_else(|| queue.blocking_recv()) else {
            return;
        };
        let db = match current(handle, path) {
            Ok(db) => db,
            Err(e) => {
                refuse(vec![first], &e);
                continue;
            }
        };
        let healthy = if first.is_alone() {
            replica::apply_alone(&db, path, first)
        } else {
            let mut batch = vec![first];
            while batch.len() < EmbeddedStorage::MAX_BATCH {
                match queue.try_recv() {
                    Ok(m) if m.is_alone() => {
                        next = Some(m);
                        break;
                    }
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            apply(&db, path, session, leader.get(), batch)
        };
        drop(db);
        if !healthy {
            if let Err(e) = reopen(handle, path) {
                tracing::error!(error = %e, "could not reopen the embedded store; retrying on the next write");
            }
        }
    }
}

/// Fails every mutation of `batch` with `err` (nothing of it was written).
fn refuse(batch: Vec<Mutation>, err: &StorageError) {
    for mutation in batch {
        match mutation {
            Mutation::Write { reply, .. } => {
                let _ = reply.send(Err(err.clone()));
            }
            Mutation::Clear { reply, .. } | Mutation::Barrier { reply, .. } => {
                let _ = reply.send(Err(err.clone()));
            }
            Mutation::Replicate { reply, .. } | Mutation::Snapshot { reply, .. } => {
                let _ = reply.send(Err(ReplicaError::Failed(err.to_string())));
            }
        }
    }
}

/// Maps any redb error to [`StorageError::Failed`], naming the file and the operation.
fn failed(path: &Path, op: &str, e: impl Into<redb::Error>) -> StorageError {
    let e: redb::Error = e.into();
    let detail = match &e {
        redb::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
            format!("disk full: {io}")
        }
        redb::Error::PreviousIo => {
            "an earlier I/O error left the file unusable until it is reopened".to_owned()
        }
        redb::Error::DatabaseAlreadyOpen => "the file is open in another process".to_owned(),
        other => other.to_string(),
    };
    StorageError::Failed(format!("{op} {}: {detail}", path.display()))
}

/// Encodes a record as `[FORMAT][etag len: u8][etag][state]`.
fn encode(etag: &str, data: &[u8]) -> Vec<u8> {
    let len = u8::try_from(etag.len()).expect("etags are at most 41 bytes");
    let mut buf = Vec::with_capacity(2 + etag.len() + data.len());
    buf.push(FORMAT);
    buf.push(len);
    buf.extend_from_slice(etag.as_bytes());
    buf.extend_from_slice(data);
    buf
}

/// Splits a stored record into its etag and state.
fn decode(grain: &GrainId, raw: &[u8]) -> Result<(String, Vec<u8>), StorageError> {
    let corrupt = |why: &str| StorageError::Corrupt(format!("record of {grain}: {why}"));
    match raw {
        [FORMAT, len, rest @ ..] if rest.len() >= usize::from(*len) => {
            let (etag, data) = rest.split_at(usize::from(*len));
            let etag = std::str::from_utf8(etag).map_err(|_| corrupt("etag is not UTF-8"))?;
            Ok((etag.to_owned(), data.to_vec()))
        }
        [FORMAT, ..] => Err(corrupt("truncated")),
        [other, ..] => Err(corrupt(&format!("unknown format {other}"))),
        [] => Err(corrupt("empty")),
    }
}

/// Etag of the stored record at `id`, read inside a write transaction.
fn current_etag(
    grain: &GrainId,
    table: &redb::Table<'_, &'static str, &'static [u8]>,
    id: &str,
    path: &Path,
) -> Result<Option<String>, StorageError> {
    match table.get(id).map_err(|e| failed(path, "reading", e))? {
        Some(guard) => Ok(Some(decode(grain, guard.value())?.0)),
        None => Ok(None),
    }
}

fn conflict(grain: &GrainId, expected: Option<&str>, found: Option<String>) -> StorageError {
    StorageError::Conflict {
        grain: grain.clone(),
        expected: expected.map(str::to_owned),
        found,
    }
}

#[async_trait]
impl GrainStorage for EmbeddedStorage {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn read(&self, grain: &GrainId) -> Result<Option<StoredState>, StorageError> {
        let grain = grain.clone();
        self.blocking(move |db, path| {
            let txn = db.begin_read().map_err(|e| failed(path, "reading", e))?;
            let table = txn
                .open_table(GRAINS)
                .map_err(|e| failed(path, "reading", e))?;
            let raw = table
                .get(record_id(&grain).as_str())
                .map_err(|e| failed(path, "reading", e))?;
            match raw {
                Some(guard) => {
                    let (etag, data) = decode(&grain, guard.value())?;
                    Ok(Some(StoredState { data, etag }))
                }
                None => Ok(None),
            }
        })
        .await
    }

    async fn write(
        &self,
        grain: &GrainId,
        data: &[u8],
        expected: Option<&str>,
    ) -> Result<Etag, StorageError> {
        super::check_size(data.len(), Self::MAX_STATE_BYTES)?;
        let epoch = self.writing_epoch();
        self.submit(|reply| Mutation::Write {
            grain: grain.clone(),
            data: data.to_vec(),
            expected: expected.map(str::to_owned),
            epoch,
            reply,
        })
        .await
    }

    async fn clear(&self, grain: &GrainId, expected: Option<&str>) -> Result<(), StorageError> {
        let epoch = self.writing_epoch();
        self.submit(|reply| Mutation::Clear {
            grain: grain.clone(),
            expected: expected.map(str::to_owned),
            epoch,
            reply,
        })
        .await
    }
}

#[cfg(test)]
mod tests;
