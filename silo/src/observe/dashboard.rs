//! The dashboard: one page (`GET /`) that shows the cluster live, drawn by plain
//! JavaScript in the browser from the [`ClusterStatus`] this silo pushes once a second.
//!
//! | route | answer |
//! |---|---|
//! | `GET /` | the page (`dashboard/index.html`), with the cluster status of now embedded |
//! | `GET /dashboard/app.js`, `/dashboard/style.css` | its script and style sheet |
//! | `GET /api/events` | server-sent events: `status` (the [`ClusterStatus`] JSON) every [`PUSH_INTERVAL`], or `unavailable` (why not, as text) when it cannot be had |
//!
//! The assets are compiled in (`include_str!`): no build step, no network, nothing to
//! install next to the binary. The page computes every rate itself from the cumulative
//! counters of two consecutive reports (messages per second, CPU %, p99 latency of the
//! interval from latency-bucket deltas) and keeps a few minutes of history for its
//! charts.
//!
//! The master serves the dashboard of the cluster. A slave serves the same page (its
//! `/api/status` forwards to the master), saying that it is a slave and which master it
//! asks; a slave does not know the master's HTTP address.
//!
//! Each open page costs the master one cluster status per second (it asks every live
//! slave for its report). An event stream ends when the silo stops, so it never holds a
//! graceful shutdown open.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use futures::Stream;
use granary_proto::packet::SiloId;
use granary_proto::status::{ClusterStatus, RoleKind};
use serde::Serialize;
use tokio::time::{Interval, MissedTickBehavior};

use super::http::HttpState;

/// How often `/api/events` pushes the cluster status.
pub(crate) const PUSH_INTERVAL: Duration = Duration::from_secs(1);

/// How long the browser waits before it reconnects a dropped event stream.
const RECONNECT: Duration = Duration::from_secs(2);

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// The dashboard's routes, merged into the HTTP port's router.
pub(crate) fn routes() -> Router<Arc<HttpState>> {
    Router::new()
        .route("/", get(index))
        .route("/dashboard/app.js", get(app_js))
        .route("/dashboard/style.css", get(style_css))
        .route("/api/events", get(events))
}

/// Assets change with the binary: the browser revalidates instead of caching stale ones.
const NO_CACHE: (header::HeaderName, &str) = (header::CACHE_CONTROL, "no-cache");

/// Where the page's first data goes (see [`Boot`]).
const BOOT_MARK: &str = "<!--BOOT-->";

/// What the page starts from, embedded in it as JSON: it renders this before the first
/// pushed event (and so before the browser's `load` event), which makes a first paint
/// immediate and a headless browser's `--dump-dom` show the cluster.
#[derive(Debug, Serialize)]
struct Boot {
    /// The silo serving the page: a slave says so.
    viewer: Viewer,
    /// The cluster status now, if it could be had.
    status: Option<ClusterStatus>,
    /// Why not, otherwise.
    unavailable: Option<String>,
}

#[derive(Debug, Serialize)]
struct Viewer {
    id: SiloId,
    role: RoleKind,
}

async fn index(State(state): State<Arc<HttpState>>) -> impl IntoResponse {
    let me = state.status.silo_status();
    let (status, unavailable) = match state.status.cluster_status(&state.peers).await {
        Ok(status) => (Some(status), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let boot = Boot {
        viewer: Viewer {
            id: me.id,
            role: me.role,
        },
        status,
        unavailable,
    };
    // `<` only occurs in JSON strings, where `\u003c` means the same: no grain key can
    // end (or confuse) the script element that holds it.
    let json = serde_json::to_string(&boot)
        .unwrap_or_else(|_| "null".to_owned())
        .replace('<', "\\u003c");
    ([NO_CACHE], Html(INDEX_HTML.replacen(BOOT_MARK, &json, 1)))
}

async fn app_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            NO_CACHE,
        ],
        APP_JS,
    )
}

async fn style_css() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8"), NO_CACHE],
        STYLE_CSS,
    )
}

/// The live feed: one event per [`PUSH_INTERVAL`], until the silo stops.
async fn events(
    State(state): State<Arc<HttpState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut ticks = tokio::time::interval(PUSH_INTERVAL);
    // A slow status (a slave that does not answer) delays the next push; no burst after.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let stream = futures::stream::unfold((state, ticks), next_event);
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Waits for the next tick and builds its event; `None` (the end of the stream) once
/// the silo stops.
async fn next_event(
    (state, mut ticks): (Arc<HttpState>, Interval),
) -> Option<(Result<Event, Infallible>, (Arc<HttpState>, Interval))> {
    let stop = state.stop.clone();
    let event = tokio::select! {
        biased;
        () = stop.cancelled() => return None,
        event = async {
            ticks.tick().await;
            status_event(&state).await
        } => event,
    };
    Some((Ok(event.retry(RECONNECT)), (state, ticks)))
}

/// `status` with the cluster status, or `unavailable` with why there is none.
async fn status_event(state: &HttpState) -> Event {
    match state.status.cluster_status(&state.peers).await {
        Ok(status) => match Event::default().event("status").json_data(&status) {
            Ok(event) => event,
            Err(e) => unavailable(&format!("cannot encode the status: {e}")),
        },
        Err(e) => unavailable(&e.to_string()),
    }
}

fn unavailable(why: &str) -> Event {
    Event::default().event("unavailable").data(why)
}

#[cfg(test)]
mod tests;
