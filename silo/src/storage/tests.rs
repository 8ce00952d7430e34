//! Unit tests of [`StorageSpec`] parsing and display, and of `record_id`.

use super::*;

#[test]
fn parses_memory() {
    assert_eq!("memory".parse(), Ok(StorageSpec::Memory));
    assert_eq!(" MEMORY ".parse(), Ok(StorageSpec::Memory));
}

#[test]
fn parses_embedded_with_prefix_or_bare_path() {
    assert_eq!(
        "embedded:/var/lib/granary/g.redb".parse(),
        Ok(StorageSpec::Embedded(PathBuf::from(
            "/var/lib/granary/g.redb"
        )))
    );
    assert_eq!(
        "data/g.redb".parse(),
        Ok(StorageSpec::Embedded(PathBuf::from("data/g.redb")))
    );
    assert_eq!(
        "embedded:".parse::<StorageSpec>(),
        Err(StorageSpecError::MissingPath)
    );
    assert_eq!("".parse::<StorageSpec>(), Err(StorageSpecError::Empty));
}

#[test]
fn parses_mongo_with_default_or_uri_database() {
    assert_eq!(
        "mongodb://127.0.0.1:27017/?directConnection=true".parse(),
        Ok(StorageSpec::Mongo {
            uri: "mongodb://127.0.0.1:27017/?directConnection=true".to_owned(),
            database: "granary".to_owned(),
            collection: "grains".to_owned(),
        })
    );
    let spec: StorageSpec = "mongodb+srv://u:p@cluster.example.net/prod?retryWrites=true"
        .parse()
        .unwrap();
    let StorageSpec::Mongo {
        database,
        collection,
        ..
    } = spec
    else {
        panic!("not mongo: {spec:?}");
    };
    assert_eq!((database.as_str(), collection.as_str()), ("prod", "grains"));
    assert!(matches!(
        "mongodb://".parse::<StorageSpec>(),
        Err(StorageSpecError::MissingHosts(_))
    ));
}

#[test]
fn display_round_trips_local_specs_and_hides_passwords() {
    for s in ["memory", "embedded:data/g.redb"] {
        let spec: StorageSpec = s.parse().unwrap();
        assert_eq!(spec.to_string(), s);
        assert_eq!(spec.to_string().parse(), Ok(spec));
    }
    let spec: StorageSpec = "mongodb://admin:s3cret@db1,db2/app?authSource=admin"
        .parse()
        .unwrap();
    let shown = spec.to_string();
    assert!(!shown.contains("s3cret"), "{shown}");
    assert_eq!(
        shown,
        "mongodb://admin:***@db1,db2/app?authSource=admin (app.grains)"
    );
}

#[test]
fn default_is_embedded() {
    assert_eq!(
        StorageSpec::default(),
        StorageSpec::Embedded(PathBuf::from("granary-data/grains.redb"))
    );
}

#[test]
fn record_ids_are_unambiguous() {
    let a = GrainId::new("a:b", "c");
    let b = GrainId::new("a", "b:c");
    assert_ne!(record_id(&a), record_id(&b));
    assert_eq!(record_id(&a), "3:a:b:c");
    assert_eq!(record_id(&b), "1:a:b:c");
}

#[tokio::test]
async fn opens_memory_and_embedded() {
    let store = StorageSpec::Memory.open().await.unwrap();
    assert_eq!(store.name(), "memory");
    let dir = tempfile::tempdir().unwrap();
    let spec = StorageSpec::Embedded(dir.path().join("nested/dir/g.redb"));
    let store = spec.open().await.unwrap();
    assert_eq!(store.name(), "embedded");
    assert!(dir.path().join("nested/dir/g.redb").exists());
}
