//! MongoDB provider: one document per grain, written under an etag condition.
//!
//! # Documents
//! ```text
//! { _id: "18:example.counter/v1:alice",    // record_id: unambiguous type + key
//!   type: "example.counter/v1", key: "alice",
//!   etag: "665f1c…",                       // fresh ObjectId hex on every write
//!   state: BinData(0, …),                  // the encoded grain state
//!   updated_at: ISODate(…) }
//! ```
//! A first write (`expected: None`) is an `insert_one`, so the unique `_id` index turns
//! a racing second creator into duplicate-key error 11000, reported as
//! [`StorageError::Conflict`]. Later writes are `update_one({_id, etag}, {$set: …})`:
//! the server matches and updates one document atomically, so of concurrent writers
//! holding the same etag exactly one matches; the others see `matched_count == 0`,
//! i.e. `Conflict`. Only CRUD and conditional updates are used, nothing that a
//! MongoDB-compatible server might lack.
//!
//! The driver retries a write once after a network error (retryable writes). If the
//! first attempt had landed, the retry matches nothing; a write that then finds its
//! own, freshly issued etag in the record reports success rather than a conflict.
//!
//! # Durability
//! Writes use write concern `{w: "majority", j: true}` unless the URI sets one: a grain
//! call that acknowledged a state change has it journaled on a majority of the replica
//! set, so neither a database crash nor a failover loses it.
//!
//! # Timeouts and pooling ([`MongoOptions`]; a value set in the URI wins)
//! - `server_selection_timeout` (5 s): how long an operation waits for a usable server
//!   before failing with [`StorageError::Unavailable`]. Short, so a grain call fails
//!   (and can be retried) instead of hanging while the database is down.
//! - `connect_timeout` (5 s): TCP + TLS + handshake of one new pooled connection.
//! - `max_pool_size` (32): connections per server; a silo runs many grains at once,
//!   more than the driver's default of 10 would comfortably serve.
//! - `operation_timeout` (10 s): a bound around each whole operation, also enforced when
//!   the server accepts a connection but never answers.
//!
//! # Errors
//! Server selection, network, pool-cleared and "not primary / shutting down" errors,
//! and `operation_timeout`, map to [`StorageError::Unavailable`]: the write was not
//! acknowledged and can be retried (if it did land, the caller's retry sees `Conflict`, the
//! runtime deactivates the grain, which rereads its state). Everything else, including
//! authentication and write-concern errors, maps to [`StorageError::Failed`]. States over
//! [`MongoStorage::MAX_STATE_BYTES`] are refused with [`StorageError::TooLarge`] before
//! anything is sent, as a document may not exceed 16 MiB.

use std::fmt;
use std::future::IntoFuture;
use std::time::Duration;

use async_trait::async_trait;
use granary_proto::GrainId;
use granary_runtime::{Etag, GrainStorage, StorageError, StoredState};
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{doc, oid::ObjectId, Binary, DateTime, Document};
use mongodb::error::{ErrorKind, WriteFailure, RETRYABLE_WRITE_ERROR};
use mongodb::options::{Acknowledgment, ClientOptions, WriteConcern};
use mongodb::{Client, Collection};

use super::record_id;

/// Where and how [`MongoStorage`] connects. `Default` gives database `"granary"`,
/// collection `"grains"`; each field below states its default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MongoOptions {
    /// Database that holds the collection (default `"granary"`).
    pub database: String,
    /// Collection of grain documents (default `"grains"`).
    pub collection: String,
    /// Wait at most this long for a usable server, per operation (unless set in the
    /// URI; default 5 s).
    pub server_selection_timeout: Duration,
    /// Time allowed to open one connection (unless set in the URI; default 5 s).
    pub connect_timeout: Duration,
    /// Connections per server in the driver's pool (unless set in the URI; default 32).
    pub max_pool_size: u32,
    /// Upper bound on each read, write or clear, end to end (default 10 s).
    pub operation_timeout: Duration,
    /// Ping the deployment in [`MongoStorage::connect`], so a wrong URI or a down
    /// database fails at startup rather than at the first grain write (default `true`).
    pub verify_on_connect: bool,
}

impl MongoOptions {
    /// Database used when neither the URI nor the caller names one.
    pub const DEFAULT_DATABASE: &'static str = "granary";
    /// Collection used unless the caller names one.
    pub const DEFAULT_COLLECTION: &'static str = "grains";
}

impl Default for MongoOptions {
    fn default() -> Self {
        Self {
            database: Self::DEFAULT_DATABASE.to_owned(),
            collection: Self::DEFAULT_COLLECTION.to_owned(),
            server_selection_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            max_pool_size: 32,
            operation_timeout: Duration::from_secs(10),
            verify_on_connect: true,
        }
    }
}

/// Keeps grain state in a MongoDB collection. Cheap to clone; clones share the pool.
#[derive(Clone)]
pub struct MongoStorage {
    /// The grain documents; holds the client and thus the connection pool.
    grains: Collection<Document>,
    /// Bound on each operation, from [`MongoOptions::operation_timeout`].
    operation_timeout: Duration,
}

impl fmt::Debug for MongoStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoStorage")
            .field("namespace", &self.grains.namespace().to_string())
            .field("operation_timeout", &self.operation_timeout)
            .finish_non_exhaustive()
    }
}

impl MongoStorage {
    /// Largest state accepted, 15 MiB: room for the other fields under MongoDB's
    /// 16 MiB document limit.
    pub const MAX_STATE_BYTES: usize = 15 * 1024 * 1024;

    /// Connects to the deployment at `uri` (`mongodb://…` or `mongodb+srv://…`).
    ///
    /// With [`MongoOptions::verify_on_connect`] (the default) the deployment is pinged,
    /// so an unreachable one fails here with [`StorageError::Unavailable`] after
    /// `server_selection_timeout`. A malformed URI is [`StorageError::Failed`].
    pub async fn connect(uri: &str, options: MongoOptions) -> Result<Self, StorageError> {
        let mut client_options = ClientOptions::parse(uri)
            .await
            .map_err(|e| classify("parsing the MongoDB URI", e))?;
        client_options
            .server_selection_timeout
            .get_or_insert(options.server_selection_timeout);
        client_options
            .connect_timeout
            .get_or_insert(options.connect_timeout);
        client_options
            .max_pool_size
            .get_or_insert(options.max_pool_size);
        client_options
            .app_name
            .get_or_insert_with(|| "granary-silo".to_owned());
        // An acknowledged write must survive a crash or failover of the database:
        // majority-acknowledged and journaled, unless the URI asks for something else.
        client_options.write_concern.get_or_insert_with(|| {
            WriteConcern::builder()
                .w(Acknowledgment::Majority)
                .journal(true)
                .build()
        });
        let client = Client::with_options(client_options)
            .map_err(|e| classify("creating the MongoDB client", e))?;
        let database = client.database(&options.database);
        let store = Self {
            grains: database.collection(&options.collection),
            operation_timeout: options.operation_timeout,
        };
        if options.verify_on_connect {
            store
                .timed("pinging MongoDB", database.run_command(doc! { "ping": 1 }))
                .await?;
        }
        Ok(store)
    }

    /// Awaits a driver operation within `operation_timeout`, mapping its error.
    async fn timed<T>(
        &self,
        op: &str,
        action: impl IntoFuture<Output = mongodb::error::Result<T>>,
    ) -> Result<T, StorageError> {
        match tokio::time::timeout(self.operation_timeout, action.into_future()).await {
            Ok(result) => result.map_err(|e| classify(op, e)),
            Err(_) => Err(StorageError::Unavailable(format!(
                "{op}: no answer within {:?}",
                self.operation_timeout
            ))),
        }
    }

    /// The stored etag of `id`, for the `found` field of a conflict. Best effort: a
    /// failed lookup reports `None`.
    async fn found_etag(&self, id: &str) -> Option<Etag> {
        let lookup = self
            .grains
            .find_one(doc! { "_id": id })
            .projection(doc! { "etag": 1 });
        let document = self.timed("reading etag", lookup).await.ok()??;
        document.get_str("etag").ok().map(str::to_owned)
    }

    /// After a write matched nothing: `Ok` if the record holds the etag this very write
    /// issued (the driver retried a write that had landed before a network error, and
    /// etags are unique), else the conflict.
    async fn refused_write(
        &self,
        grain: &GrainId,
        id: &str,
        expected: Option<&str>,
        issued: Etag,
    ) -> Result<Etag, StorageError> {
        match self.found_etag(id).await {
            Some(found) if found == issued => Ok(issued),
            found => Err(StorageError::Conflict {
                grain: grain.clone(),
                expected: expected.map(str::to_owned),
                found,
            }),
        }
    }
}

/// Maps a driver error to the runtime's retryable / non-retryable split.
fn classify(op: &str, e: mongodb::error::Error) -> StorageError {
    /// Server codes meaning "this node cannot serve you right now, try again":
    /// HostUnreachable, HostNotFound, MaxTimeMSExpired, NetworkTimeout,
    /// ShutdownInProgress, PrimarySteppedDown, ExceededTimeLimit, SocketException,
    /// NotWritablePrimary, InterruptedAtShutdown, InterruptedDueToReplStateChange,
    /// NotPrimaryNoSecondaryOk, NotPrimaryOrSecondary.
    const TRANSIENT_CODES: &[i32] = &[
        6, 7, 50, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
    ];
    let message = format!("{op}: {}", e.kind);
    let unavailable = match e.kind.as_ref() {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Shutdown => true,
        ErrorKind::Command(command) => TRANSIENT_CODES.contains(&command.code),
        ErrorKind::Write(WriteFailure::WriteError(write)) => TRANSIENT_CODES.contains(&write.code),
        _ => false,
    };
    if unavailable || e.contains_label(RETRYABLE_WRITE_ERROR) {
        StorageError::Unavailable(message)
    } else {
        StorageError::Failed(message)
    }
}

/// True for the server's duplicate-key error (code 11000).
fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    matches!(
        e.kind.as_ref(),
        ErrorKind::Write(WriteFailure::WriteError(write)) if write.code == 11000
    ) || matches!(e.kind.as_ref(), ErrorKind::Command(command) if command.code == 11000)
}

fn binary(data: &[u8]) -> Binary {
    Binary {
        subtype: BinarySubtype::Generic,
        bytes: data.to_vec(),
    }
}

#[async_trait]
impl GrainStorage for MongoStorage {
    fn name(&self) -> &'static str {
        "mongodb"
    }

    async fn read(&self, grain: &GrainId) -> Result<Option<StoredState>, StorageError> {
        let id = record_id(grain);
        let lookup = self
            .grains
            .find_one(doc! { "_id": &id })
            .projection(doc! { "etag": 1, "state": 1 });
        let Some(document) = self.timed("reading grain state", lookup).await? else {
            return Ok(None);
        };
        let corrupt = |field: &str, e: &dyn fmt::Display| {
            StorageError::Corrupt(format!("document {id:?}: field `{field}`: {e}"))
        };
        let etag = document
            .get_str("etag")
            .map_err(|e| corrupt("etag", &e))?
            .to_owned();
        let data = document
            .get_binary_generic("state")
            .map_err(|e| corrupt("state", &e))?
            .clone();
        Ok(Some(StoredState { data, etag }))
    }

    async fn write(
        &self,
        grain: &GrainId,
        data: &[u8],
        expected: Option<&str>,
    ) -> Result<Etag, StorageError> {
        super::check_size(data.len(), Self::MAX_STATE_BYTES)?;
        let id = record_id(grain);
        let etag = ObjectId::new().to_hex();
        match expected {
            None => {
                let document = doc! {
                    "_id": &id,
                    "type": grain.type_name.as_ref(),
                    "key": grain.key.as_ref(),
                    "etag": &etag,
                    "state": binary(data),
                    "updated_at": DateTime::now(),
                };
                let insert = self.grains.insert_one(document);
                match tokio::time::timeout(self.operation_timeout, insert.into_future()).await {
                    Ok(Ok(_)) => Ok(etag),
                    Ok(Err(e)) if is_duplicate_key(&e) => {
                        self.refused_write(grain, &id, None, etag).await
                    }
                    Ok(Err(e)) => Err(classify("inserting grain state", e)),
                    Err(_) => Err(StorageError::Unavailable(format!(
                        "inserting grain state: no answer within {:?}",
                        self.operation_timeout
                    ))),
                }
            }
            Some(expected) => {
                let update = self.grains.update_one(
                    doc! { "_id": &id, "etag": expected },
                    doc! { "$set": {
                        "etag": &etag,
                        "state": binary(data),
                        "updated_at": DateTime::now(),
                    } },
                );
                let result = self.timed("updating grain state", update).await?;
                if result.matched_count == 0 {
                    return self.refused_write(grain, &id, Some(expected), etag).await;
                }
                Ok(etag)
            }
        }
    }

    async fn clear(&self, grain: &GrainId, expected: Option<&str>) -> Result<(), StorageError> {
        let id = record_id(grain);
        match expected {
            None => {
                let lookup = self
                    .grains
                    .find_one(doc! { "_id": &id })
                    .projection(doc! { "etag": 1 });
                match self.timed("reading etag", lookup).await? {
                    None => Ok(()),
                    Some(document) => Err(StorageError::Conflict {
                        grain: grain.clone(),
                        expected: None,
                        found: document.get_str("etag").ok().map(str::to_owned),
                    }),
                }
            }
            Some(expected) => {
                let delete = self
                    .grains
                    .delete_one(doc! { "_id": &id, "etag": expected });
                let result = self.timed("clearing grain state", delete).await?;
                if result.deleted_count == 0 {
                    return Err(StorageError::Conflict {
                        grain: grain.clone(),
                        expected: Some(expected.to_owned()),
                        found: self.found_etag(&id).await,
                    });
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
