//! [`CopyRoutes`]: what a router knows about replicated grains: each one's copy set
//! (learned from the silos' replies) and the newest state version its callers have
//! seen (the *token* carried by later reads).
//!
//! Tokens are what make reads through replicas safe for a caller: a replica serves a
//! read only at the token's version or newer, so a caller never reads older state than
//! it wrote or read before. A grain without a token is read from its primary, which is
//! never behind, so tokens can be forgotten (at capacity) without breaking that.
//!
//! Also here: how a call that a copy could not take goes home instead
//! (`ClusterRouter::avoid_copy`), and [`Waiting`], the reply side of an inbound call,
//! with or without the version it was served at.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use granary_proto::frame::SiloAddr;
use granary_proto::replication::{CopyKind, CopySet, SetVersion};
use granary_proto::{CallError, GrainId};
use granary_runtime::envelope::{Body, ReplyTo};
use granary_runtime::registry::registry;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::ClusterRouter;

/// Grains remembered before the table is cleared.
const CAPACITY: usize = 262_144;

/// One replicated grain, as this router knows it.
#[derive(Debug)]
struct Route {
    /// The newest state version its callers here have seen.
    token: u64,
    /// Its copy set, if the silos told one.
    set: Option<CopySet>,
    /// Round-robin position over the set.
    next: usize,
}

/// Copy sets and tokens of the replicated grains this router has called.
#[derive(Debug, Default)]
pub(crate) struct CopyRoutes {
    /// True once any grain is known: until then (and in a cluster without replicated
    /// grains) calls skip the table entirely.
    any: AtomicBool,
    /// By grain; never locked across an `.await`.
    routes: Mutex<HashMap<GrainId, Route>>,
}

/// How a message to a replicated grain is routed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Known {
    /// The caller's token.
    pub(crate) token: u64,
    /// The version of the set it routes by.
    pub(crate) seen: Option<SetVersion>,
    /// Stateless worker or read replicas (`None`: no set known yet).
    pub(crate) kind: Option<CopyKind>,
}

impl CopyRoutes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<GrainId, Route>> {
        self.routes.lock().expect("copy routes poisoned")
    }

    /// What is known of `grain`, `None` if it is not known as replicated.
    pub(crate) fn known(&self, grain: &GrainId) -> Option<Known> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.lock().get(grain).map(|r| Known {
            token: r.token,
            seen: r.set.as_ref().map(|s| s.version),
            kind: r.set.as_ref().map(|s| s.kind),
        })
    }

    /// The silo for the next message to `grain`, never `me`; `None` routes it by the
    /// directory (no set known, or only this silo is left). `any_copy`: the message may
    /// go to any copy (a stateless worker's, or a read).
    pub(crate) fn pick(
        &self,
        grain: &GrainId,
        any_copy: bool,
        me: Option<SiloAddr>,
    ) -> Option<SiloAddr> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let mut routes = self.lock();
        let route = routes.get_mut(grain)?;
        let set = route.set.as_ref()?;
        if !any_copy {
            return Some(set.home).filter(|home| Some(*home) != me);
        }
        let eligible = |s: &SiloAddr| Some(*s) != me;
        let n = set.silos().filter(eligible).count();
        if n == 0 {
            return None;
        }
        route.next = route.next.wrapping_add(1);
        let k = route.next % n;
        let picked = set.silos().filter(eligible).nth(k);
        picked
    }

    /// A copy of `grain` answered at state `version`, with its copy set if newer than
    /// ours: the token rises (never falls), a newer set replaces ours.
    pub(crate) fn learn(&self, grain: &GrainId, version: u64, set: Option<CopySet>) {
        let mut routes = self.lock();
        if routes.len() >= CAPACITY && !routes.contains_key(grain) {
            routes.clear();
        }
        let route = routes.entry(grain.clone()).or_insert(Route {
            token: 0,
            set: None,
            next: fastrand::usize(..),
        });
        route.token = route.token.max(version);
        if let Some(set) = set {
            if route
                .set
                .as_ref()
                .is_none_or(|old| old.version < set.version)
            {
                route.set = Some(set);
            }
        }
        self.any.store(true, Ordering::Release);
    }

    /// `silo` answered that it hosts no copy of `grain`: route around it (the home
    /// takes the whole set with it).
    pub(crate) fn drop_silo_of(&self, grain: &GrainId, silo: SiloAddr) {
        if let Some(route) = self.lock().get_mut(grain) {
            drop_from(route, silo);
        }
    }

    /// `silo` left or died: no set routes to it any more.
    pub(crate) fn forget_silo(&self, silo: SiloAddr) {
        for route in self.lock().values_mut() {
            drop_from(route, silo);
        }
    }

    /// Forgets every set (the master changed); tokens stay, they remain true.
    pub(crate) fn forget_sets(&self) {
        for route in self.lock().values_mut() {
            route.set = None;
        }
    }
}

fn drop_from(route: &mut Route, silo: SiloAddr) {
    let Some(set) = &mut route.set else {
        return;
    };
    if set.home == silo {
        route.set = None;
    } else {
        set.members.retain(|m| *m != silo);
    }
}

/// True when `body` is a read-only message of `grain`'s type (listed in `reads`).
pub(crate) fn is_read(grain: &GrainId, body: &Body) -> bool {
    match body {
        Body::Local { vtable, .. } => vtable.read,
        Body::Encoded { name, .. } => registry().get(&grain.type_name).is_some_and(|e| {
            e.messages
                .iter()
                .any(|m| m.read && m.message == name.as_str())
        }),
    }
}

impl ClusterRouter {
    /// The copy `picked` could not take a call to `grain` (not delivered): the call goes
    /// to the home instead (`true`: try again at once). When the home itself fails, the
    /// set is dropped and the call is routed by the directory, like any grain's.
    pub(super) fn avoid_copy(
        &self,
        grain: &GrainId,
        picked: Option<SiloAddr>,
        to_home: &mut bool,
    ) -> bool {
        let Some(silo) = picked else {
            return false;
        };
        if !*to_home {
            *to_home = true;
            return true;
        }
        self.copies.drop_silo_of(grain, silo);
        false
    }
}

/// The caller's side of an inbound call's reply: nothing (a tell), a plain reply, or a
/// reply with the state version it was served at.
pub(super) enum Waiting {
    Told,
    Plain(oneshot::Receiver<Result<Vec<u8>, CallError>>),
    At(oneshot::Receiver<(Result<Vec<u8>, CallError>, u64)>),
}

impl Waiting {
    /// The envelope's `ReplyTo` and the matching receiver.
    pub(super) fn channel(one_way: bool, versioned: bool) -> (ReplyTo, Waiting) {
        if one_way {
            (ReplyTo::None, Waiting::Told)
        } else if versioned {
            let (tx, rx) = oneshot::channel();
            (ReplyTo::EncodedAt(tx), Waiting::At(rx))
        } else {
            let (tx, rx) = oneshot::channel();
            (ReplyTo::Encoded(tx), Waiting::Plain(rx))
        }
    }

    /// The reply and its version (0 if none), by `deadline`.
    pub(super) async fn wait(self, deadline: Instant) -> (Result<Vec<u8>, CallError>, u64) {
        let lost = || CallError::Lost("the activation went away before replying".into());
        match self {
            Waiting::Told => (Ok(Vec::new()), 0),
            Waiting::Plain(rx) => match tokio::time::timeout_at(deadline, rx).await {
                Err(_) => (Err(CallError::Timeout), 0),
                Ok(Err(_)) => (Err(lost()), 0),
                Ok(Ok(result)) => (result, 0),
            },
            Waiting::At(rx) => match tokio::time::timeout_at(deadline, rx).await {
                Err(_) => (Err(CallError::Timeout), 0),
                Ok(Err(_)) => (Err(lost()), 0),
                Ok(Ok(answer)) => answer,
            },
        }
    }
}

#[cfg(test)]
mod tests;
