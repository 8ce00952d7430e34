//! Unit tests of the membership state machines, driven through an in-memory network
//! with a hand-moved clock (no sockets, no sleeps).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use granary_proto::packet::{DepartureReason, LoadReport, Packet, PacketBody, SiloId};

use super::config::{MembershipConfig, SiloRole};
use super::driver::Throttle;
use super::protocol::{Outbox, Protocol};
use super::snapshot::{MemberStatus, MembershipSnapshot};
use super::MembershipError;

const INTERVAL: Duration = Duration::from_millis(100);
const MASTER_PORT: u16 = 7000;

fn sid(port: u16, generation: u64) -> SiloId {
    SiloId::new(
        SocketAddr::from(([127, 0, 0, 1], port)),
        SocketAddr::from(([127, 0, 0, 1], port)),
        generation,
    )
}

fn master_addr() -> SocketAddr {
    sid(MASTER_PORT, 0).udp
}

/// One simulated silo.
struct Node {
    id: SiloId,
    protocol: Protocol,
    seq: u64,
    load: LoadReport,
    /// Snapshot versions are the driver's business; count membership changes here.
    version: u64,
}

/// An in-memory network: packets queue up until `deliver` runs.
struct Net {
    now: Instant,
    nodes: Vec<Node>,
    wire: VecDeque<(SocketAddr, SocketAddr, Packet)>,
    /// Every packet ever delivered (or dropped), for assertions: (from, to, kind).
    log: Vec<(SiloId, SocketAddr, &'static str)>,
}

impl Net {
    fn new() -> Self {
        let mut net = Net {
            now: Instant::now(),
            nodes: Vec::new(),
            wire: VecDeque::new(),
            log: Vec::new(),
        };
        let config = MembershipConfig::master()
            .with_heartbeat_interval(INTERVAL)
            .with_missed_heartbeats(3);
        net.add(config, sid(MASTER_PORT, 1));
        net
    }

    fn add(&mut self, config: MembershipConfig, id: SiloId) -> usize {
        config.validate().unwrap();
        self.nodes.push(Node {
            id,
            protocol: Protocol::new(&config, id, self.now),
            seq: 0,
            load: LoadReport::default(),
            version: 1,
        });
        self.nodes.len() - 1
    }

    /// Adds a slave of the master (with a slower interval of its own, which it must
    /// replace with the master's).
    fn add_slave(&mut self, id: SiloId) -> usize {
        let config = MembershipConfig::slave(master_addr())
            .with_heartbeat_interval(Duration::from_secs(5))
            .with_missed_heartbeats(7);
        self.add(config, id)
    }

    fn queue(&mut self, i: usize, out: Outbox) {
        let node = &mut self.nodes[i];
        for (dest, body) in out {
            node.seq += 1;
            let packet = Packet {
                from: node.id,
                seq: node.seq,
                body,
            };
            self.wire.push_back((node.id.udp, dest, packet));
        }
        self.settle(i);
    }

    fn settle(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if node.protocol.take_dirty().membership {
            node.version += 1;
        }
    }

    fn tick(&mut self, i: usize) {
        let mut out = Outbox::new();
        let load = self.nodes[i].load;
        self.nodes[i].protocol.on_tick(self.now, load, &mut out);
        self.queue(i, out);
    }

    fn tick_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.tick(i);
        }
    }

    /// Delivers queued packets (and their consequences) except those `drop` refuses.
    fn deliver_except(&mut self, mut drop: impl FnMut(&SiloId, &SocketAddr, &PacketBody) -> bool) {
        let mut budget = 10_000;
        while let Some((src, dest, packet)) = self.wire.pop_front() {
            budget -= 1;
            assert!(budget > 0, "packet storm");
            self.log.push((packet.from, dest, packet.body.name()));
            if drop(&packet.from, &dest, &packet.body) {
                continue;
            }
            let Some(i) = self.nodes.iter().position(|n| n.id.udp == dest) else {
                continue;
            };
            let mut out = Outbox::new();
            self.nodes[i]
                .protocol
                .on_packet(self.now, src, packet, &mut out);
            self.queue(i, out);
        }
    }

    fn deliver(&mut self) {
        self.deliver_except(|_, _, _| false);
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    fn snap(&self, i: usize) -> MembershipSnapshot {
        self.nodes[i].protocol.snapshot(self.nodes[i].version)
    }

    fn active_ids(&self, i: usize) -> Vec<SiloId> {
        self.snap(i).active_members().map(|m| m.id).collect()
    }

    fn sent(&self, kind: &str) -> usize {
        self.log.iter().filter(|(_, _, k)| *k == kind).count()
    }

    /// Ticks everyone and delivers, `rounds` times, one interval apart.
    fn rounds(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.tick_all();
            self.deliver();
            self.advance(INTERVAL);
        }
    }
}

fn joined_cluster(slaves: u16) -> Net {
    let mut net = Net::new();
    for s in 0..slaves {
        net.add_slave(sid(8000 + s, 1));
    }
    net.rounds(1);
    net
}

#[test]
fn slaves_join_and_views_converge() {
    let net = joined_cluster(3);
    let all: Vec<SiloId> = net.nodes.iter().map(|n| n.id).collect();
    for i in 0..net.nodes.len() {
        let snap = net.snap(i);
        let mut ids = net.active_ids(i);
        ids.sort();
        let mut expected = all.clone();
        expected.sort();
        assert_eq!(ids, expected, "node {i}");
        assert_eq!(snap.master, Some(all[0]));
        assert!(snap.master_reachable);
        assert_eq!(snap.active_slaves().count(), 3);
        assert!(snap.get(&all[0]).unwrap().is_master);
    }
    // Slaves adopted the master's interval.
    for i in 1..net.nodes.len() {
        assert_eq!(net.nodes[i].protocol.tick_interval(), INTERVAL);
    }
    assert_eq!(net.sent("WELCOME"), 3);
    // Existing slaves were told about each later joiner (0 + 1 + 2), and each joiner
    // about the slaves already there (0 + 1 + 2).
    assert_eq!(net.sent("SLAVE_CONNECT"), 6);
}

#[test]
fn heartbeats_carry_load_to_the_master() {
    let mut net = joined_cluster(1);
    net.nodes[1].load = LoadReport {
        activations: 5,
        queue_depth: 9,
    };
    net.rounds(1);
    let at_master = net.snap(0);
    assert_eq!(
        at_master.get(&net.nodes[1].id).unwrap().load,
        net.nodes[1].load
    );
    // Load alone is not a membership change.
    let version = net.nodes[0].version;
    net.nodes[1].load.activations = 6;
    net.rounds(1);
    assert_eq!(net.nodes[0].version, version);
    assert_eq!(
        net.snap(0).get(&net.nodes[1].id).unwrap().load.activations,
        6
    );
}

#[test]
fn graceful_leave_is_announced() {
    let mut net = joined_cluster(2);
    let leaver = net.nodes[1].id;
    let mut out = Outbox::new();
    net.nodes[1].protocol.on_leave(&mut out);
    net.queue(1, out);
    assert_eq!(
        net.snap(1).get(&leaver).unwrap().status,
        MemberStatus::ShuttingDown
    );
    net.deliver();
    for i in [0, 2] {
        let snap = net.snap(i);
        assert!(!snap.is_active(&leaver), "node {i}");
        assert_eq!(
            snap.get(&leaver).unwrap().status,
            MemberStatus::ShuttingDown
        );
    }
    assert_eq!(net.sent("SLAVE_DISCONNECT"), 1);
}

#[test]
fn silent_slave_is_declared_dead_after_the_lease() {
    let mut net = joined_cluster(2);
    let dead = net.nodes[1].id;
    // Slave 1 goes silent; the rest keep ticking.
    for round in 0..5 {
        net.tick(0);
        net.tick(2);
        net.deliver_except(|from, _, _| *from == dead);
        net.advance(INTERVAL);
        let alive = net.snap(0).is_active(&dead);
        // Lease is 3 × 100 ms: still alive at 300 ms, dead after.
        assert_eq!(alive, round < 3, "round {round}");
    }
    assert_eq!(net.snap(0).get(&dead).unwrap().status, MemberStatus::Dead);
    assert!(!net.snap(2).is_active(&dead));
    assert_eq!(net.snap(2).get(&dead).unwrap().status, MemberStatus::Dead);
}

#[test]
fn dead_slave_is_told_to_rejoin() {
    let mut net = joined_cluster(1);
    let slave = net.nodes[1].id;
    // The slave's packets are lost (and it does not tick), but it hears the master.
    for _ in 0..5 {
        net.tick(0);
        net.deliver_except(|from, _, _| *from == slave);
        net.advance(INTERVAL);
    }
    assert!(!net.snap(0).is_active(&slave));
    assert!(
        net.snap(1).master_reachable,
        "the slave has not noticed yet"
    );
    // The network heals: the next heartbeat gets REJOIN, the slave handshakes with the
    // same id, and is welcomed back.
    net.tick(1);
    net.deliver();
    assert_eq!(net.sent("REJOIN"), 1);
    assert!(net.snap(0).is_active(&slave));
    assert!(net.snap(1).master_reachable);
}

#[test]
fn rejoin_fences_the_slave_until_welcome() {
    let mut net = joined_cluster(1);
    let master = net.nodes[0].id;
    // Deliver a REJOIN by hand and look at the slave before the WELCOME comes back.
    let mut out = Outbox::new();
    net.nodes[0].seq += 1;
    let packet = Packet {
        from: master,
        seq: net.nodes[0].seq,
        body: PacketBody::Rejoin,
    };
    net.nodes[1]
        .protocol
        .on_packet(net.now, master.udp, packet, &mut out);
    net.settle(1);
    assert!(!net.snap(1).master_reachable);
    assert_eq!(out, vec![(master_addr(), PacketBody::Handshake)]);
    net.queue(1, out);
    net.deliver();
    assert!(net.snap(1).master_reachable);
}

#[test]
fn slave_loses_and_regains_an_unreachable_master() {
    let mut net = joined_cluster(1);
    let master = net.nodes[0].id;
    // Everything is lost for longer than the lease.
    for _ in 0..4 {
        net.tick_all();
        net.deliver_except(|_, _, _| true);
        net.advance(INTERVAL);
    }
    net.tick(1);
    let snap = net.snap(1);
    assert!(!snap.master_reachable);
    assert_eq!(snap.master, Some(master));
    // While unreachable the slave sends HANDSHAKE, which a live master answers.
    net.rounds(1);
    assert!(net.snap(1).master_reachable);
}

#[test]
fn restarted_master_is_adopted() {
    let mut net = joined_cluster(2);
    let old_master = net.nodes[0].id;
    // The master restarts on the same address with a new generation and no state.
    let config = MembershipConfig::master().with_heartbeat_interval(INTERVAL);
    let new_master = sid(MASTER_PORT, 2);
    net.nodes[0] = Node {
        id: new_master,
        protocol: Protocol::new(&config, new_master, net.now),
        seq: 0,
        load: LoadReport::default(),
        version: 1,
    };
    net.rounds(3);
    for i in 1..3 {
        let snap = net.snap(i);
        assert_eq!(snap.master, Some(new_master), "node {i}");
        assert!(snap.master_reachable);
        assert_eq!(snap.get(&old_master).unwrap().status, MemberStatus::Dead);
        assert_eq!(snap.active_members().count(), 3);
    }
    assert_eq!(net.snap(0).active_slaves().count(), 2);
}

#[test]
fn restarted_slave_replaces_its_old_generation() {
    let mut net = joined_cluster(2);
    let old = net.nodes[1].id;
    let new = SiloId {
        generation: old.generation + 1,
        ..old
    };
    net.nodes[1] = Node {
        id: new,
        protocol: Protocol::new(
            &MembershipConfig::slave(master_addr()).with_heartbeat_interval(INTERVAL),
            new,
            net.now,
        ),
        seq: 0,
        load: LoadReport::default(),
        version: 1,
    };
    net.rounds(1);
    for i in [0, 2] {
        let snap = net.snap(i);
        assert_eq!(
            snap.get(&old).unwrap().status,
            MemberStatus::Dead,
            "node {i}"
        );
        assert!(snap.is_active(&new), "node {i}");
    }
    // A stale HANDSHAKE from the old generation is ignored.
    let mut out = Outbox::new();
    let stale = Packet {
        from: old,
        seq: 10_000,
        body: PacketBody::Handshake,
    };
    net.nodes[0]
        .protocol
        .on_packet(net.now, old.udp, stale, &mut out);
    assert!(out.is_empty());
    assert!(!net.snap(0).is_active(&old));
}

#[test]
fn replayed_packets_are_dropped() {
    let mut net = joined_cluster(1);
    let slave = net.nodes[1].id;
    let master = net.nodes[0].id;
    // A replayed (old sequence number) SHUTDOWN from the slave does nothing.
    let mut out = Outbox::new();
    let replay = Packet {
        from: slave,
        seq: 1,
        body: PacketBody::Shutdown,
    };
    net.nodes[0]
        .protocol
        .on_packet(net.now, slave.udp, replay, &mut out);
    assert!(net.snap(0).is_active(&slave));
    assert!(out.is_empty());
    // Same at the slave for an old SHUTDOWN from the master.
    let replay = Packet {
        from: master,
        seq: 1,
        body: PacketBody::Shutdown,
    };
    net.nodes[1]
        .protocol
        .on_packet(net.now, master.udp, replay, &mut out);
    assert!(!net.nodes[1].protocol.shutdown_requested());
}

#[test]
fn lost_updates_heal_through_welcome() {
    let mut net = joined_cluster(1);
    let first = net.nodes[1].id;
    let late = net.add_slave(sid(8100, 1));
    // The SLAVE_CONNECT telling the first slave about the newcomer is lost.
    net.tick(late);
    net.deliver_except(|_, dest, body| {
        *dest == first.udp && matches!(body, PacketBody::SlaveConnect { .. })
    });
    let late_id = net.nodes[late].id;
    assert!(!net.snap(1).is_active(&late_id));
    // The first slave's next heartbeat reports a stale view; the master re-welcomes it.
    net.rounds(1);
    assert!(net.snap(1).is_active(&late_id));
    assert!(net.sent("WELCOME") >= 3);
}

#[test]
fn master_shutdown_requests_slave_shutdown() {
    let mut net = joined_cluster(2);
    let master = net.nodes[0].id;
    let mut out = Outbox::new();
    net.nodes[0].protocol.on_leave(&mut out);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|(_, b)| *b == PacketBody::Shutdown));
    net.queue(0, out);
    net.deliver();
    for i in [1, 2] {
        assert!(net.nodes[i].protocol.shutdown_requested());
        let snap = net.snap(i);
        assert!(!snap.master_reachable);
        assert_eq!(
            snap.get(&master).unwrap().status,
            MemberStatus::ShuttingDown
        );
    }
}

#[test]
fn packets_from_strangers_are_ignored_by_slaves() {
    let mut net = joined_cluster(1);
    let stranger = sid(9999, 1);
    let mut out = Outbox::new();
    let packet = Packet {
        from: stranger,
        seq: 1,
        body: PacketBody::SlaveDisconnect {
            member: net.nodes[0].id,
            reason: DepartureReason::Dead,
            view: 99,
        },
    };
    net.nodes[1]
        .protocol
        .on_packet(net.now, stranger.udp, packet, &mut out);
    assert!(out.is_empty());
    assert!(net.snap(1).is_active(&net.nodes[0].id));
}

#[test]
fn unknown_heartbeat_gets_rejoin() {
    let mut net = Net::new();
    let stranger = sid(9000, 1);
    let mut out = Outbox::new();
    let packet = Packet {
        from: stranger,
        seq: 1,
        body: PacketBody::Heartbeat {
            load: LoadReport::default(),
            view: 0,
        },
    };
    net.nodes[0]
        .protocol
        .on_packet(net.now, stranger.udp, packet, &mut out);
    assert_eq!(out, vec![(stranger.udp, PacketBody::Rejoin)]);
    assert!(!net.snap(0).is_active(&stranger));
}

#[test]
fn tombstones_are_bounded() {
    let mut net = Net::new();
    let mut out = Outbox::new();
    for port in 0..(super::table::MAX_TOMBSTONES as u16 + 10) {
        let id = sid(10_000 + port, 1);
        for body in [PacketBody::Handshake, PacketBody::Shutdown] {
            let packet = Packet {
                from: id,
                seq: if body == PacketBody::Handshake { 1 } else { 2 },
                body,
            };
            net.nodes[0]
                .protocol
                .on_packet(net.now, id.udp, packet, &mut out);
        }
    }
    let snap = net.snap(0);
    assert_eq!(snap.members.len(), 1 + super::table::MAX_TOMBSTONES);
    assert_eq!(snap.active_members().count(), 1);
}

#[test]
fn config_validation_and_defaults() {
    let config = MembershipConfig::default();
    assert_eq!(config.role, SiloRole::Master);
    assert_eq!(config.heartbeat_interval, super::DEFAULT_HEARTBEAT_INTERVAL);
    assert_eq!(config.missed_heartbeats, super::DEFAULT_MISSED_HEARTBEATS);
    assert_eq!(config.lease(), Duration::from_secs(3));
    assert_eq!(config.max_packet, 8 * 1024);
    assert!(matches!(
        MembershipConfig::default()
            .with_role(SiloRole::Slave)
            .validate(),
        Err(MembershipError::MissingMaster)
    ));
    assert!(matches!(
        MembershipConfig::default()
            .with_missed_heartbeats(0)
            .validate(),
        Err(MembershipError::InvalidConfig(_))
    ));
    assert!(matches!(
        MembershipConfig::default()
            .with_heartbeat_interval(Duration::ZERO)
            .validate(),
        Err(MembershipError::InvalidConfig(_))
    ));
    let keyed = MembershipConfig::default().with_cluster_key("hunter2");
    assert!(!format!("{keyed:?}").contains("hunter2"));
}

#[test]
fn throttle_backs_off_while_the_cause_persists() {
    let mut throttle = Throttle::default();
    let t0 = Instant::now();
    // One event every 100 ms for a minute.
    let lines = (0..600)
        .filter(|i| throttle.allow(t0 + INTERVAL * *i).is_some())
        .count();
    // 0, 1, 3, 7, 15, 31 s (doubling silences), then at 63 s: 6 lines in a minute.
    assert_eq!(lines, 6);
    // After a quiet spell, the next line comes at once (counting what was held back)
    // and the silence starts over at one second.
    let later = t0 + Duration::from_secs(600);
    assert_eq!(throttle.allow(later), Some(289));
    assert_eq!(throttle.allow(later + Duration::from_millis(500)), None);
    assert!(throttle
        .allow(later + Duration::from_millis(1500))
        .is_some());
}

fn lonely_slave(now: Instant) -> Protocol {
    let config = MembershipConfig::slave(master_addr())
        .with_heartbeat_interval(INTERVAL)
        .with_missed_heartbeats(3);
    Protocol::new(&config, sid(7100, 1), now)
}

fn reports(protocol: &Protocol) -> u32 {
    match protocol {
        Protocol::Slave(s) => s.unjoined_reports(),
        Protocol::Master(_) => unreachable!("a slave"),
    }
}

#[test]
fn an_unanswered_slave_reports_once_per_back_off_step() {
    let t0 = Instant::now();
    let mut slave = lonely_slave(t0);
    let mut out = Outbox::new();
    let mut handshakes = 0;
    for i in 1..=100 {
        slave.on_tick(t0 + INTERVAL * i, LoadReport::default(), &mut out);
        handshakes += out
            .drain(..)
            .filter(|(_, b)| *b == PacketBody::Handshake)
            .count();
        if i == 1 {
            assert_eq!(
                reports(&slave),
                0,
                "nothing before two unanswered HANDSHAKEs"
            );
        }
    }
    assert_eq!(handshakes, 100, "it keeps trying every interval");
    // Interval 100 ms: reports at 0.2, 0.6, 1.4, 3.0 and 6.2 s: five in ten seconds.
    assert_eq!(reports(&slave), 5);
}

#[test]
fn a_rejected_cluster_key_is_reported_at_the_next_tick() {
    use granary_proto::packet::AuthRejection;
    let t0 = Instant::now();
    let mut slave = lonely_slave(t0);
    let mut out = Outbox::new();
    slave.on_rejected(t0, master_addr(), AuthRejection::WrongKey);
    slave.on_tick(t0 + INTERVAL, LoadReport::default(), &mut out);
    assert_eq!(reports(&slave), 1);
    // A rejection from anyone but the master is ignored.
    let mut other = lonely_slave(t0);
    other.on_rejected(t0, sid(9999, 1).udp, AuthRejection::WrongKey);
    other.on_tick(t0 + INTERVAL, LoadReport::default(), &mut out);
    assert_eq!(reports(&other), 0);
}

#[test]
fn throttle_limits_warnings() {
    let mut throttle = Throttle::default();
    let t0 = Instant::now();
    assert_eq!(throttle.allow(t0), Some(0));
    assert_eq!(throttle.allow(t0 + Duration::from_millis(10)), None);
    assert_eq!(throttle.allow(t0 + Duration::from_millis(20)), None);
    assert_eq!(throttle.allow(t0 + Duration::from_secs(2)), Some(2));
}

#[test]
fn a_newcomer_gets_one_slave_connect_per_existing_slave() {
    let mut net = joined_cluster(2);
    let newcomer = sid(8100, 1);
    let n = net.add_slave(newcomer);
    net.rounds(1);
    let to_newcomer: Vec<_> = net
        .log
        .iter()
        .filter(|(from, to, kind)| {
            from.udp == master_addr() && *to == newcomer.udp && *kind == "SLAVE_CONNECT"
        })
        .collect();
    assert_eq!(to_newcomer.len(), 2, "{:?}", net.log);
    assert_eq!(
        net.active_ids(n).len(),
        4,
        "the newcomer sees the master and all three slaves"
    );
    for i in 1..=2 {
        assert_eq!(net.active_ids(i).len(), 4);
    }
}
