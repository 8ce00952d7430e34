//! Storage conformance: one set of cases, run against every provider.
//!
//! Each case in [`cases`] takes an `Arc<dyn GrainStorage>` and checks one clause of the
//! `GrainStorage` contract. [`conformance_suite!`] turns every case into one test per
//! backend: `memory::…`, `embedded::…` (a fresh redb file in a temp dir) and
//! `mongodb::…` (a fresh database on `$MONGODB_URI`, dropped afterwards).
//!
//! The MongoDB tests are compiled `#[ignore]`d unless `cfg(granary_mongodb)` is set
//! (`build.rs` sets it when `MONGODB_URI` is set or `CI=true`), so without a server cargo
//! reports them as `ignored, SKIPPED: MONGODB_URI not set …`. With the cfg on they run,
//! and fail if `MONGODB_URI` is missing or the server cannot be reached: CI never skips
//! them. Start a local server with `eval "$(scripts/mongodb-test-server.sh start)"`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use granary_proto::GrainId;
use granary_runtime::reminder::{shard_id, shard_of, ShardTable};
use granary_runtime::{GrainStorage, StorageError};
use granary_silo::storage::{EmbeddedStorage, MemoryStorage, MongoOptions, MongoStorage};

/// Which provider a test runs against.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Memory,
    Embedded,
    Mongo,
}

/// A provider plus whatever must be cleaned up after the case.
struct Fixture {
    store: Arc<dyn GrainStorage>,
    /// Keeps the embedded store's directory alive until the case is done.
    _dir: Option<tempfile::TempDir>,
    /// MongoDB `(uri, database)` to drop at the end.
    mongo_db: Option<(String, String)>,
}

impl Fixture {
    /// Builds a fresh, empty store.
    async fn new(backend: Backend, case: &str) -> Fixture {
        match backend {
            Backend::Memory => Fixture {
                store: Arc::new(MemoryStorage::new()),
                _dir: None,
                mongo_db: None,
            },
            Backend::Embedded => {
                let dir = tempfile::tempdir().expect("temp dir");
                let store = EmbeddedStorage::open(dir.path().join("grains.redb"))
                    .expect("open embedded store");
                Fixture {
                    store: Arc::new(store),
                    _dir: Some(dir),
                    mongo_db: None,
                }
            }
            Backend::Mongo => {
                let uri = mongodb_uri();
                // Database names are limited to 63 bytes; keep a readable prefix.
                let mut database = format!("granary_test_{case}");
                database.truncate(48);
                database.push_str(&format!("_{:08x}", fastrand::u32(..)));
                let options = MongoOptions {
                    database: database.clone(),
                    ..MongoOptions::default()
                };
                let store = MongoStorage::connect(&uri, options)
                    .await
                    .unwrap_or_else(|e| panic!("connect to MONGODB_URI={uri}: {e}"));
                Fixture {
                    store: Arc::new(store),
                    _dir: None,
                    mongo_db: Some((uri, database)),
                }
            }
        }
    }

    async fn teardown(self) {
        if let Some((uri, database)) = self.mongo_db {
            let client = ::mongodb::Client::with_uri_str(&uri).await.expect("client");
            if let Err(e) = client.database(&database).drop().await {
                eprintln!("warning: could not drop test database {database}: {e}");
            }
        }
    }
}

/// `$MONGODB_URI`. Only the MongoDB tests call this, and they are ignored unless
/// `cfg(granary_mongodb)` is on, so reaching here without a URI (under `CI=true`, or
/// with `--ignored`) is a failure, never a skip.
fn mongodb_uri() -> String {
    match std::env::var("MONGODB_URI") {
        Ok(uri) if !uri.trim().is_empty() => uri,
        _ => panic!(
            "MONGODB_URI is not set, yet the MongoDB conformance tests run (CI=true or \
             --ignored): start a server with `eval \"$(scripts/mongodb-test-server.sh start)\"`"
        ),
    }
}

/// Runs `case` against a fresh store of `backend`, tearing the store down even if the
/// case panics (the panic is then re-raised).
async fn run<F, Fut>(backend: Backend, name: &str, case: F)
where
    F: FnOnce(Arc<dyn GrainStorage>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let fixture = Fixture::new(backend, name).await;
    let outcome = tokio::spawn(case(Arc::clone(&fixture.store))).await;
    fixture.teardown().await;
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("case {name} on {backend:?} did not finish: {e}"),
        }
    }
}

/// One test module per backend, one `#[tokio::test]` per case. The optional bracketed
/// attributes, e.g. `[#[ignore]]`, go on every test in the module.
macro_rules! backend_tests {
    ($module:ident, $backend:expr, $($case:ident),*) => {
        backend_tests!([] $module, $backend, $($case),*);
    };
    ($attrs:tt $module:ident, $backend:expr, $($case:ident),*) => {
        mod $module {
            $(
                backend_test!($attrs $backend, $case);
            )*
        }
    };
}

/// One `#[tokio::test]` running `case` against `backend`, with the given attributes.
macro_rules! backend_test {
    ([$(#[$attr:meta])*] $backend:expr, $case:ident) => {
        $(#[$attr])*
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $case() {
            super::run($backend, stringify!($case), super::cases::$case).await;
        }
    };
}

/// Expands every case against every backend.
macro_rules! conformance_suite {
    ($($case:ident),* $(,)?) => {
        backend_tests!(memory, super::Backend::Memory, $($case),*);
        backend_tests!(embedded, super::Backend::Embedded, $($case),*);
        backend_tests!(
            [#[cfg_attr(
                not(granary_mongodb),
                ignore = "SKIPPED: MONGODB_URI not set (see scripts/mongodb-test-server.sh)"
            )]]
            mongodb,
            super::Backend::Mongo,
            $($case),*
        );
    };
}

conformance_suite!(
    read_missing_is_none,
    create_then_read,
    update_with_current_etag,
    stale_etag_conflicts_and_keeps_record,
    create_when_present_conflicts,
    clear_then_recreate,
    clear_checks_etag,
    concurrent_writers_one_winner,
    concurrent_creators_one_winner,
    large_state_round_trips,
    empty_state_round_trips,
    same_key_different_types_are_distinct,
    reminder_table_round_trips_and_is_fenced,
);

/// The contract's clauses, each written once against `dyn GrainStorage`.
mod cases {
    use super::*;

    fn grain(key: &str) -> GrainId {
        GrainId::new("test.conformance/v1", key)
    }

    /// Asserts `err` is a conflict whose `expected` is `expected` and whose `found`, if
    /// the store reports it, is `found`.
    fn assert_conflict(err: StorageError, expected: Option<&str>, found: Option<&str>) {
        match err {
            StorageError::Conflict {
                expected: e,
                found: f,
                ..
            } => {
                assert_eq!(e.as_deref(), expected, "conflict.expected");
                if f.is_some() || found.is_none() {
                    assert_eq!(f.as_deref(), found, "conflict.found");
                }
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
    }

    pub(super) async fn read_missing_is_none(store: Arc<dyn GrainStorage>) {
        assert_eq!(store.read(&grain("nobody")).await.unwrap(), None);
    }

    pub(super) async fn create_then_read(store: Arc<dyn GrainStorage>) {
        let g = grain("alice");
        let etag = store.write(&g, b"v1", None).await.unwrap();
        assert!(!etag.is_empty());
        let got = store.read(&g).await.unwrap().expect("record");
        assert_eq!(got.data, b"v1");
        assert_eq!(got.etag, etag);
    }

    pub(super) async fn update_with_current_etag(store: Arc<dyn GrainStorage>) {
        let g = grain("alice");
        let e1 = store.write(&g, b"v1", None).await.unwrap();
        let e2 = store.write(&g, b"v2", Some(&e1)).await.unwrap();
        assert_ne!(e1, e2, "every write issues a new etag");
        let e3 = store.write(&g, b"v3", Some(&e2)).await.unwrap();
        assert!(e3 != e1 && e3 != e2);
        let got = store.read(&g).await.unwrap().expect("record");
        assert_eq!(
            (got.data.as_slice(), got.etag.as_str()),
            (&b"v3"[..], e3.as_str())
        );
    }

    pub(super) async fn stale_etag_conflicts_and_keeps_record(store: Arc<dyn GrainStorage>) {
        let g = grain("alice");
        let e1 = store.write(&g, b"v1", None).await.unwrap();
        let e2 = store.write(&g, b"v2", Some(&e1)).await.unwrap();
        let err = store.write(&g, b"stale", Some(&e1)).await.unwrap_err();
        assert_conflict(err, Some(&e1), Some(&e2));
        let err = store
            .write(&g, b"made-up", Some("no-such-etag"))
            .await
            .unwrap_err();
        assert_conflict(err, Some("no-such-etag"), Some(&e2));
        let got = store.read(&g).await.unwrap().expect("record");
        assert_eq!(
            (got.data.as_slice(), got.etag.as_str()),
            (&b"v2"[..], e2.as_str())
        );
        // An etag for a grain that has no record conflicts too (found: nothing).
        let err = store
            .write(&grain("bob"), b"x", Some(&e2))
            .await
            .unwrap_err();
        assert_conflict(err, Some(&e2), None);
        assert_eq!(store.read(&grain("bob")).await.unwrap(), None);
    }

    pub(super) async fn create_when_present_conflicts(store: Arc<dyn GrainStorage>) {
        let g = grain("alice");
        let e1 = store.write(&g, b"v1", None).await.unwrap();
        let err = store.write(&g, b"again", None).await.unwrap_err();
        assert_conflict(err, None, Some(&e1));
        let got = store.read(&g).await.unwrap().expect("record");
        assert_eq!(
            (got.data.as_slice(), got.etag.as_str()),
            (&b"v1"[..], e1.as_str())
        );
    }

    pub(super) async fn clear_then_recreate(store: Arc<dyn GrainStorage>) {
        let g = grain("alice");
        let e1 = store.write(&g, b"v1", None).await.unwrap();
        store.clear(&g, Some(&e1)).await.unwrap();
        assert_eq!(store.read(&g).await.unwrap(), None);
        // Clearing a missing record with `expected: None` succeeds.
        store.clear(&g, None).await.unwrap();
        let e2 = store.write(&g, b"v2", None).await.unwrap();
        assert_ne!(e1, e2, "a re-created record must not reuse the old etag");
        let err = store.write(&g, b"stale", Some(&e1)).await.unwrap_err();
        assert_conflict(err, Some(&e1), Some(&e2));
        let got = store.read(&g).await.unwrap().expect("record");
        assert_eq!(
            (got.data.as_slice(), got.etag.as_str()),
            (&b"v2"[..], e2.as_str())
        );
    }

    pub(super) async fn clear_checks_etag(store: Arc<dyn GrainStorage>) {
        let g = grain("alice");
        let e1 = store.write(&g, b"v1", None).await.unwrap();
        let e2 = store.write(&g, b"v2", Some(&e1)).await.unwrap();
        assert_conflict(
            store.clear(&g, Some(&e1)).await.unwrap_err(),
            Some(&e1),
            Some(&e2),
        );
        assert_conflict(store.clear(&g, None).await.unwrap_err(), None, Some(&e2));
        assert!(
            store.read(&g).await.unwrap().is_some(),
            "a refused clear keeps the record"
        );
        let missing = grain("bob");
        assert_conflict(
            store.clear(&missing, Some(&e2)).await.unwrap_err(),
            Some(&e2),
            None,
        );
    }

    /// Races `writers` tasks, each writing its own value with `expected`; returns the
    /// winners' `(index, etag)` after checking every loser got a conflict.
    async fn race(
        store: &Arc<dyn GrainStorage>,
        g: &GrainId,
        expected: Option<String>,
        writers: usize,
    ) -> Vec<(usize, String)> {
        let barrier = Arc::new(tokio::sync::Barrier::new(writers));
        let tasks: Vec<_> = (0..writers)
            .map(|i| {
                let (store, g, expected) = (Arc::clone(store), g.clone(), expected.clone());
                let barrier = Arc::clone(&barrier);
                tokio::spawn(async move {
                    barrier.wait().await;
                    let data = format!("writer-{i}");
                    (
                        i,
                        store.write(&g, data.as_bytes(), expected.as_deref()).await,
                    )
                })
            })
            .collect();
        let mut winners = Vec::new();
        for task in tasks {
            match task.await.expect("writer task") {
                (i, Ok(etag)) => winners.push((i, etag)),
                (_, Err(e)) => assert!(e.is_conflict(), "loser must see a conflict: {e:?}"),
            }
        }
        winners
    }

    pub(super) async fn concurrent_writers_one_winner(store: Arc<dyn GrainStorage>) {
        let g = grain("contended");
        let mut etag = store.write(&g, b"start", None).await.unwrap();
        for round in 0..3 {
            let winners = race(&store, &g, Some(etag.clone()), 16).await;
            assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
            let (i, won) = winners.into_iter().next().unwrap();
            let got = store.read(&g).await.unwrap().expect("record");
            assert_eq!(got.data, format!("writer-{i}").into_bytes());
            assert_eq!(got.etag, won);
            etag = won;
        }
    }

    pub(super) async fn concurrent_creators_one_winner(store: Arc<dyn GrainStorage>) {
        let g = grain("fresh");
        let winners = race(&store, &g, None, 16).await;
        assert_eq!(winners.len(), 1, "winners {winners:?}");
        let (i, won) = winners.into_iter().next().unwrap();
        let got = store.read(&g).await.unwrap().expect("record");
        assert_eq!(got.data, format!("writer-{i}").into_bytes());
        assert_eq!(got.etag, won);
    }

    pub(super) async fn large_state_round_trips(store: Arc<dyn GrainStorage>) {
        let g = grain("big");
        let data: Vec<u8> = (0..1024 * 1024u32)
            .map(|i| (i * 7 + i / 251) as u8)
            .collect();
        let e1 = store.write(&g, &data, None).await.unwrap();
        let got = store.read(&g).await.unwrap().expect("record");
        assert!(got.data == data, "1 MiB state changed on the way");
        assert_eq!(got.etag, e1);
        let smaller = &data[..1000];
        let e2 = store.write(&g, smaller, Some(&e1)).await.unwrap();
        let got = store.read(&g).await.unwrap().expect("record");
        assert_eq!(
            (got.data.as_slice(), got.etag.as_str()),
            (smaller, e2.as_str())
        );
    }

    pub(super) async fn empty_state_round_trips(store: Arc<dyn GrainStorage>) {
        let g = grain("empty");
        let etag = store.write(&g, b"", None).await.unwrap();
        let got = store
            .read(&g)
            .await
            .unwrap()
            .expect("an empty state is still a record");
        assert_eq!(
            (got.data.as_slice(), got.etag.as_str()),
            (&b""[..], etag.as_str())
        );
    }

    pub(super) async fn same_key_different_types_are_distinct(store: Arc<dyn GrainStorage>) {
        // Also pairs whose naive `type + sep + key` concatenations would collide.
        let ids = [
            GrainId::new("test.a/v1", "k"),
            GrainId::new("test.b/v1", "k"),
            GrainId::new("x:y", "z"),
            GrainId::new("x", "y:z"),
            GrainId::new("x\0y", "z"),
            GrainId::new("x", "y\0z"),
            GrainId::from_parts("x/y".to_owned(), "z".to_owned()),
            GrainId::from_parts("x".to_owned(), "y/z".to_owned()),
        ];
        let mut etags = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            etags.push(
                store
                    .write(id, format!("state-{i}").as_bytes(), None)
                    .await
                    .unwrap(),
            );
        }
        for (i, id) in ids.iter().enumerate() {
            let got = store.read(id).await.unwrap().expect("record");
            assert_eq!(got.data, format!("state-{i}").into_bytes(), "{id:?}");
            assert_eq!(got.etag, etags[i]);
        }
        store.clear(&ids[0], Some(&etags[0])).await.unwrap();
        assert_eq!(store.read(&ids[0]).await.unwrap(), None);
        assert!(store.read(&ids[1]).await.unwrap().is_some());
    }

    /// Reminders are stored as their shard's record (see `granary_runtime::reminder`): a
    /// full shard of 5 000 reminders round-trips, a write by a shard activation that lost
    /// its place (a stale etag) is refused, and an emptied shard leaves no record (the
    /// keeper takes a missing record for a shard without reminders).
    pub(super) async fn reminder_table_round_trips_and_is_fenced(store: Arc<dyn GrainStorage>) {
        let mut table = ShardTable::default();
        let shard = shard_of(&GrainId::new("test.reminded/v1", "k0"));
        let mut i = 0u64;
        while table.len() < 5_000 {
            let grain = GrainId::new("test.reminded/v1", format!("k{i}"));
            if shard_of(&grain) == shard {
                let first = 1_764_000_000_000 + i;
                table.insert(&grain, "daily", first, Duration::from_secs(86_400));
                table.insert(&grain, "hourly", first, Duration::from_secs(3_600));
            }
            i += 1;
        }
        let id = shard_id(shard);
        let bytes = granary_proto::codec::encode(&table).unwrap();
        let e1 = store.write(&id, &bytes, None).await.unwrap();
        let got = store.read(&id).await.unwrap().expect("the shard's record");
        let decoded: ShardTable = granary_proto::codec::decode(&got.data).unwrap();
        assert_eq!(decoded, table);

        // The activation that owns the shard now writes; the one it replaced is refused.
        let mut newer = table.clone();
        newer.insert(
            &GrainId::new("test.reminded/v1", "late"),
            "once",
            1,
            Duration::from_secs(1),
        );
        let e2 = store
            .write(
                &id,
                &granary_proto::codec::encode(&newer).unwrap(),
                Some(&e1),
            )
            .await
            .unwrap();
        let err = store.write(&id, &bytes, Some(&e1)).await.unwrap_err();
        assert_conflict(err, Some(&e1), Some(&e2));
        let got = store.read(&id).await.unwrap().expect("the shard's record");
        assert_eq!(
            granary_proto::codec::decode::<ShardTable>(&got.data).unwrap(),
            newer
        );

        store.clear(&id, Some(&e2)).await.unwrap();
        assert_eq!(store.read(&id).await.unwrap(), None);
    }
}

/// An unreachable MongoDB fails fast with `Unavailable`, at connect and per operation,
/// instead of hanging. Talks only to loopback port 1, where nothing listens.
#[tokio::test]
async fn mongodb_unreachable_is_unavailable_quickly() {
    const URI: &str = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=500&connectTimeoutMS=500";
    let started = Instant::now();
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        MongoStorage::connect(URI, MongoOptions::default()),
    )
    .await
    .expect("connect must not hang")
    .expect_err("nothing listens on port 1");
    assert!(matches!(err, StorageError::Unavailable(_)), "{err:?}");

    let lazy = MongoOptions {
        verify_on_connect: false,
        ..MongoOptions::default()
    };
    let store = MongoStorage::connect(URI, lazy)
        .await
        .expect("lazy connect");
    let g = GrainId::new("test.conformance/v1", "unreachable");
    let ops = async {
        let read = store.read(&g).await.map(|_| ());
        let write = store.write(&g, b"x", None).await.map(|_| ());
        let update = store.write(&g, b"x", Some("e")).await.map(|_| ());
        let clear = store.clear(&g, Some("e")).await;
        [read, write, update, clear]
    };
    let results = tokio::time::timeout(Duration::from_secs(20), ops)
        .await
        .expect("operations must not hang");
    for result in results {
        assert!(
            matches!(result, Err(StorageError::Unavailable(_))),
            "{result:?}"
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}
