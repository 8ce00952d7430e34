//! Integration tests of the TCP transport over 127.0.0.1 ephemeral ports.
//!
//! Every test runs under a hard timeout; waits poll with deadlines.

use std::collections::HashSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use async_trait::async_trait;
use granary_proto::frame::{GrainCall, Request, Response, FRAME_VERSION};
use granary_proto::{CallError, GrainId};
use granary_silo::transport::{serve, Peers, RequestHandler, TransportConfig, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Upper bound for any single test.
const TEST_LIMIT: Duration = Duration::from_secs(30);

/// Panics anywhere in the process (e.g. inside a connection task, where nothing else
/// would notice) other than the one `TestHandler` raises on purpose.
static UNEXPECTED_PANICS: AtomicUsize = AtomicUsize::new(0);
const INTENDED_PANIC: &str = "handler asked to panic";

fn count_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.to_string().contains(INTENDED_PANIC) {
                UNEXPECTED_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

/// Runs a test under [`TEST_LIMIT`] and fails it if any task panicked unexpectedly.
async fn bounded<F: Future>(test: F) -> F::Output {
    count_panics();
    let output = tokio::time::timeout(TEST_LIMIT, test)
        .await
        .expect("test exceeded its time limit");
    assert_eq!(
        UNEXPECTED_PANICS.load(Ordering::SeqCst),
        0,
        "a task panicked"
    );
    output
}

fn soon(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

/// Polls `check` until it is true or `limit` passes.
async fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Echoes grain payloads (message `"echo"`), blocks forever on message `"block"`,
/// panics on `"panic"`, answers `Ping` with `Pong`; records peers and calls seen.
#[derive(Default)]
struct TestHandler {
    peers: Mutex<HashSet<SocketAddr>>,
    started: AtomicUsize,
    oneways: AtomicUsize,
}

#[async_trait]
impl RequestHandler for TestHandler {
    async fn handle(&self, request: Request, peer: SocketAddr) -> Response {
        self.peers.lock().unwrap().insert(peer);
        self.started.fetch_add(1, Ordering::SeqCst);
        match request {
            Request::Ping => Response::Pong,
            Request::Grain(call) => match call.message.as_str() {
                "echo" => {
                    // A little jitter so responses come back out of order.
                    let delay = fastrand::u64(0..3);
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    Response::Grain(Ok(call.payload))
                }
                "block" => std::future::pending().await,
                "panic" => panic!("{INTENDED_PANIC}"),
                "oneway" => {
                    self.oneways.fetch_add(1, Ordering::SeqCst);
                    Response::Grain(Ok(vec![]))
                }
                other => Response::Grain(Err(CallError::UnknownMessage {
                    grain_type: call.target.type_name.into_owned(),
                    message: other.to_owned(),
                })),
            },
            _ => Response::Directory {
                epoch: 0,
                result: Ok(None),
            },
        }
    }
}

fn grain_call(message: &str, payload: Vec<u8>) -> Request {
    Request::Grain(GrainCall {
        target: GrainId::new("test.echo/v1", "k"),
        message: message.to_owned(),
        payload,
        timeout_ms: 10_000,
        hops: 0,
        one_way: false,
        stream: None,
        trace: None,
        replica: None,
    })
}

/// A running server: its address, its shutdown switch and its task.
struct Server {
    addr: SocketAddr,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(handler: Arc<TestHandler>, config: TransportConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, handler, config)
    }

    fn start_on(listener: TcpListener, handler: Arc<TestHandler>, config: TransportConfig) -> Self {
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        let task = tokio::spawn(serve(listener, handler, config, shutdown));
        Self { addr, stop, task }
    }

    /// Triggers shutdown and waits for `serve` to return.
    async fn shutdown(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

fn test_config() -> TransportConfig {
    TransportConfig::default()
        .with_connect_timeout(Duration::from_secs(2))
        .with_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .with_shutdown_grace(Duration::from_millis(200))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_round_trip() {
    bounded(async {
        let handler = Arc::new(TestHandler::default());
        let server = Server::start(handler.clone(), test_config()).await;
        let peers = Peers::new(test_config());

        let pong = peers.call(server.addr, Request::Ping, soon(5_000)).await;
        assert_eq!(pong, Ok(Response::Pong));
        let echoed = peers
            .call(
                server.addr,
                grain_call("echo", b"hello".to_vec()),
                soon(5_000),
            )
            .await;
        assert_eq!(echoed, Ok(Response::Grain(Ok(b"hello".to_vec()))));
        let unknown = peers
            .call(server.addr, grain_call("nope", vec![]), soon(5_000))
            .await;
        assert!(matches!(
            unknown,
            Ok(Response::Grain(Err(CallError::UnknownMessage { .. })))
        ));
        assert_eq!(
            handler.peers.lock().unwrap().len(),
            1,
            "one connection reused"
        );
        assert!(format!("{peers:?}").contains("connected: 1"));

        peers.close().await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_calls_pipeline_on_one_connection() {
    bounded(async {
        let handler = Arc::new(TestHandler::default());
        let server = Server::start(handler.clone(), test_config()).await;
        let peers = Peers::new(test_config());

        let mut calls = tokio::task::JoinSet::new();
        for i in 0u32..1_000 {
            let peers = peers.clone();
            let addr = server.addr;
            calls.spawn(async move {
                let payload = i.to_be_bytes().to_vec();
                let response = peers
                    .call(addr, grain_call("echo", payload.clone()), soon(20_000))
                    .await;
                (payload, response)
            });
        }
        let mut answered = 0;
        while let Some(done) = calls.join_next().await {
            let (payload, response) = done.unwrap();
            assert_eq!(response, Ok(Response::Grain(Ok(payload))));
            answered += 1;
        }
        assert_eq!(answered, 1_000);
        assert_eq!(handler.started.load(Ordering::SeqCst), 1_000);
        assert_eq!(
            handler.peers.lock().unwrap().len(),
            1,
            "all calls shared one connection"
        );

        peers.close().await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_shutdown_fails_in_flight_calls_fast() {
    bounded(async {
        let handler = Arc::new(TestHandler::default());
        let server = Server::start(handler.clone(), test_config()).await;
        let peers = Peers::new(test_config());
        let far = soon(25_000);

        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..20 {
            let peers = peers.clone();
            let addr = server.addr;
            calls.spawn(async move { peers.call(addr, grain_call("block", vec![]), far).await });
        }
        wait_until(Duration::from_secs(5), || {
            handler.started.load(Ordering::SeqCst) == 20
        })
        .await;

        let started = Instant::now();
        server.shutdown().await;
        while let Some(done) = calls.join_next().await {
            let result = done.unwrap();
            assert!(
                matches!(result, Err(TransportError::Lost(_))),
                "got {result:?}"
            );
        }
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "failed after {took:?}");
        peers.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_fails_in_flight_calls_with_lost() {
    bounded(async {
        let handler = Arc::new(TestHandler::default());
        let server = Server::start(handler.clone(), test_config()).await;
        let peers = Peers::new(test_config());

        let call = tokio::spawn({
            let peers = peers.clone();
            let addr = server.addr;
            async move {
                peers
                    .call(addr, grain_call("block", vec![]), soon(25_000))
                    .await
            }
        });
        wait_until(Duration::from_secs(5), || {
            handler.started.load(Ordering::SeqCst) == 1
        })
        .await;
        peers.disconnect(server.addr);
        let result = tokio::time::timeout(Duration::from_secs(5), call)
            .await
            .expect("lost call not failed fast")
            .unwrap();
        assert!(
            matches!(result, Err(TransportError::Lost(_))),
            "got {result:?}"
        );

        // The next call connects again.
        let pong = peers.call(server.addr, Request::Ping, soon(5_000)).await;
        assert_eq!(pong, Ok(Response::Pong));

        peers.close().await;
        let after = peers.call(server.addr, Request::Ping, soon(5_000)).await;
        assert_eq!(after, Err(TransportError::Closed));
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_address_fails_fast_and_backs_off() {
    bounded(async {
        // A port nobody listens on: bind, note it, close.
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let config = test_config().with_backoff(Duration::from_secs(10), Duration::from_secs(10));
        let peers = Peers::new(config);

        let first = peers.call(addr, Request::Ping, soon(5_000)).await;
        assert!(
            matches!(first, Err(TransportError::Unreachable(_))),
            "got {first:?}"
        );
        // In backoff: fails at once without trying to connect.
        let started = Instant::now();
        let second = peers.call(addr, Request::Ping, soon(5_000)).await;
        match second {
            Err(TransportError::Unreachable(why)) => assert!(why.contains("backoff"), "{why}"),
            other => panic!("expected Unreachable, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(matches!(
            peers.send_oneway(addr, Request::Ping).await,
            Err(TransportError::Unreachable(_))
        ));
        assert_eq!(
            CallError::from(TransportError::Unreachable("x".into())),
            CallError::Unreachable("x".into())
        );
        peers.close().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_server_comes_back_on_the_same_port() {
    bounded(async {
        let handler = Arc::new(TestHandler::default());
        let server = Server::start(handler.clone(), test_config()).await;
        let addr = server.addr;
        let peers = Peers::new(test_config());
        assert_eq!(
            peers.call(addr, Request::Ping, soon(5_000)).await,
            Ok(Response::Pong)
        );

        server.shutdown().await;
        // The broken connection is noticed; with nobody listening, calls fail.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match peers.call(addr, Request::Ping, soon(1_000)).await {
                Err(TransportError::Unreachable(_)) => break,
                Err(TransportError::Lost(_)) | Ok(_) => {}
                Err(other) => panic!("unexpected {other:?}"),
            }
            assert!(
                Instant::now() < deadline,
                "never saw the server as unreachable"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        let listener = TcpListener::bind(addr).await.unwrap();
        let server = Server::start_on(listener, handler.clone(), test_config());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match peers.call(addr, Request::Ping, soon(1_000)).await {
                Ok(response) => {
                    assert_eq!(response, Response::Pong);
                    break;
                }
                Err(TransportError::Unreachable(_)) => {}
                Err(other) => panic!("unexpected {other:?}"),
            }
            assert!(Instant::now() < deadline, "never reconnected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        peers.close().await;
        server.shutdown().await;
    })
    .await;
}

/// Writes `bytes` on a raw connection and expects the server to close it.
async fn expect_closed_after(addr: SocketAddr, bytes: &[u8]) {
    let mut raw = TcpStream::connect(addr).await.unwrap();
    raw.write_all(bytes).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf))
        .await
        .expect("server did not close the connection");
    // EOF, or a reset if the server closed with our bytes still unread.
    assert!(matches!(read, Ok(0) | Err(_)), "got {read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_their_connection() {
    bounded(async {
        let handler = Arc::new(TestHandler::default());
        let config = test_config().with_max_frame(64 * 1024);
        let server = Server::start(handler.clone(), config.clone()).await;
        let peers = Peers::new(config.clone());
        // A well-behaved client connected before, and still served after.
        assert_eq!(
            peers.call(server.addr, Request::Ping, soon(5_000)).await,
            Ok(Response::Pong)
        );

        // Garbage body with a valid prefix and version.
        let mut garbage = 8u32.to_be_bytes().to_vec();
        garbage.push(FRAME_VERSION);
        garbage.extend_from_slice(&[0xff; 7]);
        expect_closed_after(server.addr, &garbage).await;
        // Oversize length prefix: refused before any allocation.
        expect_closed_after(server.addr, &u32::MAX.to_be_bytes()).await;
        // Text protocol (its first bytes read as a ~1.2 GB length).
        expect_closed_after(server.addr, b"GET / HTTP/1.1\r\n\r\n").await;
        // Wrong version.
        let mut versioned = 2u32.to_be_bytes().to_vec();
        versioned.extend_from_slice(&[FRAME_VERSION + 1, 0]);
        expect_closed_after(server.addr, &versioned).await;

        assert_eq!(
            peers.call(server.addr, Request::Ping, soon(5_000)).await,
            Ok(Response::Pong)
        );
        let fresh = Peers::new(config);
        assert_eq!(
            fresh.call(server.addr, Request::Ping, soon(5_000)).await,
            Ok(Response::Pong)
        );

        fresh.close().await;
        peers.close().await;
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_requests_fail_locally_and_panics_become_errors() {
    bounded(async {
        let handler = Arc::new(TestHandler::default());
        let config = test_config().with_max_frame(1024);
        let server = Server::start(handler.clone(), config.clone()).await;
        let peers = Peers::new(config);

        let big = peers
            .call(server.addr, grain_call("echo", vec![7; 4096]), soon(5_000))
            .await;
        assert!(
            matches!(big, Err(TransportError::TooLarge { max: 1024, .. })),
            "got {big:?}"
        );

        let panicked = peers
            .call(server.addr, grain_call("panic", vec![]), soon(5_000))
            .await;
        assert!(
            matches!(panicked, Ok(Response::Grain(Err(CallError::Panicked(_))))),
            "got {panicked:?}"
        );

        // The connection survived both.
        assert_eq!(
            peers.call(server.addr, Request::Ping, soon(5_000)).await,
            Ok(Response::Pong)
        );
        assert_eq!(handler.peers.lock().unwrap().len(), 1);

        peers
            .send_oneway(server.addr, grain_call("oneway", vec![]))
            .await
            .unwrap();
        wait_until(Duration::from_secs(5), || {
            handler.oneways.load(Ordering::SeqCst) == 1
        })
        .await;

        peers.close().await;
        server.shutdown().await;
    })
    .await;
}

/// With `max_connections = 1`, a second peer waits in the listen backlog (its calls
/// time out rather than being refused) until the first connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_makes_extra_peers_wait() {
    bounded(async {
        let handler = Arc::new(TestHandler::default());
        let config = test_config().with_max_connections(1);
        let server = Server::start(handler.clone(), config.clone()).await;
        let first = Peers::new(config.clone());
        let second = Peers::new(config.clone());

        assert_eq!(
            first.call(server.addr, Request::Ping, soon(5_000)).await,
            Ok(Response::Pong)
        );
        let waiting = second.call(server.addr, Request::Ping, soon(300)).await;
        assert_eq!(waiting, Err(TransportError::Timeout));
        assert_eq!(handler.peers.lock().unwrap().len(), 1);

        first.close().await;
        assert_eq!(
            second.call(server.addr, Request::Ping, soon(5_000)).await,
            Ok(Response::Pong)
        );
        assert_eq!(handler.peers.lock().unwrap().len(), 2);

        second.close().await;
        server.shutdown().await;
    })
    .await;
}

/// Rough loopback numbers (run with `--ignored --nocapture`, ideally `--release`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a test"]
async fn measure_ping_latency_and_throughput() {
    let handler = Arc::new(TestHandler::default());
    let server = Server::start(handler, TransportConfig::default()).await;
    let peers = Peers::new(TransportConfig::default());
    let addr = server.addr;
    for _ in 0..1_000 {
        peers.call(addr, Request::Ping, soon(5_000)).await.unwrap();
    }

    let mut samples = Vec::with_capacity(10_000);
    for _ in 0..10_000 {
        let started = std::time::Instant::now();
        peers.call(addr, Request::Ping, soon(5_000)).await.unwrap();
        samples.push(started.elapsed());
    }
    samples.sort();
    let pct = |p: usize| samples[samples.len() * p / 100];
    println!(
        "sequential ping round trip: p50 {:?}, p99 {:?}, max {:?}",
        pct(50),
        pct(99),
        samples[samples.len() - 1]
    );

    for concurrency in [16usize, 256] {
        let total = 200_000usize;
        let per_task = total / concurrency;
        let started = std::time::Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let peers = peers.clone();
            tasks.spawn(async move {
                for _ in 0..per_task {
                    peers.call(addr, Request::Ping, soon(10_000)).await.unwrap();
                }
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap();
        }
        let elapsed = started.elapsed();
        println!(
            "pipelined ping, {concurrency} callers on one connection: {} calls in {elapsed:?} = {:.0} calls/s",
            per_task * concurrency,
            (per_task * concurrency) as f64 / elapsed.as_secs_f64()
        );
    }
    peers.close().await;
    server.shutdown().await;
}
