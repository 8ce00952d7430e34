//! [`Variable`]: a named value with a version that every node can read and watch; and
//! [`Watcher`], the observer grain its changes are pushed to.
//!
//! - [`VarGet`] reads `(version, value)`; [`VarSet`] writes a new value (optionally only
//!   if the version is still the one the writer read: compare-and-set) and answers the
//!   new version once it is stored. Versions start at 1 and grow by one per set.
//! - **Watching is a subscription**: [`VarWatch`] subscribes a [`Watcher`] grain and
//!   answers the current `(version, value)`; from then on every set pushes a [`Change`]
//!   to each subscribed watcher, in version order (a set's turn pushes to all watchers
//!   and waits for their answers before the next set runs), before the set is answered.
//!   A watcher that does not answer within [`NOTIFY_TIMEOUT`], or answers that it is
//!   closed, is **dropped** from the subscription.
//! - A [`Watcher`] keeps the changes it got in memory until its owner takes them with
//!   [`WatchPoll`] (the example `client var watch` polls every 100 ms: a client hosts no
//!   grains, so it cannot be called back itself). It closes when its owner has not
//!   polled for the timeout given to [`WatchOpen`] (a client that went away), and then
//!   refuses changes, which drops it.
//! - What a watcher sees: versions strictly increasing, never an older one after a newer
//!   one. Intermediate versions are **coalesced** (skipped) only if more than
//!   [`WATCH_BUFFER`] changes pile up between two polls, or if the watcher's grain was
//!   re-activated (its silo died): the gap shows as a jump in the version, and a
//!   [`VarGet`] reads the latest value.
//!
//! Why not a streamed reply (`StreamHandler`): a
//! stream is one turn of the grain that serves it. Streamed by the variable, a watch
//! would hold off every set until it ended; streamed by the watcher, it would hold off
//! the pushes it exists to receive. A subscription keeps sets flowing while watches last
//! indefinitely; a poll of the watcher is one short turn.

use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

use granary_runtime::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// How long a set waits for a watcher to take a change before dropping it.
pub const NOTIFY_TIMEOUT: Duration = Duration::from_secs(2);

/// Changes a watcher keeps between two polls; older ones are coalesced away.
pub const WATCH_BUFFER: usize = 1024;

/// The longest time a watcher may go unpolled (the cap of [`WatchOpen::timeout_ms`]).
pub const MAX_WATCH_TIMEOUT: Duration = Duration::from_secs(60);

/// A named, versioned value.
#[derive(Debug)]
pub struct Variable;

/// The variable's stored state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct VariableState {
    /// The value (`None` before the first set).
    pub value: Option<String>,
    /// Its version (0 before the first set).
    pub version: u64,
    /// Keys of the subscribed [`Watcher`] grains.
    pub watchers: BTreeSet<String>,
}

/// A committed change, as watchers get it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The version the set created.
    pub version: u64,
    /// The value it set.
    pub value: String,
}

/// Ask: `(version, value)`.
#[derive(Debug, Serialize, Deserialize)]
pub struct VarGet;

/// Ask: set the value; answers the new version once it is stored and pushed to the
/// watchers. With `if_version`, only if the version is still that one (else an error).
#[derive(Debug, Serialize, Deserialize)]
pub struct VarSet {
    /// The new value.
    pub value: String,
    /// Compare-and-set: the version the writer read.
    pub if_version: Option<u64>,
}

/// Ask: subscribe the [`Watcher`] grain `watcher`; answers the current
/// `(version, value)`, after which it gets every change.
#[derive(Debug, Serialize, Deserialize)]
pub struct VarWatch {
    /// The watcher grain's key.
    pub watcher: String,
}

/// Ask: unsubscribe a watcher; answers whether it was subscribed.
#[derive(Debug, Serialize, Deserialize)]
pub struct VarUnwatch {
    /// The watcher grain's key.
    pub watcher: String,
}

/// Ask: the subscribed watchers' keys.
#[derive(Debug, Serialize, Deserialize)]
pub struct VarWatchers;

#[async_trait]
impl Grain for Variable {
    const TYPE_NAME: &'static str = "example.variable/v1";
    type State = VariableState;

    async fn on_activate(_ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Variable)
    }
}

#[async_trait]
impl Handler<VarGet> for Variable {
    type Reply = (u64, Option<String>);

    async fn handle(
        &mut self,
        _: VarGet,
        ctx: &mut GrainContext<Self>,
    ) -> Result<(u64, Option<String>), GrainError> {
        Ok((ctx.state().version, ctx.state().value.clone()))
    }
}

#[async_trait]
impl Handler<VarSet> for Variable {
    type Reply = u64;

    async fn handle(&mut self, m: VarSet, ctx: &mut GrainContext<Self>) -> Result<u64, GrainError> {
        let state = ctx.state_mut();
        if let Some(expected) = m.if_version {
            if expected != state.version {
                return Err(format!(
                    "version is {}, not {expected}: someone set it since",
                    state.version
                )
                .into());
            }
        }
        state.version += 1;
        state.value = Some(m.value.clone());
        let change = Change {
            version: state.version,
            value: m.value,
        };
        let watchers: Vec<String> = state.watchers.iter().cloned().collect();
        ctx.write_state().await?;
        // Pushed to every watcher before the next set can run: each sees versions in order.
        let pushes = watchers.iter().map(|key| {
            let watcher = ctx.grain::<Watcher>(key);
            let change = change.clone();
            async move { watcher.ask(change).timeout(NOTIFY_TIMEOUT).await }
        });
        let answers = futures::future::join_all(pushes).await;
        let gone: Vec<&String> = watchers
            .iter()
            .zip(answers)
            .filter_map(|(key, answer)| match answer {
                Ok(()) => None,
                Err(e) => {
                    tracing::info!(variable = %ctx.key(), watcher = %key, error = %e, "watcher dropped");
                    Some(key)
                }
            })
            .collect();
        if !gone.is_empty() {
            let state = ctx.state_mut();
            for key in gone {
                state.watchers.remove(key);
            }
            ctx.write_state().await?;
        }
        Ok(change.version)
    }
}

#[async_trait]
impl Handler<VarWatch> for Variable {
    type Reply = (u64, Option<String>);

    async fn handle(
        &mut self,
        m: VarWatch,
        ctx: &mut GrainContext<Self>,
    ) -> Result<(u64, Option<String>), GrainError> {
        if ctx.state_mut().watchers.insert(m.watcher) {
            ctx.write_state().await?;
        }
        Ok((ctx.state().version, ctx.state().value.clone()))
    }
}

#[async_trait]
impl Handler<VarUnwatch> for Variable {
    type Reply = bool;

    async fn handle(
        &mut self,
        m: VarUnwatch,
        ctx: &mut GrainContext<Self>,
    ) -> Result<bool, GrainError> {
        let removed = ctx.state_mut().watchers.remove(&m.watcher);
        if removed {
            ctx.write_state().await?;
        }
        Ok(removed)
    }
}

#[async_trait]
impl Handler<VarWatchers> for Variable {
    type Reply = Vec<String>;

    async fn handle(
        &mut self,
        _: VarWatchers,
        ctx: &mut GrainContext<Self>,
    ) -> Result<Vec<String>, GrainError> {
        Ok(ctx.state().watchers.iter().cloned().collect())
    }
}

granary_runtime::register_grain!(
    Variable,
    handles = [VarGet, VarSet, VarWatch, VarUnwatch, VarWatchers]
);

/// An observer of [`Variable`]s: buffers the changes pushed to it for its owner to poll.
/// Kept in memory only; a fresh activation is closed until [`WatchOpen`].
#[derive(Debug)]
pub struct Watcher {
    /// Changes not yet polled, oldest first.
    buffer: VecDeque<Change>,
    /// The highest version taken in (older and repeated pushes are ignored).
    last_version: u64,
    /// Changes dropped because the buffer was full, since the last poll.
    coalesced: u64,
    /// How long the owner may go without polling; `None`: not open.
    timeout: Option<Duration>,
    /// When the owner last polled (or opened).
    polled: Instant,
}

/// Ask: open the watcher; it closes if not polled for `timeout_ms` (at most
/// [`MAX_WATCH_TIMEOUT`]).
#[derive(Debug, Serialize, Deserialize)]
pub struct WatchOpen {
    /// The poll timeout, in ms.
    pub timeout_ms: u64,
}

/// Ask: take the buffered changes (versions strictly increasing).
#[derive(Debug, Serialize, Deserialize)]
pub struct WatchPoll;

/// What [`WatchPoll`] answers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Polled {
    /// The changes since the last poll, oldest first.
    pub changes: Vec<Change>,
    /// How many changes before these were coalesced away (buffer full).
    pub coalesced: u64,
}

impl Watcher {
    fn is_open(&self) -> bool {
        self.timeout.is_some_and(|t| self.polled.elapsed() <= t)
    }
}

#[async_trait]
impl Grain for Watcher {
    const TYPE_NAME: &'static str = "example.var-watcher/v1";
    type State = ();
    // Longer than any poll timeout, so an open watcher does not deactivate under its owner.
    const IDLE_TIMEOUT: Option<Duration> = Some(Duration::from_secs(120));

    async fn on_activate(_ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Watcher {
            buffer: VecDeque::new(),
            last_version: 0,
            coalesced: 0,
            timeout: None,
            polled: Instant::now(),
        })
    }
}

#[async_trait]
impl Handler<WatchOpen> for Watcher {
    type Reply = ();

    async fn handle(&mut self, m: WatchOpen, _: &mut GrainContext<Self>) -> Result<(), GrainError> {
        self.timeout = Some(Duration::from_millis(m.timeout_ms).min(MAX_WATCH_TIMEOUT));
        self.polled = Instant::now();
        Ok(())
    }
}

#[async_trait]
impl Handler<Change> for Watcher {
    type Reply = ();

    async fn handle(&mut self, c: Change, ctx: &mut GrainContext<Self>) -> Result<(), GrainError> {
        if !self.is_open() {
            ctx.deactivate_on_idle();
            return Err("this watcher is closed (its owner stopped polling)".into());
        }
        if c.version <= self.last_version {
            return Ok(());
        }
        self.last_version = c.version;
        self.buffer.push_back(c);
        if self.buffer.len() > WATCH_BUFFER {
            self.buffer.pop_front();
            self.coalesced += 1;
        }
        Ok(())
    }
}

#[async_trait]
impl Handler<WatchPoll> for Watcher {
    type Reply = Polled;

    async fn handle(
        &mut self,
        _: WatchPoll,
        _: &mut GrainContext<Self>,
    ) -> Result<Polled, GrainError> {
        if !self.is_open() {
            // Re-activated (its silo died) or not polled in time (the variables may
            // have dropped it): the owner opens it and watches again.
            return Err("this watcher is closed: open it and watch again".into());
        }
        self.polled = Instant::now();
        Ok(Polled {
            changes: self.buffer.drain(..).collect(),
            coalesced: std::mem::take(&mut self.coalesced),
        })
    }
}

granary_runtime::register_grain!(Watcher, handles = [WatchOpen, Change, WatchPoll]);
