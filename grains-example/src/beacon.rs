//! [`Beacon`]: a grain woken by a durable reminder. `Arm` registers the reminder
//! `beat`; each tick is recorded (when it was due, when it arrived, how many missed
//! ticks it stands for), so the tests and `client beacon` can see that reminders keep
//! firing through deactivation, a crashed slave and a full cluster restart, and how
//! late each tick came.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use granary_runtime::prelude::*;
use granary_runtime::reminder::Reminder;
use serde::{Deserialize, Serialize};

/// How many beats a beacon keeps (the oldest are dropped).
pub const KEPT_BEATS: usize = 1000;

/// The reminder's name.
const BEAT: &str = "beat";

/// A grain whose only activity is its reminder.
#[derive(Debug)]
pub struct Beacon;

/// The beacon's stored state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BeaconState {
    /// The last [`KEPT_BEATS`] beats, oldest first.
    pub beats: Vec<Beat>,
    /// Beats received in total, and the missed ticks they stood for.
    pub received: u64,
}

/// One delivered tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    /// When it was due (Unix ms).
    pub due_unix_ms: u64,
    /// When the handler ran (Unix ms, the hosting silo's clock).
    pub at_unix_ms: u64,
    /// Earlier ticks it stands for (ticks that fell while the reminder could not fire).
    pub missed: u64,
}

impl Beat {
    /// How late the beat came, in ms (0 if the clocks say early).
    pub fn late_ms(&self) -> u64 {
        self.at_unix_ms.saturating_sub(self.due_unix_ms)
    }
}

/// Ask: register (or restart) the reminder `beat`, first tick after `period_ms`, then
/// every `period_ms`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Arm {
    /// The period in milliseconds (at least 1000).
    pub period_ms: u64,
}

/// Ask: remove the reminder; replies whether there was one.
#[derive(Debug, Serialize, Deserialize)]
pub struct Disarm;

/// Ask: the recorded beats.
#[derive(Debug, Serialize, Deserialize)]
pub struct Beats;

/// Ask: deactivate after this message (to show a reminder does not need the activation).
#[derive(Debug, Serialize, Deserialize)]
pub struct Rest;

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[async_trait]
impl Grain for Beacon {
    const TYPE_NAME: &'static str = "example.beacon/v1";
    type State = BeaconState;

    async fn on_activate(_ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Beacon)
    }
}

#[async_trait]
impl Handler<Arm> for Beacon {
    type Reply = ();
    async fn handle(&mut self, m: Arm, ctx: &mut GrainContext<Self>) -> Result<(), GrainError> {
        let period = Duration::from_millis(m.period_ms);
        ctx.register_reminder(BEAT, period, period).await?;
        Ok(())
    }
}

#[async_trait]
impl Handler<Disarm> for Beacon {
    type Reply = bool;
    async fn handle(
        &mut self,
        _: Disarm,
        ctx: &mut GrainContext<Self>,
    ) -> Result<bool, GrainError> {
        Ok(ctx.unregister_reminder(BEAT).await?)
    }
}

#[async_trait]
impl Handler<Beats> for Beacon {
    type Reply = Vec<Beat>;
    async fn handle(
        &mut self,
        _: Beats,
        ctx: &mut GrainContext<Self>,
    ) -> Result<Vec<Beat>, GrainError> {
        Ok(ctx.state().beats.clone())
    }
}

#[async_trait]
impl Handler<Rest> for Beacon {
    type Reply = ();
    async fn handle(&mut self, _: Rest, ctx: &mut GrainContext<Self>) -> Result<(), GrainError> {
        ctx.deactivate_on_idle();
        Ok(())
    }
}

#[async_trait]
impl Handler<Reminder> for Beacon {
    type Reply = ();
    async fn handle(
        &mut self,
        tick: Reminder,
        ctx: &mut GrainContext<Self>,
    ) -> Result<(), GrainError> {
        let beat = Beat {
            due_unix_ms: tick.due_unix_ms,
            at_unix_ms: now_unix_ms(),
            missed: tick.missed,
        };
        let state = ctx.state_mut();
        // A tick delivered twice (after a crash) is recorded once.
        if state
            .beats
            .last()
            .is_some_and(|b| b.due_unix_ms >= beat.due_unix_ms)
        {
            return Ok(());
        }
        state.beats.push(beat);
        if state.beats.len() > KEPT_BEATS {
            state.beats.remove(0);
        }
        state.received += 1 + tick.missed;
        ctx.write_state().await?;
        Ok(())
    }
}

granary_runtime::register_grain!(Beacon, handles = [Arm, Disarm, Beats, Rest, Reminder]);
