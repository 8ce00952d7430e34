//! Grain-state providers behind [`GrainStorage`].
//!
//! - [`MemoryStorage`]: a map in this process; for tests and throwaway clusters.
//! - [`EmbeddedStorage`]: one redb file on local disk; the default for a single silo.
//! - [`MongoStorage`]: one document per grain in a MongoDB collection; for clusters.
//! - [`RemoteStorage`]: a slave's view of the store the acting master serves over TCP.
//! - [`ReplicatedStore`]: the embedded store of master candidates, replicated from the
//!   acting master to the standbys (a write is acknowledged once a majority holds it).
//! - `instrumented`: a decorator that times and counts any provider's operations (the
//!   `granary_storage_*` metrics).
//!
//! [`StorageSpec`] names a provider in one string (a CLI flag or an environment
//! variable) and opens it:
//!
//! ```text
//! memory                              -> MemoryStorage
//! embedded:granary-data/grains.redb   -> EmbeddedStorage (also: a bare path)
//! mongodb://host:27017/mydb           -> MongoStorage, database "mydb", collection "grains"
//! mongodb+srv://cluster.example.net   -> MongoStorage, database "granary", collection "grains"
//! ```
//!
//! Every provider passes the same conformance suite (`silo/tests/storage_conformance.rs`).

mod embedded;
pub(crate) mod instrumented;
mod memory;
mod mongo;
pub(crate) mod remote;
mod replicated;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use granary_proto::GrainId;
use granary_runtime::{GrainStorage, StorageError};

pub use embedded::EmbeddedStorage;
pub use memory::MemoryStorage;
pub use mongo::{MongoOptions, MongoStorage};
pub use remote::RemoteStorage;
pub use replicated::ReplicatedStore;

/// Path of the embedded store when no spec is given.
pub const DEFAULT_EMBEDDED_PATH: &str = "granary-data/grains.redb";

/// Which provider to open, and where. Parsed from a CLI-style string, see the
/// [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageSpec {
    /// [`MemoryStorage`]: nothing survives the process.
    Memory,
    /// [`EmbeddedStorage`] in the redb file at this path (parent directories are created).
    Embedded(PathBuf),
    /// [`MongoStorage`] on this deployment.
    Mongo {
        /// Connection string, `mongodb://…` or `mongodb+srv://…`, passed to the driver as is.
        uri: String,
        /// Database holding the collection: the URI's path if it names one, else `"granary"`.
        database: String,
        /// Collection of grain documents, `"grains"` unless set in code.
        collection: String,
    },
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec::Embedded(PathBuf::from(DEFAULT_EMBEDDED_PATH))
    }
}

/// A storage spec string that names no provider.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StorageSpecError {
    /// The spec was empty (or only whitespace).
    #[error("empty storage spec; expected `memory`, `embedded:PATH`, a path or a mongodb:// URI")]
    Empty,
    /// `embedded:` was not followed by a path.
    #[error("`embedded:` needs a path, e.g. `embedded:{DEFAULT_EMBEDDED_PATH}`")]
    MissingPath,
    /// A `mongodb://` or `mongodb+srv://` URI with nothing after the scheme.
    #[error("MongoDB URI without hosts: {0:?}")]
    MissingHosts(String),
}

impl FromStr for StorageSpec {
    type Err = StorageSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err(StorageSpecError::Empty);
        }
        if s.eq_ignore_ascii_case("memory") {
            return Ok(StorageSpec::Memory);
        }
        if let Some(path) = s.strip_prefix("embedded:") {
            if path.is_empty() {
                return Err(StorageSpecError::MissingPath);
            }
            return Ok(StorageSpec::Embedded(PathBuf::from(path)));
        }
        if let Some(rest) = s
            .strip_prefix("mongodb://")
            .or_else(|| s.strip_prefix("mongodb+srv://"))
        {
            let (hosts, database) = split_uri_rest(rest);
            if hosts.is_empty() {
                return Err(StorageSpecError::MissingHosts(redact_uri(s)));
            }
            return Ok(StorageSpec::Mongo {
                uri: s.to_owned(),
                database: database
                    .unwrap_or(MongoOptions::DEFAULT_DATABASE)
                    .to_owned(),
                collection: MongoOptions::DEFAULT_COLLECTION.to_owned(),
            });
        }
        Ok(StorageSpec::Embedded(PathBuf::from(s)))
    }
}

/// For logs: Mongo URIs are printed with their password replaced by `***`, followed by
/// `database.collection` in parentheses, so a Mongo spec does not parse back.
impl fmt::Display for StorageSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StorageSpec::Memory => f.write_str("memory"),
            StorageSpec::Embedded(path) => write!(f, "embedded:{}", path.display()),
            StorageSpec::Mongo {
                uri,
                database,
                collection,
            } => write!(f, "{} ({database}.{collection})", redact_uri(uri)),
        }
    }
}

impl StorageSpec {
    /// Opens the provider this spec names. MongoDB is pinged, so an unreachable
    /// deployment fails here with [`StorageError::Unavailable`].
    pub async fn open(&self) -> Result<Arc<dyn GrainStorage>, StorageError> {
        match self {
            StorageSpec::Memory => Ok(Arc::new(MemoryStorage::new())),
            StorageSpec::Embedded(path) => {
                let path = path.clone();
                let store = tokio::task::spawn_blocking(move || EmbeddedStorage::open(path))
                    .await
                    .map_err(|e| StorageError::Failed(format!("opening embedded store: {e}")))??;
                Ok(Arc::new(store))
            }
            StorageSpec::Mongo {
                uri,
                database,
                collection,
            } => {
                let options = MongoOptions {
                    database: database.clone(),
                    collection: collection.clone(),
                    ..MongoOptions::default()
                };
                Ok(Arc::new(MongoStorage::connect(uri, options).await?))
            }
        }
    }
}

/// Splits what follows `mongodb://` into the host list and the database named by the
/// path, if any: `user:pw@h1,h2/db?opts` → (`user:pw@h1,h2`, `Some("db")`).
fn split_uri_rest(rest: &str) -> (&str, Option<&str>) {
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    let rest = &rest[..end];
    match rest.split_once('/') {
        Some((hosts, db)) if !db.is_empty() => (hosts, Some(db)),
        Some((hosts, _)) => (hosts, None),
        None => (rest, None),
    }
}

/// Replaces the password of a `scheme://user:password@hosts…` URI with `***`.
fn redact_uri(uri: &str) -> String {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return uri.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return uri.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => uri.to_owned(),
    }
}

/// Refuses a state larger than a provider's `max` before anything is sent or written.
pub(crate) fn check_size(size: usize, max: usize) -> Result<(), StorageError> {
    if size > max {
        return Err(StorageError::TooLarge { size, max });
    }
    Ok(())
}

/// The one string that names a grain's record in every durable provider:
/// `<byte length of type name>:<type name>:<key>`, e.g. `18:example.counter/v1:alice`.
/// The length prefix keeps it unambiguous whatever characters type names and keys hold.
pub(crate) fn record_id(grain: &GrainId) -> String {
    format!(
        "{}:{}:{}",
        grain.type_name.len(),
        grain.type_name,
        grain.key
    )
}

#[cfg(test)]
mod tests;
