//! [`Silo`]: a running silo and its lifecycle (start, references, stats, shutdown).

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use granary_runtime::registry::registry;
use granary_runtime::{Grain, GrainRef, GrainStorage, HostingLease, Router, StorageError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::catalog::{Catalog, LocalRouter};
use crate::config::SiloConfig;
use crate::dispatcher::{Dispatcher, DispatcherStats, HostShared};
use crate::reminders::keep_reminders;

/// Why a silo did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No grain type is registered: the binary does not link a grain crate (or the
    /// linker dropped its `register_grain!` items; reference a type of the crate).
    #[error(
        "no grain types are registered: add `register_grain!(YourGrain, handles = [...])` next to \
         each grain, and call a function of the grain crate from the silo's `main` so the linker keeps it"
    )]
    NoGrainTypes,
    /// Two grain types share a name, or a grain lists a message twice.
    #[error("grain registrations conflict: {}", .0.join("; "))]
    Registry(Vec<String>),
    /// The storage provider could not be opened.
    #[error("opening storage: {0}")]
    Storage(#[from] StorageError),
    /// The membership protocol could not start (bad settings).
    #[error("starting membership: {0}")]
    Membership(crate::membership::MembershipError),
    /// A master was started without a grain store (it serves the cluster's store).
    #[error("a master silo needs a grain store")]
    MasterNeedsStorage,
    /// A socket could not be bound.
    #[error("cannot listen on {what} {addr}: {}", describe_bind(source))]
    Bind {
        /// Which socket (`TCP` for `--listen`, `UDP` for `--udp`).
        what: &'static str,
        /// The address it was to be bound to.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running silo: hosts activations of every registered grain type.
///
/// Live state hangs off this value (no statics), so one process can run many silos.
pub struct Silo {
    /// Dispatchers and what they share.
    catalog: Arc<Catalog>,
    /// The router references from this silo use.
    router: Arc<dyn Router>,
    /// Stops the reminder keeper (first thing at shutdown).
    keeper: CancellationToken,
}

impl Silo {
    /// Starts a single, stand-alone silo on `storage`.
    pub async fn start(
        config: SiloConfig,
        storage: Arc<dyn GrainStorage>,
    ) -> Result<Silo, StartError> {
        let catalog = build_catalog(&config, storage.clone(), HostingLease::forever())?;
        let router: Arc<dyn Router> = Arc::new(LocalRouter {
            catalog: Arc::downgrade(&catalog),
        });
        let _ = catalog.shared.router.set(router.clone());
        // A stand-alone silo keeps its own reminders; the keeper is tracked with the
        // activations, so shutdown waits for it.
        let keeper = catalog.shared.stop.child_token();
        catalog.shared.tracker.spawn(keep_reminders(
            storage,
            router.clone(),
            Box::new(|| true),
            keeper.clone(),
        ));
        Ok(Silo {
            catalog,
            router,
            keeper,
        })
    }

    /// A reference to the grain `G` with `key`.
    pub fn grain<G: Grain>(&self, key: impl fmt::Display) -> GrainRef<G> {
        GrainRef::new(self.router.clone(), key)
    }

    /// The router this silo's references use.
    pub fn router(&self) -> Arc<dyn Router> {
        self.router.clone()
    }

    /// The dispatcher of a grain type, by wire name.
    pub fn dispatcher(&self, type_name: &str) -> Option<Arc<Dispatcher>> {
        self.catalog.dispatcher(type_name).cloned()
    }

    /// Load figures of every grain type.
    pub fn stats(&self) -> Vec<DispatcherStats> {
        self.catalog.stats()
    }

    /// `(activations, queued messages)` over all grain types.
    pub fn load(&self) -> (usize, usize) {
        self.catalog.load()
    }

    /// Stops the silo: refuses new messages, lets each activation finish its turn, run
    /// `on_deactivate` and write dirty state, fails still-queued messages with
    /// `ShuttingDown`, and waits for every activation task.
    pub async fn shutdown(self) {
        self.keeper.cancel();
        let shared = &self.catalog.shared;
        shared.closing.store(true, Ordering::Release);
        shared.stop.cancel();
        shared.tracker.close();
        shared.tracker.wait().await;
        tracing::info!("silo stopped");
    }
}

impl fmt::Debug for Silo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Silo")
            .field("catalog", &self.catalog)
            .finish()
    }
}

/// Checks the registry, logs the grain types and builds one dispatcher per type.
pub(crate) fn build_catalog(
    config: &SiloConfig,
    storage: Arc<dyn GrainStorage>,
    lease: Arc<HostingLease>,
) -> Result<Arc<Catalog>, StartError> {
    let registry = registry();
    if !registry.problems().is_empty() {
        return Err(StartError::Registry(registry.problems().to_vec()));
    }
    let types = registry.grain_types();
    // The runtime's own grains (`granary.*`, e.g. the reminder shards) do not count.
    if types.iter().all(|t| t.type_name.starts_with("granary.")) {
        return Err(StartError::NoGrainTypes);
    }
    let shared = Arc::new(HostShared {
        storage,
        router: OnceLock::new(),
        stop: CancellationToken::new(),
        tracker: TaskTracker::new(),
        closing: AtomicBool::new(false),
        next_activation: AtomicU64::new(1),
        release: OnceLock::new(),
        lease,
        copies: OnceLock::new(),
    });
    let mut dispatchers = HashMap::new();
    let mut described = Vec::new();
    for entry in types {
        let idle = config.idle_timeout_for(entry.type_name, entry.idle_timeout);
        let policy = config.replication.policy_for(entry);
        let messages: Vec<String> = entry
            .messages
            .iter()
            .map(|m| match m.read {
                true => format!("{} (read)", m.message),
                false => m.message.to_owned(),
            })
            .collect();
        let replicated = match policy {
            granary_runtime::Replication::Single => String::new(),
            other => format!("; {}", other.describe()),
        };
        described.push(format!(
            "{} ({}: {}; idle {}{replicated})",
            entry.type_name,
            entry.rust_name,
            messages.join(", "),
            humantime::format_duration(idle)
        ));
        dispatchers.insert(
            entry.type_name,
            Dispatcher::new(entry, idle, config.mailbox_capacity, shared.clone(), policy),
        );
    }
    tracing::info!(
        "{} grain type(s): {}",
        described.len(),
        described.join("; ")
    );
    Ok(Arc::new(Catalog::new(dispatchers, shared)))
}

/// A bind error in plain words, with the usual fix.
fn describe_bind(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => {
            "address already in use (another silo or program holds it: stop it, or pick another port)"
                .into()
        }
        std::io::ErrorKind::AddrNotAvailable => {
            "address not available on this machine (use one of its own addresses, or 0.0.0.0)".into()
        }
        std::io::ErrorKind::PermissionDenied => {
            "permission denied (ports below 1024 need privileges)".into()
        }
        _ => error.to_string(),
    }
}
