//! Unit tests of [`EmbeddedStorage`]: persistence across reopen, etag freshness, limits.

use super::*;

fn grain(key: &str) -> GrainId {
    GrainId::new("test.embedded/v1", key)
}

#[tokio::test]
async fn state_survives_reopen_and_etags_are_not_reissued() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.redb");
    let g = grain("a");

    let store = EmbeddedStorage::open(&path).unwrap();
    let first = store.write(&g, b"one", None).await.unwrap();
    drop(store);

    let store = EmbeddedStorage::open(&path).unwrap();
    let read = store.read(&g).await.unwrap().unwrap();
    assert_eq!(read.data, b"one");
    assert_eq!(read.etag, first);

    // Clear and re-create after the restart: the new etag must differ from any old one.
    store.clear(&g, Some(&first)).await.unwrap();
    let second = store.write(&g, b"two", None).await.unwrap();
    assert_ne!(first, second);
    assert!(store
        .write(&g, b"stale", Some(&first))
        .await
        .unwrap_err()
        .is_conflict());
}

#[tokio::test]
async fn counter_is_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.redb");
    let store = EmbeddedStorage::open(&path).unwrap();
    store.write(&grain("a"), b"x", None).await.unwrap();
    store.write(&grain("b"), b"x", None).await.unwrap();
    drop(store);
    let store = EmbeddedStorage::open(&path).unwrap();
    let etag = store.write(&grain("c"), b"x", None).await.unwrap();
    assert!(etag.ends_with("-3"), "counter restarted: {etag}");
}

#[tokio::test]
async fn too_large_state_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStorage::open(dir.path().join("g.redb")).unwrap();
    let big = vec![0u8; EmbeddedStorage::MAX_STATE_BYTES + 1];
    let err = store.write(&grain("big"), &big, None).await.unwrap_err();
    assert!(matches!(err, StorageError::TooLarge { .. }), "{err:?}");
    assert_eq!(store.read(&grain("big")).await.unwrap(), None);
}

#[test]
fn second_open_of_the_same_file_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.redb");
    let _first = EmbeddedStorage::open(&path).unwrap();
    let err = EmbeddedStorage::open(&path).unwrap_err();
    assert!(matches!(err, StorageError::Failed(_)), "{err:?}");
}

#[test]
fn records_round_trip_and_garbage_is_corrupt() {
    let g = grain("a");
    let raw = encode("abc-1", b"state");
    assert_eq!(
        decode(&g, &raw).unwrap(),
        ("abc-1".to_owned(), b"state".to_vec())
    );
    assert_eq!(
        decode(&g, &encode("e", b"")).unwrap(),
        ("e".to_owned(), vec![])
    );
    for bad in [&[][..], &[9, 0][..], &[FORMAT, 5, b'a'][..]] {
        assert!(
            matches!(decode(&g, bad), Err(StorageError::Corrupt(_))),
            "{bad:?}"
        );
    }
}
