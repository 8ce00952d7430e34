//! [`SiloLocal`]: this silo's activations as its cluster router sees them, with fencing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Weak;

use async_trait::async_trait;
use granary_net::routing::LocalDelivery;
use granary_proto::frame::SiloAddr;
use granary_proto::CallError;
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
    /// Set while not joined to a master (before the first WELCOME, and when cut off):
    /// no grain may run here.
    fenced: AtomicBool,
}

impl SiloLocal {
    pub(crate) fn new(me: SiloAddr, catalog: Weak<Catalog>) -> Self {
        Self {
            me,
            catalog,
            fenced: AtomicBool::new(true),
        }
    }

    /// Sets fencing; returns true if it changed. Fencing deactivates every grain here.
    pub(crate) fn set_fenced(&self, fenced: bool) -> bool {
        let changed = self.fenced.swap(fenced, Ordering::AcqRel) != fenced;
        if changed && fenced {
            self.deactivate_all();
        }
        changed
    }

    /// Asks every activation here to deactivate (after its current turn).
    pub(crate) fn deactivate_all(&self) {
        if let Some(catalog) = self.catalog.upgrade() {
            for dispatcher in catalog.dispatchers() {
                dispatcher.deactivate_all();
            }
        }
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
            let err =
                CallError::Unreachable("this silo is cut off from the master (fenced)".into());
            envelope.fail(err.clone());
            return Err(err);
        }
        deliver_activating(&self.catalog, envelope, deadline).await
    }
}
