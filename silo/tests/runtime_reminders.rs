//! Durable reminders in one stand-alone silo, on tokio's paused clock: a reminder fires
//! on schedule, wakes a deactivated grain, is stored in the grain store (a second silo
//! on the same store takes it over), and stops when unregistered; bad registrations
//! are refused. The cluster cases (kill -9 of the slave, full restart) are in
//! `granary-example`'s `tests/reminders.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use granary_runtime::prelude::*;
use granary_runtime::reminder::{shard_id, shard_of, Reminder, ReminderError, MIN_REMINDER_PERIOD};
use granary_runtime::GrainStorage;
use granary_silo::storage::MemoryStorage;
use granary_silo::{Silo, SiloConfig};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

mod support;
use support::eventually;

/// Ticks seen per key: (paused-clock time, the tick).
type Seen = Mutex<HashMap<String, Vec<(Instant, Reminder)>>>;

fn ticks() -> &'static Seen {
    static T: OnceLock<Seen> = OnceLock::new();
    T.get_or_init(Default::default)
}

fn seen(key: &str) -> Vec<(Instant, Reminder)> {
    ticks()
        .lock()
        .unwrap()
        .get(key)
        .cloned()
        .unwrap_or_default()
}

/// Registers reminders on request and records their ticks.
struct Alarm;

#[derive(Serialize, Deserialize)]
struct Set {
    name: String,
    due_ms: u64,
    period_ms: u64,
}
#[derive(Serialize, Deserialize)]
struct Unset(String);
#[derive(Serialize, Deserialize)]
struct List;
#[derive(Serialize, Deserialize)]
struct Sleep;

#[async_trait]
impl Grain for Alarm {
    const TYPE_NAME: &'static str = "test.alarm/v1";
    type State = ();
    const IDLE_TIMEOUT: Option<Duration> = Some(Duration::from_secs(30));
    async fn on_activate(_: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Alarm)
    }
}

#[async_trait]
impl Handler<Set> for Alarm {
    type Reply = Result<(), ReminderError>;
    async fn handle(
        &mut self,
        m: Set,
        ctx: &mut GrainContext<Self>,
    ) -> Result<Result<(), ReminderError>, GrainError> {
        let (due, period) = (
            Duration::from_millis(m.due_ms),
            Duration::from_millis(m.period_ms),
        );
        Ok(ctx.register_reminder(m.name, due, period).await)
    }
}

#[async_trait]
impl Handler<Unset> for Alarm {
    type Reply = bool;
    async fn handle(&mut self, m: Unset, ctx: &mut GrainContext<Self>) -> Result<bool, GrainError> {
        Ok(ctx.unregister_reminder(&m.0).await?)
    }
}

#[async_trait]
impl Handler<List> for Alarm {
    type Reply = Vec<String>;
    async fn handle(
        &mut self,
        _: List,
        ctx: &mut GrainContext<Self>,
    ) -> Result<Vec<String>, GrainError> {
        Ok(ctx.reminders().await?.into_iter().map(|r| r.name).collect())
    }
}

#[async_trait]
impl Handler<Sleep> for Alarm {
    type Reply = ();
    async fn handle(&mut self, _: Sleep, ctx: &mut GrainContext<Self>) -> Result<(), GrainError> {
        ctx.deactivate_on_idle();
        Ok(())
    }
}

#[async_trait]
impl Handler<Reminder> for Alarm {
    type Reply = ();
    async fn handle(
        &mut self,
        tick: Reminder,
        ctx: &mut GrainContext<Self>,
    ) -> Result<(), GrainError> {
        ticks()
            .lock()
            .unwrap()
            .entry(ctx.key().to_owned())
            .or_default()
            .push((Instant::now(), tick));
        Ok(())
    }
}

granary_runtime::register_grain!(Alarm, handles = [Set, Unset, List, Sleep, Reminder]);

fn set(name: &str, due_ms: u64, period_ms: u64) -> Set {
    Set {
        name: name.into(),
        due_ms,
        period_ms,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn a_reminder_fires_on_schedule_and_wakes_a_deactivated_grain() {
    let storage = Arc::new(MemoryStorage::new());
    let silo = Silo::start(SiloConfig::default(), storage.clone())
        .await
        .unwrap();
    let dispatcher = silo.dispatcher(Alarm::TYPE_NAME).unwrap();
    let g = silo.grain::<Alarm>("wake");
    let t0 = Instant::now();
    g.ask(set("beat", 2_000, 1_000)).await.unwrap().unwrap();
    // The table is in the grain store, under the grain's shard, before the ask returns.
    let shard = shard_id(shard_of(&granary_proto::GrainId::new(
        Alarm::TYPE_NAME,
        "wake",
    )));
    assert!(storage.read(&shard).await.unwrap().is_some());
    assert_eq!(g.ask(List).await.unwrap(), ["beat"]);

    g.ask(Sleep).await.unwrap();
    eventually("the grain deactivated", ms(1_000), || {
        !dispatcher.is_active("wake")
    })
    .await;
    tokio::time::sleep_until(t0 + ms(2_500)).await;
    assert!(dispatcher.is_active("wake"), "the tick activated the grain");
    tokio::time::sleep_until(t0 + ms(4_500)).await;
    let got = seen("wake");
    let at: Vec<Duration> = got.iter().map(|(t, _)| *t - t0).collect();
    // On the paused clock a tick comes on time to the millisecond.
    assert_eq!(at.len(), 3, "{at:?}");
    for (i, t) in at.iter().enumerate() {
        let due = ms(2_000 + 1_000 * i as u64);
        assert!(
            *t >= due && *t < due + ms(5),
            "tick {i} at {t:?}, due {due:?}"
        );
    }
    assert!(got
        .iter()
        .all(|(_, r)| r.name == "beat" && r.missed == 0 && r.period == ms(1_000)));
    assert!(got
        .windows(2)
        .all(|w| w[1].1.due_unix_ms == w[0].1.due_unix_ms + 1_000));

    assert!(g.ask(Unset("beat".into())).await.unwrap());
    assert!(!g.ask(Unset("beat".into())).await.unwrap());
    tokio::time::sleep(ms(3_000)).await;
    assert_eq!(seen("wake").len(), 3, "no tick after unregister");
    // The emptied shard left no record behind.
    assert!(storage.read(&shard).await.unwrap().is_none());
    silo.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_reminder_is_in_the_store_so_a_new_silo_on_it_fires_it() {
    let storage = Arc::new(MemoryStorage::new());
    let silo = Silo::start(SiloConfig::default(), storage.clone())
        .await
        .unwrap();
    silo.grain::<Alarm>("moved")
        .ask(set("later", 5_000, 1_000))
        .await
        .unwrap()
        .unwrap();
    silo.shutdown().await;
    assert!(seen("moved").is_empty());
    // Nothing is active in the new silo: its keeper finds the stored table.
    let silo = Silo::start(SiloConfig::default(), storage.clone())
        .await
        .unwrap();
    eventually("the reminder fired in the new silo", ms(20_000), || {
        !seen("moved").is_empty()
    })
    .await;
    assert_eq!(seen("moved")[0].1.name, "later");
    assert!(silo
        .grain::<Alarm>("moved")
        .ask(Unset("later".into()))
        .await
        .unwrap());
    silo.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn bad_registrations_are_refused() {
    let silo = Silo::start(SiloConfig::default(), Arc::new(MemoryStorage::new()))
        .await
        .unwrap();
    let g = silo.grain::<Alarm>("bad");
    assert_eq!(
        g.ask(set("fast", 0, 999)).await.unwrap(),
        Err(ReminderError::PeriodTooShort {
            period: ms(999),
            min: MIN_REMINDER_PERIOD
        })
    );
    assert_eq!(
        g.ask(set("", 0, 1_000)).await.unwrap(),
        Err(ReminderError::EmptyName)
    );
    assert!(g.ask(List).await.unwrap().is_empty());
    silo.shutdown().await;
}
