//! Streamed replies across a `TestCluster` (a master and slaves on 127.0.0.1): items
//! through the client arrive complete and in order, a failing handler ends the stream
//! with its error after the items it sent, and a consumer that stops reading stops the
//! producer (the items sent stay within a few buffers), and dropping the stream stops
//! the handler on its slave.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// Streams numbers; what each key's handler did is kept in [`progress`].
struct Numbers;

/// Stream: `0..n`, then fail with `fail_with` if set.
#[derive(Serialize, Deserialize)]
struct Count {
    n: u64,
    fail_with: Option<String>,
}

#[async_trait]
impl Grain for Numbers {
    const TYPE_NAME: &'static str = "test.stream-numbers/v1";
    type State = ();
    async fn on_activate(_: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Numbers)
    }
}

/// How far a key's handler got: items sent, and whether it saw its caller leave.
#[derive(Default)]
struct Progress {
    sent: AtomicU64,
    cancelled: AtomicBool,
}

fn progress(key: &str) -> &'static Progress {
    static ALL: OnceLock<Mutex<HashMap<String, &'static Progress>>> = OnceLock::new();
    let mut all = ALL.get_or_init(Default::default).lock().unwrap();
    all.entry(key.to_owned())
        .or_insert_with(|| Box::leak(Box::default()))
}

#[async_trait]
impl StreamHandler<Count> for Numbers {
    type Item = u64;
    async fn handle_stream(
        &mut self,
        msg: Count,
        replies: &mut Replies<u64>,
        ctx: &mut GrainContext<Self>,
    ) -> Result<(), GrainError> {
        let progress = progress(&ctx.id().key);
        for i in 0..msg.n {
            if let Err(e) = replies.send(i).await {
                progress.cancelled.store(true, Ordering::SeqCst);
                return Err(e.into());
            }
            progress.sent.fetch_add(1, Ordering::SeqCst);
        }
        match msg.fail_with {
            Some(why) => Err(why.into()),
            None => Ok(()),
        }
    }
}

granary_runtime::register_grain!(Numbers, handles = [], streams = [Count]);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_items_through_the_client_arrive_complete_and_in_order() {
    let cluster = TestCluster::builder().slaves(2).build().await.unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    let client = cluster.client().await.unwrap();
    let numbers = client.grain::<Numbers>("ten-thousand");
    let items: Vec<_> = numbers
        .ask_stream(Count {
            n: 10_000,
            fail_with: None,
        })
        .timeout(Duration::from_secs(60))
        .collect()
        .await;
    let items: Vec<u64> = items.into_iter().map(Result::unwrap).collect();
    assert_eq!(items, (0..10_000).collect::<Vec<_>>());

    // An empty stream ends at once; a failing one yields its items, then its error.
    let empty: Vec<_> = numbers
        .ask_stream(Count {
            n: 0,
            fail_with: None,
        })
        .collect()
        .await;
    assert!(empty.is_empty());
    let failed: Vec<_> = numbers
        .ask_stream(Count {
            n: 3,
            fail_with: Some("disk on fire".into()),
        })
        .collect()
        .await;
    assert_eq!(failed.len(), 4, "{failed:?}");
    assert_eq!(failed[..3], [Ok(0), Ok(1), Ok(2)]);
    assert!(
        matches!(&failed[3], Err(CallError::Handler(why)) if why.contains("disk on fire")),
        "{:?}",
        failed[3]
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_stops_reading_stops_the_producer_and_dropping_it_cancels() {
    let cluster = TestCluster::builder().slaves(2).build().await.unwrap();
    cluster.wait_for_membership_stable(STABLE).await.unwrap();
    let client = cluster.client().await.unwrap();
    let numbers = client.grain::<Numbers>("stalled");
    let progress = progress("stalled");
    const BUFFER: usize = 16;
    let mut stream = numbers
        .ask_stream(Count {
            n: 1_000_000,
            fail_with: None,
        })
        .buffer(BUFFER)
        .timeout(Duration::from_secs(120));
    for expected in 0..5 {
        assert_eq!(stream.next().await, Some(Ok(expected)));
    }
    // Stop reading: the handler must come to a halt within a few buffers (the
    // caller's, the connection's credit window, the serving silo's).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = progress.sent.load(Ordering::SeqCst);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = progress.sent.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the handler never stopped: {now} sent"
        );
        last = now;
    }
    let bound = 5 + 4 * BUFFER as u64 + 4;
    assert!(
        last <= bound,
        "{last} items sent to a consumer that read 5 (bound {bound})"
    );
    assert!(!progress.cancelled.load(Ordering::SeqCst));

    // Dropping the stream cancels the call on the slave: the handler's send fails.
    drop(stream);
    eventually("the handler sees its caller leave", STABLE, || {
        progress.cancelled.load(Ordering::SeqCst)
    })
    .await;
    // The grain is free again.
    let items: Vec<_> = numbers
        .ask_stream(Count {
            n: 2,
            fail_with: None,
        })
        .collect()
        .await;
    assert_eq!(items, [Ok(0), Ok(1)]);
    cluster.shutdown().await;
}
