use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn the_next_tick_is_the_first_multiple_of_the_period_ahead() {
    let t0 = Instant::now();
    // On time: one period on.
    assert_eq!(next_after(t0, ms(100), t0), t0 + ms(100));
    assert_eq!(next_after(t0, ms(100), t0 + ms(99)), t0 + ms(100));
    // Overran: the missed ticks are skipped, the phase is kept.
    assert_eq!(next_after(t0, ms(100), t0 + ms(100)), t0 + ms(200));
    assert_eq!(next_after(t0, ms(100), t0 + ms(350)), t0 + ms(400));
}

struct Nothing;
#[async_trait::async_trait]
impl Grain for Nothing {
    const TYPE_NAME: &'static str = "unit.timer-table/v1";
    type State = ();
    async fn on_activate(_: &mut GrainContext<Self>) -> Result<Self, crate::GrainError> {
        Ok(Nothing)
    }
}

fn entry(name: &str, next: Instant, period: Option<Duration>) -> Entry<Nothing> {
    fn never(
        _: &mut TurnFuture<Nothing>,
        _: Box<Live<Nothing>>,
        _: Arc<dyn Any + Send + Sync>,
        _: TraceContext,
        _: tracing::Span,
    ) {
        unreachable!("the table tests run no turn")
    }
    Entry {
        id: 0,
        name: name.into(),
        next,
        period,
        message: Arc::new(()),
        start: never,
    }
}

#[test]
fn the_table_takes_the_earliest_due_timer_and_replaces_by_name() {
    let t0 = Instant::now();
    let mut timers = Timers::<Nothing>::default();
    timers.insert(entry("slow", t0 + ms(50), Some(ms(50))));
    timers.insert(entry("once", t0 + ms(20), None));
    timers.insert(entry("fast", t0 + ms(10), Some(ms(10))));
    assert!(std::mem::take(&mut timers.changed));
    assert_eq!(timers.next_due(), Some(t0 + ms(10)));
    assert!(timers.take_due(t0 + ms(5)).is_none(), "nothing due yet");

    let tick = timers.take_due(t0 + ms(30)).expect("fast is due");
    assert_eq!((tick.name.as_str(), tick.scheduled), ("fast", t0 + ms(10)));
    // Its turn ran until 30 ms: the ticks at 20 and 30 are skipped.
    timers.after_tick(tick.id, tick.scheduled, t0 + ms(30));
    assert_eq!(timers.next_due(), Some(t0 + ms(20)));
    let tick = timers.take_due(t0 + ms(30)).expect("once is due");
    assert_eq!(tick.name, "once");
    assert_eq!(timers.entries.len(), 2, "a one-shot timer leaves the table");
    assert_eq!(timers.next_due(), Some(t0 + ms(40)));

    // Registering a name again replaces the timer; a tick of the old one changes nothing.
    let old = timers.entries.iter().find(|e| e.name == "slow").unwrap().id;
    timers.insert(entry("slow", t0 + ms(500), None));
    timers.after_tick(old, t0 + ms(50), t0 + ms(50));
    let slow = timers.entries.iter().find(|e| e.name == "slow").unwrap();
    assert_eq!((slow.next, slow.period), (t0 + ms(500), None));
    assert!(timers.remove("slow"));
    assert!(!timers.remove("slow"));
}

#[test]
fn a_tick_skipped_for_the_lease_waits_for_the_next_period_or_retries_once() {
    let t0 = Instant::now();
    let mut timers = Timers::<Nothing>::default();
    timers.insert(entry("beat", t0, Some(ms(100))));
    timers.insert(entry("once", t0, None));
    let beat = timers.take_due(t0).unwrap();
    assert_eq!(beat.name, "beat");
    timers.put_back(beat, t0);
    let once = timers.take_due(t0).unwrap();
    assert_eq!(once.name, "once");
    timers.put_back(once, t0);
    let next: Vec<_> = timers
        .entries
        .iter()
        .map(|e| (e.name.as_str(), e.next))
        .collect();
    assert_eq!(next, [("beat", t0 + ms(100)), ("once", t0 + LEASE_RETRY)]);
}
