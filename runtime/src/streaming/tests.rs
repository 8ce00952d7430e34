use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::*;
use crate::activation::handler_error;
use crate::grain::{GrainContext, GrainError, Handler};
use crate::registry::registry;

struct Lines;
#[derive(Serialize, Deserialize)]
struct Upto(u32);
#[derive(Serialize, Deserialize)]
struct Ping;

#[async_trait]
impl Grain for Lines {
    const TYPE_NAME: &'static str = "unit.lines/v1";
    type State = ();
    async fn on_activate(_: &mut GrainContext<Self>) -> Result<Self, GrainError> {
        Ok(Lines)
    }
}
#[async_trait]
impl StreamHandler<Upto> for Lines {
    type Item = String;
    async fn handle_stream(
        &mut self,
        Upto(n): Upto,
        replies: &mut Replies<String>,
        _: &mut GrainContext<Self>,
    ) -> Result<(), GrainError> {
        for i in 0..n {
            replies.send(format!("line {i}")).await?;
        }
        Ok(())
    }
}
#[async_trait]
impl Handler<Ping> for Lines {
    type Reply = ();
    async fn handle(&mut self, _: Ping, _: &mut GrainContext<Self>) -> Result<(), GrainError> {
        Ok(())
    }
}

crate::register_grain!(Lines, handles = [Ping], streams = [Upto as "upto/v1"]);

#[test]
fn streams_are_registered_next_to_plain_messages() {
    let entry = registry().get("unit.lines/v1").expect("registered");
    let names: Vec<_> = entry.messages.iter().map(|m| m.message).collect();
    assert_eq!(names, ["Ping", "upto/v1"]);
    // The vtable of a stream decodes one item.
    let vt = registry().vtable::<Lines, Upto>().unwrap();
    let item = (vt.decode_reply)(&codec::encode(&"x".to_owned()).unwrap()).unwrap();
    assert_eq!(item.downcast::<String>().unwrap(), "x");
}

#[tokio::test]
async fn replies_keep_items_typed_or_encode_them_and_wait_when_full() {
    let (tx, mut rx) = mpsc::channel(1);
    let mut local = Replies::<String>::new(StreamSink {
        items: tx,
        form: ItemForm::Local,
    });
    local.send("a".into()).await.unwrap();
    // The buffer holds one item: the second send waits for the consumer.
    {
        let second = local.send("b".into());
        tokio::pin!(second);
        assert!(futures::poll!(second.as_mut()).is_pending());
        let StreamItem::Local(first) = rx.recv().await.unwrap() else {
            panic!("a local consumer gets typed items")
        };
        assert_eq!(first.downcast::<String>().unwrap(), "a");
        second.await.unwrap();
    }
    assert_eq!(local.sent(), 2);
    assert!(matches!(rx.recv().await, Some(StreamItem::Local(_))));

    let (tx, mut rx) = mpsc::channel(4);
    let mut remote = Replies::<String>::new(StreamSink {
        items: tx,
        form: ItemForm::Encoded,
    });
    remote.send("c".into()).await.unwrap();
    let StreamItem::Encoded(bytes) = rx.recv().await.unwrap() else {
        panic!("a remote consumer gets encoded items")
    };
    assert_eq!(codec::decode::<String>(&bytes).unwrap(), "c");
    drop(rx);
    assert!(remote.is_closed());
    assert_eq!(remote.send("d".into()).await, Err(SendError::Cancelled));
}

#[test]
fn a_cancelled_send_passed_on_ends_the_call_as_cancelled() {
    let err: GrainError = Box::new(SendError::Cancelled);
    assert_eq!(handler_error(err), CallError::Cancelled);
    let err: GrainError = Box::new(SendError::Codec("too deep".into()));
    assert_eq!(handler_error(err), CallError::Codec("too deep".into()));
}
