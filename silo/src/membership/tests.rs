//! Unit tests of the membership state machines, driven through an in-memory network
//! with a hand-moved clock (no sockets, no sleeps).
//!
//! This file holds the simulated network ([`Net`], one [`Node`] per silo) and the tests
//! of joining, leaving and configuration. The children test the rest:
//! - `failures`: lost heartbeats, leases, REJOIN, unreachable and restarted silos;
//! - `stray_packets`: replayed packets, strangers and the bounded tombstones;
//! - `warnings`: how often problems are reported (the throttle, unanswered slaves).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use granary_proto::packet::{LoadReport, Packet, PacketBody, SiloId};

use super::candidate::ElectionState;
use super::config::{MembershipConfig, SiloRole};
use super::protocol::{Outbox, Protocol};
use super::snapshot::{MemberStatus, MembershipSnapshot};
use super::MembershipError;

mod election;
mod failures;
mod simulation;
mod stray_packets;
mod warnings;

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
    /// When [`Net::run`] ticks it next.
    next_tick: Instant,
    /// What it persisted last (a candidate's election state survives a restart).
    persisted: ElectionState,
    /// Stopped (crashed): it neither ticks nor receives.
    down: bool,
}

impl Node {
    fn new(config: MembershipConfig, id: SiloId, election: ElectionState, now: Instant) -> Self {
        config.validate().unwrap();
        Node {
            id,
            protocol: Protocol::new(&config, id, election, now),
            seq: 0,
            load: LoadReport::default(),
            version: 1,
            next_tick: now,
            persisted: election,
            down: false,
        }
    }
}

/// An in-memory network: packets queue up until `deliver` runs.
struct Net {
    now: Instant,
    nodes: Vec<Node>,
    wire: VecDeque<(SocketAddr, SocketAddr, Packet)>,
    /// Every packet ever delivered (or dropped), for assertions: (from, to, kind).
    log: Vec<(SiloId, SocketAddr, &'static str)>,
    /// Slaves report to every new master at once (what the cluster layer does over TCP).
    reports: bool,
}

impl Net {
    /// A network with no silo yet.
    fn empty() -> Self {
        Net {
            now: Instant::now(),
            nodes: Vec::new(),
            wire: VecDeque::new(),
            log: Vec::new(),
            reports: true,
        }
    }

    fn new() -> Self {
        let mut net = Net {
            now: Instant::now(),
            nodes: Vec::new(),
            wire: VecDeque::new(),
            log: Vec::new(),
            reports: true,
        };
        let config = MembershipConfig::master()
            .with_heartbeat_interval(INTERVAL)
            .with_missed_heartbeats(3);
        net.add(config, sid(MASTER_PORT, 1));
        // A lone master elects itself at its first tick.
        net.tick(0);
        net
    }

    fn add(&mut self, config: MembershipConfig, id: SiloId) -> usize {
        self.add_with(config, id, ElectionState::default())
    }

    /// Adds a silo that persisted `election` in an earlier run.
    fn add_with(&mut self, config: MembershipConfig, id: SiloId, election: ElectionState) -> usize {
        self.nodes.push(Node::new(config, id, election, self.now));
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

    /// What the cluster layer does over TCP when a slave hears from its master: it
    /// reports its grains for the last admission (at once, here).
    fn report(&mut self, i: usize) {
        if self.reports && self.nodes[i].protocol.is_slave() {
            let snap = self.nodes[i].protocol.snapshot(0, self.now);
            if snap.master.is_some() {
                self.nodes[i].protocol.set_reported(snap.admission);
            }
        }
    }

    fn settle(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        if let Some(state) = node.protocol.take_persist() {
            node.persisted = state;
        }
        if node.protocol.take_dirty().membership {
            node.version += 1;
        }
    }

    /// Runs for `d` in steps of 10 ms: each running node ticks at its own interval, and
    /// packets are delivered at once (except those `drop` refuses).
    fn run_except(
        &mut self,
        d: Duration,
        mut drop: impl FnMut(&SiloId, &SocketAddr, &PacketBody) -> bool,
    ) {
        let end = self.now + d;
        while self.now < end {
            for i in 0..self.nodes.len() {
                if !self.nodes[i].down && self.nodes[i].next_tick <= self.now {
                    let interval = self.nodes[i].protocol.tick_interval();
                    self.nodes[i].next_tick = self.now + interval;
                    self.tick(i);
                }
            }
            self.deliver_except(&mut drop);
            self.advance(Duration::from_millis(10));
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
            let Some(i) = self.nodes.iter().position(|n| n.id.udp == dest && !n.down) else {
                continue;
            };
            let mut out = Outbox::new();
            self.nodes[i]
                .protocol
                .on_packet(self.now, src, packet, &mut out);
            self.report(i);
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
        self.nodes[i]
            .protocol
            .snapshot(self.nodes[i].version, self.now)
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

/// A master and `slaves` slaves, every slave serving: one round to join, one for the
/// first heartbeat answer (the lease).
fn joined_cluster(slaves: u16) -> Net {
    let mut net = Net::new();
    for s in 0..slaves {
        net.add_slave(sid(8000 + s, 1));
    }
    net.rounds(2);
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
    // Slaves adopted the master's interval (once serving, they no longer hurry).
    let mut net = net;
    net.rounds(1);
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
        suspended: false,
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
    net.nodes[1].protocol.on_leave(net.now, &mut out);
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
    net.nodes[0].protocol.on_leave(net.now, &mut out);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|(_, b)| *b == PacketBody::Shutdown));
    net.queue(0, out);
    net.deliver();
    for i in [1, 2] {
        assert!(net.nodes[i].protocol.shutdown_requested());
        let snap = net.snap(i);
        assert!(
            snap.master_reachable,
            "the slave keeps its lease while it saves its grains and leaves"
        );
        assert_eq!(
            snap.get(&master).unwrap().status,
            MemberStatus::ShuttingDown
        );
    }
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
