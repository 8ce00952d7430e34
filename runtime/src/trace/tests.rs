use super::*;

#[test]
fn a_turn_without_context_starts_a_trace() {
    let root = TurnIds::new(None);
    assert_eq!(root.parent_span_id, None);
    assert_ne!(root.trace_id, 0);
    assert_ne!(root.span_id, 0);
    assert_ne!(TurnIds::new(None).trace_id, root.trace_id);
}

#[test]
fn a_turn_with_context_is_a_child_of_its_sender() {
    let root = TurnIds::new(None);
    let child = TurnIds::new(Some(root.for_children()));
    assert_eq!(child.trace_id, root.trace_id);
    assert_eq!(child.parent_span_id, Some(root.span_id));
    assert_ne!(child.span_id, root.span_id);
}

#[tokio::test]
async fn the_context_is_current_only_inside_the_turn() {
    assert_eq!(current(), None);
    let turn = TurnIds::new(None);
    let seen = turn.scope(async { current() }).await;
    assert_eq!(seen, Some(turn.for_children()));
    assert_eq!(current(), None);
}

#[test]
fn ids_display_as_fixed_width_hex() {
    assert_eq!(TraceId(255).to_string(), format!("{}ff", "0".repeat(30)));
    assert_eq!(SpanId(u64::MAX).to_string(), "ffffffffffffffff");
}
