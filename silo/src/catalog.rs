//! The catalog: grain type name → [`Dispatcher`], and the router grains use in-process.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use granary_proto::frame::SiloAddr;
use granary_proto::replication::{CopySet, HostedActivation, ReplicaResponse, SetVersion};
use granary_proto::{CallError, GrainId};
use granary_runtime::envelope::Envelope;
use granary_runtime::Router;
use tokio::time::Instant;

use crate::dispatcher::{Dispatcher, DispatcherStats, HostShared};

/// Every dispatcher of one silo.
pub(crate) struct Catalog {
    /// One dispatcher per registered grain type, built at start (the registry is static).
    dispatchers: HashMap<&'static str, Arc<Dispatcher>>,
    /// What the dispatchers share.
    pub(crate) shared: Arc<HostShared>,
}

impl Catalog {
    pub(crate) fn new(
        dispatchers: HashMap<&'static str, Arc<Dispatcher>>,
        shared: Arc<HostShared>,
    ) -> Self {
        Self {
            dispatchers,
            shared,
        }
    }

    /// The dispatcher of `type_name`.
    pub(crate) fn dispatcher(&self, type_name: &str) -> Option<&Arc<Dispatcher>> {
        self.dispatchers.get(type_name)
    }

    /// All dispatchers, sorted by grain type.
    pub(crate) fn dispatchers(&self) -> Vec<Arc<Dispatcher>> {
        let mut all: Vec<_> = self.dispatchers.values().cloned().collect();
        all.sort_by_key(|d| d.grain_type());
        all
    }

    /// Load figures of every grain type.
    pub(crate) fn stats(&self) -> Vec<DispatcherStats> {
        self.dispatchers().iter().map(|d| d.stats()).collect()
    }

    /// Every grain active here (a slave's report to a new master).
    pub(crate) fn hosted(&self) -> Vec<granary_proto::GrainId> {
        self.dispatchers
            .values()
            .flat_map(|d| {
                let type_name = d.grain_type();
                d.keys()
                    .into_iter()
                    .map(move |key| granary_proto::GrainId::new(type_name, key))
            })
            .collect()
    }

    /// Every activation on this silo with its role (single, primary, replica, worker):
    /// what a master rebuilding its copy sets needs from a slave.
    pub(crate) fn hosted_with_roles(&self) -> Vec<HostedActivation> {
        self.dispatchers().iter().flat_map(|d| d.hosted()).collect()
    }

    /// Applies the master's copy set for `grain` (ignored for a type that is not
    /// replicated here).
    pub(crate) fn apply_copy_set(&self, grain: &GrainId, set: CopySet) {
        if let Some(d) = self.dispatchers.get(grain.type_name.as_ref()) {
            if let Some(copies) = d.copies() {
                copies.apply_set(d, grain, set);
            }
        }
    }

    /// Answers a replica's sync for `grain`, if its primary is here.
    pub(crate) async fn sync_replica(
        &self,
        grain: &GrainId,
        from: (SiloAddr, Option<u64>, u64),
        wait: Duration,
        lease: Duration,
    ) -> ReplicaResponse {
        match self
            .dispatchers
            .get(grain.type_name.as_ref())
            .and_then(|d| d.copies())
        {
            Some(copies) => copies.sync(&grain.key, from, wait, lease).await,
            None => ReplicaResponse::NotPrimary,
        }
    }

    /// For a replicated grain: `Some`, with this silo's copy set of it when newer than
    /// `seen`; `None` for a grain whose type is not replicated here.
    pub(crate) fn copy_answer(
        &self,
        grain: &GrainId,
        seen: Option<SetVersion>,
    ) -> Option<Option<CopySet>> {
        let copies = self.dispatchers.get(grain.type_name.as_ref())?.copies()?;
        Some(copies.newer_set(&grain.key, seen))
    }

    /// `(activations, queued messages)` over all grain types.
    pub(crate) fn load(&self) -> (usize, usize) {
        self.dispatchers
            .values()
            .map(|d| d.load())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }

    /// Delivers to an activation on this silo. A grain that is not active here is
    /// activated if `activate` is set, else the envelope is handed back (`Ok(Some)`).
    pub(crate) async fn deliver_local(
        &self,
        envelope: Envelope,
        deadline: Instant,
        activate: bool,
    ) -> Result<Option<Envelope>, CallError> {
        match self.dispatchers.get(envelope.target.type_name.as_ref()) {
            Some(dispatcher) => dispatcher.deliver(envelope, deadline, activate).await,
            None => {
                let err = CallError::UnknownGrainType(envelope.target.type_name.to_string());
                envelope.fail(err.clone());
                Err(err)
            }
        }
    }

    /// [`Catalog::deliver_local`] without waiting: `Ok(Some)` hands the envelope back
    /// when that would need waiting (a full mailbox).
    pub(crate) fn try_deliver_local(
        &self,
        envelope: Envelope,
        activate: bool,
    ) -> Result<Option<Envelope>, CallError> {
        match self.dispatchers.get(envelope.target.type_name.as_ref()) {
            Some(dispatcher) => dispatcher.try_deliver(envelope, activate),
            None => {
                let err = CallError::UnknownGrainType(envelope.target.type_name.to_string());
                envelope.fail(err.clone());
                Err(err)
            }
        }
    }
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalog")
            .field("dispatchers", &self.dispatchers.len())
            .finish()
    }
}

/// Delivers through a catalog held weakly, activating the grain if needed; fails with
/// `ShuttingDown` once the catalog is gone.
pub(crate) async fn deliver_activating(
    catalog: &Weak<Catalog>,
    envelope: Envelope,
    deadline: Instant,
) -> Result<(), CallError> {
    match catalog.upgrade() {
        Some(catalog) => catalog
            .deliver_local(envelope, deadline, true)
            .await
            .map(drop),
        None => {
            envelope.fail(CallError::ShuttingDown);
            Err(CallError::ShuttingDown)
        }
    }
}

/// The router of a single silo: every grain is local. Holds the catalog weakly so the
/// catalog → activation → router chain is not a reference cycle.
#[derive(Debug)]
pub(crate) struct LocalRouter {
    pub(crate) catalog: Weak<Catalog>,
}

#[async_trait]
impl Router for LocalRouter {
    async fn deliver(&self, envelope: Envelope, deadline: Instant) -> Result<(), CallError> {
        deliver_activating(&self.catalog, envelope, deadline).await
    }

    fn try_deliver(&self, envelope: Envelope) -> Result<Option<Envelope>, CallError> {
        match self.catalog.upgrade() {
            Some(catalog) => catalog.try_deliver_local(envelope, true),
            None => {
                envelope.fail(CallError::ShuttingDown);
                Err(CallError::ShuttingDown)
            }
        }
    }
}
