//! [`HostingLease`]: whether this silo may run grain turns and write grain state now.
//!
//! In a cluster, a slave hosts grains on the acting master's behalf, under a lease the
//! master renews with every heartbeat it answers. When the lease runs out (the master
//! died, or the slave is cut off from it), the master may soon place the slave's grains
//! elsewhere, so the slave must stop touching them first:
//! - an activation starts no turn while the lease is invalid: it waits for a renewal
//!   (messages queue in its mailbox) or for its host to stop it;
//! - a state write is refused before it is sent, and a write the store acknowledges
//!   only after the lease ran out (plus a small grace) is reported as of unknown outcome,
//!   so no caller is told "done" for a write another activation may not have seen.
//!
//! A stand-alone silo's lease never runs out ([`HostingLease::forever`]).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// `until` value of a lease that never runs out.
const FOREVER: u64 = u64::MAX;

/// A silo's right to run grains, with an expiry checked on every turn and write.
pub struct HostingLease {
    /// Origin of `until`.
    base: Instant,
    /// Nanoseconds after `base` when the lease runs out ([`FOREVER`]: never; 0: not held).
    until: AtomicU64,
    /// How long after the lease ran out a store acknowledgement still counts (the
    /// master waits longer than the lease before it places the grain elsewhere).
    grace: Duration,
    /// Woken on every renewal, for activations waiting to run a turn.
    renewed: Notify,
}

impl HostingLease {
    /// A lease that never runs out (a stand-alone silo, a silo hosting no grains).
    pub fn forever() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            until: AtomicU64::new(FOREVER),
            grace: Duration::ZERO,
            renewed: Notify::new(),
        })
    }

    /// A lease not held yet; store acknowledgements count up to `grace` after it runs out.
    pub fn new(grace: Duration) -> Self {
        Self {
            base: Instant::now(),
            until: AtomicU64::new(0),
            grace,
            renewed: Notify::new(),
        }
    }

    /// The lease now runs until `until` (earlier or later than before), and waiting
    /// activations re-check it.
    pub fn renew_until(&self, until: Instant) {
        let nanos = u64::try_from(until.saturating_duration_since(self.base).as_nanos())
            .unwrap_or(FOREVER - 1)
            .max(1);
        self.until.store(nanos, Ordering::Release);
        self.renewed.notify_waiters();
    }

    /// The lease is gone at once.
    pub fn revoke(&self) {
        self.until.store(0, Ordering::Release);
    }

    fn until_nanos(&self) -> u64 {
        self.until.load(Ordering::Acquire)
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.base).as_nanos()).unwrap_or(FOREVER - 1)
    }

    /// True while the lease holds.
    pub fn is_valid(&self) -> bool {
        match self.until_nanos() {
            FOREVER => true,
            0 => false,
            until => self.nanos(Instant::now()) < until,
        }
    }

    /// When the lease runs out (`None`: never, or not held; see [`Self::is_valid`]).
    pub fn valid_until(&self) -> Option<Instant> {
        match self.until_nanos() {
            FOREVER | 0 => None,
            until => Some(self.base + Duration::from_nanos(until)),
        }
    }

    /// True if a store acknowledgement received at `at` still counts: the lease held at
    /// `at`, or ran out less than the grace before.
    pub fn acknowledged_in_time(&self, at: Instant) -> bool {
        match self.until_nanos() {
            FOREVER => true,
            0 => false,
            until => {
                let grace = u64::try_from(self.grace.as_nanos()).unwrap_or(FOREVER);
                self.nanos(at) < until.saturating_add(grace)
            }
        }
    }

    /// Waits until the lease holds (returns at once if it does).
    pub async fn wait_valid(&self) {
        loop {
            let renewed = self.renewed.notified();
            tokio::pin!(renewed);
            renewed.as_mut().enable();
            if self.is_valid() {
                return;
            }
            renewed.await;
        }
    }
}

impl fmt::Debug for HostingLease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.until_nanos() {
            FOREVER => "forever".to_owned(),
            0 => "not held".to_owned(),
            _ if self.is_valid() => "valid".to_owned(),
            _ => "expired".to_owned(),
        };
        f.debug_struct("HostingLease")
            .field("state", &state)
            .field("grace", &self.grace)
            .finish()
    }
}

#[cfg(test)]
mod tests;
