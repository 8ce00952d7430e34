//! [`Lock`]: a distributed lock as a grain (one per name), with leases, fencing tokens
//! and a fair queue of waiters; and [`Fenced`], a resource that checks fencing tokens.
//!
//! - **Acquire** ([`Acquire`]) is asked by a waiter repeatedly until it holds the lock
//!   ([`acquire`] does the polling): the first ask puts the owner at the end of the
//!   queue, and the lock goes to the queue's head when it is free — first come, first
//!   served, whoever asks next. The head's lease starts when the lock passes to it; it
//!   learns of the grant at its next ask, so waiters should ask well within their lease.
//!   A waiter that stops asking for [`WAITER_TIMEOUT`] leaves the queue.
//! - A grant carries a **fencing token**, strictly greater than every token granted
//!   before for this lock (the counter is stored before the grant is answered, so a
//!   crash never reissues one), and a **lease**: the holder must [`Renew`] it in time or
//!   it **expires** and the lock passes on. A holder that died loses the lock that way.
//! - A holder that paused past its lease (GC, `SIGSTOP`, a partition) may still believe
//!   it holds the lock: only the token tells. [`Release`] and [`Renew`] with a stale token
//!   are refused, and a resource that must not be written by two holders checks the
//!   token, as [`Fenced`] does: it refuses a write whose token is below the highest it
//!   has seen.
//!
//! Lease times are wall-clock milliseconds of the silo hosting the lock, so the lease
//! survives a deactivation or a move of the lock grain (the clocks of the slaves are
//! assumed to agree to well under a lease).

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use granary_runtime::prelude::*;
use granary_runtime::GrainRef;
use serde::{Deserialize, Serialize};

/// A waiter that has not asked for this long leaves the queue.
pub const WAITER_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest lease a holder may ask for.
pub const MAX_LEASE: Duration = Duration::from_secs(3600);

/// A named lock.
#[derive(Debug)]
pub struct Lock;

/// The lock's stored state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct LockState {
    /// The current holder, if the lock is held (its lease may have run out: see
    /// [`LockState::settle`]).
    pub holder: Option<Holder>,
    /// The last token granted (0: none yet).
    pub last_token: u64,
    /// Waiters, first come first.
    pub queue: VecDeque<Waiter>,
}

/// Who holds the lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The owner's name (chosen by the caller, unique per caller).
    pub owner: String,
    /// Its fencing token.
    pub token: u64,
    /// When its lease ends (Unix ms).
    pub expires_unix_ms: u64,
}

/// A queued owner.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    /// The owner's name.
    pub owner: String,
    /// The lease it asked for, in ms.
    pub lease_ms: u64,
    /// When it last asked (Unix ms).
    pub seen_unix_ms: u64,
}

/// Ask: acquire the lock for `owner` with a lease of `lease_ms`, or queue for it.
#[derive(Debug, Serialize, Deserialize)]
pub struct Acquire {
    /// The caller's name (unique per caller).
    pub owner: String,
    /// The lease wanted, in ms (at most [`MAX_LEASE`]).
    pub lease_ms: u64,
}

/// The answer to [`Acquire`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Grant {
    /// The caller holds the lock with this token until its lease ends.
    Held {
        /// The fencing token: pass it to every resource the lock protects.
        token: u64,
        /// Time left on the lease, in ms.
        lease_left_ms: u64,
    },
    /// The caller waits: `ahead` owners come first (the holder included). Ask again.
    Queued {
        /// Owners ahead of the caller.
        ahead: usize,
    },
}

/// Ask: release the lock; `Ok(false)` if `token` is not the current holder's (the
/// lease expired and the lock passed on, or it was never held).
#[derive(Debug, Serialize, Deserialize)]
pub struct Release {
    /// The holder's token.
    pub token: u64,
}

/// Ask: extend the holder's lease to `lease_ms` from now; the remaining lease in ms, or
/// an error if `token` is not the current holder's.
#[derive(Debug, Serialize, Deserialize)]
pub struct Renew {
    /// The holder's token.
    pub token: u64,
    /// The new lease, in ms.
    pub lease_ms: u64,
}

/// Ask: `owner` stops waiting (leaves the queue); answers whether it was queued. A
/// waiter that gives up says so, or the lock could pass to it after it left.
#[derive(Debug, Serialize, Deserialize)]
pub struct Leave {
    /// The waiter's name.
    pub owner: String,
}

/// Ask: the current holder (after expiry), the queue length and the last token.
#[derive(Debug, Serialize, Deserialize)]
pub struct Inspect;

/// What [`Inspect`] answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockView {
    /// The holder, if any.
    pub holder: Option<Holder>,
    /// Waiters, in order.
    pub waiters: Vec<String>,
    /// The last token granted.
    pub last_token: u64,
}

fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn lease_ms(asked: u64) -> u64 {
    asked.clamp(1, MAX_LEASE.as_millis() as u64)
}

impl LockState {
    /// Brings the state up to `now`: an expired holder is dropped, waiters that stopped
    /// asking leave, and the head of the queue gets the lock if it is free. Returns
    /// whether anything changed.
    pub fn settle(&mut self, now: u64) -> bool {
        let mut changed = false;
        if self
            .holder
            .as_ref()
            .is_some_and(|h| h.expires_unix_ms <= now)
        {
            self.holder = None;
            changed = true;
        }
        let timeout = WAITER_TIMEOUT.as_millis() as u64;
        let before = self.queue.len();
        self.queue
            .retain(|w| now.saturating_sub(w.seen_unix_ms) < timeout);
        changed |= self.queue.len() != before;
        if self.holder.is_none() {
            if let Some(next) = self.queue.pop_front() {
                self.last_token += 1;
                self.holder = Some(Holder {
                    owner: next.owner,
                    token: self.last_token,
                    expires_unix_ms: now + next.lease_ms,
                });
                changed = true;
            }
        }
        changed
    }
}

#[async_trait]
impl Grain for Lock {
    const TYPE_NAME: &'static str = "example.lock/v1";
    type State = LockState;

    async fn on_activate(_ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Lock)
    }
}

#[async_trait]
impl Handler<Acquire> for Lock {
    type Reply = Grant;

    async fn handle(
        &mut self,
        m: Acquire,
        ctx: &mut GrainContext<Self>,
    ) -> Result<Grant, GrainError> {
        if m.owner.is_empty() {
            return Err("a lock owner needs a name".into());
        }
        let now = now_unix_ms();
        let state = ctx.state_mut();
        let mut changed = state.settle(now);
        if let Some(h) = state.holder.as_ref().filter(|h| h.owner == m.owner) {
            let grant = Grant::Held {
                token: h.token,
                lease_left_ms: h.expires_unix_ms.saturating_sub(now),
            };
            if changed {
                // The grant (and its token) is stored before the holder learns of it.
                ctx.write_state().await?;
            }
            return Ok(grant);
        }
        let lease_ms = lease_ms(m.lease_ms);
        match state.queue.iter().position(|w| w.owner == m.owner) {
            Some(at) => {
                let w = &mut state.queue[at];
                w.seen_unix_ms = now;
                w.lease_ms = lease_ms;
            }
            None => {
                state.queue.push_back(Waiter {
                    owner: m.owner.clone(),
                    lease_ms,
                    seen_unix_ms: now,
                });
                changed = true;
            }
        }
        changed |= state.settle(now);
        let grant = match &state.holder {
            Some(h) if h.owner == m.owner => Grant::Held {
                token: h.token,
                lease_left_ms: h.expires_unix_ms.saturating_sub(now),
            },
            _ => Grant::Queued {
                ahead: 1 + state
                    .queue
                    .iter()
                    .position(|w| w.owner == m.owner)
                    .unwrap_or(0),
            },
        };
        if changed {
            ctx.write_state().await?;
        }
        Ok(grant)
    }
}

#[async_trait]
impl Handler<Release> for Lock {
    type Reply = bool;

    async fn handle(
        &mut self,
        m: Release,
        ctx: &mut GrainContext<Self>,
    ) -> Result<bool, GrainError> {
        let now = now_unix_ms();
        let state = ctx.state_mut();
        let changed = state.settle(now);
        let released = state.holder.as_ref().is_some_and(|h| h.token == m.token);
        if released {
            state.holder = None;
            state.settle(now);
        }
        if released || changed {
            ctx.write_state().await?;
        }
        Ok(released)
    }
}

#[async_trait]
impl Handler<Renew> for Lock {
    type Reply = u64;

    async fn handle(&mut self, m: Renew, ctx: &mut GrainContext<Self>) -> Result<u64, GrainError> {
        let now = now_unix_ms();
        let state = ctx.state_mut();
        let changed = state.settle(now);
        let renewed = match state.holder.as_mut() {
            Some(h) if h.token == m.token => {
                h.expires_unix_ms = now + lease_ms(m.lease_ms);
                true
            }
            _ => false,
        };
        if renewed || changed {
            ctx.write_state().await?;
        }
        if renewed {
            Ok(lease_ms(m.lease_ms))
        } else {
            Err(format!(
                "token {} does not hold the lock (its lease ran out)",
                m.token
            )
            .into())
        }
    }
}

#[async_trait]
impl Handler<Inspect> for Lock {
    type Reply = LockView;

    async fn handle(
        &mut self,
        _: Inspect,
        ctx: &mut GrainContext<Self>,
    ) -> Result<LockView, GrainError> {
        let now = now_unix_ms();
        if ctx.state_mut().settle(now) {
            ctx.write_state().await?;
        }
        let state = ctx.state();
        Ok(LockView {
            holder: state.holder.clone(),
            waiters: state.queue.iter().map(|w| w.owner.clone()).collect(),
            last_token: state.last_token,
        })
    }
}

#[async_trait]
impl Handler<Leave> for Lock {
    type Reply = bool;

    async fn handle(&mut self, m: Leave, ctx: &mut GrainContext<Self>) -> Result<bool, GrainError> {
        let state = ctx.state_mut();
        let before = state.queue.len();
        state.queue.retain(|w| w.owner != m.owner);
        let left = state.queue.len() != before;
        let changed = state.settle(now_unix_ms());
        if left || changed {
            ctx.write_state().await?;
        }
        Ok(left)
    }
}

granary_runtime::register_grain!(Lock, handles = [Acquire, Release, Renew, Inspect, Leave]);

/// Asks `lock` for the lock as `owner` until it is granted (every `poll`) or `wait` has
/// passed (then it leaves the queue and returns `None`); returns the token. Errors
/// from the lock grain are returned at once.
pub async fn acquire(
    lock: &GrainRef<Lock>,
    owner: &str,
    lease: Duration,
    poll: Duration,
    wait: Duration,
) -> Result<Option<u64>, granary_runtime::CallError> {
    let until = tokio::time::Instant::now() + wait;
    loop {
        let grant = lock
            .ask(Acquire {
                owner: owner.to_owned(),
                lease_ms: lease.as_millis() as u64,
            })
            .await?;
        match grant {
            Grant::Held { token, .. } => return Ok(Some(token)),
            Grant::Queued { .. } if tokio::time::Instant::now() >= until => {
                let left = lock
                    .ask(Leave {
                        owner: owner.to_owned(),
                    })
                    .await?;
                if !left {
                    // Granted between the last ask and the leave: it is ours after all.
                    if let Grant::Held { token, .. } = lock
                        .ask(Acquire {
                            owner: owner.to_owned(),
                            lease_ms: lease.as_millis() as u64,
                        })
                        .await?
                    {
                        return Ok(Some(token));
                    }
                }
                return Ok(None);
            }
            Grant::Queued { .. } => tokio::time::sleep(poll).await,
        }
    }
}

/// A resource protected by a [`Lock`]: it keeps the highest fencing token it has seen
/// and refuses writes with a lower one (a holder whose lease ran out).
#[derive(Debug)]
pub struct Fenced;

/// The resource's stored state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct FencedState {
    /// The highest token a write came with.
    pub highest_token: u64,
    /// The value, and the token that wrote it.
    pub value: Option<(String, u64)>,
}

/// Ask: write `value` under `token`; refused if a higher token wrote before.
#[derive(Debug, Serialize, Deserialize)]
pub struct FencedWrite {
    /// The writer's fencing token.
    pub token: u64,
    /// The new value.
    pub value: String,
}

/// Ask: the value and the token that wrote it.
#[derive(Debug, Serialize, Deserialize)]
pub struct FencedRead;

#[async_trait]
impl Grain for Fenced {
    const TYPE_NAME: &'static str = "example.fenced/v1";
    type State = FencedState;

    async fn on_activate(_ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Fenced)
    }
}

#[async_trait]
impl Handler<FencedWrite> for Fenced {
    type Reply = ();

    async fn handle(
        &mut self,
        m: FencedWrite,
        ctx: &mut GrainContext<Self>,
    ) -> Result<(), GrainError> {
        let state = ctx.state_mut();
        if m.token < state.highest_token {
            return Err(format!(
                "stale fencing token {} (token {} wrote since)",
                m.token, state.highest_token
            )
            .into());
        }
        state.highest_token = m.token;
        state.value = Some((m.value, m.token));
        ctx.write_state().await?;
        Ok(())
    }
}

#[async_trait]
impl Handler<FencedRead> for Fenced {
    type Reply = Option<(String, u64)>;

    async fn handle(
        &mut self,
        _: FencedRead,
        ctx: &mut GrainContext<Self>,
    ) -> Result<Option<(String, u64)>, GrainError> {
        Ok(ctx.state().value.clone())
    }
}

granary_runtime::register_grain!(Fenced, handles = [FencedWrite, FencedRead]);

#[cfg(test)]
mod tests;
