//! Embedded provider: grain state in one [redb](https://docs.rs/redb) file on local disk.
//!
//! redb is pure Rust (no C toolchain, unlike RocksDB or SQLite bindings), ACID, and
//! crash-safe: copy-on-write B-trees with checksummed commits, so a killed process
//! leaves the last committed state readable.
//!
//! # Layout of the file
//! - table `grains`: [`record_id`](super::record_id) → `[FORMAT][etag len][etag][state]`.
//! - table `meta`: `etag_counter` → the last etag number issued (`u64`).
//!
//! # Etags
//! An etag is `<session>-<n>`: `session` is drawn at random each time the file is
//! opened, `n` comes from the persisted counter, incremented in the same write
//! transaction as the record. A stale writer therefore never sees its etag reissued:
//! not after a `clear` and re-create, not after a restart (the counter survives), and
//! not after the file is restored from an older backup (the session differs).
//!
//! # Concurrency and durability
//! The etag check and the write run in one redb write transaction; redb allows one
//! at a time, so concurrent writers holding the same etag are serialized and exactly
//! one wins. Commits use redb's default durability (`Immediate`: on disk when
//! `commit` returns). redb is synchronous, so every call runs on tokio's blocking pool.
//! After an I/O error (e.g. disk full) redb refuses further work on the handle until
//! the file is reopened; every such call fails with [`StorageError::Failed`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use granary_proto::GrainId;
use granary_runtime::{Etag, GrainStorage, StorageError, StoredState};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::record_id;

/// Grain records: record id → encoded record.
const GRAINS: TableDefinition<'static, &'static str, &'static [u8]> =
    TableDefinition::new("grains");
/// Store-wide values; only [`ETAG_COUNTER`] for now.
const META: TableDefinition<'static, &'static str, u64> = TableDefinition::new("meta");
/// Key in [`META`] of the last etag number issued.
const ETAG_COUNTER: &str = "etag_counter";
/// First byte of every record; bump when the layout changes.
const FORMAT: u8 = 1;

/// Keeps grain state in a redb file. Cheap to share: clone the `Arc` you hold it in.
#[derive(Debug)]
pub struct EmbeddedStorage {
    /// The open database; `Arc` so blocking tasks can own a handle.
    db: Arc<Database>,
    /// Where the file lives, for error messages.
    path: PathBuf,
    /// Random per-open prefix of every etag issued by this handle.
    session: u64,
}

impl EmbeddedStorage {
    /// Largest state accepted, 64 MiB: far above any sane grain, far below redb's limit.
    pub const MAX_STATE_BYTES: usize = 64 * 1024 * 1024;

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
        // Create both tables up front so reads never meet a missing table.
        let txn = db.begin_write().map_err(|e| failed(&path, "opening", e))?;
        {
            txn.open_table(GRAINS)
                .map_err(|e| failed(&path, "opening", e))?;
            txn.open_table(META)
                .map_err(|e| failed(&path, "opening", e))?;
        }
        txn.commit().map_err(|e| failed(&path, "opening", e))?;
        Ok(Self {
            db: Arc::new(db),
            path,
            session: fastrand::u64(1..),
        })
    }

    /// Path of the redb file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the blocking pool with a handle to the database.
    async fn blocking<T, F>(&self, f: F) -> Result<T, StorageError>
    where
        T: Send + 'static,
        F: FnOnce(&Database, &Path, u64) -> Result<T, StorageError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        let path = self.path.clone();
        let session = self.session;
        tokio::task::spawn_blocking(move || f(&db, &path, session))
            .await
            .map_err(|e| StorageError::Failed(format!("embedded storage task failed: {e}")))?
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
        self.blocking(move |db, path, _| {
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
        let grain = grain.clone();
        let data = data.to_vec();
        let expected = expected.map(str::to_owned);
        self.blocking(move |db, path, session| {
            let id = record_id(&grain);
            let txn = db.begin_write().map_err(|e| failed(path, "writing", e))?;
            let etag = {
                let mut grains = txn
                    .open_table(GRAINS)
                    .map_err(|e| failed(path, "writing", e))?;
                let found = current_etag(&grain, &grains, &id, path)?;
                if found.as_deref() != expected.as_deref() {
                    // Dropping `txn` uncommitted aborts it.
                    return Err(conflict(&grain, expected.as_deref(), found));
                }
                let mut meta = txn
                    .open_table(META)
                    .map_err(|e| failed(path, "writing", e))?;
                let last = meta
                    .get(ETAG_COUNTER)
                    .map_err(|e| failed(path, "writing", e))?
                    .map_or(0, |g| g.value());
                let next = last + 1;
                meta.insert(ETAG_COUNTER, next)
                    .map_err(|e| failed(path, "writing", e))?;
                let etag = format!("{session:x}-{next}");
                grains
                    .insert(id.as_str(), encode(&etag, &data).as_slice())
                    .map_err(|e| failed(path, "writing", e))?;
                etag
            };
            txn.commit().map_err(|e| failed(path, "committing", e))?;
            Ok(etag)
        })
        .await
    }

    async fn clear(&self, grain: &GrainId, expected: Option<&str>) -> Result<(), StorageError> {
        let grain = grain.clone();
        let expected = expected.map(str::to_owned);
        self.blocking(move |db, path, _| {
            let id = record_id(&grain);
            let txn = db.begin_write().map_err(|e| failed(path, "clearing", e))?;
            {
                let mut grains = txn
                    .open_table(GRAINS)
                    .map_err(|e| failed(path, "clearing", e))?;
                let found = current_etag(&grain, &grains, &id, path)?;
                if found.as_deref() != expected.as_deref() {
                    return Err(conflict(&grain, expected.as_deref(), found));
                }
                if found.is_none() {
                    return Ok(());
                }
                grains
                    .remove(id.as_str())
                    .map_err(|e| failed(path, "clearing", e))?;
            }
            txn.commit().map_err(|e| failed(path, "committing", e))?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests;
