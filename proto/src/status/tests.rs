use super::*;

fn buckets(observations_us: &[u64]) -> LatencyBuckets {
    let mut b = LatencyBuckets {
        counts: vec![0; LATENCY_BOUNDS_US.len() + 1],
        sum_us: 0,
    };
    for us in observations_us {
        b.counts[LatencyBuckets::bucket_of(Duration::from_micros(*us))] += 1;
        b.sum_us += us;
    }
    b
}

#[test]
fn observations_fall_in_the_bucket_of_their_upper_bound() {
    assert_eq!(LatencyBuckets::bucket_of(Duration::from_micros(0)), 0);
    assert_eq!(LatencyBuckets::bucket_of(Duration::from_micros(16)), 0);
    assert_eq!(LatencyBuckets::bucket_of(Duration::from_micros(17)), 1);
    assert_eq!(
        LatencyBuckets::bucket_of(Duration::from_secs(60)),
        LATENCY_BOUNDS_US.len()
    );
}

#[test]
fn quantiles_name_the_bucket_bound() {
    assert_eq!(LatencyBuckets::default().quantile(0.99), None);
    // 99 fast observations and one slow one: p50 is fast, p99 still fast, max slow.
    let mut all = vec![10; 99];
    all.push(3_000);
    let b = buckets(&all);
    assert_eq!(b.count(), 100);
    assert_eq!(b.quantile(0.5), Some(Duration::from_micros(16)));
    assert_eq!(b.quantile(0.99), Some(Duration::from_micros(16)));
    assert_eq!(b.quantile(1.0), Some(Duration::from_micros(4_096)));
}

#[test]
fn the_difference_of_two_snapshots_is_the_interval() {
    let before = buckets(&[10, 10]);
    let after = buckets(&[10, 10, 100, 100]);
    let interval = after.since(&before);
    assert_eq!(interval.count(), 2);
    assert_eq!(interval.sum_us, 200);
    assert_eq!(interval.quantile(0.5), Some(Duration::from_micros(128)));
}

#[test]
fn status_round_trips_through_the_codec() {
    let id = SiloId::new(
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
        7,
    );
    let status = ClusterStatus {
        master: id,
        members: vec![MemberView {
            id,
            role: RoleKind::Master,
            state: SiloState::Active,
            activations: 3,
            queue_depth: 0,
        }],
        silos: vec![],
        unanswered: vec![(id, "timeout".into())],
        events: vec![ClusterEvent {
            seq: 1,
            at_unix_ms: 5,
            kind: ClusterEventKind::Died,
            silo: id,
            detail: "no heartbeat for 3s".into(),
        }],
    };
    let bytes = crate::codec::encode(&status).unwrap();
    assert_eq!(
        crate::codec::decode::<ClusterStatus>(&bytes).unwrap(),
        status
    );
}
