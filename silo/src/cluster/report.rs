//! A slave's reports to the acting master: after every admission (a new master welcomed
//! it, its master welcomed it again after losing it, or it was fenced) the slave tells
//! the master which grains it hosts, so a new master rebuilds its directory without
//! re-activating them; after fencing, it reports an emptied silo. The master renews the
//! slave's hosting lease only once it accepted the report (the membership task is told
//! through `reported`, which carries the admission number).

use std::sync::{Arc, Weak};
use std::time::Duration;

use granary_net::transport::Peers;
use granary_proto::frame::{ReportOutcome, Request, Response, SiloAddr};
use granary_proto::status::ClusterEventKind;
use granary_proto::GrainId;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::membership::{Hosting, MembershipSnapshot};
use crate::observe::EventLog;

/// Deadline of one report.
const REPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before reporting again after a failure.
const RETRY: Duration = Duration::from_millis(100);
/// How long dropped activations may take to finish their current turn.
const DRAIN_WAIT: Duration = Duration::from_secs(10);

/// Reports this slave's grains whenever a master of a newer epoch (or, after fencing,
/// any master) has not had them yet.
pub(super) async fn report_to_masters(
    mut membership: watch::Receiver<Arc<MembershipSnapshot>>,
    catalog: Weak<Catalog>,
    peers: Peers,
    me: SiloAddr,
    reported: watch::Sender<u64>,
    events: Arc<EventLog>,
    stop: CancellationToken,
) {
    loop {
        let snapshot = membership.borrow_and_update().clone();
        let done = *reported.borrow();
        let fenced = snapshot.hosting == Hosting::Fenced;
        let mut retry = false;
        if let Some(master) = snapshot.master.filter(|_| snapshot.admission > done) {
            let Some(catalog) = catalog.upgrade() else {
                return;
            };
            if fenced {
                drop_everything(&catalog, &events, &snapshot).await;
            }
            let grains = catalog.hosted();
            let count = grains.len();
            let request = Request::DirectoryReport {
                epoch: snapshot.epoch,
                silo: me,
                grains,
            };
            let deadline = Instant::now() + REPORT_TIMEOUT;
            match peers.call(master.tcp, request, deadline).await {
                Ok(Response::DirectoryReport(ReportOutcome::Accepted { rejected })) => {
                    if !rejected.is_empty() {
                        tracing::warn!(
                            "the master of epoch {} places {} of this silo's grains elsewhere: dropping them here",
                            snapshot.epoch,
                            rejected.len()
                        );
                        discard(&catalog, &rejected).await;
                    }
                    tracing::info!(
                        "reported {count} grain(s) to the acting master {master} (epoch {}); serving",
                        snapshot.epoch
                    );
                    reported.send_replace(snapshot.admission);
                }
                Ok(Response::DirectoryReport(outcome)) => {
                    tracing::debug!(?outcome, "the master did not take this silo's report yet");
                    retry = true;
                }
                Ok(other) => {
                    tracing::warn!("unexpected answer to a directory report: {other:?}");
                    retry = true;
                }
                Err(e) => {
                    tracing::debug!("reporting to the master {master}: {e}");
                    retry = true;
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = membership.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(RETRY), if retry => {}
        }
    }
}

/// Fenced: drops every activation without writing and waits until they are gone.
async fn drop_everything(catalog: &Catalog, events: &EventLog, snapshot: &MembershipSnapshot) {
    let hosted = catalog.hosted();
    if !hosted.is_empty() {
        tracing::warn!(
            "fenced: dropping {} grain(s) without writing their state",
            hosted.len()
        );
        events.record(
            ClusterEventKind::Fenced,
            snapshot.me,
            format!(
                "fenced: {} grain(s) dropped; hosting nothing until a master accepts this silo again",
                hosted.len()
            ),
        );
    }
    discard(catalog, &hosted).await;
}

/// Drops these activations and waits (bounded) until their turns have ended.
async fn discard(catalog: &Catalog, grains: &[GrainId]) {
    for grain in grains {
        if let Some(dispatcher) = catalog.dispatcher(&grain.type_name) {
            dispatcher.discard(&grain.key);
        }
    }
    let until = Instant::now() + DRAIN_WAIT;
    while grains.iter().any(|g| {
        catalog
            .dispatcher(&g.type_name)
            .is_some_and(|d| d.is_active(&g.key))
    }) {
        if Instant::now() >= until {
            tracing::warn!("some dropped activations are still finishing a turn");
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
