//! The [`Variable`] grain in one silo: a watcher sees every committed version in order
//! while four writers set it concurrently, compare-and-set refuses a stale version, and
//! a watcher whose owner stopped polling is dropped.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use granary_example::{
    VarGet, VarSet, VarWatch, VarWatchers, Variable, WatchOpen, WatchPoll, Watcher,
};
use granary_silo::storage::MemoryStorage;
use granary_silo::{Silo, SiloConfig};
use tokio::time::Instant;

async fn silo() -> Silo {
    Silo::start(SiloConfig::default(), Arc::new(MemoryStorage::new()))
        .await
        .unwrap()
}

fn set(value: String) -> VarSet {
    VarSet {
        value,
        if_version: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_sees_every_committed_version_in_order() {
    const WRITERS: usize = 4;
    const SETS: usize = 50;
    let silo = silo().await;
    let var = silo.grain::<Variable>("config");
    var.ask(set("before the watch".into())).await.unwrap();
    let watcher = silo.grain::<Watcher>("w1");
    watcher.ask(WatchOpen { timeout_ms: 5_000 }).await.unwrap();
    let (start, value) = var
        .ask(VarWatch {
            watcher: "w1".into(),
        })
        .await
        .unwrap();
    assert_eq!((start, value.as_deref()), (1, Some("before the watch")));

    let committed = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let var = silo.grain::<Variable>("config");
            let committed = committed.clone();
            tokio::spawn(async move {
                for i in 0..SETS {
                    let value = format!("writer {w} set {i}");
                    let version = var.ask(set(value.clone())).await.unwrap();
                    committed.lock().unwrap().push((version, value));
                }
            })
        })
        .collect();
    let last = start + (WRITERS * SETS) as u64;
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.last().map_or(start, |(v, _)| *v) < last {
        assert!(Instant::now() < deadline, "the watcher stalled at {seen:?}");
        let polled = watcher.ask(WatchPoll).await.unwrap();
        assert_eq!(polled.coalesced, 0);
        seen.extend(polled.changes.into_iter().map(|c| (c.version, c.value)));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    let mut committed = committed.lock().unwrap().clone();
    committed.sort();
    // Every version after the watch began, in order, with the value set under it.
    assert_eq!(seen, committed);
    assert_eq!(
        seen.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        (start + 1..=last).collect::<Vec<_>>()
    );
    assert_eq!(var.ask(VarGet).await.unwrap().0, last);
    silo.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_set_refuses_a_stale_version() {
    let silo = silo().await;
    let var = silo.grain::<Variable>("cas");
    assert_eq!(var.ask(VarGet).await.unwrap(), (0, None));
    let v1 = var
        .ask(VarSet {
            value: "a".into(),
            if_version: Some(0),
        })
        .await
        .unwrap();
    assert_eq!(v1, 1);
    let stale = var
        .ask(VarSet {
            value: "b".into(),
            if_version: Some(0),
        })
        .await;
    assert!(stale.is_err());
    assert_eq!(var.ask(VarGet).await.unwrap(), (1, Some("a".into())));
    silo.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_whose_owner_stopped_polling_is_dropped() {
    let silo = silo().await;
    let var = silo.grain::<Variable>("dropped");
    for (key, timeout_ms) in [("alive", 10_000), ("gone", 200)] {
        silo.grain::<Watcher>(key)
            .ask(WatchOpen { timeout_ms })
            .await
            .unwrap();
        var.ask(VarWatch {
            watcher: key.into(),
        })
        .await
        .unwrap();
    }
    var.ask(set("1".into())).await.unwrap();
    assert_eq!(var.ask(VarWatchers).await.unwrap(), ["alive", "gone"]);
    // "gone" is not polled past its timeout: the next set drops it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    var.ask(set("2".into())).await.unwrap();
    assert_eq!(var.ask(VarWatchers).await.unwrap(), ["alive"]);
    // Its owner, coming back, is told to watch again.
    assert!(silo.grain::<Watcher>("gone").ask(WatchPoll).await.is_err());
    let polled = silo.grain::<Watcher>("alive").ask(WatchPoll).await.unwrap();
    let versions: Vec<u64> = polled.changes.iter().map(|c| c.version).collect();
    assert_eq!(versions, [1, 2]);
    silo.shutdown().await;
}
