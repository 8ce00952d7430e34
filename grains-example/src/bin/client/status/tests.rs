use granary_client::status::{
    ClusterEvent, ClusterEventKind, GrainTypeStatus, HotGrain, LATENCY_BOUNDS_US,
};
use granary_client::SiloId;

use super::*;

fn id(port: u16) -> SiloId {
    SiloId::new(
        ([127, 0, 0, 1], port).into(),
        ([127, 0, 0, 1], port + 1).into(),
        1,
    )
}

fn latency(count_in_first_bucket: u64) -> LatencyBuckets {
    let mut counts = vec![0; LATENCY_BOUNDS_US.len() + 1];
    counts[0] = count_in_first_bucket;
    LatencyBuckets { counts, sum_us: 0 }
}

fn silo(port: u16, role: RoleKind, messages: u64, cpu_ms: u64) -> SiloStatus {
    SiloStatus {
        id: id(port),
        role,
        state: SiloState::Active,
        uptime_ms: 312_000,
        activations: 3,
        queue_depth: 0,
        cpu_ms,
        rss_bytes: 12 << 20,
        grain_types: vec![GrainTypeStatus {
            grain_type: "example.counter/v1".into(),
            activations: 3,
            queue_depth: 0,
            messages,
            latency: latency(messages),
        }],
        hot_grains: vec![HotGrain {
            grain_type: "example.counter/v1".into(),
            key: "alice".into(),
            rate_milli: 2_500,
            queue_depth: 0,
            messages,
            replicas: 1,
        }],
        events: vec![],
    }
}

fn member(port: u16, role: RoleKind, state: SiloState) -> MemberView {
    MemberView {
        id: id(port),
        role,
        state,
        activations: 7,
        queue_depth: 0,
    }
}

fn status(messages: u64, cpu_ms: u64) -> ClusterStatus {
    ClusterStatus {
        master: id(7100),
        members: vec![
            member(7300, RoleKind::Slave, SiloState::Dead),
            member(7200, RoleKind::Slave, SiloState::Active),
            member(7100, RoleKind::Master, SiloState::Active),
        ],
        silos: vec![
            silo(7100, RoleKind::Master, 0, cpu_ms),
            silo(7200, RoleKind::Slave, messages, cpu_ms),
        ],
        unanswered: vec![],
        events: vec![ClusterEvent {
            seq: 1,
            at_unix_ms: 10_000,
            kind: ClusterEventKind::Died,
            silo: id(7300),
            detail: "no heartbeat for 3s".into(),
        }],
    }
}

#[test]
fn the_screen_is_aligned_plain_text() {
    let before = status(10, 1_000);
    let after = status(30, 1_500);
    let text = render(&View {
        before: &before,
        after: &after,
        elapsed: Duration::from_secs(1),
        now_unix_ms: 14_000,
        gateway: "127.0.0.1:7200".parse().unwrap(),
        styled: false,
    });
    assert!(!text.contains('\x1b'), "no ANSI: {text}");
    let lines: Vec<&str> = text.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("`{needle}` missing from:\n{text}"))
    };
    // Master first, dead last; every column starts where its header does.
    let header = at("ROLE");
    assert!(
        lines[header + 1].starts_with("master  127.0.0.1:7100  active"),
        "{text}"
    );
    assert!(
        lines[header + 2].starts_with("slave   127.0.0.1:7200  active"),
        "{text}"
    );
    assert!(
        lines[header + 3].starts_with("slave   127.0.0.1:7300  dead"),
        "{text}"
    );
    // The last column is right-aligned: header and rows end together.
    assert!(lines[header].ends_with("     RSS"), "{text}");
    assert!(lines[header + 1].ends_with("12.0 MiB"), "{text}");
    let chars = |l: &str| l.chars().count();
    assert_eq!(chars(lines[header]), chars(lines[header + 1]), "{text}");
    // 20 messages and 500 ms of CPU in one second.
    let counter = lines[at("example.counter/v1")];
    assert!(counter.contains("20.0"), "{counter}");
    assert!(counter.contains("16µs"), "{counter}");
    assert!(lines[header + 1].contains("50%"), "{}", lines[header + 1]);
    assert!(lines[at("alice")].contains("2.5"), "{text}");
    assert!(
        lines[at("no heartbeat")]
            .trim_start()
            .starts_with("4.0s  died"),
        "{text}"
    );
    assert!(
        text.lines().all(|l| l == l.trim_end()),
        "no trailing blanks"
    );
}

#[test]
fn durations_and_sizes_read_short() {
    assert_eq!(duration(Duration::from_micros(64)), "64µs");
    assert_eq!(duration(Duration::from_micros(2_048)), "2.0ms");
    assert_eq!(duration(Duration::from_millis(4_200)), "4.2s");
    assert_eq!(duration(Duration::from_secs(312)), "5m12s");
    assert_eq!(duration(Duration::from_secs(3 * 3600 + 7 * 60)), "3h07m");
    assert_eq!(bytes(812 * 1024), "812 KiB");
    assert_eq!(bytes(3 << 30), "3.0 GiB");
}
