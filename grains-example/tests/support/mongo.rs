//! A scratch MongoDB database for one test: `$MONGODB_URI` (the MongoDB tests are ignored
//! unless `cfg(granary_mongodb)` is on, so reaching here without a URI — under `CI=true`,
//! or with `--ignored` — is a failure, never a skip), a database of its own, dropped
//! after the scenario, whatever its outcome.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use granary_silo::storage::{MongoOptions, MongoStorage};

/// Runs `scenario` on a store in a fresh database named `{prefix}_{random}`, within
/// `within`, then drops the database.
pub async fn on_scratch_database<F, Fut>(prefix: &str, within: Duration, scenario: F)
where
    F: FnOnce(Arc<MongoStorage>) -> Fut,
    Fut: Future<Output = ()>,
{
    let uri = match std::env::var("MONGODB_URI") {
        Ok(uri) if !uri.trim().is_empty() => uri,
        _ => panic!(
            "MONGODB_URI is not set, yet a MongoDB test runs (CI=true or --ignored): \
             start a server with `eval \"$(scripts/mongodb-test-server.sh start)\"`"
        ),
    };
    let database = format!("{prefix}_{:08x}", fastrand::u32(..));
    let options = MongoOptions {
        database: database.clone(),
        ..MongoOptions::default()
    };
    let store = Arc::new(
        MongoStorage::connect(&uri, options)
            .await
            .expect("connect to MONGODB_URI"),
    );
    let result = tokio::time::timeout(within, scenario(store)).await;
    if let Ok(client) = mongodb::Client::with_uri_str(&uri).await {
        let _ = client.database(&database).drop().await;
    }
    result.expect("the scenario finished in time");
}
