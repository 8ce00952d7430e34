//! Unit tests of [`MongoStorage`] that need no server: options, limits, error mapping.

use super::*;

#[test]
fn default_options() {
    let o = MongoOptions::default();
    assert_eq!(
        (o.database.as_str(), o.collection.as_str()),
        ("granary", "grains")
    );
    assert!(o.server_selection_timeout <= Duration::from_secs(10));
    assert!(o.verify_on_connect);
}

#[test]
fn network_errors_are_unavailable() {
    let e = mongodb::error::Error::from(std::io::ErrorKind::ConnectionReset);
    assert!(matches!(classify("op", e), StorageError::Unavailable(_)));
    let e = mongodb::error::Error::custom("weird".to_owned());
    assert!(matches!(classify("op", e), StorageError::Failed(_)));
}

#[tokio::test]
async fn too_large_state_is_refused_without_contacting_the_server() {
    // Nothing listens on port 1 of loopback; the client connects lazily.
    let options = MongoOptions {
        verify_on_connect: false,
        ..MongoOptions::default()
    };
    let store = MongoStorage::connect("mongodb://127.0.0.1:1/", options)
        .await
        .unwrap();
    let big = vec![0u8; MongoStorage::MAX_STATE_BYTES + 1];
    let grain = GrainId::new("test.mongo/v1", "big");
    let err = store.write(&grain, &big, None).await.unwrap_err();
    assert!(matches!(err, StorageError::TooLarge { .. }), "{err:?}");
}

#[tokio::test]
async fn malformed_uri_fails() {
    let err = MongoStorage::connect("mongodb://host:notaport/", MongoOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Failed(_)), "{err:?}");
}
