use std::time::Duration;

use granary_proto::frame::TraceContext;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;

fn scope(cancel: Option<CancellationToken>, deadline: Option<Instant>) -> TurnScope {
    TurnScope {
        trace: TraceContext {
            trace_id: 1,
            parent_span_id: 2,
        },
        cancel,
        deadline,
    }
}

#[tokio::test(start_paused = true)]
async fn calls_inside_a_turn_inherit_its_deadline_and_token() {
    // Outside a turn: the call's own timeout, and nothing to watch.
    let start = Instant::now();
    assert_eq!(
        deadline_after(Duration::from_secs(30)),
        start + Duration::from_secs(30)
    );
    assert!(watch().is_none());

    let token = CancellationToken::new();
    let turn_ends = start + Duration::from_secs(2);
    scoped(scope(Some(token.clone()), Some(turn_ends)), async {
        // The earlier of the two deadlines.
        assert_eq!(deadline_after(Duration::from_secs(30)), turn_ends);
        assert_eq!(
            deadline_after(Duration::from_secs(1)),
            start + Duration::from_secs(1)
        );
        assert_eq!(deadline_after(Duration::MAX), turn_ends);
        assert_eq!(crate::trace::current().map(|t| t.trace_id), Some(1));
        let watching = watch().expect("a turn with a caller");
        token.cancel();
        watching.await;
    })
    .await;

    // A tell's turn: no token, no deadline.
    scoped(scope(None, None), async {
        assert!(watch().is_none());
        assert!(deadline_after(Duration::from_secs(5)) >= start + Duration::from_secs(5));
    })
    .await;
}
