//! What an election needs from the rest of the silo: somewhere durable to keep a
//! candidate's [`ElectionState`] ([`ElectionStore`]), and what it gives back: the
//! acting master's [`Leadership`].

use std::fmt;
use std::sync::Mutex;
use std::time::Instant;

use super::candidate::ElectionState;

/// Where a master candidate keeps its [`ElectionState`] across restarts. A vote is sent
/// only after [`ElectionStore::save`] returned, so a candidate that restarts never votes
/// twice in one epoch.
pub trait ElectionStore: Send + Sync + fmt::Debug + 'static {
    /// The last saved state (the default when nothing was saved yet).
    fn load(&self) -> Result<ElectionState, String>;
    /// Saves `state`; returns once it would survive a crash of the process. Blocking: the
    /// membership task calls it on the blocking pool.
    fn save(&self, state: &ElectionState) -> Result<(), String>;
    /// False when what is saved does not outlive the process: a restarted candidate then
    /// starts its epochs from the clock (a lone master on an in-memory store).
    fn is_durable(&self) -> bool;
}

/// An [`ElectionStore`] in memory: durable only as long as the value lives. Tests that
/// restart candidates in one process keep one per candidate (and say it is durable).
#[derive(Debug, Default)]
pub struct MemoryElectionStore {
    state: Mutex<ElectionState>,
    durable: bool,
}

impl MemoryElectionStore {
    /// A store whose state outlives restarts of the silo that uses it (it is kept by the
    /// caller, e.g. a test cluster).
    pub fn durable() -> Self {
        Self {
            state: Mutex::default(),
            durable: true,
        }
    }
}

impl ElectionStore for MemoryElectionStore {
    fn load(&self) -> Result<ElectionState, String> {
        Ok(*self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn save(&self, state: &ElectionState) -> Result<(), String> {
        *self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = *state;
        Ok(())
    }

    fn is_durable(&self) -> bool {
        self.durable
    }
}

/// Whether this candidate acts as master: the epoch it acts (or last acted, or follows)
/// for, and when its lease runs out (`None`: it does not act).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Leadership {
    /// The epoch.
    pub epoch: u64,
    /// The lease end while acting.
    pub until: Option<Instant>,
}

impl Leadership {
    /// True while this candidate acts as master: its lease has not run out.
    pub fn is_acting(&self) -> bool {
        self.until.is_some_and(|until| Instant::now() < until)
    }

    /// The epoch this candidate acts for now, if it does.
    pub fn acting_epoch(&self) -> Option<u64> {
        self.is_acting().then_some(self.epoch)
    }
}
