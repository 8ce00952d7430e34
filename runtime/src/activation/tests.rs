//! The size of an activation's task: it is allocated for every live activation, idle
//! or not, so what only some grains need (a replica's link, a write-through) is boxed
//! and must not grow it. Measured in the test (debug) build; a release build is
//! smaller.

use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use granary_proto::{CallError, GrainId};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::envelope::Envelope;
use crate::grain::GrainContext;
use crate::storage::{Etag, StoredState};

struct Plain;
#[async_trait]
impl Grain for Plain {
    const TYPE_NAME: &'static str = "unit.plain/v1";
    type State = u64;
    async fn on_activate(_: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Plain)
    }
}

#[derive(Debug)]
struct Nowhere;
#[async_trait]
impl Router for Nowhere {
    async fn deliver(&self, envelope: Envelope, _: Instant) -> Result<(), CallError> {
        envelope.fail(CallError::ShuttingDown);
        Err(CallError::ShuttingDown)
    }
}
#[async_trait]
impl GrainStorage for Nowhere {
    fn name(&self) -> &'static str {
        "nowhere"
    }
    async fn read(&self, _: &GrainId) -> Result<Option<StoredState>, StorageError> {
        Ok(None)
    }
    async fn write(&self, _: &GrainId, _: &[u8], _: Option<&str>) -> Result<Etag, StorageError> {
        Err(StorageError::Unavailable("nowhere".into()))
    }
    async fn clear(&self, _: &GrainId, _: Option<&str>) -> Result<(), StorageError> {
        Ok(())
    }
}
impl ActivationHost for Nowhere {
    fn spawn(&self, _: BoxFuture<'static, ()>) {}
    fn retire(&self, _: &GrainId, _: u64, _: &mut Mailbox, _: Leftovers) {}
}

#[test]
fn an_activation_task_stays_small() {
    let (_tx, mailbox) = mpsc::channel(1);
    let args = ActivationArgs {
        id: GrainId::new(Plain::TYPE_NAME, "k"),
        activation_id: 1,
        mailbox,
        storage: Arc::new(Nowhere),
        router: Arc::new(Nowhere),
        host: Arc::new(Nowhere),
        idle_timeout: Duration::from_secs(1),
        stop: CancellationToken::new(),
        stats: Arc::new(ActivationStats::new()),
        observer: Arc::new(NoObserver),
        lease: crate::HostingLease::forever(),
        copy: None,
    };
    let task = run::<Plain>(args, &[]);
    let size = std::mem::size_of_val(&task);
    eprintln!("activation task future: {size} bytes");
    // 1,184 bytes (debug build) before replication, and the same with it: what copies
    // need is boxed, and a turn's checks run before it, outside the task's state. 1,216
    // since streamed replies: a `ReplyTo` (held across the turn) went from 16 to 24 bytes.
    // 1,232 since timers (the alarm lives in the task), also without the primary's
    // write-through after a tick (boxed). 1,280 since cancellation: the turn holds its
    // cancellation token and the caller's deadline while it watches the caller leave.
    assert!(size <= 1_280, "the activation task grew to {size} bytes");
}
