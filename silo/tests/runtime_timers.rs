//! Grain timers in one silo, on tokio's paused clock (so "on schedule" is exact): ticks
//! fire at `due` and every `period` after, never interleave with message turns (a long
//! turn delays a tick and skips the missed ones), change state like any turn, stop at
//! deactivation, do not keep a grain alive, and one-shot timers fire once.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use granary_runtime::prelude::*;
use granary_runtime::GrainStorage;
use granary_silo::storage::MemoryStorage;
use granary_silo::{Silo, SiloConfig};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

mod support;
use support::eventually;

/// What the test sees of each key: tick times and overlapping turns.
#[derive(Default)]
struct Seen {
    ticks: Vec<Instant>,
    /// Turns (messages or ticks) running right now.
    in_turn: usize,
    /// Turns that started while another one ran: must stay 0.
    overlaps: usize,
    activations: usize,
}

fn seen() -> &'static Mutex<HashMap<String, Seen>> {
    static SEEN: OnceLock<Mutex<HashMap<String, Seen>>> = OnceLock::new();
    SEEN.get_or_init(Default::default)
}

fn with_seen<R>(key: &str, f: impl FnOnce(&mut Seen) -> R) -> R {
    f(seen().lock().unwrap().entry(key.to_owned()).or_default())
}

fn ticks(key: &str) -> Vec<Instant> {
    with_seen(key, |s| s.ticks.clone())
}

/// Counts its timer's ticks in its state; every turn checks that it runs alone.
struct Ticker;

#[derive(Default, Serialize, Deserialize)]
struct TickerState {
    ticks: u64,
}

/// Registers the timer `tick` (period in ms; `None`: once).
#[derive(Serialize, Deserialize)]
struct Start {
    due_ms: u64,
    period_ms: Option<u64>,
}
#[derive(Serialize, Deserialize)]
struct StopTicking;
/// A message turn that takes this many ms.
#[derive(Serialize, Deserialize)]
struct Busy(u64);
#[derive(Serialize, Deserialize)]
struct Count;
/// The timer's message: never sent by anyone, so not in `register_grain!`.
#[derive(Clone, Serialize, Deserialize)]
struct Tick;

impl Ticker {
    async fn turn<T>(key: &str, work: impl std::future::Future<Output = T>) -> T {
        with_seen(key, |s| {
            if s.in_turn > 0 {
                s.overlaps += 1;
            }
            s.in_turn += 1;
        });
        let out = work.await;
        with_seen(key, |s| s.in_turn -= 1);
        out
    }
}

#[async_trait]
impl Grain for Ticker {
    const TYPE_NAME: &'static str = "test.ticker/v1";
    type State = TickerState;
    const IDLE_TIMEOUT: Option<Duration> = Some(Duration::from_secs(10));
    async fn on_activate(ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        with_seen(ctx.key(), |s| s.activations += 1);
        Ok(Ticker)
    }
}

#[async_trait]
impl Handler<Start> for Ticker {
    type Reply = ();
    async fn handle(&mut self, m: Start, ctx: &mut GrainContext<Self>) -> Result<(), GrainError> {
        ctx.register_timer(
            "tick",
            Duration::from_millis(m.due_ms),
            m.period_ms.map(Duration::from_millis),
            Tick,
        );
        Ok(())
    }
}

#[async_trait]
impl Handler<StopTicking> for Ticker {
    type Reply = bool;
    async fn handle(
        &mut self,
        _: StopTicking,
        ctx: &mut GrainContext<Self>,
    ) -> Result<bool, GrainError> {
        Ok(ctx.unregister_timer("tick"))
    }
}

#[async_trait]
impl Handler<Busy> for Ticker {
    type Reply = ();
    async fn handle(
        &mut self,
        Busy(ms): Busy,
        ctx: &mut GrainContext<Self>,
    ) -> Result<(), GrainError> {
        let key = ctx.key().to_owned();
        Ticker::turn(&key, tokio::time::sleep(Duration::from_millis(ms))).await;
        Ok(())
    }
}

#[async_trait]
impl Handler<Count> for Ticker {
    type Reply = u64;
    async fn handle(&mut self, _: Count, ctx: &mut GrainContext<Self>) -> Result<u64, GrainError> {
        Ok(ctx.state().ticks)
    }
}

#[async_trait]
impl Handler<Tick> for Ticker {
    type Reply = ();
    async fn handle(&mut self, _: Tick, ctx: &mut GrainContext<Self>) -> Result<(), GrainError> {
        let key = ctx.key().to_owned();
        Ticker::turn(&key, async {
            with_seen(&key, |s| s.ticks.push(Instant::now()));
            // A tick takes a little time, so an overlapping message would be seen.
            tokio::time::sleep(Duration::from_millis(1)).await;
        })
        .await;
        ctx.state_mut().ticks += 1;
        Ok(())
    }
}

granary_runtime::register_grain!(Ticker, handles = [Start, StopTicking, Busy, Count]);

async fn silo(storage: Arc<MemoryStorage>) -> Silo {
    Silo::start(SiloConfig::default(), storage).await.unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn a_timer_fires_on_schedule_as_a_turn_that_changes_state() {
    let storage = Arc::new(MemoryStorage::new());
    let silo = silo(storage.clone()).await;
    let g = silo.grain::<Ticker>("schedule");
    let t0 = Instant::now();
    g.ask(Start {
        due_ms: 1000,
        period_ms: Some(500),
    })
    .await
    .unwrap();
    tokio::time::sleep(ms(3_100)).await;
    let at: Vec<Duration> = ticks("schedule").iter().map(|t| *t - t0).collect();
    assert_eq!(at, [ms(1000), ms(1500), ms(2000), ms(2500), ms(3000)]);
    // Ticks are turns: they changed the state, which a message reads.
    assert_eq!(g.ask(Count).await.unwrap(), 5);
    assert!(g.ask(StopTicking).await.unwrap());
    tokio::time::sleep(ms(2_000)).await;
    assert_eq!(ticks("schedule").len(), 5, "no tick after unregister");
    assert!(!g.ask(StopTicking).await.unwrap(), "already gone");
    silo.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn ticks_never_interleave_with_message_turns() {
    let silo = silo(Arc::new(MemoryStorage::new())).await;
    let g = silo.grain::<Ticker>("alone");
    let t0 = Instant::now();
    g.ask(Start {
        due_ms: 100,
        period_ms: Some(100),
    })
    .await
    .unwrap();
    tokio::time::sleep(ms(250)).await;
    // A message turn from 250 ms to 1250 ms: the ticks at 300…1200 cannot run during it.
    g.ask(Busy(1000)).await.unwrap();
    // A burst of short turns racing the timer.
    let burst: Vec<_> = (0..50).map(|_| g.ask(Busy(7)).into_future()).collect();
    for r in futures::future::join_all(burst).await {
        r.unwrap();
    }
    let until = Instant::now() + ms(500);
    tokio::time::sleep_until(until).await;
    let (overlaps, at) = with_seen("alone", |s| {
        (
            s.overlaps,
            s.ticks.iter().map(|t| *t - t0).collect::<Vec<_>>(),
        )
    });
    assert_eq!(overlaps, 0, "a tick ran during another turn");
    assert_eq!(&at[..2], [ms(100), ms(200)]);
    assert!(
        at.iter().all(|t| *t <= ms(250) || *t >= ms(1250)),
        "a tick ran during the long turn: {at:?}"
    );
    // After the long turn: one late tick, then back on the 100 ms grid (none queued).
    assert_eq!(at[2], ms(1250));
    assert!(at.windows(2).all(|w| w[1] > w[0]), "{at:?}");
    // During the burst a tick waits for the running 7 ms turn at most.
    assert!(
        at[3..].iter().all(|t| t.as_millis() % 100 < 10),
        "ticks stay on their 100 ms grid: {at:?}"
    );
    silo.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn timers_stop_at_deactivation_and_do_not_keep_a_grain_alive() {
    let storage = Arc::new(MemoryStorage::new());
    let silo = silo(storage.clone()).await;
    let dispatcher = silo.dispatcher(Ticker::TYPE_NAME).unwrap();
    let g = silo.grain::<Ticker>("sleepy");
    g.ask(Start {
        due_ms: 1000,
        period_ms: Some(1000),
    })
    .await
    .unwrap();
    // Idle timeout 10 s after the last message, whatever the ticks do.
    tokio::time::sleep(ms(9_500)).await;
    assert!(dispatcher.is_active("sleepy"));
    tokio::time::sleep(ms(1_000)).await;
    eventually("the ticking grain deactivated", ms(5_000), || {
        !dispatcher.is_active("sleepy")
    })
    .await;
    let fired = ticks("sleepy").len();
    assert!((9..=10).contains(&fired), "{fired} ticks");
    // The ticks' state was written at deactivation; no tick after it.
    let stored = storage
        .read(&granary_proto::GrainId::new(Ticker::TYPE_NAME, "sleepy"))
        .await
        .unwrap();
    assert!(stored.is_some());
    tokio::time::sleep(ms(5_000)).await;
    assert_eq!(
        ticks("sleepy").len(),
        fired,
        "a timer outlived its activation"
    );
    // A new activation has no timer until it registers one, and kept the count.
    assert_eq!(g.ask(Count).await.unwrap(), fired as u64);
    tokio::time::sleep(ms(3_000)).await;
    assert_eq!(ticks("sleepy").len(), fired);
    assert_eq!(with_seen("sleepy", |s| s.activations), 2);
    silo.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_one_shot_timer_fires_once_and_a_new_registration_replaces_it() {
    let silo = silo(Arc::new(MemoryStorage::new())).await;
    let g = silo.grain::<Ticker>("once");
    let t0 = Instant::now();
    g.ask(Start {
        due_ms: 300,
        period_ms: None,
    })
    .await
    .unwrap();
    tokio::time::sleep(ms(100)).await;
    // Replaced before it fired: due 400 ms from now instead.
    g.ask(Start {
        due_ms: 400,
        period_ms: None,
    })
    .await
    .unwrap();
    tokio::time::sleep(ms(2_000)).await;
    let at: Vec<Duration> = ticks("once").iter().map(|t| *t - t0).collect();
    assert_eq!(at, [ms(500)]);
    assert!(
        !g.ask(StopTicking).await.unwrap(),
        "a fired one-shot timer is gone"
    );
    silo.shutdown().await;
}
