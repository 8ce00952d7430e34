//! UDP membership end to end: real sockets on 127.0.0.1 ephemeral ports, short
//! heartbeat intervals, and deadline-bounded polling (never sleep-and-hope).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use granary_proto::packet::{Packet, PacketBody, PacketCodec, DEFAULT_MAX_PACKET};
use granary_silo::membership::{
    Hosting, LoadReport, MemberStatus, Membership, MembershipConfig, MembershipIo,
    MembershipSnapshot, MemoryElectionStore, SiloId,
};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::Instant;

/// Upper bound for anything that should happen "soon".
const DEADLINE: Duration = Duration::from_secs(10);
/// Fast heartbeats for failure-detection tests (lease 150 ms).
const FAST: Duration = Duration::from_millis(50);
/// Calm timing for tests that must not see false deaths on a busy machine (lease 2 s).
const CALM: Duration = Duration::from_millis(100);
const CALM_MISSES: u32 = 20;

/// A running membership plus the knob for its load.
struct TestSilo {
    id: SiloId,
    membership: Membership,
    load: watch::Sender<LoadReport>,
}

impl TestSilo {
    fn snap(&self) -> std::sync::Arc<MembershipSnapshot> {
        self.membership.snapshot()
    }

    async fn wait(&self, what: &str, condition: impl FnMut(&MembershipSnapshot) -> bool) {
        if let Err(e) = self.membership.wait_for(DEADLINE, condition).await {
            panic!(
                "{}: {what}: {e}; last snapshot: {:#?}",
                self.id,
                self.snap()
            );
        }
    }
}

/// Strictly increasing generations, starting at the current time.
fn next_generation() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    LAST.fetch_max(SiloId::generation_now(), Ordering::SeqCst);
    LAST.fetch_add(1, Ordering::SeqCst) + 1
}

async fn bind(port: u16) -> UdpSocket {
    UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .expect("bind 127.0.0.1")
}

fn master_config(interval: Duration, misses: u32) -> MembershipConfig {
    MembershipConfig::master()
        .with_heartbeat_interval(interval)
        .with_missed_heartbeats(misses)
}

fn slave_config(master: &TestSilo) -> MembershipConfig {
    // The slave's own timing is deliberately slow: it must adopt the master's.
    MembershipConfig::slave(master.id.udp)
        .with_heartbeat_interval(Duration::from_millis(200))
        .with_missed_heartbeats(CALM_MISSES)
}

/// Starts a silo on `port` (0: ephemeral). Its TCP address is faked with the same port.
/// A slave reports its (empty) silo as soon as it is admitted, as the cluster layer
/// does over TCP.
async fn start(config: MembershipConfig, port: u16, generation: u64) -> TestSilo {
    let socket = bind(port).await;
    let udp = socket.local_addr().unwrap();
    let id = SiloId::new(udp, udp, generation);
    let (load, load_rx) = watch::channel(LoadReport::default());
    let (reported, reported_rx) = watch::channel(0);
    let mut io = MembershipIo::new(load_rx, std::sync::Arc::new(MemoryElectionStore::default()));
    io.reported = reported_rx;
    let membership = Membership::start_with(config, socket, id, io).expect("start membership");
    let mut updates = membership.subscribe();
    tokio::spawn(async move {
        loop {
            let admission = updates.borrow_and_update().admission;
            reported.send_if_modified(|r| std::mem::replace(r, admission) != admission);
            if updates.changed().await.is_err() {
                return;
            }
        }
    });
    TestSilo {
        id,
        membership,
        load,
    }
}

async fn start_master(interval: Duration, misses: u32) -> TestSilo {
    let master = start(master_config(interval, misses), 0, next_generation()).await;
    master
        .wait("acting as master", |s| s.is_acting_master())
        .await;
    master
}

async fn start_slave(master: &TestSilo) -> TestSilo {
    let slave = start(slave_config(master), 0, next_generation()).await;
    slave
        .membership
        .wait_joined(DEADLINE)
        .await
        .expect("slave joins");
    slave
}

/// Waits until every silo sees exactly `expected` as its active members.
async fn converge(silos: &[&TestSilo], expected: &[SiloId]) {
    let mut expected = expected.to_vec();
    expected.sort();
    for silo in silos {
        silo.wait("converge", |s| {
            s.active_members().map(|m| m.id).collect::<Vec<_>>() == expected
        })
        .await;
    }
}

#[tokio::test]
async fn master_and_slaves_converge() {
    let master = start_master(CALM, CALM_MISSES).await;
    assert!(master.snap().master_reachable);
    assert_eq!(master.snap().master, Some(master.id));
    let a = start_slave(&master).await;
    let b = start_slave(&master).await;
    let c = start_slave(&master).await;
    let all = [master.id, a.id, b.id, c.id];
    converge(&[&master, &a, &b, &c], &all).await;
    for silo in [&master, &a, &b, &c] {
        let snap = silo.snap();
        assert_eq!(snap.master, Some(master.id));
        assert!(snap.master_reachable);
        assert_eq!(snap.active_slaves().count(), 3);
        assert!(snap.get(&master.id).unwrap().is_master);
    }
    for silo in [a, b, c, master] {
        silo.membership.leave().await;
    }
}

#[tokio::test]
async fn heartbeats_carry_load() {
    let master = start_master(CALM, CALM_MISSES).await;
    let slave = start_slave(&master).await;
    let report = LoadReport {
        activations: 17,
        queue_depth: 4,
        suspended: false,
    };
    slave.load.send_replace(report);
    master
        .wait("slave load", |s| {
            s.get(&slave.id).is_some_and(|m| m.load == report)
        })
        .await;
    // The master's load reaches the slave through its heartbeats too.
    let master_report = LoadReport {
        activations: 3,
        queue_depth: 1,
        suspended: false,
    };
    master.load.send_replace(master_report);
    slave
        .wait("master load", |s| {
            s.get(&master.id).is_some_and(|m| m.load == master_report)
        })
        .await;
    // Load updates alone do not bump the version.
    let version = master.snap().version;
    slave.load.send_replace(LoadReport {
        activations: 18,
        queue_depth: 0,
        suspended: false,
    });
    master
        .wait("slave load again", |s| {
            s.get(&slave.id).is_some_and(|m| m.load.activations == 18)
        })
        .await;
    assert_eq!(master.snap().version, version);
    slave.membership.leave().await;
    master.membership.leave().await;
}

#[tokio::test]
async fn graceful_leave_is_seen_by_everyone() {
    let master = start_master(CALM, CALM_MISSES).await;
    let a = start_slave(&master).await;
    let b = start_slave(&master).await;
    converge(&[&master, &a, &b], &[master.id, a.id, b.id]).await;
    let mut watcher = b.membership.subscribe();
    let before = watcher.borrow_and_update().version;
    let leaver = a.id;
    a.membership.leave().await;
    for silo in [&master, &b] {
        silo.wait("leaver gone", |s| {
            s.get(&leaver)
                .is_some_and(|m| m.status == MemberStatus::ShuttingDown)
        })
        .await;
    }
    assert!(!master.snap().is_active(&leaver));
    // The change woke the watcher with a newer version.
    tokio::time::timeout(DEADLINE, watcher.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(watcher.borrow().version > before);
    b.membership.leave().await;
    master.membership.leave().await;
}

#[tokio::test]
async fn aborted_slave_is_declared_dead_after_the_lease() {
    let master = start_master(FAST, 3).await;
    let a = start_slave(&master).await;
    let b = start_slave(&master).await;
    converge(&[&master, &a, &b], &[master.id, a.id, b.id]).await;
    let victim = a.id;
    let crashed_at = Instant::now();
    a.membership.abort().await;
    master
        .wait("declared dead", |s| {
            s.get(&victim)
                .is_some_and(|m| m.status == MemberStatus::Dead)
        })
        .await;
    let took = crashed_at.elapsed();
    // Not before the lease (3 × 50 ms) has run out; one interval of slack for the
    // heartbeat that may have been in flight.
    assert!(took >= FAST * 2, "declared dead too early: {took:?}");
    b.wait("b sees it dead", |s| {
        s.get(&victim)
            .is_some_and(|m| m.status == MemberStatus::Dead)
    })
    .await;
    assert!(master.snap().is_active(&b.id));
    b.membership.leave().await;
    master.membership.leave().await;
}

#[tokio::test]
async fn master_leave_asks_slaves_to_shut_down() {
    let master = start_master(CALM, CALM_MISSES).await;
    let a = start_slave(&master).await;
    let b = start_slave(&master).await;
    let token = b.membership.shutdown_token();
    master.membership.leave().await;
    tokio::time::timeout(DEADLINE, a.membership.shutdown_requested())
        .await
        .expect("slave a told to shut down");
    tokio::time::timeout(DEADLINE, token.cancelled())
        .await
        .expect("slave b told to shut down");
    // The slaves know the master is leaving; they keep their lease while they save.
    assert_eq!(
        a.snap().get(&master.id).unwrap().status,
        MemberStatus::ShuttingDown
    );
    a.membership.leave().await;
    b.membership.leave().await;
}

#[tokio::test]
async fn restarted_slave_replaces_its_old_generation() {
    // A long lease, so the replacement comes from the new generation, not a timeout.
    let master = start_master(CALM, CALM_MISSES).await;
    let other = start_slave(&master).await;
    let old = start_slave(&master).await;
    let old_id = old.id;
    old.membership.abort().await;
    let restarted = start(slave_config(&master), old_id.udp.port(), next_generation()).await;
    assert_eq!(restarted.id.udp, old_id.udp);
    assert!(restarted.id.generation > old_id.generation);
    restarted
        .membership
        .wait_joined(DEADLINE)
        .await
        .expect("restarted slave joins");
    for silo in [&master, &other] {
        silo.wait("old generation dead, new active", |s| {
            s.get(&old_id)
                .is_some_and(|m| m.status == MemberStatus::Dead)
                && s.is_active(&restarted.id)
        })
        .await;
    }
    converge(
        &[&master, &other, &restarted],
        &[master.id, other.id, restarted.id],
    )
    .await;
    for silo in [restarted, other, master] {
        silo.membership.leave().await;
    }
}

#[tokio::test]
async fn bad_datagrams_leave_the_master_working() {
    let key = b"the right key".to_vec();
    let master = start(
        master_config(CALM, CALM_MISSES).with_cluster_key(key.clone()),
        0,
        next_generation(),
    )
    .await;
    let attacker = bind(0).await;
    let target = master.id.udp;
    let forged_id = SiloId::new(
        attacker.local_addr().unwrap(),
        attacker.local_addr().unwrap(),
        1,
    );
    let handshake = Packet {
        from: forged_id,
        seq: 1,
        body: PacketBody::Handshake,
    };
    let wrong_key = PacketCodec::new(Some(b"wrong key"), DEFAULT_MAX_PACKET).unwrap();
    let unsigned = PacketCodec::new(None, DEFAULT_MAX_PACKET).unwrap();
    let mut wrong_version = unsigned.encode(&handshake).unwrap();
    wrong_version[3] = 99;
    let datagrams: Vec<Vec<u8>> = vec![
        b"definitely not a packet".to_vec(),
        Vec::new(),
        vec![0xff; 1],
        vec![b'G'; DEFAULT_MAX_PACKET + 500],
        wrong_version,
        wrong_key.encode(&handshake).unwrap(),
        unsigned.encode(&handshake).unwrap(),
    ];
    for _ in 0..20 {
        for d in &datagrams {
            attacker.send_to(d, target).await.unwrap();
        }
    }
    // Wrong-key and unkeyed silos never get in.
    let wrong = start(
        slave_config(&master).with_cluster_key("wrong key"),
        0,
        next_generation(),
    )
    .await;
    let unkeyed = start(slave_config(&master), 0, next_generation()).await;
    // A correctly keyed slave still joins afterwards.
    let good = start(
        slave_config(&master).with_cluster_key(key.clone()),
        0,
        next_generation(),
    )
    .await;
    good.membership
        .wait_joined(DEADLINE)
        .await
        .expect("keyed slave joins");
    converge(&[&master, &good], &[master.id, good.id]).await;
    // By now the bad slaves have handshaken several times (their interval is 200 ms).
    let bad_tries = Instant::now();
    for bad in [&wrong, &unkeyed] {
        assert!(
            bad.membership
                .wait_joined(Duration::from_millis(600))
                .await
                .is_err(),
            "{} must not join",
            bad.id
        );
    }
    assert!(bad_tries.elapsed() >= Duration::from_millis(600));
    let snap = master.snap();
    assert_eq!(snap.members.len(), 2, "{snap:#?}");
    assert!(snap.get(&forged_id).is_none());
    for silo in [wrong, unkeyed, good, master] {
        silo.membership.leave().await;
    }
}

#[tokio::test]
async fn slave_suspends_while_the_master_is_away_and_rejoins_a_restarted_master() {
    let master = start_master(FAST, 3).await;
    let master_port = master.id.udp.port();
    let a = start_slave(&master).await;
    let b = start_slave(&master).await;
    converge(&[&master, &a, &b], &[master.id, a.id, b.id]).await;
    let old_master = master.id;
    master.membership.abort().await;
    for slave in [&a, &b] {
        slave
            .wait("suspended: the lease ran out", |s| {
                s.hosting == Hosting::Suspended
            })
            .await;
        // Still knows who the master was.
        assert_eq!(slave.snap().master, Some(old_master));
    }
    // Restart the master on the same UDP port with a new generation.
    let master = start(master_config(FAST, 3), master_port, next_generation()).await;
    assert_ne!(master.id, old_master);
    for slave in [&a, &b] {
        slave
            .wait("rejoined the new master", |s| {
                s.master_reachable && s.master == Some(master.id)
            })
            .await;
        assert_eq!(
            slave.snap().get(&old_master).unwrap().status,
            MemberStatus::Dead
        );
    }
    converge(&[&master, &a, &b], &[master.id, a.id, b.id]).await;
    for silo in [a, b, master] {
        silo.membership.leave().await;
    }
}

#[tokio::test]
async fn start_rejects_bad_config() {
    let socket = bind(0).await;
    let addr = socket.local_addr().unwrap();
    let id = SiloId::new(addr, addr, 1);
    let (_load, load_rx) = watch::channel(LoadReport::default());
    let err = Membership::start(
        MembershipConfig::master().with_cluster_key(Vec::new()),
        socket,
        id,
        load_rx,
    )
    .unwrap_err();
    assert!(err.to_string().contains("cluster key"), "{err}");
}
