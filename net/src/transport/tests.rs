//! Unit tests for the transport's configuration and error mapping.

use super::*;

#[test]
fn builders_set_fields_and_clamp() {
    let config = TransportConfig::default()
        .with_max_frame(1024)
        .with_max_connections(0)
        .with_max_in_flight(0)
        .with_write_queue(0)
        .with_connect_timeout(Duration::from_millis(10))
        .with_backoff(Duration::from_millis(50), Duration::from_millis(20))
        .with_shutdown_grace(Duration::from_millis(5));
    assert_eq!(config.max_frame, 1024);
    assert_eq!(config.max_connections, 1);
    assert_eq!(config.max_in_flight, 1);
    assert_eq!(config.write_queue, 1);
    assert_eq!(config.connect_timeout, Duration::from_millis(10));
    assert_eq!(config.backoff_initial, Duration::from_millis(50));
    assert_eq!(
        config.backoff_max,
        Duration::from_millis(50),
        "max ≥ initial"
    );
    assert_eq!(config.shutdown_grace, Duration::from_millis(5));
}

#[test]
fn backoff_doubles_with_jitter_and_is_capped() {
    let config = TransportConfig::default()
        .with_backoff(Duration::from_millis(100), Duration::from_millis(1_000));
    for _ in 0..100 {
        let first = config.backoff(1);
        assert!(first >= Duration::from_millis(50) && first < Duration::from_millis(100));
        let third = config.backoff(3);
        assert!(third >= Duration::from_millis(200) && third < Duration::from_millis(400));
        let late = config.backoff(u32::MAX);
        assert!(late >= Duration::from_millis(500) && late < Duration::from_millis(1_000));
    }
}

#[test]
fn transport_errors_map_to_call_errors() {
    let map = |e: TransportError| CallError::from(e);
    assert_eq!(
        map(TransportError::Unreachable("x".into())),
        CallError::Unreachable("x".into())
    );
    assert_eq!(
        map(TransportError::Lost("y".into())),
        CallError::Lost("y".into())
    );
    assert_eq!(map(TransportError::Timeout), CallError::Timeout);
    assert_eq!(map(TransportError::Closed), CallError::ShuttingDown);
    assert!(matches!(
        map(TransportError::TooLarge { size: 2, max: 1 }),
        CallError::Codec(_)
    ));
    assert!(matches!(
        map(TransportError::Encode("z".into())),
        CallError::Codec(_)
    ));
    assert!(CallError::from(TransportError::Unreachable(String::new())).is_not_delivered());
}
