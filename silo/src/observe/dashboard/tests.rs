//! The dashboard's routes on a real master's HTTP port, through a raw HTTP/1.0 client
//! (the browser test in `grains-example/tests/dashboard_browser.rs` looks at the page).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use granary_proto::status::{ClusterStatus, LATENCY_BOUNDS_US};
use granary_runtime::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

use super::APP_JS;
use crate::cluster::{ClusterConfig, ClusterSilo};
use crate::storage::MemoryStorage;
use crate::SiloConfig;

const LIMIT: Duration = Duration::from_secs(10);

/// A silo needs a grain type to start; this one also shows up in the status.
struct Probe;
#[derive(Serialize, Deserialize)]
struct Ping;

#[async_trait]
impl Grain for Probe {
    const TYPE_NAME: &'static str = "test.dashboard/v1";
    type State = ();
    async fn on_activate(_ctx: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Probe)
    }
}

#[async_trait]
impl Handler<Ping> for Probe {
    type Reply = ();
    async fn handle(&mut self, _: Ping, _ctx: &mut GrainContext<Self>) -> Result<(), GrainError> {
        Ok(())
    }
}

granary_runtime::register_grain!(Probe, handles = [Ping]);

async fn master() -> ClusterSilo {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    ClusterSilo::start(
        SiloConfig::default(),
        ClusterConfig::master(any, any).with_http(any),
        Some(Arc::new(MemoryStorage::new())),
    )
    .await
    .unwrap()
}

/// Sends `GET path` (HTTP/1.0: the server closes the connection after the body).
async fn request(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

/// The whole response: head and body.
async fn get(addr: SocketAddr, path: &str) -> String {
    let mut stream = request(addr, path).await;
    let mut bytes = Vec::new();
    timeout(LIMIT, stream.read_to_end(&mut bytes))
        .await
        .expect("the response ends")
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn the_page_and_its_assets_are_served() {
    let silo = master().await;
    let http = silo.http_addr().unwrap();

    let page = get(http, "/").await;
    assert!(page.starts_with("HTTP/1.0 200"), "{page}");
    assert!(page.contains("text/html"), "{page}");
    assert!(
        page.contains(r#"<script src="/dashboard/app.js">"#),
        "{page}"
    );
    assert!(page.contains(r#"href="/dashboard/style.css""#), "{page}");

    let script = get(http, "/dashboard/app.js").await;
    assert!(script.starts_with("HTTP/1.0 200"), "{script}");
    assert!(script.contains("content-type: text/javascript"), "{script}");
    assert!(script.contains("new EventSource('/api/events')"));

    let style = get(http, "/dashboard/style.css").await;
    assert!(style.contains("content-type: text/css"), "{style}");
    silo.shutdown().await;
}

#[tokio::test]
async fn the_event_stream_pushes_the_cluster_status_and_ends_when_the_silo_stops() {
    let silo = master().await;
    let http = silo.http_addr().unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let slave = ClusterSilo::start(
        SiloConfig::default(),
        ClusterConfig::slave(any, any, silo.id().udp),
        None,
    )
    .await
    .unwrap();
    slave.wait_joined(LIMIT).await.unwrap();
    slave
        .grain::<Probe>("one")
        .ask(Ping)
        .timeout(LIMIT)
        .await
        .unwrap();
    let mut stream = request(http, "/api/events").await;

    // Read until one whole `status` event has arrived.
    let mut text = String::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + LIMIT;
    let data = loop {
        if let Some(at) = text.find("event: status\n") {
            let rest = &text[at..];
            if let Some(line) = rest.lines().find_map(|l| l.strip_prefix("data: ")) {
                if rest.contains("\n\n") {
                    break line.to_owned();
                }
            }
        }
        let n = tokio::time::timeout_at(deadline, stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no status event in time: {text}"))
            .unwrap();
        assert!(n > 0, "the stream ended early: {text}");
        text.push_str(std::str::from_utf8(&buf[..n]).unwrap());
    };
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    assert!(text.contains("content-type: text/event-stream"), "{text}");
    let status: ClusterStatus = serde_json::from_str(&data).unwrap();
    assert_eq!(status.master, silo.id());
    assert_eq!(status.silos.len(), 2, "{status:?}");
    let probe = &status.silos[1].grain_types;
    assert!(
        probe
            .iter()
            .any(|t| t.grain_type == Probe::TYPE_NAME && t.messages == 1),
        "{probe:?}"
    );

    // An open stream does not hold the shutdown, and it ends with it.
    timeout(
        LIMIT,
        futures::future::join(slave.shutdown(), silo.shutdown()),
    )
    .await
    .expect("the silo stops with a dashboard open");
    let mut rest = Vec::new();
    timeout(LIMIT, stream.read_to_end(&mut rest))
        .await
        .expect("the event stream ends")
        .unwrap();
}

#[test]
fn the_page_uses_the_latency_bounds_of_the_protocol() {
    let start = APP_JS.find("const LATENCY_BOUNDS_US = [").unwrap();
    let list = &APP_JS[start..];
    let list = &list[list.find('[').unwrap() + 1..list.find(']').unwrap()];
    let bounds: Vec<u64> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(bounds, LATENCY_BOUNDS_US);
}
