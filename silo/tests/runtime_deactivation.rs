//! Integration tests of the grain runtime in one silo: idle deactivation (per grain type
//! and per silo) with persisted state, messages arriving during a deactivation, and
//! shutdown writing dirty state.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use granary_runtime::prelude::*;
use granary_runtime::GrainStorage;
use granary_silo::storage::MemoryStorage;
use granary_silo::{Silo, SiloConfig};

mod support;
use support::*;

#[tokio::test(start_paused = true)]
async fn idle_deactivation_persists_and_reactivation_restores() {
    let storage = Arc::new(MemoryStorage::new());
    let silo = start(storage.clone(), Duration::from_secs(60)).await;
    let g = silo.grain::<Tally>("sleepy");
    assert_eq!(g.ask(AddLazily(5)).await.unwrap(), 5);
    assert_eq!(g.ask(AddLazily(2)).await.unwrap(), 7);
    // Nothing written yet: the state is only dirty in memory.
    assert!(storage.read(&tally_id("sleepy")).await.unwrap().is_none());

    let dispatcher = silo.dispatcher(Tally::TYPE_NAME).unwrap();
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert!(
        dispatcher.is_active("sleepy"),
        "deactivated before its idle timeout"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    eventually("idle grain deactivated", Duration::from_secs(5), || {
        !dispatcher.is_active("sleepy")
    })
    .await;
    let stored = storage
        .read(&tally_id("sleepy"))
        .await
        .unwrap()
        .expect("state written on deactivation");
    assert!(!stored.data.is_empty());

    assert_eq!(
        g.ask(Total).await.unwrap(),
        7,
        "re-activation restores the state"
    );
    assert_eq!(activation_count("sleepy"), 2);
    silo.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_per_type_and_per_silo() {
    let silo = Silo::start(
        SiloConfig::default()
            .with_idle_timeout(Duration::from_secs(600))
            .with_type_idle_timeout(Tally::TYPE_NAME, Duration::from_secs(30)),
        Arc::new(MemoryStorage::new()),
    )
    .await
    .unwrap();
    assert_eq!(
        silo.dispatcher(Tally::TYPE_NAME).unwrap().idle_timeout(),
        Duration::from_secs(30)
    );
    // `Brief` sets its own 5 s.
    let brief = silo.dispatcher(Brief::TYPE_NAME).unwrap();
    assert_eq!(brief.idle_timeout(), Duration::from_secs(5));
    silo.grain::<Brief>("b").ask(Ping).await.unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    eventually("brief grain deactivated", Duration::from_secs(5), || {
        !brief.is_active("b")
    })
    .await;
    silo.shutdown().await;
}

#[tokio::test]
async fn default_idle_timeout_is_fifteen_minutes() {
    let silo = Silo::start(SiloConfig::default(), Arc::new(MemoryStorage::new()))
        .await
        .unwrap();
    assert_eq!(
        silo.dispatcher(Tally::TYPE_NAME).unwrap().idle_timeout(),
        Duration::from_secs(15 * 60)
    );
    silo.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn messages_during_deactivation_wait_for_the_next_activation() {
    let storage = Arc::new(SlowStorage::new(Duration::from_secs(2)));
    let silo = start(storage.clone(), Duration::from_secs(10)).await;
    let g = silo.grain::<Tally>("handover");
    g.ask(AddLazily(1)).await.unwrap();
    let dispatcher = silo.dispatcher(Tally::TYPE_NAME).unwrap();
    // Let the idle timer fire; the final write then takes 2 s.
    tokio::time::sleep(Duration::from_secs(11)).await;
    eventually("deactivation write started", Duration::from_secs(5), || {
        storage.writes_started() == 1
    })
    .await;
    // These arrive while the old activation is writing its state.
    let during: Vec<_> = (0..10)
        .map(|_| {
            let g = g.clone();
            tokio::spawn(async move { g.ask(Add(1)).await })
        })
        .collect();
    let mut totals = Vec::new();
    for call in during {
        totals.push(call.await.unwrap().unwrap());
    }
    totals.sort_unstable();
    assert_eq!(
        totals,
        (2..=11).collect::<Vec<i64>>(),
        "each message applied once, on top of the persisted 1"
    );
    assert_eq!(activation_count("handover"), 2);
    assert!(dispatcher.is_active("handover"));
    silo.shutdown().await;
}

#[tokio::test]
async fn shutdown_writes_dirty_state_and_refuses_new_work() {
    let storage = Arc::new(MemoryStorage::new());
    let silo = start(storage.clone(), Duration::from_secs(600)).await;
    let g = silo.grain::<Tally>("closing");
    g.ask(AddLazily(42)).await.unwrap();
    let router = silo.router();
    silo.shutdown().await;
    let stored = storage
        .read(&tally_id("closing"))
        .await
        .unwrap()
        .expect("written at shutdown");
    let state: TallyState = granary_proto::codec::decode(&stored.data).unwrap();
    assert_eq!(state.total, 42);
    let late = GrainRef::<Tally>::new(router, "closing");
    assert_eq!(late.ask(Total).await.unwrap_err(), CallError::ShuttingDown);
}

#[tokio::test(start_paused = true)]
async fn failed_final_write_keeps_the_grain_and_its_state() {
    let storage = Arc::new(FlakyStorage::default());
    let silo = start(storage.clone(), Duration::from_secs(10)).await;
    let g = silo.grain::<Tally>("unsaved");
    g.ask(AddLazily(9)).await.unwrap();
    storage.fail.store(true, Ordering::SeqCst);
    let dispatcher = silo.dispatcher(Tally::TYPE_NAME).unwrap();
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert!(
        dispatcher.is_active("unsaved"),
        "deactivated although its state could not be written"
    );
    storage.fail.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(11)).await;
    eventually(
        "deactivated once storage is back",
        Duration::from_secs(5),
        || !dispatcher.is_active("unsaved"),
    )
    .await;
    assert_eq!(g.ask(Total).await.unwrap(), 9);
    silo.shutdown().await;
}
