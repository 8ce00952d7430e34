//! Shared test grains and helpers of the stand-alone silo tests (`runtime_*.rs`). Each
//! test file includes it with `mod support;` and `use support::*;`.
//!
//! - [`Tally`]: a persistent tally with knobs for every behaviour under test (lazy
//!   writes, panics, handler errors, slow and gated turns); [`Brief`]: a grain with a
//!   short idle timeout of its own.
//! - [`activation_count`] and [`gate`]: per-key statics. Every test binary has its own
//!   copy, and keys are unique per test, so tests running in parallel do not interfere.
//! - [`start`], [`eventually`] (poll with a deadline) and [`tally_id`].
//! - [`SlowStorage`] and [`FlakyStorage`]: storage doubles for deactivation tests.

// Every test binary includes this module and uses only part of it.
#![allow(dead_code)]

mod storage;

// Not every test file uses the storage doubles.
#[allow(unused_imports)]
pub use storage::{FlakyStorage, SlowStorage};

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use granary_proto::GrainId;
use granary_runtime::prelude::*;
use granary_runtime::GrainStorage;
use granary_silo::{Silo, SiloConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

// ---------------------------------------------------------------- test grains

/// Activations per grain key, across all tests (keys are unique per test).
fn activations() -> &'static Mutex<HashMap<String, usize>> {
    static A: OnceLock<Mutex<HashMap<String, usize>>> = OnceLock::new();
    A.get_or_init(Default::default)
}

pub fn activation_count(key: &str) -> usize {
    activations().lock().unwrap().get(key).copied().unwrap_or(0)
}

/// A persistent tally with knobs for every behaviour under test.
pub struct Tally {
    /// Concurrent turns observed (must never exceed 1).
    in_turn: Arc<AtomicUsize>,
}

#[derive(Default, Serialize, Deserialize)]
pub struct TallyState {
    pub total: i64,
}

#[derive(Serialize, Deserialize)]
pub struct Add(pub i64);
/// Adds without writing: state is only persisted at deactivation.
#[derive(Serialize, Deserialize)]
pub struct AddLazily(pub i64);
#[derive(Serialize, Deserialize)]
pub struct Total;
#[derive(Serialize, Deserialize)]
pub struct Boom;
#[derive(Serialize, Deserialize)]
pub struct Fail;
/// Sleeps `0` ms inside the turn, then reports the max concurrent turns seen.
#[derive(Serialize, Deserialize)]
pub struct SlowTurn(pub u64);
/// Waits until the test's gate opens (by key).
#[derive(Serialize, Deserialize)]
pub struct WaitGate;

fn gates() -> &'static Mutex<HashMap<String, Arc<Notify>>> {
    static G: OnceLock<Mutex<HashMap<String, Arc<Notify>>>> = OnceLock::new();
    G.get_or_init(Default::default)
}

pub fn gate(key: &str) -> Arc<Notify> {
    gates()
        .lock()
        .unwrap()
        .entry(key.to_owned())
        .or_default()
        .clone()
}

#[async_trait]
impl Grain for Tally {
    const TYPE_NAME: &'static str = "test.tally/v1";
    type State = TallyState;

    async fn on_activate(ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        *activations()
            .lock()
            .unwrap()
            .entry(ctx.key().to_owned())
            .or_default() += 1;
        // Widen the race window for concurrent first calls.
        tokio::task::yield_now().await;
        Ok(Tally {
            in_turn: Arc::new(AtomicUsize::new(0)),
        })
    }
}

#[async_trait]
impl Handler<Add> for Tally {
    type Reply = i64;
    async fn handle(
        &mut self,
        Add(n): Add,
        ctx: &mut GrainContext<Self>,
    ) -> Result<i64, GrainError> {
        ctx.state_mut().total += n;
        ctx.write_state().await?;
        Ok(ctx.state().total)
    }
}

#[async_trait]
impl Handler<AddLazily> for Tally {
    type Reply = i64;
    async fn handle(
        &mut self,
        AddLazily(n): AddLazily,
        ctx: &mut GrainContext<Self>,
    ) -> Result<i64, GrainError> {
        ctx.state_mut().total += n;
        Ok(ctx.state().total)
    }
}

#[async_trait]
impl Handler<Total> for Tally {
    type Reply = i64;
    async fn handle(&mut self, _: Total, ctx: &mut GrainContext<Self>) -> Result<i64, GrainError> {
        Ok(ctx.state().total)
    }
}

#[async_trait]
impl Handler<Boom> for Tally {
    type Reply = ();
    async fn handle(&mut self, _: Boom, ctx: &mut GrainContext<Self>) -> Result<(), GrainError> {
        ctx.state_mut().total = -999; // must never be persisted
        panic!("boom in {}", ctx.key());
    }
}

#[async_trait]
impl Handler<Fail> for Tally {
    type Reply = ();
    async fn handle(&mut self, _: Fail, _ctx: &mut GrainContext<Self>) -> Result<(), GrainError> {
        Err("refused".into())
    }
}

#[async_trait]
impl Handler<SlowTurn> for Tally {
    type Reply = usize;
    async fn handle(
        &mut self,
        SlowTurn(ms): SlowTurn,
        _ctx: &mut GrainContext<Self>,
    ) -> Result<usize, GrainError> {
        let now = self.in_turn.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(ms)).await;
        self.in_turn.fetch_sub(1, Ordering::SeqCst);
        Ok(now)
    }
}

#[async_trait]
impl Handler<WaitGate> for Tally {
    type Reply = ();
    async fn handle(
        &mut self,
        _: WaitGate,
        ctx: &mut GrainContext<Self>,
    ) -> Result<(), GrainError> {
        gate(ctx.key()).notified().await;
        Ok(())
    }
}

granary_runtime::register_grain!(
    Tally,
    handles = [Add, AddLazily, Total, Boom, Fail, SlowTurn, WaitGate]
);

/// A grain with a short idle timeout of its own.
pub struct Brief;
#[derive(Serialize, Deserialize)]
pub struct Ping;

#[async_trait]
impl Grain for Brief {
    const TYPE_NAME: &'static str = "test.brief/v1";
    type State = ();
    const IDLE_TIMEOUT: Option<Duration> = Some(Duration::from_secs(5));
    async fn on_activate(_ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Brief)
    }
}

#[async_trait]
impl Handler<Ping> for Brief {
    type Reply = String;
    async fn handle(
        &mut self,
        _: Ping,
        _ctx: &mut GrainContext<Self>,
    ) -> Result<String, GrainError> {
        Ok("pong".into())
    }
}

granary_runtime::register_grain!(Brief, handles = [Ping]);

// ---------------------------------------------------------------- helpers

pub async fn start(storage: Arc<dyn GrainStorage>, idle: Duration) -> Silo {
    Silo::start(SiloConfig::default().with_idle_timeout(idle), storage)
        .await
        .expect("silo starts")
}

pub async fn eventually(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !check() {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn tally_id(key: &str) -> GrainId {
    GrainId::new(<Tally as Grain>::TYPE_NAME, key)
}
