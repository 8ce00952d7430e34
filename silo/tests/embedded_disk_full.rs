//! The embedded store on a full disk: a clear error, nothing acknowledged lost, and
//! writes work again once space is freed, without restarting anything.
//!
//! Mounts a 2 MiB tmpfs (needs root, as on our machines and CI); where mounting is not
//! permitted the test says it was skipped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use granary_proto::GrainId;
use granary_runtime::{GrainStorage, StorageError};
use granary_silo::storage::EmbeddedStorage;

/// A tmpfs mounted for the test, unmounted (and its directory removed) on drop.
struct TinyDisk {
    dir: tempfile::TempDir,
}

impl TinyDisk {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .ok()?;
        status.success().then_some(TinyDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn grain(i: usize) -> GrainId {
    GrainId::new("test.disk/v1", format!("g{i}"))
}

#[tokio::test]
async fn a_full_disk_fails_writes_clearly_and_recovers_when_space_is_freed() {
    let Some(disk) = TinyDisk::mount("2m") else {
        // CI runs as root, where this must run: never let it pass unseen there.
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "cannot mount a tmpfs under CI=true (this test needs root)"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let filler: PathBuf = disk.path().join("filler");
    std::fs::write(&filler, vec![0u8; 512 * 1024]).unwrap();
    let store = EmbeddedStorage::open(disk.path().join("grains.redb")).unwrap();
    let state = vec![7u8; 64 * 1024];

    // Fill the disk.
    let mut acked = Vec::new();
    let full = loop {
        let i = acked.len();
        assert!(i < 200, "the 2 MiB disk never filled up");
        match store.write(&grain(i), &state, None).await {
            Ok(etag) => acked.push(etag),
            Err(e) => break e,
        }
    };
    assert!(!acked.is_empty(), "nothing fitted on the disk");
    assert!(
        matches!(full, StorageError::Failed(ref m) if m.contains("disk full")),
        "unclear error: {full:?}"
    );
    let refused = grain(acked.len());

    // Everything acknowledged is still there; the refused write left nothing behind.
    for (i, etag) in acked.iter().enumerate() {
        let stored = store
            .read(&grain(i))
            .await
            .unwrap()
            .expect("acknowledged record");
        assert_eq!(&stored.etag, etag);
        assert_eq!(stored.data, state);
    }
    assert_eq!(store.read(&refused).await.unwrap(), None);

    // Free space: writes work again, with no restart.
    std::fs::remove_file(&filler).unwrap();
    let mut recovered = None;
    for _ in 0..50 {
        match store.write(&refused, &state, None).await {
            Ok(etag) => {
                recovered = Some(etag);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    let etag = recovered.expect("writes did not recover after space was freed");
    assert_eq!(store.read(&refused).await.unwrap().unwrap().etag, etag);
    for (i, etag) in acked.iter().enumerate() {
        assert_eq!(&store.read(&grain(i)).await.unwrap().unwrap().etag, etag);
    }
    drop(store);
}
