//! Integration tests of the grain runtime in one silo: activation, turns, idle
//! deactivation with persisted state, etag conflicts, panics, timeouts and backpressure.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use granary_proto::GrainId;
use granary_runtime::prelude::*;
use granary_runtime::{GrainStorage, StoredState};
use granary_silo::storage::MemoryStorage;
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

fn activation_count(key: &str) -> usize {
    activations().lock().unwrap().get(key).copied().unwrap_or(0)
}

/// A persistent tally with knobs for every behaviour under test.
struct Tally {
    /// Concurrent turns observed (must never exceed 1).
    in_turn: Arc<AtomicUsize>,
}

#[derive(Default, Serialize, Deserialize)]
struct TallyState {
    total: i64,
}

#[derive(Serialize, Deserialize)]
struct Add(i64);
/// Adds without writing: state is only persisted at deactivation.
#[derive(Serialize, Deserialize)]
struct AddLazily(i64);
#[derive(Serialize, Deserialize)]
struct Total;
#[derive(Serialize, Deserialize)]
struct Boom;
#[derive(Serialize, Deserialize)]
struct Fail;
/// Sleeps `0` ms inside the turn, then reports the max concurrent turns seen.
#[derive(Serialize, Deserialize)]
struct SlowTurn(u64);
/// Waits until the test's gate opens (by key).
#[derive(Serialize, Deserialize)]
struct WaitGate;

fn gates() -> &'static Mutex<HashMap<String, Arc<Notify>>> {
    static G: OnceLock<Mutex<HashMap<String, Arc<Notify>>>> = OnceLock::new();
    G.get_or_init(Default::default)
}

fn gate(key: &str) -> Arc<Notify> {
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
struct Brief;
#[derive(Serialize, Deserialize)]
struct Ping;

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

async fn start(storage: Arc<dyn GrainStorage>, idle: Duration) -> Silo {
    Silo::start(SiloConfig::default().with_idle_timeout(idle), storage)
        .await
        .expect("silo starts")
}

async fn eventually(what: &str, deadline: Duration, mut check: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !check() {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn tally_id(key: &str) -> GrainId {
    GrainId::new(<Tally as Grain>::TYPE_NAME, key)
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn activates_on_first_message() {
    let silo = start(Arc::new(MemoryStorage::new()), Duration::from_secs(600)).await;
    let tally = silo.dispatcher(Tally::TYPE_NAME).unwrap();
    assert!(!tally.is_active("first"));
    assert_eq!(silo.grain::<Tally>("first").ask(Add(2)).await.unwrap(), 2);
    assert!(tally.is_active("first"));
    assert_eq!(activation_count("first"), 1);
    assert_eq!(silo.grain::<Tally>("first").ask(Total).await.unwrap(), 2);
    silo.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_activation_under_1000_concurrent_first_calls() {
    let silo = Arc::new(start(Arc::new(MemoryStorage::new()), Duration::from_secs(600)).await);
    let calls: Vec<_> = (0..1000)
        .map(|_| {
            let silo = silo.clone();
            tokio::spawn(async move { silo.grain::<Tally>("crowd").ask(Add(1)).await })
        })
        .collect();
    let mut replies = Vec::new();
    for call in calls {
        replies.push(call.await.unwrap().unwrap());
    }
    replies.sort_unstable();
    assert_eq!(
        replies,
        (1..=1000).collect::<Vec<i64>>(),
        "every add applied once, in some order"
    );
    assert_eq!(activation_count("crowd"), 1);
    Arc::into_inner(silo).unwrap().shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_never_interleave() {
    let silo = Arc::new(start(Arc::new(MemoryStorage::new()), Duration::from_secs(600)).await);
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let silo = silo.clone();
            tokio::spawn(async move { silo.grain::<Tally>("serial").ask(SlowTurn(5)).await })
        })
        .collect();
    for call in calls {
        assert_eq!(
            call.await.unwrap().unwrap(),
            1,
            "a handler saw another turn running"
        );
    }
    // A handler awaiting keeps the next message waiting.
    let blocked = silo.grain::<Tally>("gated");
    let first = tokio::spawn({
        let g = blocked.clone();
        async move { g.ask(WaitGate).await }
    });
    let second = tokio::spawn({
        let g = blocked.clone();
        async move { g.ask(Total).await }
    });
    let dispatcher = silo.dispatcher(Tally::TYPE_NAME).unwrap();
    eventually(
        "second message queued behind the first",
        Duration::from_secs(5),
        || {
            dispatcher
                .stats()
                .grains
                .iter()
                .any(|g| g.key == "gated" && g.queue_depth == 1)
        },
    )
    .await;
    assert!(!second.is_finished());
    gate("gated").notify_one();
    first.await.unwrap().unwrap();
    assert_eq!(second.await.unwrap().unwrap(), 0);
    Arc::into_inner(silo).unwrap().shutdown().await;
}

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
async fn etag_conflict_fails_the_write_and_deactivates() {
    let storage = Arc::new(MemoryStorage::new());
    let silo = start(storage.clone(), Duration::from_secs(600)).await;
    let g = silo.grain::<Tally>("contested");
    assert_eq!(g.ask(Add(1)).await.unwrap(), 1);
    // Someone else (another activation, an operator) writes newer state.
    let current = storage.read(&tally_id("contested")).await.unwrap().unwrap();
    let newer = granary_proto::codec::encode(&TallyState { total: 100 }).unwrap();
    storage
        .write(&tally_id("contested"), &newer, Some(&current.etag))
        .await
        .unwrap();

    let err = g.ask(Add(1)).await.unwrap_err();
    assert!(
        matches!(err, CallError::Storage(ref m) if m.contains("etag conflict")),
        "{err:?}"
    );
    let dispatcher = silo.dispatcher(Tally::TYPE_NAME).unwrap();
    let deadline = Duration::from_secs(5);
    eventually("conflicted grain deactivated", deadline, || {
        !dispatcher.is_active("contested")
    })
    .await;
    // The newer state was not overwritten, and the next activation reads it.
    assert_eq!(g.ask(Total).await.unwrap(), 100);
    assert_eq!(g.ask(Add(1)).await.unwrap(), 101);
    silo.shutdown().await;
}

#[tokio::test]
async fn a_panicking_handler_fails_its_call_only() {
    let storage = Arc::new(MemoryStorage::new());
    let silo = start(storage.clone(), Duration::from_secs(600)).await;
    let g = silo.grain::<Tally>("fragile");
    assert_eq!(g.ask(Add(3)).await.unwrap(), 3);
    let err = g.ask(Boom).await.unwrap_err();
    assert!(
        matches!(err, CallError::Panicked(ref m) if m.contains("boom in fragile")),
        "{err:?}"
    );
    // Other grains are unaffected; this one re-activates from storage, without the
    // state the panicking turn left behind.
    assert_eq!(silo.grain::<Tally>("sturdy").ask(Add(1)).await.unwrap(), 1);
    assert_eq!(g.ask(Total).await.unwrap(), 3);
    assert_eq!(activation_count("fragile"), 2);
    silo.shutdown().await;
}

#[tokio::test]
async fn handler_errors_keep_the_grain_active() {
    let silo = start(Arc::new(MemoryStorage::new()), Duration::from_secs(600)).await;
    let g = silo.grain::<Tally>("grumpy");
    assert_eq!(
        g.ask(Fail).await.unwrap_err(),
        CallError::Handler("refused".into())
    );
    assert_eq!(g.ask(Add(1)).await.unwrap(), 1);
    assert_eq!(activation_count("grumpy"), 1);
    silo.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn ask_times_out() {
    let silo = start(Arc::new(MemoryStorage::new()), Duration::from_secs(600)).await;
    let g = silo.grain::<Tally>("stuck");
    let started = Instant::now();
    let err = g
        .ask(WaitGate)
        .timeout(Duration::from_secs(3))
        .await
        .unwrap_err();
    assert_eq!(err, CallError::Timeout);
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert!(started.elapsed() < Duration::from_secs(4));
    gate("stuck").notify_one();
    // The default is 30 s, as in Orleans.
    assert_eq!(
        granary_runtime::DEFAULT_CALL_TIMEOUT,
        Duration::from_secs(30)
    );
    silo.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn full_mailbox_applies_backpressure_then_fails() {
    let silo = Silo::start(
        SiloConfig::default().with_mailbox_capacity(2),
        Arc::new(MemoryStorage::new()),
    )
    .await
    .unwrap();
    let g = silo.grain::<Tally>("crowded");
    let blocker = tokio::spawn({
        let g = g.clone();
        async move { g.ask(WaitGate).await }
    });
    let dispatcher = silo.dispatcher(Tally::TYPE_NAME).unwrap();
    eventually("blocker running", Duration::from_secs(5), || {
        dispatcher
            .stats()
            .grains
            .iter()
            .any(|s| s.key == "crowded" && s.queue_depth == 0)
    })
    .await;
    g.tell(AddLazily(1)).await.unwrap();
    g.tell(AddLazily(1)).await.unwrap();
    let err = g
        .tell(AddLazily(1))
        .timeout(Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(err, CallError::MailboxFull);
    gate("crowded").notify_one();
    blocker.await.unwrap().unwrap();
    assert_eq!(
        g.ask(Total).await.unwrap(),
        2,
        "the rejected tell was not applied"
    );
    silo.shutdown().await;
}

/// Sends an already-encoded call, as one arriving from another process would: the
/// typed API rules out unregistered grains and messages at compile time (see
/// `RegisteredMessage`), but a peer built from other code can still name them.
async fn call_encoded(silo: &Silo, grain_type: &'static str, message: &str) -> CallError {
    use granary_runtime::envelope::{Body, Envelope, ReplyTo};
    let (tx, rx) = tokio::sync::oneshot::channel();
    let envelope = Envelope {
        target: GrainId::new(grain_type, "x"),
        body: Body::Encoded {
            name: message.into(),
            bytes: Vec::new(),
        },
        reply: ReplyTo::Encoded(tx),
        hops: 0,
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    if let Err(e) = silo.router().deliver(envelope, deadline).await {
        return e;
    }
    rx.await
        .expect("the call is answered")
        .expect_err("the call fails")
}

#[tokio::test]
async fn unknown_grain_types_and_messages_are_clear_errors() {
    let silo = start(Arc::new(MemoryStorage::new()), Duration::from_secs(600)).await;
    // A message the grain type does not list.
    let err = call_encoded(&silo, "test.tally/v1", "Unlisted").await;
    assert!(
        matches!(err, CallError::UnknownMessage { ref grain_type, ref message }
            if grain_type == "test.tally/v1" && message == "Unlisted"),
        "{err:?}"
    );
    assert!(err.to_string().contains("register_grain!"), "{err}");
    // A grain type that was never registered.
    let err = call_encoded(&silo, "test.ghost/v1", "Ping").await;
    assert_eq!(err, CallError::UnknownGrainType("test.ghost/v1".into()));
    assert!(err.to_string().contains("register_grain!"), "{err}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_grains_run_concurrently() {
    let silo = Arc::new(start(Arc::new(MemoryStorage::new()), Duration::from_secs(600)).await);
    let calls: Vec<_> = (0..5000)
        .map(|i| {
            let silo = silo.clone();
            tokio::spawn(async move { silo.grain::<Tally>(format!("many-{i}")).ask(Add(i)).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        assert_eq!(call.await.unwrap().unwrap(), i as i64);
    }
    assert_eq!(
        silo.dispatcher(Tally::TYPE_NAME)
            .unwrap()
            .activation_count(),
        5000
    );
    let (active, _) = silo.load();
    assert!(active >= 5000);
    Arc::into_inner(silo).unwrap().shutdown().await;
}

// ---------------------------------------------------------------- storage doubles

/// Memory storage whose writes take `delay` (to hold a deactivation open).
#[derive(Debug)]
struct SlowStorage {
    inner: MemoryStorage,
    delay: Duration,
    writes: AtomicUsize,
}

impl SlowStorage {
    fn new(delay: Duration) -> Self {
        Self {
            inner: MemoryStorage::new(),
            delay,
            writes: AtomicUsize::new(0),
        }
    }
    fn writes_started(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl GrainStorage for SlowStorage {
    fn name(&self) -> &'static str {
        "slow"
    }
    async fn read(&self, grain: &GrainId) -> Result<Option<StoredState>, StorageError> {
        self.inner.read(grain).await
    }
    async fn write(
        &self,
        grain: &GrainId,
        data: &[u8],
        expected: Option<&str>,
    ) -> Result<String, StorageError> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.inner.write(grain, data, expected).await
    }
    async fn clear(&self, grain: &GrainId, expected: Option<&str>) -> Result<(), StorageError> {
        self.inner.clear(grain, expected).await
    }
}

/// Memory storage whose writes fail with `Unavailable` while `fail` is set.
#[derive(Debug, Default)]
struct FlakyStorage {
    inner: MemoryStorage,
    fail: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl GrainStorage for FlakyStorage {
    fn name(&self) -> &'static str {
        "flaky"
    }
    async fn read(&self, grain: &GrainId) -> Result<Option<StoredState>, StorageError> {
        self.inner.read(grain).await
    }
    async fn write(
        &self,
        grain: &GrainId,
        data: &[u8],
        expected: Option<&str>,
    ) -> Result<String, StorageError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StorageError::Unavailable("test outage".into()));
        }
        self.inner.write(grain, data, expected).await
    }
    async fn clear(&self, grain: &GrainId, expected: Option<&str>) -> Result<(), StorageError> {
        self.inner.clear(grain, expected).await
    }
}
