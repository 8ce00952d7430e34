use std::collections::BTreeMap;

use granary_proto::frame::SiloAddr;
use granary_proto::packet::LoadReport;
use granary_runtime::GrainStorage;

use super::*;
use crate::membership::{Hosting, MemberInfo};
use crate::storage::instrumented::InstrumentedStorage;
use crate::storage::MemoryStorage;

fn silo(port: u16) -> SiloId {
    SiloId::new(
        format!("127.0.0.1:{port}").parse().unwrap(),
        format!("127.0.0.1:{}", port + 1).parse().unwrap(),
        1,
    )
}

fn member(id: SiloId, status: MemberStatus, is_master: bool) -> (SiloId, MemberInfo) {
    let info = MemberInfo {
        id,
        status,
        load: LoadReport::default(),
        is_master,
        is_candidate: is_master,
    };
    (id, info)
}

fn snapshot(
    me: SiloId,
    master: Option<SiloId>,
    reachable: bool,
    members: Vec<(SiloId, MemberInfo)>,
) -> MembershipSnapshot {
    MembershipSnapshot {
        version: 1,
        me,
        master,
        epoch: 1,
        master_reachable: reachable,
        hosting: if reachable {
            Hosting::Serving
        } else {
            Hosting::Suspended
        },
        admission: 1,
        members: members.into_iter().collect::<BTreeMap<_, _>>(),
    }
}

fn encode(collectors: Vec<Box<dyn Collector>>) -> String {
    let mut registry = Registry::default();
    for c in collectors {
        registry.register_collector(c);
    }
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    text
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[test]
fn calls_are_in_flight_until_answered_and_counted_by_outcome() {
    let calls = Arc::new(CallStats::default());
    let a = calls.begin();
    let b = calls.begin();
    let c = calls.begin();
    let text = encode(vec![Box::new(CallCollector {
        calls: calls.clone(),
    })]);
    assert!(has_line(&text, "granary_calls_in_flight 3"), "{text}");
    a.finish(&Response::Grain(Ok(vec![])));
    b.finish(&Response::Grain(Err(CallError::MailboxFull)));
    c.finish(&Response::Moved(SiloAddr {
        addr: "127.0.0.1:1".parse().unwrap(),
        generation: 1,
    }));
    drop(calls.begin()); // abandoned: no outcome
    let text = encode(vec![Box::new(CallCollector { calls })]);
    for line in [
        "# TYPE granary_call_outcomes counter",
        "granary_calls_in_flight 0",
        r#"granary_call_outcomes_total{outcome="ok"} 1"#,
        r#"granary_call_outcomes_total{outcome="moved"} 1"#,
        r#"granary_call_outcomes_total{outcome="mailbox_full"} 1"#,
        r#"granary_call_outcomes_total{outcome="timeout"} 0"#,
    ] {
        assert!(has_line(&text, line), "no {line:?} in\n{text}");
    }
    assert!(text.ends_with("# EOF\n"));
}

#[tokio::test]
async fn storage_operations_become_a_histogram_in_seconds_and_error_counts() {
    let store = InstrumentedStorage::new(Arc::new(MemoryStorage::new()));
    let grain = granary_proto::GrainId::new("t/v1", "a");
    store.write(&grain, b"1", None).await.unwrap();
    store.write(&grain, b"2", None).await.unwrap_err();
    let text = encode(vec![Box::new(StorageCollector {
        stats: store.stats(),
    })]);
    for line in [
        "# TYPE granary_storage_operation_duration_seconds histogram",
        "# UNIT granary_storage_operation_duration_seconds seconds",
        r#"granary_storage_operation_duration_seconds_count{provider="memory",op="write"} 2"#,
        r#"granary_storage_operation_duration_seconds_bucket{le="+Inf",provider="memory",op="write"} 2"#,
        r#"granary_storage_operation_duration_seconds_count{provider="memory",op="read"} 0"#,
        r#"granary_storage_errors_total{provider="memory",op="write",kind="conflict"} 1"#,
    ] {
        assert!(has_line(&text, line), "no {line:?} in\n{text}");
    }
    let buckets = text
        .lines()
        .filter(|l| l.starts_with("granary_storage_operation_duration_seconds_bucket{"))
        .filter(|l| l.contains(r#"op="write""#))
        .count();
    assert_eq!(buckets, LATENCY_BOUNDS_US.len() + 1, "{text}");
}

#[test]
fn the_master_counts_joins_and_deaths_and_the_members_by_state() {
    let (master, a, b) = (silo(1000), silo(2000), silo(3000));
    let counts = MembershipCounts::default();
    let mut counter = MembershipCounter::new(SiloRole::Master);
    let me = member(master, MemberStatus::Active, true);
    counter.observe(&snapshot(master, Some(master), true, vec![me]), &counts);
    let two = vec![
        me,
        member(a, MemberStatus::Active, false),
        member(b, MemberStatus::Active, false),
    ];
    counter.observe(&snapshot(master, Some(master), true, two.clone()), &counts);
    counter.observe(&snapshot(master, Some(master), true, two), &counts);
    let one_dead = vec![
        me,
        member(a, MemberStatus::Active, false),
        member(b, MemberStatus::Dead, false),
    ];
    let last = snapshot(master, Some(master), true, one_dead);
    counter.observe(&last, &counts);
    assert_eq!(counts.joins.load(Ordering::Relaxed), 2);
    assert_eq!(counts.deaths.load(Ordering::Relaxed), 1);
    assert_eq!(counts.fencings.load(Ordering::Relaxed), 0);

    let (_tx, rx) = watch::channel(Arc::new(last));
    let text = encode(vec![Box::new(MembershipCollector {
        snapshot: rx,
        counts: Arc::new(counts),
    })]);
    for line in [
        r#"granary_membership_members{state="active"} 2"#,
        r#"granary_membership_members{state="leaving"} 0"#,
        r#"granary_membership_members{state="dead"} 1"#,
        "granary_membership_joins_total 2",
        "granary_membership_deaths_total 1",
        "granary_fencing_events_total 0",
    ] {
        assert!(has_line(&text, line), "no {line:?} in\n{text}");
    }
}

#[test]
fn a_slave_counts_joins_after_its_own_suspensions_and_fencing_but_not_a_graceful_end() {
    let (master, me, other, late) = (silo(1000), silo(2000), silo(3000), silo(4000));
    let counts = MembershipCounts::default();
    let mut counter = MembershipCounter::new(SiloRole::Slave);
    let mine = member(me, MemberStatus::Active, false);
    let chief = member(master, MemberStatus::Active, true);
    // Joining, then welcomed into a cluster of the master and one other slave.
    counter.observe(&snapshot(me, None, false, vec![mine]), &counts);
    let joined = vec![mine, chief, member(other, MemberStatus::Active, false)];
    counter.observe(&snapshot(me, Some(master), true, joined.clone()), &counts);
    assert_eq!(
        counts.joins.load(Ordering::Relaxed),
        0,
        "the cluster it joined"
    );
    let mut grown = joined;
    grown.push(member(late, MemberStatus::Active, false));
    counter.observe(&snapshot(me, Some(master), true, grown.clone()), &counts);
    assert_eq!(counts.joins.load(Ordering::Relaxed), 1);
    // Cut off: suspended once, however long it lasts; then fenced once.
    counter.observe(&snapshot(me, Some(master), false, grown.clone()), &counts);
    counter.observe(&snapshot(me, Some(master), false, grown.clone()), &counts);
    assert_eq!(counts.suspensions.load(Ordering::Relaxed), 1);
    assert_eq!(counts.fencings.load(Ordering::Relaxed), 0);
    let mut fenced = snapshot(me, Some(master), false, grown.clone());
    fenced.hosting = Hosting::Fenced;
    counter.observe(&fenced, &counts);
    counter.observe(&fenced, &counts);
    assert_eq!(counts.fencings.load(Ordering::Relaxed), 1);
    // Back, then the master shuts down gracefully: not a suspension.
    counter.observe(&snapshot(me, Some(master), true, grown.clone()), &counts);
    let mut ending = grown;
    ending[1] = member(master, MemberStatus::ShuttingDown, true);
    counter.observe(&snapshot(me, Some(master), false, ending), &counts);
    assert_eq!(counts.suspensions.load(Ordering::Relaxed), 1);
    assert_eq!(counts.fencings.load(Ordering::Relaxed), 1);
    assert_eq!(counts.deaths.load(Ordering::Relaxed), 0);
}

#[test]
fn the_directory_and_the_process_are_exported() {
    let text = encode(vec![
        Box::new(DirectoryCollector {
            directory: Arc::new(Directory::new()),
        }),
        Box::new(ProcessCollector {
            started: Instant::now(),
        }),
    ]);
    for line in [
        "granary_directory_entries 0",
        "granary_directory_placements_total 0",
        "# TYPE process_cpu_seconds counter",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE granary_uptime_seconds gauge",
    ] {
        assert!(has_line(&text, line), "no {line:?} in\n{text}");
    }
    assert!(text
        .lines()
        .any(|l| l.starts_with("process_cpu_seconds_total ")));
}
