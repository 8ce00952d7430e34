//! Cancellation reaches the callee on a remote slave, and follows the call chain, on a
//! `TestCluster` (a master and two slaves; the client always calls a slave over TCP):
//! dropping an `ask` (or its timeout) and cancelling an `ask_stream` stop the handler
//! (observed from the grain through `ctx.cancelled()`), a grain call the handler made is
//! cancelled too, and a nested call carries what is left of its caller's deadline.

use std::collections::HashMap;
use std::future::IntoFuture;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use granary_proto::CallError;
use granary_runtime::prelude::*;
use granary_silo::testing::{eventually, TestCluster};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

const STABLE: Duration = Duration::from_secs(10);
/// How soon a cancel must reach the handler.
const REACH: Duration = Duration::from_secs(5);

/// Waits until cancelled; what each key saw is logged in [`events`].
struct Waiter;

/// Ask: wait for cancellation (at most a minute); with `nested`, first ask that key to
/// wait, and log how the nested call ended.
#[derive(Serialize, Deserialize)]
struct Wait {
    nested: Option<String>,
}

/// Stream: one item, then wait for cancellation.
#[derive(Serialize, Deserialize)]
struct WaitStreaming;

#[async_trait]
impl Grain for Waiter {
    const TYPE_NAME: &'static str = "test.cancel-waiter/v1";
    type State = ();
    async fn on_activate(_: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Waiter)
    }
}

fn log(key: &str, event: String) {
    events()
        .lock()
        .unwrap()
        .entry(key.to_owned())
        .or_default()
        .push(event);
}

fn events() -> &'static Mutex<HashMap<String, Vec<String>>> {
    static ALL: OnceLock<Mutex<HashMap<String, Vec<String>>>> = OnceLock::new();
    ALL.get_or_init(Default::default)
}

fn logged(key: &str, prefix: &str) -> bool {
    events()
        .lock()
        .unwrap()
        .get(key)
        .is_some_and(|e| e.iter().any(|e| e.starts_with(prefix)))
}

fn log_of(key: &str) -> Vec<String> {
    events()
        .lock()
        .unwrap()
        .get(key)
        .cloned()
        .unwrap_or_default()
}

#[async_trait]
impl Handler<Wait> for Waiter {
    type Reply = ();
    async fn handle(&mut self, msg: Wait, ctx: &mut GrainContext<Self>) -> Result<(), GrainError> {
        let key = ctx.id().key.clone();
        if let Some(deadline) = ctx.deadline() {
            let left = deadline.saturating_duration_since(Instant::now());
            log(&key, format!("started, {} ms left", left.as_millis()));
        }
        if let Some(inner) = msg.nested {
            // Ignores its own cancellation: the nested call must end by itself.
            let result = ctx.grain::<Waiter>(&inner).ask(Wait { nested: None }).await;
            log(&key, format!("nested call ended: {result:?}"));
            return Ok(());
        }
        tokio::select! {
            () = ctx.cancelled() => log(&key, "cancelled".into()),
            () = tokio::time::sleep(Duration::from_secs(60)) => log(&key, "never cancelled".into()),
        }
        Ok(())
    }
}

#[async_trait]
impl StreamHandler<WaitStreaming> for Waiter {
    type Item = u32;
    async fn handle_stream(
        &mut self,
        _: WaitStreaming,
        replies: &mut Replies<u32>,
        ctx: &mut GrainContext<Self>,
    ) -> Result<(), GrainError> {
        let key = ctx.id().key.clone();
        replies.send(1).await?;
        tokio::select! {
            () = ctx.cancelled() => log(&key, "cancelled".into()),
            () = tokio::time::sleep(Duration::from_secs(60)) => log(&key, "never cancelled".into()),
        }
        Ok(())
    }
}

granary_runtime::register_grain!(Waiter, handles = [Wait], streams = [WaitStreaming]);

async fn cluster() -> (TestCluster, granary_client::Client) {
    let cluster = TestCluster::builder().slaves(2).build().await.unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    let client = cluster.client().await.unwrap();
    (cluster, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_or_timing_out_an_ask_cancels_the_remote_handler() {
    let (cluster, client) = cluster().await;

    // Dropped: the future is abandoned after the handler started.
    let dropped = client.grain::<Waiter>("dropped");
    {
        let call = dropped.ask(Wait { nested: None }).into_future();
        tokio::pin!(call);
        // Poll the call until its handler runs, then drop it.
        tokio::select! {
            _ = &mut call => panic!("the waiter answered"),
            () = eventually("the handler starts", REACH, || logged("dropped", "started")) => {}
        }
    }
    eventually("the dropped call's handler is cancelled", REACH, || {
        logged("dropped", "cancelled")
    })
    .await;

    // Timed out: the ask's own deadline cancels it the same way.
    let timed = client.grain::<Waiter>("timed-out");
    let result = timed
        .ask(Wait { nested: None })
        .timeout(Duration::from_millis(500))
        .await;
    assert_eq!(result, Err(CallError::Timeout));
    eventually("the timed-out call's handler is cancelled", REACH, || {
        logged("timed-out", "cancelled")
    })
    .await;
    assert!(!logged("timed-out", "never"), "{:?}", log_of("timed-out"));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cancel_follows_the_call_chain_and_deadlines_shrink() {
    let (cluster, client) = cluster().await;
    let outer = client.grain::<Waiter>("outer");
    let result = outer
        .ask(Wait {
            nested: Some("inner".into()),
        })
        .timeout(Duration::from_secs(2))
        .await;
    // The nested call inherits the same deadline, so it may time out a moment before
    // the client does, and the outer handler's answer can then beat the client's own
    // timer: an answer at the deadline is as right as the timeout.
    assert!(
        matches!(result, Err(CallError::Timeout) | Ok(())),
        "{result:?}; outer: {:?}, inner: {:?}",
        log_of("outer"),
        log_of("inner")
    );
    eventually("the nested handler is cancelled", REACH, || {
        logged("inner", "cancelled")
    })
    .await;
    eventually("the nested call ends as cancelled", REACH, || {
        logged("outer", "nested call ended")
    })
    .await;
    let outer_log = log_of("outer");
    // The nested call inherited the client's deadline, so the cancel and its own
    // deadline end it at about the same instant: either error is right, as long as it
    // ended then (and did not wait out a 30 s default).
    assert!(
        outer_log
            .iter()
            .any(|e| e == "nested call ended: Err(Cancelled)"
                || e == "nested call ended: Err(Timeout)"),
        "{outer_log:?}"
    );
    // The nested call got what was left of the client's 2 s, not a fresh 30 s.
    let inner_log = log_of("inner");
    let left: u64 = inner_log
        .iter()
        .find_map(|e| {
            e.strip_prefix("started, ")?
                .strip_suffix(" ms left")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("{inner_log:?}"));
    assert!(left <= 2_000, "the nested call had {left} ms");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_an_ask_stream_cancels_the_remote_handler() {
    let (cluster, client) = cluster().await;
    let waiter = client.grain::<Waiter>("streaming");
    let mut stream = waiter.ask_stream(WaitStreaming);
    assert_eq!(stream.next().await, Some(Ok(1)));
    stream.cancel();
    assert_eq!(stream.next().await, None);
    eventually("the streaming handler is cancelled", REACH, || {
        logged("streaming", "cancelled")
    })
    .await;
    // The grain serves the next call.
    let mut again = waiter.ask_stream(WaitStreaming);
    assert_eq!(again.next().await, Some(Ok(1)));
    drop(again);
    cluster.shutdown().await;
}
