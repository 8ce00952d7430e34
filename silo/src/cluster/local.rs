//! [`SiloLocal`]: this silo's activations as its cluster router sees them, with fencing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Weak;

use async_trait::async_trait;
use granary_net::routing::LocalDelivery;
use granary_proto::frame::SiloAddr;
use granary_proto::replication::{CopySet, SetVersion};
use granary_proto::{CallError, GrainId};
use granary_runtime::envelope::Envelope;
use tokio::time::Instant;

use crate::catalog::{deliver_activating, Catalog};

/// Local delivery for a clustered silo.
#[derive(Debug)]
pub(crate) struct SiloLocal {
    /// This silo's address in the directory.
    me: SiloAddr,
    /// The catalog (weak: the catalog's router points back here).
    catalog: Weak<Catalog>,
    /// Set on master candidates (they host nothing) and on a fenced slave (its grains
    /// are being dropped): no grain may be activated here. A slave whose hosting lease
    /// merely ran out is not fenced: its activations wait for a renewal.
    fenced: AtomicBool,
}

impl SiloLocal {
    pub(crate) fn new(me: SiloAddr, catalog: Weak<Catalog>) -> Self {
        Self {
            me,
            catalog,
            // Set at once on candidates by the membership watcher; a slave that has
            // not joined yet is merely suspended (its activations would wait).
            fenced: AtomicBool::new(true),
        }
    }

    /// Sets fencing; returns true if it changed. (The grains of a fenced slave are
    /// dropped by its report task.)
    pub(crate) fn set_fenced(&self, fenced: bool) -> bool {
        self.fenced.swap(fenced, Ordering::AcqRel) != fenced
    }
}

#[async_trait]
impl LocalDelivery for SiloLocal {
    fn me(&self) -> SiloAddr {
        self.me
    }

    async fn deliver_if_active(
        &self,
        envelope: Envelope,
        deadline: Instant,
    ) -> Result<Option<Envelope>, CallError> {
        if self.fenced.load(Ordering::Acquire) {
            return Ok(Some(envelope));
        }
        match self.catalog.upgrade() {
            Some(catalog) => catalog.deliver_local(envelope, deadline, false).await,
            None => Ok(Some(envelope)),
        }
    }

    async fn deliver_here(&self, envelope: Envelope, deadline: Instant) -> Result<(), CallError> {
        if self.fenced.load(Ordering::Acquire) {
            let err = CallError::Unreachable(
                "this silo hosts no grains now (a master candidate, or a fenced slave)".into(),
            );
            envelope.fail(err.clone());
            return Err(err);
        }
        deliver_activating(&self.catalog, envelope, deadline).await
    }

    fn copy_answer(&self, grain: &GrainId, seen: Option<SetVersion>) -> Option<Option<CopySet>> {
        self.catalog.upgrade()?.copy_answer(grain, seen)
    }
}
