//! Tracing across silos: a grain-to-grain call from a grain on one slave to a grain on
//! the other produces two `grain_call` spans in one trace, the callee's a child of the
//! caller's, as a `tracing` layer sees them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use granary_example::{Account, Follow, Followers};
use granary_proto::GrainId;
use granary_runtime::Grain;
use granary_silo::testing::TestCluster;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The fields of one span, as text.
type Fields = BTreeMap<String, String>;

/// Records the fields of every `grain_call` span, in order of creation.
#[derive(Clone, Default)]
struct Spans {
    inner: Arc<Mutex<SpansInner>>,
}

#[derive(Default)]
struct SpansInner {
    spans: Vec<Fields>,
    /// Index into `spans` of each open span (the registry reuses ids once closed).
    open: BTreeMap<u64, usize>,
}

impl Spans {
    fn take(&self) -> Vec<Fields> {
        std::mem::take(&mut self.inner.lock().unwrap().spans)
    }
}

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut inner = self.inner.lock().unwrap();
        if attrs.metadata().name() != "grain_call" {
            inner.open.remove(&id.into_u64());
            return;
        }
        let mut fields = Fields::new();
        attrs.record(&mut Visitor(&mut fields));
        inner.spans.push(fields);
        let index = inner.spans.len() - 1;
        inner.open.insert(id.into_u64(), index);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(&index) = inner.open.get(&id.into_u64()) {
            if let Some(fields) = inner.spans.get_mut(index) {
                values.record(&mut Visitor(fields));
            }
        }
    }

    fn on_close(&self, id: Id, _: Context<'_, S>) {
        self.inner.lock().unwrap().open.remove(&id.into_u64());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_across_silos_is_one_trace_with_linked_spans() {
    let spans = Spans::default();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(spans.clone()))
        .expect("the only subscriber of this test binary");

    let cluster = TestCluster::builder().slaves(2).build().await.unwrap();
    cluster
        .wait_for_membership_stable(Duration::from_secs(10))
        .await
        .unwrap();
    let client = cluster.client().await.unwrap();

    // Two accounts placed on different slaves.
    let host_of = |key: &str| {
        let id = GrainId::new(Account::TYPE_NAME, key);
        cluster.slaves().find(|(_, s)| s.hosts(&id)).map(|(i, _)| i)
    };
    let mut on: [Option<String>; 2] = [None, None];
    for i in 0..64 {
        let key = format!("trace-{i}");
        client.grain::<Account>(&key).ask(Followers).await.unwrap();
        let slave = host_of(&key).expect("an active account is hosted by a slave");
        on[slave].get_or_insert(key);
        if on.iter().all(Option::is_some) {
            break;
        }
    }
    let [Some(caller), Some(callee)] = on else {
        panic!("the accounts all landed on one slave")
    };

    spans.take();
    let count = client
        .grain::<Account>(&caller)
        .ask(Follow(callee.clone()))
        .await
        .unwrap();
    assert_eq!(count, 1);
    assert_ne!(host_of(&caller), host_of(&callee), "the call crossed silos");

    let recorded = spans.take();
    let find = |key: &str, message: &str| {
        recorded
            .iter()
            .find(|s| s.get("key").map(String::as_str) == Some(key))
            .filter(|s| s.get("message").map(String::as_str) == Some(message))
            .unwrap_or_else(|| panic!("no span for {key} {message}: {recorded:#?}"))
    };
    let outer = find(&caller, "Follow");
    let inner = find(&callee, "increment_followers");
    assert_eq!(outer["grain_type"], Account::TYPE_NAME);
    assert_eq!(outer["trace_id"].len(), 32, "{outer:?}");
    assert_eq!(outer["trace_id"], inner["trace_id"], "one trace");
    assert_eq!(
        inner["parent_span_id"], outer["span_id"],
        "the callee is a child"
    );
    assert!(
        !outer.contains_key("parent_span_id"),
        "the client's call is the root"
    );
    assert_ne!(outer["span_id"], inner["span_id"]);

    client.close().await;
    cluster.shutdown().await;
}
