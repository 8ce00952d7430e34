//! The silo's HTTP port (`--http ADDR`): what operators and orchestrators look at.
//!
//! | route | answer |
//! |---|---|
//! | `GET /health` | `200 ok` while the process runs (liveness) |
//! | `GET /ready` | `200 ready` when the silo can serve: joined (a slave: welcomed by a reachable master, not fenced) and its grain store answers; else `503` and the reason (readiness) |
//! | `GET /metrics` | this silo's metrics, OpenMetrics text (see `metrics`) |
//! | `GET /api/silo` | this silo's [`SiloStatus`](granary_proto::status::SiloStatus), JSON |
//! | `GET /api/status` | the [`ClusterStatus`](granary_proto::status::ClusterStatus), JSON (a slave asks the master) |
//! | `GET /` and `/api/…` | the dashboard (served by the master; see `dashboard`) |
//!
//! The server is a task of the silo: it stops with it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use granary_net::transport::Peers;
use granary_proto::status::SiloState;
use granary_proto::GrainId;
use granary_runtime::GrainStorage;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::metrics::{SiloMetrics, OPENMETRICS_CONTENT_TYPE};
use super::status::StatusSource;

/// How long `/ready` waits for the grain store to answer.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the HTTP handlers read.
#[derive(Debug)]
pub(crate) struct HttpState {
    /// Status reports (this silo, and the cluster on the master).
    pub(crate) status: Arc<StatusSource>,
    /// Connections to other silos (the master asks slaves for their status).
    pub(crate) peers: Peers,
    /// The grain store, probed by `/ready`.
    pub(crate) storage: Arc<dyn GrainStorage>,
    /// What `/metrics` encodes.
    pub(crate) metrics: Arc<SiloMetrics>,
    /// Fires when the silo stops: ends the dashboard's event streams, which would
    /// otherwise hold the graceful shutdown open.
    pub(crate) stop: CancellationToken,
}

/// The routes, over `state`.
pub(crate) fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/silo", get(silo_status))
        .route("/api/status", get(cluster_status))
        .merge(super::dashboard::routes())
        .with_state(state)
}

/// Serves `router` on the already-bound `listener` until `stop` fires.
pub(crate) async fn serve(listener: TcpListener, state: Arc<HttpState>, stop: CancellationToken) {
    let addr = listener.local_addr().ok();
    let app = router(state);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = served {
        match addr {
            Some(addr) => tracing::warn!("the HTTP server on {addr} stopped: {e}"),
            None => tracing::warn!("the HTTP server stopped: {e}"),
        }
    }
}

async fn health() -> &'static str {
    "ok\n"
}

async fn metrics(State(state): State<Arc<HttpState>>) -> axum::response::Response {
    match state.metrics.encode() {
        Ok(text) => ([(CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], text).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "encoding the metrics failed\n",
        )
            .into_response(),
    }
}

async fn silo_status(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    Json(state.status.silo_status())
}

async fn cluster_status(State(state): State<Arc<HttpState>>) -> axum::response::Response {
    match state.status.cluster_status(&state.peers).await {
        Ok(status) => Json(status).into_response(),
        Err(e) => (StatusCode::BAD_GATEWAY, format!("{e}\n")).into_response(),
    }
}

async fn ready(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    match readiness(&state).await {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

/// `Ok` when this silo can serve grains now, else why not.
async fn readiness(state: &HttpState) -> Result<(), String> {
    match state.status.state() {
        SiloState::Active => {}
        // A standby serves as a gateway (it forwards to the acting master) and keeps a
        // replica; its store serves nobody until it acts.
        SiloState::Standby => return Ok(()),
        SiloState::Joining => return Err("not joined to a master yet".into()),
        SiloState::Fenced => return Err("fenced: cut off from the master".into()),
        SiloState::Suspended => {
            return Err(
                "suspended: waiting for the acting master to renew this silo's hosting lease"
                    .into(),
            )
        }
        SiloState::Leaving => return Err("shutting down".into()),
        SiloState::Dead => return Err("declared dead".into()),
    }
    // A read of a key nobody writes: it proves the store answers, and costs one lookup.
    let probe = GrainId::new("granary.readiness/v1", "probe");
    match tokio::time::timeout(STORE_PROBE_TIMEOUT, state.storage.read(&probe)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!(
            "the grain store ({}) fails: {e}",
            state.storage.name()
        )),
        Err(_) => Err(format!(
            "the grain store ({}) did not answer within {}s",
            state.storage.name(),
            STORE_PROBE_TIMEOUT.as_secs()
        )),
    }
}

/// The address to print for people: `http://ADDR/`.
pub(crate) fn url(addr: SocketAddr) -> String {
    format!("http://{addr}/")
}
