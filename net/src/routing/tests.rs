//! Unit tests of the router's directory cache.

use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::transport::TransportConfig;

/// Resolves every grain to one silo and counts the look-ups.
#[derive(Debug)]
struct OneSilo {
    silo: SiloAddr,
    asked: AtomicU32,
}

#[async_trait]
impl Resolve for OneSilo {
    async fn resolve(&self, _: &GrainId, _: Instant) -> Result<SiloAddr, CallError> {
        self.asked.fetch_add(1, Ordering::SeqCst);
        Ok(self.silo)
    }
}

#[tokio::test]
async fn a_silo_that_never_answers_loses_every_cached_route() {
    // Found by the chaos harness: a paused or cut-off silo cost every client one timeout
    // per grain cached there. A silo that accepts connections and never answers:
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silo = SiloAddr::new(listener.local_addr().unwrap(), 1);
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let resolver = Arc::new(OneSilo {
        silo,
        asked: AtomicU32::new(0),
    });
    let router = ClusterRouter::new(
        Peers::new(TransportConfig::default()),
        resolver.clone(),
        None,
    );
    let (a, b) = (GrainId::new("t.g/v1", "a"), GrainId::new("t.g/v1", "b"));
    router.remember(&a, silo);
    router.remember(&b, silo);

    let (tx, rx) = oneshot::channel();
    let envelope = Envelope {
        target: a.clone(),
        body: Body::Encoded {
            name: "Ping".into(),
            bytes: Vec::new(),
        },
        reply: ReplyTo::Encoded(tx),
        hops: 0,
        trace: None,
        copy: CopyHint::default(),
        deadline: None,
    };
    let deadline = Instant::now() + Duration::from_millis(300);
    let sent = router.deliver(envelope, deadline).await;
    assert!(sent.is_err(), "{sent:?}");
    assert!(rx.await.unwrap().is_err());
    // The call went out on the cached route (no look-up) and its outcome is unknown, so
    // it was not retried; and the other grain's route to that silo is gone too.
    assert_eq!(resolver.asked.load(Ordering::SeqCst), 0);
    assert_eq!(router.cached(&a), None);
    assert_eq!(router.cached(&b), None);
    silent.abort();
}
