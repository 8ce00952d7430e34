//! Streamed replies inside one silo (typed items, no encoding): order, the end, a
//! handler's error, a call answered with the wrong kind of handler, and cancellation by
//! dropping the stream.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use granary_runtime::prelude::*;
use granary_silo::storage::MemoryStorage;
use serde::{Deserialize, Serialize};

mod support;
use support::*;

/// Streams the words of a sentence, one per item.
struct Words;

/// Stream: the words of `.0`; a word "FAIL" fails the stream there.
#[derive(Serialize, Deserialize)]
struct Split(String);

/// Stream: counts forever (until the caller leaves).
#[derive(Serialize, Deserialize)]
struct Forever;

static FOREVER_CANCELLED: AtomicBool = AtomicBool::new(false);

#[async_trait]
impl Grain for Words {
    const TYPE_NAME: &'static str = "test.words/v1";
    type State = ();
    async fn on_activate(_: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Words)
    }
}

#[async_trait]
impl StreamHandler<Split> for Words {
    type Item = String;
    async fn handle_stream(
        &mut self,
        Split(text): Split,
        replies: &mut Replies<String>,
        _: &mut GrainContext<Self>,
    ) -> Result<(), GrainError> {
        for word in text.split_whitespace() {
            if word == "FAIL" {
                return Err("asked to fail".into());
            }
            replies.send(word.to_owned()).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl StreamHandler<Forever> for Words {
    type Item = u64;
    async fn handle_stream(
        &mut self,
        _: Forever,
        replies: &mut Replies<u64>,
        _: &mut GrainContext<Self>,
    ) -> Result<(), GrainError> {
        for i in 0.. {
            if let Err(e) = replies.send(i).await {
                FOREVER_CANCELLED.store(true, Ordering::SeqCst);
                return Err(e.into());
            }
        }
        Ok(())
    }
}

granary_runtime::register_grain!(Words, handles = [], streams = [Split, Forever]);

#[tokio::test]
async fn items_arrive_in_order_then_the_end_or_the_error() {
    let silo = start(Arc::new(MemoryStorage::new()), Duration::from_secs(600)).await;
    let words = silo.grain::<Words>("w");
    let got: Vec<_> = words
        .ask_stream(Split("a b c".into()))
        .buffer(1)
        .collect()
        .await;
    assert_eq!(got, [Ok("a".into()), Ok("b".into()), Ok("c".into())]);

    let got: Vec<_> = words.ask_stream(Split("a FAIL c".into())).collect().await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], Ok("a".to_owned()));
    assert!(matches!(&got[1], Err(CallError::Handler(why)) if why.contains("asked to fail")));

    // The stream is done: it yields nothing more.
    let mut stream = words.ask_stream(Split("x".into()));
    assert_eq!(stream.next().await, Some(Ok("x".to_owned())));
    assert_eq!(stream.next().await, None);
    assert_eq!(stream.next().await, None);
    silo.shutdown().await;
}

#[tokio::test]
async fn dropping_the_stream_stops_the_handler_and_frees_the_grain() {
    let silo = start(Arc::new(MemoryStorage::new()), Duration::from_secs(600)).await;
    let words = silo.grain::<Words>("forever");
    let mut stream = words.ask_stream(Forever).buffer(4);
    for i in 0..10 {
        assert_eq!(stream.next().await, Some(Ok(i)));
    }
    drop(stream);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !FOREVER_CANCELLED.load(Ordering::SeqCst) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the handler never saw the cancel"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got: Vec<_> = words.ask_stream(Split("still here".into())).collect().await;
    assert_eq!(got.len(), 2);
    silo.shutdown().await;
}

#[tokio::test]
async fn a_stream_timeout_ends_with_timeout() {
    let silo = start(Arc::new(MemoryStorage::new()), Duration::from_secs(600)).await;
    let words = silo.grain::<Words>("slow-reader");
    let mut stream = words
        .ask_stream(Forever)
        .timeout(Duration::from_millis(200));
    assert_eq!(stream.next().await, Some(Ok(0)));
    // The deadline bounds the whole stream, however fast the items come.
    let mut last = None;
    while let Some(item) = stream.next().await {
        last = Some(item);
    }
    assert_eq!(last, Some(Err(CallError::Timeout)));
    silo.shutdown().await;
}
